"""The machine sizer runs on, probed in one place (torch-free unless a function says otherwise):
/proc (resident set, available memory, CPU name), NVML (GPUs, a process's device memory, matched by
UUID), and whether torch is installed and which devices it sees (torch_runtime)."""
