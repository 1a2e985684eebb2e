"""The `charlm` command line: a thin layer over the Python API.

This package is the only place that parses argv, prints or exits. A user error (bad flag value, missing
file, unknown corpus, damaged run folder) prints one line and exits 2; ``--debug`` shows the traceback.
The parsers (:mod:`.parsers`), the commands (:mod:`.commands`, and :mod:`.files` for the compressor)
and this module, which runs one, are apart.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable

from ..hardware import launch
from . import commands, files
from .commands import continue_after_restart
from .parsers import build_parser

__all__ = ["build_parser", "continue_after_restart", "main"]

# Each command's function; its help and its parser are in parsers.PARSERS, under the same name.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "corpora": commands.cmd_corpora, "recipes": commands.cmd_recipes, "info": commands.cmd_info,
    "train": commands.cmd_train, "resume": commands.cmd_resume, "generate": commands.cmd_generate,
    "evaluate": commands.cmd_evaluate, "serve": commands.cmd_serve, "export": commands.cmd_export,
    "compress": files.cmd_compress, "decompress": files.cmd_decompress,
}


class _TqdmHandler(logging.Handler):
    """Log lines that do not break a progress bar drawn on the same terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(quiet: bool) -> None:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("charlm")
    root.handlers[:] = [handler]
    main_process = launch.is_main()  # under torchrun only rank 0 reports
    root.setLevel(logging.WARNING if quiet or not main_process else logging.INFO)
    warnings.simplefilter("default")
    warnings.showwarning = _note  # a warning reaches the user as one plain line, no source path


def _note(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
          line=None) -> None:
    text = " ".join(str(message).split()).removeprefix("charlm: ")
    logging.getLogger("charlm").warning("charlm: note: %s", text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.quiet)
    for note in getattr(args, "renamed", []):
        logging.getLogger("charlm").warning("charlm: note: %s", note)
    from ..checkpoint import CheckpointError
    from ..data.corpora import CorpusError
    from ..training.loop import TrainingDiverged, TrainingInterrupted

    try:
        return COMMANDS[args.command](args)
    except TrainingInterrupted as err:
        print(f"charlm: {err}", file=sys.stderr)
        return 128 + err.signum  # 130 for Ctrl-C, 143 for SIGTERM
    except TrainingDiverged as err:
        print(f"charlm: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except (ValueError, CorpusError, CheckpointError, OSError) as err:
        if args.debug:
            raise
        print(f"charlm: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return " ".join(text.split("\n")) if not isinstance(err, OSError) or not err.filename else \
        f"{err.filename}: {err.strerror}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
