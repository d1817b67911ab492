"""The calculator path stays light: importing the CLI and estimating loads no torch or transformers."""

import subprocess
import sys

CHECK = ("import sys, sizer.cli; from sizer import estimate; estimate('llama3-70b', 'nf4'); "
         "print(sorted(m for m in ('torch', 'transformers', 'safetensors', 'bitsandbytes', 'matplotlib') "
         "if m in sys.modules))")


def test_import_sizer_cli_does_not_load_torch():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_sizer():
    out = subprocess.run([sys.executable, "-m", "sizer", "estimate", "phi-2", "--format", "csv"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("model,family,params")


LISTING = ("import sys, tempfile, os; os.environ['XDG_CACHE_HOME'] = tempfile.mkdtemp(); "
           "from click.testing import CliRunner; from sizer.cli import cli; "
           "r = CliRunner().invoke(cli, ['models', '--format', 'json']); assert r.exit_code == 0, r.output; "
           "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")


def test_the_catalog_needs_no_torch():
    """Catalog entries of families sizer sizes through transformers' count (MiniMax-M2.5) ship that
    count (sizer/data/meta_counts), so listing the catalog with an empty cache loads no torch."""
    out = subprocess.run([sys.executable, "-c", LISTING], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
