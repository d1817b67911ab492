"""The README's examples are real: each console example is re-run and compared with the text shown."""

import re
import shlex

from click.testing import CliRunner

from sizer.cli import cli
from sizer.calc.report import ESTIMATE_CSV_COLUMNS

from conftest import ROOT

README = (ROOT / "README.md").read_text()
DOCS = {path: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}


def console_examples(text: str):
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        command, _, output = block.partition("\n")
        assert command.startswith("$ sizer ")
        yield shlex.split(command[2:])[1:], output


def test_console_examples_match_real_output():
    """The README's examples and those of the docs/ pages (the prose moved there keeps its examples)."""
    assert list(console_examples(README))
    examples = [*console_examples(README), *(e for text in DOCS.values() for e in console_examples(text))]
    assert any(args[:1] == ["fit"] for args, _ in examples)
    for args, shown in examples:
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, args
        assert result.output == shown, args


def test_csv_header_documented():
    assert ",".join(ESTIMATE_CSV_COLUMNS) in README


def test_python_api_example_runs():
    """The Python API example, in docs/api.md."""
    block = re.search(r"```python\n(.*?)```", DOCS[ROOT / "docs" / "api.md"], flags=re.S).group(1)
    namespace: dict = {}
    exec(block, namespace)
    assert namespace["e"].memory["total"] > 0
    assert namespace["get_gpu"]("H100").memory_bytes == int(re.search(r"memory_bytes\s+# (\d+)", block).group(1))


def test_ci_runs_exactly_the_readme_set_up_commands():
    """.ci/run: a fresh virtual environment, then the README's two commands and nothing else."""
    section = README.split("## Set up on a fresh machine", 1)[1]
    commands = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1).strip().splitlines()
    assert commands == ["pip install -e '.[test]'", "python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert ci[-2:] == commands
    assert any(line.startswith("python3 -m venv ") for line in ci) and any("activate" in line for line in ci)


def test_readme_reads_nothing_outside_the_repository():
    assert "../" not in README
    assert all("../" not in text for text in DOCS.values())
