"""The `charlm` command line: a thin layer over the Python API.

This is the only module that parses argv, prints or exits. A user error (bad flag value, missing
file, unknown corpus, damaged run folder) prints one line and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import re
import sys
import time
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from . import __version__
from .fields import cli_fields, default_of, flag, flat_names
from .hardware import launch
from .suggest import did_you_mean

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


def add_config_flags(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None) -> None:
    """One flag per field of `cls` (nested configs' fields included; `only` these, if given), with
    the field's help and default. Only flags the user typed reach the namespace (SUPPRESS), so
    recipes and the defaults of the config itself fill in the rest."""
    for f, kind, default in cli_fields(cls, only):
        meta = f.metadata
        # A nested config's own default ("one-hot") is shown only where its default applies.
        shown = meta.get("shown") if meta.get("shown") and default == default_of(f) else default
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


def _or_english(run: Path | None) -> Path:
    """The RUN given, or charlm's English model, said in one line: a command that needs a model
    works before anything is trained."""
    if run is not None:
        return run
    logging.getLogger("charlm").info("no RUN given: using english, charlm's general English model "
                                     "(docs/english.md)")
    return Path("english")


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
    from .config import TrainConfig

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
    from .config import TrainConfig
    from .training.loop import RESUMABLE

    _run_argument(parser)
    for f, kind, _ in cli_fields(TrainConfig):
        if f.name in RESUMABLE:
            parser.add_argument(flag(f.name), dest=f.name, type=_value_type(kind, None),
                                default=argparse.SUPPRESS, metavar=_value_type(kind, None).__name__.upper(),
                                help=f"{f.metadata['help']} (default: the run's)")


def _generate_parser(parser: argparse.ArgumentParser) -> None:
    from .generation import GenerateConfig

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
    from .config import TrainConfig

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
    from .compression import CompressSettings

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
    for name, (about, build, _) in COMMANDS.items():
        build(sub.add_parser(name, help=about, parents=[common]))
    return parser


def cmd_corpora(args: argparse.Namespace) -> int:
    from .data.corpora import CORPORA, embedded_file, is_cached

    for name, spec in CORPORA.items():
        where = is_cached(name)
        status = f"available: {where}" if where else f"not cached: downloads from {spec.url}"
        if where and where == embedded_file(spec):
            status = f"available: shipped with charlm ({where})"
        print(f"{name:18} {spec.description}\n{'':18} {status}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .info import format_report, report

    data = report()
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 0


def _as_flag(name: str, value: Any) -> str:
    """A setting as the command line would give it: ``--max-tokens -1``, ``--no-detach``."""
    if isinstance(value, bool):
        return flag(name) if value else f"--no-{flag(name)[2:]}"
    return f"{flag(name)} {value}"


def cmd_recipes(args: argparse.Namespace) -> int:
    from .config import load_recipe, recipe_names

    print(f"{'auto':28} chosen for a text, this machine and --max-minutes (10 by default): the model's size, "
          f"dropout and batch\n{'':28} (docs/auto.md); the default of `charlm train PATH`")
    print(f"{'book':28} the book's defaults (d2l §8.5); the default of `charlm train` without a text file")
    for name in recipe_names():
        recipe = load_recipe(name)
        settings = " ".join(_as_flag(k, v) for k, v in recipe["settings"].items())
        # The book's experiments say what the book reports; the quality recipes, what to compare with.
        target = f"book: {recipe['book_reports']}" if "book_reports" in recipe else \
            f"target: {recipe.get('reference', '-')}"
        print(f"{name:28} {recipe['description']}\n{'':28} {target}\n{'':28} {settings or '(the defaults)'}")
        for precision, changes in recipe.get("by_precision", {}).items():
            print(f"{'':28} in {precision}: {' '.join(_as_flag(k, v) for k, v in changes.items())}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig, check_recipe_device, default_recipe, from_recipe
    from .training import auto
    from .training.loop import train

    if args.resume is not None:  # the old spelling of `charlm resume RUN`
        return _report_training(_resume(args.resume, settings_given(args, TrainConfig)))
    given = settings_given(args, TrainConfig)
    if args.path is not None:
        if given.get("corpus", args.path) != args.path:
            raise ValueError(f"PATH {args.path} and --corpus {given['corpus']}: give the text once")
        given["corpus"] = args.path
    _need_out_under_torchrun(args.out)
    if continue_after_restart(args.out, given):  # before the auto recipe measures: the run has its model
        if launch.is_main():
            print(f"charlm: torchrun restarted the workers (restart {launch.restarts()}): continuing the "
                  f"run in {args.out} from its last checkpoint, as `charlm resume {args.out}` would",
                  flush=True)
        return _report_training(_resume(args.out, {}))
    recipe = args.recipe or default_recipe(given)
    if recipe == "auto":
        if "init_from" in given:
            raise ValueError("--recipe auto chooses a new model for the text, and --init-from keeps the "
                             "run's model and settings: give one or the other")
        config, choice, data = auto.configure(given)
        if launch.is_main():  # under torchrun, rank 0 speaks for all
            print(auto.describe(choice, config), flush=True)
    else:
        if recipe != "book":
            check_recipe_device(recipe, given)
        config, data = from_recipe(None if recipe == "book" else recipe, **given), None
    out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.recipe or config.model.cell}"
    return _report_training(_distributed(lambda: train(config, out=out, data=data)))


def cmd_resume(args: argparse.Namespace) -> int:
    from .training.loop import RESUMABLE

    return _report_training(_resume(args.run, {k: v for k, v in vars(args).items() if k in RESUMABLE}))


def _resume(run: Path, changes: dict[str, Any]):
    from .training.loop import resume

    return _distributed(lambda: resume(run, **changes))


def continue_after_restart(out: Path | None, given: dict[str, Any]) -> bool:
    """Whether `charlm train --out OUT` continues the run in OUT instead of starting one: only in workers
    that torchrun restarted after a failure (``--max-restarts``), and only if OUT holds a checkpoint of
    a run with the settings given, i.e. the run this same command started before the failure. Any
    other run in OUT is refused as ever: a restart must never take over a run it did not start."""
    if launch.restarts() == 0 or out is None or not (out / "trainer.pt").is_file():
        return False
    from .checkpoint import run_configs

    _, saved = run_configs(out)
    return saved is not None and saved.replace(**given) == saved


def _need_out_under_torchrun(out: Path | None) -> None:
    if launch.launched_by_torchrun() and out is None:
        raise ValueError("--out is needed under torchrun: every process must name the same run folder")


def _distributed(run: Any) -> Any:
    """Run training, then end the process group (waiting for every rank when it went well)."""
    from .hardware import distributed

    if launch.restart_store_hazard() and launch.is_main():
        logging.getLogger("charlm").warning(
            "charlm: note: with torchrun --max-restarts, restarted workers can find the failed attempt's "
            "addresses in the store torchrun's agent shares with them, and fail or hang (as in "
            "pytorch/pytorch#135712): use --rdzv-backend c10d and set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
            "for torchrun (docs/distributed.md)")
    try:
        result = run()
        distributed.teardown(wait_for_all=True)
    finally:
        distributed.teardown()
    return result


def _report_training(result: Any) -> int:
    if not launch.is_main():
        return 0  # under torchrun, rank 0 reports
    val = f", validation perplexity {result.val.perplexity:.2f}" if result.val else ""
    print(f"perplexity {result.perplexity:.1f}, {result.tokens_per_sec:.1f} tokens/sec on "
          f"{result.device}{val}")
    print(f"run saved in {result.run_dir}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .checkpoint import describe_weights, load
    from .generation import GenerateConfig, generate, stream
    from .hardware.device import resolve_device

    config = GenerateConfig(**settings_given(args, GenerateConfig))  # bad values fail before loading
    run = load(_or_english(args.run), which=args.which, device=resolve_device(args.device))
    prefix = args.prefix if args.prefix is not None else run.prefix
    if args.prefix is None and not prefix:
        raise ValueError("--prefix is needed: the run records no prefix to start from")
    if args.out is not None and args.out.exists() and not args.force:
        raise ValueError(f"--out {args.out}: already exists (use --force to overwrite)")
    if config.num_samples > 1 or args.out is not None:  # each sample whole, a blank line between them
        logging.getLogger("charlm").info("weights: %s", describe_weights(run.weights))
        text = "\n\n".join(generate(run.model, run.vocab, prefix, config, token=run.token)) + "\n"
        if args.out is None:
            sys.stdout.write(text)
        else:
            _write_output(str(args.out), text.encode("utf-8"), force=True)
            logging.getLogger("charlm").info("wrote %d sample(s) to %s", config.num_samples, args.out)
        return 0
    sep = " " if run.token == "word" else ""
    steps = iter(stream(run.model, run.vocab, prefix, config, token=run.token))
    first = next(steps, None)  # notes about the prefix come out now, not inside the text
    logging.getLogger("charlm").info("weights: %s", describe_weights(run.weights))
    sys.stdout.write(prefix)  # one sample: print tokens as they come
    for (tok,) in itertools.chain([first] if first else [], steps):
        sys.stdout.write(sep + tok)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_run

    if args.run is None and args.corpus is None:
        raise ValueError("RUN or --corpus is needed: give a run to score on its own text, or --corpus FILE "
                         "to score a text with charlm's English model")
    result, token, what = evaluate_run(_or_english(args.run), corpus=args.corpus, split=args.split,
                                       which=args.which, device=args.device,
                                       encoding=getattr(args, "encoding", None),
                                       errors=getattr(args, "errors", None),
                                       keep_boilerplate=getattr(args, "keep_boilerplate", None))
    unit = "character" if token == "char" else "token"
    if args.json:
        print(json.dumps({"perplexity": result.perplexity, f"bits_per_{unit}": result.bits_per_token,
                          "loss": result.loss, "num_tokens": result.num_tokens, "data": what}))
    else:
        print(f"perplexity {result.perplexity:.3f}, {result.bits_per_token:.3f} bits per {unit} "
              f"on {result.num_tokens} tokens of {what}")
    return 0


def _write_output(name: str, data: bytes, force: bool) -> None:
    """stdout, or the file written whole (a temporary file renamed), never half."""
    _streamed_output(name, force, lambda f: f.write(data), name_the_file=True)


def _check_paths(args: argparse.Namespace) -> None:
    if args.input != "-" and args.output != "-" and Path(args.input).resolve() == Path(args.output).resolve():
        raise ValueError("input and output are the same file")


def _progress_bar(args: argparse.Namespace, what: str):
    """A tqdm bar on a terminal's stderr for long inputs; None otherwise."""
    if args.quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc=what, file=sys.stderr, leave=False,
               mininterval=0.5)

    def update(done: int, total: int | None) -> None:  # total None: not known (a pipe)
        if bar.total != total:
            bar.total = total
        bar.n = done
        if done == total or done % 4096 < 8:
            bar.refresh()

    return update, bar.close


