"""The command line's parsers: every flag made from a config field, and one small parser per command."""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..fields import cli_fields, default_of, flag, flat_names
from ..suggest import did_you_mean

EXAMPLES = """examples:
  charlm train                                   the book's RNN on The Time Machine (500 epochs)
  charlm train --cell lstm --num-hiddens 256 --epochs 100 --out runs/lstm
  charlm train my_book.txt                       your own text: a model chosen for it, 10 minutes
  charlm train --corpus my_book.txt --recipe book --cell gru   the book's setup on your text
  charlm resume runs/lstm --epochs 200            go on from where the run stopped
  charlm generate runs/lstm --prefix "time traveller" --num-preds 200 --temperature 0.8
  charlm evaluate runs/lstm --split val
  charlm serve runs/lstm                          a web page to read, write with and look inside it
  charlm compress book.txt book.chlm              lossless: a byte model learns while it codes
  charlm decompress book.chlm book.txt
"""


# ---- flags made from config fields -------------------------------------------------------------


def _value_type(kind: Any, parse: Any) -> Any:
    """What turns a flag's text into the field's value: the field's own parser, or its type
    (``int | None`` -> int)."""
    if parse is not None:
        def parsed(text: str) -> Any:
            try:
                return parse(text)
            except ValueError as err:  # argparse shows an ArgumentTypeError's own words
                raise argparse.ArgumentTypeError(str(err).split(": ", 1)[-1]) from None
        parsed.__name__ = parse.__name__.lstrip("_")
        return parsed
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def add_config_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None,
                     shown_default: str | None = None) -> None:
    """One flag per field of `cls` (nested configs' fields included; `only` these, if given), with
    the field's help, parser and default (`shown_default` in the help instead, if given: a resumed
    run's own settings). Only flags the user typed reach the namespace (SUPPRESS), so recipes and
    the defaults of the config itself fill in the rest."""
    for f, kind, default in cli_fields(cls, only):
        meta = f.metadata
        # A nested config's own default ("one-hot") is shown only where its default applies.
        shown = meta.get("shown") if meta.get("shown") and default == default_of(f) else default
        shown = shown_default or shown
        opts: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                "help": f"{meta.get('help', '')} (default: {shown})"}
        value_type = _value_type(kind, meta.get("parse"))
        if value_type is bool:
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **opts)
        else:
            metavar = meta.get("metavar") or getattr(value_type, "__name__", "value").upper()
            parser.add_argument(flag(f.name), type=value_type, metavar=metavar, **opts)


def settings_given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of `cls` the user typed, as flat settings."""
    names = flat_names(cls)
    return {k: v for k, v in vars(args).items() if k in names}


class _Renamed(argparse.Action):
    """An old spelling of a flag that still works, with a note naming the new one."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # Said once logging is set up (main), as a note like any other.
        notes = getattr(namespace, "renamed", [])
        namespace.renamed = [*notes, f"{option_string} is now {self.new}; the old name will go in a later "
                                     "release"]
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr and exit 2, like every other user
    error (argparse's own prints the whole usage first). Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelled command or choice: name the closest one
            choices = [c.strip(" '") for c in wrong[2].split(",")]
            message += did_you_mean(wrong[1], choices)
        self.exit(2, f"charlm: error: {message} (see `{self.prog} --help`)\n")


# ---- one small parser per command --------------------------------------------------------------


def _run_argument(parser: argparse.ArgumentParser, *, english: bool = False) -> None:
    if not english:
        parser.add_argument("run", type=Path, metavar="RUN",
                            help="run folder (written by `charlm train --out`)")
        return
    parser.add_argument("run", type=Path, metavar="RUN", nargs="?", default=None,
                        help="run folder (written by `charlm train --out`); default: english, charlm's own "
                             "English model")


def _device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps (default: auto)")


def _which_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--which", choices=("best", "last"), default="best",
                        help="weights: best (the best validation loss, where the run kept them; else the "
                             "last) or last (default: best)")


def _info_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")


def _train_parser(parser: argparse.ArgumentParser) -> None:
    from ..config import TrainConfig

    parser.epilog, parser.formatter_class = EXAMPLES, argparse.RawDescriptionHelpFormatter
    parser.description = ("The defaults below are the book's. A text file given without --recipe gets the "
                          "auto recipe instead: raw text, whole, a model sized for the text, this machine "
                          "and --max-minutes (10), said in one line before training (docs/auto.md); the "
                          "flags given still win.")
    parser.add_argument("path", nargs="?", metavar="PATH", help="a text file to train on (the same as "
                        "--corpus PATH); with no --recipe, the auto recipe chooses a model for it")
    parser.add_argument("--out", type=Path, metavar="RUN", help="run folder to create (default: "
                        "runs/<time>-<recipe or cell>)")
    parser.add_argument("--recipe", metavar="NAME",
                        help="start from a named setup (see `charlm recipes`); flags given override it. "
                             "auto: chosen for the text, this machine and --max-minutes (the default "
                             "for a text file); book: the book's defaults (the default for a named "
                             "corpus)")
    add_config_flags(parser, TrainConfig)
    parser.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                        default=argparse.SUPPRESS, help="the same as --precision bf16")
    # Old spellings: --model named the cell, --resume RUN is now `charlm resume RUN`.
    parser.add_argument("--model", dest="cell", action=_Renamed, new="--cell", default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)
    parser.add_argument("--resume", type=Path, action=_Renamed, new="`charlm resume RUN`",
                        default=None, help=argparse.SUPPRESS)


