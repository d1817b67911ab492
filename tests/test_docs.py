"""The documentation stays true: docs/cli.md is the commands' current --help, every relative link in
the README and docs/ points to a file of the repository, the documented field names are the ones the
code writes, and the README stays short enough for a newcomer."""

import importlib.util
import re

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def cli_reference_tool():
    """tools/cli_reference.py (tools/ is not a package) imported as a module."""
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_current():
    tool = cli_reference_tool()
    assert tool.OUTPUT == ROOT / "docs" / "cli.md"
    assert tool.OUTPUT.read_text(encoding="utf-8") == tool.render(), \
        "docs/cli.md is stale: run python tools/cli_reference.py"


def test_cli_reference_covers_every_command():
    from sizer.cli import cli

    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "## `sizer`\n" in text
    for name in cli.list_commands(None):
        assert f"## `sizer {name}`\n" in text
        assert f"Usage: sizer {name} [OPTIONS]" in text


def test_cli_reference_check_mode(tmp_path, capsys):
    tool = cli_reference_tool()
    assert tool.main(["cli_reference.py", "--check"]) == 0
    tool.OUTPUT = tmp_path / "cli.md"                 # a stale copy, outside the checkout's docs/
    tool.OUTPUT.write_text("stale\n", encoding="utf-8")
    tool.ROOT = tmp_path
    assert tool.main(["cli_reference.py", "--check"]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "stale" in message


def test_relative_links_point_to_files_of_the_repository():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue                                     # a web address or an anchor on the same page
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {(page.parent / target.split("#", 1)[0]).resolve()
              for page in PAGES for target in LINK.findall(page.read_text(encoding="utf-8"))}
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert orphans == []


def test_readme_is_at_most_250_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 250


def test_output_page_documents_every_csv_header_and_column():
    from sizer.calc.report import ESTIMATE_CSV_COLUMNS
    from sizer.cli import GPU_COLUMNS, MODEL_COLUMNS
    from sizer.measure.records import RECORD_COLUMNS
    from sizer.plan.report import FIT_CSV_COLUMNS
    from sizer.quantize.report import LINEAR_COLUMNS
    from sizer.finetune.report import FINETUNE_CSV_COLUMNS
    from sizer.measure.finetune import FINETUNE_RECORD_COLUMNS

    text = (ROOT / "docs" / "output.md").read_text(encoding="utf-8")
    for columns in (ESTIMATE_CSV_COLUMNS, FIT_CSV_COLUMNS, RECORD_COLUMNS, LINEAR_COLUMNS, FINETUNE_CSV_COLUMNS,
                    FINETUNE_RECORD_COLUMNS):
        assert f"\n{','.join(columns)}\n" in text
    for column in (*MODEL_COLUMNS, *GPU_COLUMNS):
        assert f"`{column}`" in text


def test_docs_name_no_narration_of_how_the_work_was_done():
    """Pages say what was measured on which hardware, not how a session went."""
    phrases = re.compile(r"\b(was lent|this session|this work|the machine we had|the task that built)\b", re.I)
    found = [f"{page.relative_to(ROOT)}: {m}" for page in PAGES for m in phrases.findall(page.read_text(encoding="utf-8"))]
    assert found == []