def _report(verb: str, original: int, archive: int, seconds: float) -> None:
    bpb = 8 * archive / original if original else 0.0
    print(f"charlm: {verb} {original} bytes <-> {archive} bytes, {bpb:.3f} bits per byte, "
          f"{seconds:.1f} s, {original / 1000 / max(seconds, 1e-9):.1f} KB/s", file=sys.stderr)


def cmd_compress(args: argparse.Namespace) -> int:
    from .compression import CompressSettings, compress_stream
    from .compression.codec import resolved

    _check_paths(args)
    given = settings_given(args, CompressSettings)
    settings = CompressSettings.of(**given)
    if args.run is not None:
        if args.online:
            raise ValueError("--online and --run choose two different modes; give one")
        resolved(settings, args.run)  # the mode's rules (flags of the online network), before any file
        if not args.run.is_dir():
            raise ValueError(f"--run {args.run}: no such run folder")
    if args.output == "-" and sys.stdout.isatty():
        raise ValueError("refusing to write an archive to a terminal; give a file or redirect stdout")
    return _transform(args, "compress", lambda source, sink, progress: compress_stream(
        source, sink, run=args.run, settings=settings, progress=progress, chunk_size=args.chunk_size))


def cmd_decompress(args: argparse.Namespace) -> int:
    from .compression import decompress_stream

    _check_paths(args)
    return _transform(args, "decompress", lambda source, sink, progress: decompress_stream(
        source, sink, run=args.run, progress=progress))


