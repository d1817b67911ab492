"""sizer.data: the model catalog (models/*.json), the GPU catalog (gpus.json) and the shipped
calibration (calibration.json), read by sizer.catalog and sizer.calc.calibration. Inside the package so a
plain checkout, an editable install and a wheel all find them at the same place."""
