"""What `hexzd` says before a command runs: each command's whole summary in the top-level
help, and a one-line refusal on Windows itself."""

import inspect
import re
import subprocess
import sys

from click.testing import CliRunner

from hexzd.cli import main


def summaries(help_text: str) -> dict[str, str]:
    """The Commands section of a click help page: {command: its summary, its wrapped lines joined}."""
    section = help_text.split("Commands:\n", 1)[1]
    found: dict[str, str] = {}
    name = ""
    for line in section.splitlines():
        entry = re.match(r"^  (\S+)\s+(.*)$", line)
        if entry:
            name = entry[1]
            found[name] = entry[2].strip()
        elif line.startswith("    ") and name:  # a summary's next line, indented under its start
            found[name] += " " + line.strip()
    return found


def first_sentence(doc: str) -> str:
    """The reference: a docstring's first paragraph up to the first full stop that ends a word."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return re.match(r"^(.*?\.)(?:\s|$)", paragraph + " ")[1]


def test_every_commands_summary_in_the_help_is_its_docstrings_whole_first_sentence():
    shown = summaries(subprocess.run([sys.executable, "-m", "hexzd", "--help"], capture_output=True, text=True).stdout)
    assert set(shown) == set(main.commands)
    for name, command in main.commands.items():
        assert "..." not in shown[name], name
        assert shown[name] == first_sentence(inspect.getdoc(command.callback)), name


def test_windows_itself_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(sys, "platform", "win32")
    result = CliRunner().invoke(main, ["ratings"])
    assert result.exit_code == 1
    assert result.output == (
        "Error: hexzd runs on Linux and macOS, not on Windows itself: run it in WSL2 (docs/guides/platforms.md)\n"
    )
