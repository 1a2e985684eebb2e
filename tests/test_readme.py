"""Every `charlm` command the README shows runs, in order, as a user would type it (made short).

The commands are read from the README's console blocks, so a changed README is tested as it stands.
Each training command gets a budget of a few seconds (``--max-minutes``) and a cap on its text, which
shortens it without changing what it does; `my_book.txt` and `book.txt` are a small text made here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from charlm.cli import main
from charlm.serve import ExplorerServer

README = Path(__file__).resolve().parents[1] / "README.md"
SHORT = ["--max-minutes", "0.04", "--max-tokens", "20000", "-q"]  # flags given last win over the README's
BOOK = "".join(f"Line {k}: the time traveller, for so it will be convenient to speak of him, was "
               f"expounding a recondite matter to us.\n" for k in range(400))


def _interrupted(self) -> None:
    assert self.explorer.runs, "the server is up with its runs"
    self.server_close()
    raise KeyboardInterrupt


def readme_commands(text: str) -> list[list[str]]:
    """The argv of each ``$ ...`` line in the README's console blocks, continuation lines joined and
    trailing comments dropped."""
    commands = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.S):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            if line.startswith("$ "):
                commands.append(shlex.split(line[2:], comments=True))
    return commands


def as_charlm_argv(argv: list[str]) -> list[str] | None:
    """The arguments of `charlm` for a README line; None for lines that are not charlm's to run here
    (installing, torchrun, which tests/test_distributed.py covers)."""
    if argv[:1] == ["charlm"]:
        return argv[1:]
    if argv[:3] == ["python", "-m", "charlm"]:
        return argv[3:]
    return None


def test_the_readme_commands_are_found():
    commands = [as_charlm_argv(c) for c in readme_commands(README.read_text(encoding="utf-8"))]
    names = {c[0] for c in commands if c}
    assert {"train", "resume", "generate", "evaluate", "compress", "decompress", "corpora", "recipes",
            "info", "serve", "export"} <= names


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path, monkeypatch, data_dir, capsys):
    monkeypatch.setenv("CHARLM_DATA", str(data_dir.resolve()))  # the commands run in another folder
    monkeypatch.chdir(tmp_path)
    for name in ("my_book.txt", "book.txt"):
        (tmp_path / name).write_text(BOOK, encoding="utf-8")
    for command in readme_commands(README.read_text(encoding="utf-8")):
        argv = as_charlm_argv(command)
        if argv is None:
            continue
        if argv[0] == "train" and "--help" not in argv:
            argv = argv + SHORT
        if argv[0] == "resume":
            argv = argv + ["-q"]
        if argv[0] == "serve":  # it starts, loads the runs and says where; then Ctrl-C, at once
            argv = argv + ["--port", "0"]
            monkeypatch.setattr(ExplorerServer, "serve", _interrupted)
        if argv[0] == "generate" and re.fullmatch(r"runs/\d{8}-\d{6}-rnn", argv[1]):
            argv[1] = str(sorted(Path("runs").glob("*-rnn"))[-1])  # the README's run is the one made above
        try:
            code = main(argv)
        except SystemExit as exit_info:  # --help
            code = exit_info.code
        err = capsys.readouterr().err
        assert code == 0, f"charlm {shlex.join(argv)} exited {code}: {err}"
    assert (tmp_path / "copy.txt").read_text(encoding="utf-8") == BOOK  # the round trip the README shows


@pytest.mark.parametrize("line, argv", [
    ("$ charlm train --corpus a.txt \\\n      --epochs 2   # a comment",
     ["charlm", "train", "--corpus", "a.txt", "--epochs", "2"]),
    ('$ charlm generate runs/x --prefix "the time"',
     ["charlm", "generate", "runs/x", "--prefix", "the time"]),
])
def test_readme_lines_are_read_as_a_shell_would(line, argv):
    assert readme_commands(f"```console\n{line}\n```") == [argv]