@contextlib.contextmanager
def _opened_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    if Path(name).is_dir():
        raise ValueError(f"{name}: is a folder, not a file")
    with open(name, "rb") as f:
        yield f


def _streamed_output(name: str, force: bool, write: Callable[[BinaryIO], None],
                     name_the_file: bool = False) -> None:
    """stdout as it comes, or a file written through a temporary file beside it and renamed at the
    end: an error part way removes it, and never leaves half a file under the output's name.
    `name_the_file`: an OSError says it could not write the file (not for a `write` that computes
    as it goes: its own OSErrors, such as no C compiler, say what they say)."""
    if name == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    from .checkpoint import atomic_write, save_file

    path = Path(name)
    if path.exists() and not force:
        raise ValueError(f"{name}: already exists (use --force to overwrite)")
    (save_file if name_the_file else atomic_write)(path, write)


def _transform(args: argparse.Namespace, verb: str, fn) -> int:
    """Stream the input through `fn` into the output under a progress bar; report on stderr."""
    progress, close = _progress_bar(args, verb)
    sizes: list[tuple[int, int]] = []
    start = time.perf_counter()
    try:
        with _opened_input(args.input) as source:
            _streamed_output(args.output, args.force, lambda sink: sizes.append(fn(source, sink, progress)))
    finally:
        close()
    seconds = time.perf_counter() - start
    if not args.quiet:
        (original, archive), = sizes
        _report(f"{verb}ed", original, archive, seconds)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    from .serve import open_server

    try:
        local = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        if args.host != "localhost":
            raise ValueError(f"--host {args.host}: give an IP address to listen on, such as 127.0.0.1 "
                             f"(this machine only) or 0.0.0.0 (every network)") from None
        local = True
    try:
        server = open_server(args.runs or [_or_english(None)], host=args.host, port=args.port,
                             which=args.which)
    except OSError as err:
        raise ValueError(f"--port {args.port}: cannot listen on {args.host}:{args.port}: "
                         f"{err.strerror or err}") from None
    if not local:
        logging.getLogger("charlm").warning("charlm: note: --host %s: anyone who can reach this machine "
                                            "can use the page", args.host)
    names = ", ".join(f"{key} = {run.path}" for key, run in server.explorer.runs.items())
    print(f"charlm serve: {server.url}  ({names}; Ctrl-C stops)", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    logging.getLogger("charlm").info("stopped")
    return 0


# name: (help, parser builder, command)
COMMANDS: dict[str, tuple[str, Any, Any]] = {
    "corpora": ("list the named corpora and whether they are available offline", lambda p: None, cmd_corpora),
    "recipes": ("list the training recipes (the book's experiments)", lambda p: None, cmd_recipes),
    "info": ("this machine, and what charlm chooses on it (precision, threads, kernels), with the reasons",
             _info_parser, cmd_info),
    "train": ("train a model (defaults: the book's RNN on The Time Machine)", _train_parser, cmd_train),
    "resume": ("continue a saved run exactly where it stopped", _resume_parser, cmd_resume),
    "generate": ("write text after a prefix with a trained run", _generate_parser, cmd_generate),
    "evaluate": ("perplexity and bits per token of a run on held-out text", _evaluate_parser, cmd_evaluate),
    "serve": ("a local web page to read, write with and look inside trained runs", _serve_parser,
              cmd_serve),
    "compress": ("compress a file losslessly with a language model", _compress_parser, cmd_compress),
    "decompress": ("restore a file from a charlm archive", _decompress_parser, cmd_decompress),
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
    from .checkpoint import CheckpointError
    from .data.corpora import CorpusError
    from .training.loop import TrainingDiverged, TrainingInterrupted

    try:
        return COMMANDS[args.command][2](args)
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