def _resume_parser(parser: argparse.ArgumentParser) -> None:
    from ..config import TrainConfig
    from ..training.run import RESUMABLE

    _run_argument(parser)
    # The same flags as `charlm train`'s, cadences parsed the same way ("600steps", "5m").
    add_config_flags(parser, TrainConfig, only=RESUMABLE, shown_default="the run's")


def _generate_parser(parser: argparse.ArgumentParser) -> None:
    from ..generation import GenerateConfig

    _run_argument(parser, english=True)
    parser.add_argument("--prefix", default=None,
                        help="text to start from (default: the run's sample prefix)")
    add_config_flags(parser, GenerateConfig)
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="write the samples to FILE (UTF-8, whole or not at all) instead of the terminal")
    _force_argument(parser)
    _which_argument(parser)
    _device_argument(parser)


def _evaluate_parser(parser: argparse.ArgumentParser) -> None:
    from ..config import TrainConfig

    _run_argument(parser, english=True)
    parser.add_argument("--corpus", default=None, help="corpus name or text file (default: the run's)")
    parser.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                        help="split of the corpus (default: val for the run's corpus, all for another)")
    # How the text is read: the run's own corpus as the run read it; another file's encoding is found.
    add_config_flags(parser, TrainConfig, only=("encoding", "errors", "keep_boilerplate"))
    _which_argument(parser)
    _device_argument(parser)
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the sentence")


def _compress_parser(parser: argparse.ArgumentParser) -> None:
    from ..compression import CompressSettings

    parser.add_argument("input", help="file to compress, or - for stdin")
    parser.add_argument("output", help="archive to write, or - for stdout")
    parser.add_argument("--run", type=Path, metavar="RUN",
                        help="a trained character run (pretrained mode); without it a byte-level model "
                             "learns while it codes (online mode)")
    parser.add_argument("--online", action="store_true", help="the online mode (the default; kept for "
                        "scripts that name it)")
    add_config_flags(parser, CompressSettings)
    parser.add_argument("--chunk-size", type=int, default=1 << 20, metavar="BYTES",
                        help="bytes of the input read and coded as one segment (default 1048576); memory "
                             "holds one segment, some 13 bytes per byte of it")
    _force_argument(parser)
    parser.add_argument("--model", dest="run", type=Path, action=_Renamed, new="--run",
                        help=argparse.SUPPRESS)


def _decompress_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="archive, or - for stdin")
    parser.add_argument("output", help="file to write, or - for stdout")
    parser.add_argument("--run", type=Path, metavar="RUN", help="the run the archive was made with, if any")
    _force_argument(parser)
    parser.add_argument("--model", dest="run", type=Path, action=_Renamed, new="--run",
                        help=argparse.SUPPRESS)


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535 (0: any free port), "
                                         f"got {text!r}")
    return port


def _serve_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", type=Path, nargs="*", metavar="RUN",
                        help="run folders to show (r0, r1, ... on the page, in this order); none: english, "
                             "charlm's own English model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=_port, default=8000, help="port; 0 = any free port (default: 8000)")
    _which_argument(parser)


def _export_parser(parser: argparse.ArgumentParser) -> None:
    _run_argument(parser)
    parser.add_argument("output", type=Path, metavar="OUT",
                        help="the file to write: NAME.html (a page that writes with the model in a browser, "
                             "offline) or NAME.onnx (an ONNX graph, the state as inputs and outputs)")
    _which_argument(parser)
    _force_argument(parser)


def _force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="charlm", description="Recurrent language models: train, "
                                     "generate, evaluate.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"charlm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the result")
    # The same two options after the command name too (`charlm train -q`).
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and the result")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (about, build) in PARSERS.items():
        build(sub.add_parser(name, help=about, parents=[common]))
    return parser



# name: (help, parser builder); the command each runs is charlm.cli.COMMANDS[name].
PARSERS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "corpora": ("list the named corpora and whether they are available offline", lambda p: None),
    "recipes": ("list the training recipes (the book's experiments)", lambda p: None),
    "info": ("this machine, and what charlm chooses on it (precision, threads, kernels), with the reasons",
             _info_parser),
    "train": ("train a model (defaults: the book's RNN on The Time Machine)", _train_parser),
    "resume": ("continue a saved run exactly where it stopped", _resume_parser),
    "generate": ("write text after a prefix with a trained run, or with charlm's English model",
                 _generate_parser),
    "evaluate": ("perplexity and bits per token of a run on held-out text", _evaluate_parser),
    "serve": ("a local web page to read, write with and look inside trained runs", _serve_parser),
    "export": ("write a run as a web page that writes with it offline, or as an ONNX graph", _export_parser),
    "compress": ("compress a file losslessly with a language model", _compress_parser),
    "decompress": ("restore a file from a charlm archive", _decompress_parser),
}
