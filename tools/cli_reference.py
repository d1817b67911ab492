"""docs/cli.md, the command-line reference, generated from the commands' own `--help` text.

    python tools/cli_reference.py           # rewrite docs/cli.md
    python tools/cli_reference.py --check   # exit 1 with one line if docs/cli.md is stale

Walks the `sizer` click group (nested groups included) and renders each command's help at a fixed
width of 100 columns, so the text is the same on every machine. tests/test_docs.py keeps the file
current.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))      # the checkout's sizer, also when the script is run from elsewhere

OUTPUT = ROOT / "docs" / "cli.md"
WIDTH = 100

HEADER = """\
# Command-line reference

Generated from each command's `--help` by `python tools/cli_reference.py` (do not edit by hand;
`tests/test_docs.py` checks that this page is current). Sizes print in GiB (1 GiB = 2^30 bytes);
JSON and CSV carry integer bytes. The output formats are described in [output.md](output.md).
"""


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The context click would build for `command`, its settings included (-h/--help), at WIDTH columns."""
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    return click.Context(command, info_name=name, parent=parent, **settings)


def _walk(command: click.Command, ctx: click.Context):
    """(context, command) for the command and every subcommand below it, depth first, by name."""
    yield ctx, command
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, _context(sub, name, ctx))


def render() -> str:
    """The whole of docs/cli.md as it should read now."""
    from sizer.cli import cli

    parts = [HEADER]
    for ctx, command in _walk(cli, _context(cli, "sizer", None)):
        parts.append(f"\n## `{ctx.command_path}`\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n")
    return "".join(parts)


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print("usage: python tools/cli_reference.py [--check]", file=sys.stderr)
        return 2
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
