"""The `charlm` command line: a thin layer over the Python API.

This is the only module that parses argv, prints or exits. A user error (bad flag value, missing
file, unknown corpus, damaged run folder) prints one line and exits 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .suggest import did_you_mean

EXAMPLES = """examples:
  charlm train                                   the book's RNN on The Time Machine (500 epochs)
  charlm train --model lstm --num-hiddens 256 --epochs 100 --out runs/lstm
  charlm train --corpus my_book.txt --clean raw --max-tokens -1 --impl builtin --model gru
  charlm generate runs/lstm --prefix "time traveller" --num-preds 200 --temperature 0.8
  charlm evaluate runs/lstm --split val
  charlm compress book.txt book.chlm --online    lossless: a byte model learns while it codes
  charlm decompress book.chlm book.txt
"""

# Help for every training flag: units, defaults and what the sentinels mean.
TRAIN_HELP = {
    "corpus": "corpus name (see `charlm corpora`) or path of a UTF-8 text file",
    "clean": "cleaning: d2l (letters only, lowercase: the book's), lower (punctuation kept), "
             "lyrics (newlines to spaces), raw (untouched), lines (untouched, one <eos> line each)",
    "token": "tokens: char or word",
    "max-tokens": "keep the first N training tokens (the book: 10000); -1 = all",
    "eos": "word tokens: add <eos> after every line",
    "encoding": "text encoding of a user file (default UTF-8)",
    "model": "recurrent cell: rnn, gru or lstm",
    "impl": "scratch (the book's equations, fast), book (the book's step-by-step loop) or builtin (torch.nn)",
    "num-hiddens": "hidden units per layer",
    "num-layers": "stacked recurrent layers",
    "embedding": "learned embedding width; omit for one-hot input (the book's)",
    "activation": "RNN activation: tanh or relu",
    "dropout": "dropout between recurrent layers, in [0, 1)",
    "dropout-input": "dropout on the first layer's inputs (embeddings or one-hot rows), in [0, 1)",
    "dropout-output": "dropout on the top layer's outputs, before the output layer, in [0, 1)",
    "dropout-embedding": "probability of dropping a whole embedding row (a token type) per batch, "
                         "in [0, 1); needs --embedding (AWD-LSTM)",
    "locked-dropout": "variational dropout: --dropout-input, --dropout and --dropout-output keep one mask "
                      "per sequence for all time steps (Gal & Ghahramani 2016)",
    "weight-drop": "DropConnect on the hidden-to-hidden weights, a fresh mask per batch, in [0, 1) "
                   "(AWD-LSTM)",
    "tie-weights": "share the embedding matrix with the output layer (Press & Wolf 2017); "
                   "needs --embedding equal to --num-hiddens",
    "init": "builtin weights: default (torch.nn's) or normal (N(0, 0.01^2), zero biases)",
    "batch-size": "sequences per mini-batch",
    "num-steps": "BPTT length in tokens",
    "sampling": "mini-batches: sequential (state carried across batches) or random (state reset)",
    "random-offset": "start each epoch's batches at a random offset (the English edition); "
                     "--no-random-offset always starts at token 0 (the Chinese edition)",
    "reset-state": "begin every batch from a zero state even with sequential batches (the book's "
                   "use_random_iter=True on its sequential loader)",
    "detach": "detach the state between batches (truncated BPTT); --no-detach backpropagates "
              "through the whole epoch: one update per epoch, memory grows with the epoch",
    "epochs": "epochs in total (with --resume: including those already done)",
    "lr": "learning rate",
    "optimizer": "sgd (the book's p -= lr * grad), adam or adamw",
    "weight-decay": "L2 weight decay",
    "lr-schedule": "none, step (x lr-gamma every lr-step epochs), plateau (on validation loss) or cosine "
                   "(per step: --warmup-steps, then down to --min-lr by the end of --epochs / --max-minutes)",
    "lr-step": "epochs between step decays; for plateau, evaluations without improvement",
    "lr-gamma": "learning-rate decay factor, in (0, 1]",
    "warmup-steps": "cosine schedule: optimizer steps of linear warm-up from 0 to --lr",
    "min-lr": "cosine schedule: the learning rate at the end of the run",
    "clip": "clip gradients to this global L2 norm; 0 = off",
    "seed": "random seed (same seed, same machine, same thread count: same losses; CHARLM_THREADS=N "
            "fixes the count, which otherwise follows the machine's load)",
    "device": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps",
    "precision": "auto (bf16 where the device computes it in hardware: AVX-512 BF16, AMX, a CUDA GPU "
                 "of compute capability 8.0+; else fp32), fp32, or bf16 (autocast); `charlm info` says "
                 "what auto picks here",
    "eval-every": "epochs between validations; 0 = only at the end",
    "sample-every": "epochs between samples after --prefix; 0 = never",
    "prefix": "text that starts each sample (default: the book's for its corpora)",
    "num-preds": "tokens per sample",
    "save-every": "epochs between checkpoints (also at best validation, at the end, on Ctrl-C)",
    "val-rows": "score the validation text as this many rows at once (1 = exact, one pass; 16 = ~4x faster)",
    "patience": "stop after this many validations without a better loss (best.safetensors kept); 0 = off",
    "max-minutes": "stop after this many minutes of wall-clock time, then validate and save; 0 = no limit",
}


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        flag = f.name.replace("_", "-")
        kind = type(f.default) if f.default is not None else (int if f.name == "embedding" else str)
        # SUPPRESS: only flags the user typed reach the namespace, so recipes and --resume can
        # tell them from defaults.
        opts: dict[str, Any] = {"default": argparse.SUPPRESS,
                                "help": f"{TRAIN_HELP[flag]} (default: {f.default})"}
        if kind is bool:
            parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, **opts)
        else:
            parser.add_argument(f"--{flag}", type=kind, metavar=kind.__name__.upper(), **opts)
    parser.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                        default=argparse.SUPPRESS, help="the same as --precision bf16")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr and exit 2, like every other user
    error (argparse's own prints the whole usage first). Subcommands' parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if wrong:  # a misspelled command or choice: name the closest one
            choices = [c.strip(" '") for c in wrong[2].split(",")]
            message += did_you_mean(wrong[1], choices)
        self.exit(2, f"charlm: error: {message} (see `{self.prog} --help`)\n")


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
    add = sub.add_parser
    sub.add_parser = lambda *a, **k: add(*a, parents=[common], **k)  # type: ignore[method-assign]

    sub.add_parser("corpora", help="list the named corpora and whether they are available offline")
    sub.add_parser("recipes", help="list the training recipes (the book's experiments)")
    info = sub.add_parser("info", help="this machine, and what charlm chooses on it (precision, threads, "
                          "kernels), with the reasons")
    info.add_argument("--json", action="store_true", help="one JSON object instead of the table")

    train = sub.add_parser("train", help="train a model (defaults: the book's RNN on The Time Machine)",
                           epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--out", type=Path, help="run folder (default: runs/<time>-<model>)")
    train.add_argument("--recipe", metavar="NAME",
                       help="start from a named setup (see `charlm recipes`); flags given override it")
    train.add_argument("--resume", type=Path, metavar="RUN",
                       help="continue a saved run exactly; --epochs then counts all epochs")
    _add_train_flags(train)

    gen = sub.add_parser("generate", help="write text after a prefix with a trained run")
    gen.add_argument("run", type=Path, help="run folder")
    gen.add_argument("--prefix", default=None, help="text to start from (default: the run's sample prefix)")
    gen.add_argument("--num-preds", type=int, default=100, help="tokens to generate (default: 100)")
    gen.add_argument("--greedy", action="store_true", help="always the most likely token (the book's)")
    gen.add_argument("--temperature", type=float, default=1.0,
                     help="sampling temperature; 0 = greedy; sampling from p^alpha is 1/alpha (default: 1)")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely; 0 = off")
    gen.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]; 1 = off")
    gen.add_argument("--num-samples", type=int, default=1, help="independent samples (default: 1)")
    gen.add_argument("--seed", type=int, default=None, help="random seed (default: fresh each run)")
    gen.add_argument("--strict", action="store_true", help="unknown prefix tokens are an error")
    gen.add_argument("--which", choices=("best", "last"), default="best",
                     help="weights: best (the best validation loss, where the run kept them; else the "
                          "last) or last (default: best)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")

    ev = sub.add_parser("evaluate", help="perplexity and bits per token of a run on held-out text")
    ev.add_argument("run", type=Path, help="run folder")
    ev.add_argument("--corpus", default=None, help="corpus name or text file (default: the run's)")
    ev.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                    help="split of the corpus (default: val for the run's corpus, all for another)")
    ev.add_argument("--which", choices=("best", "last"), default="best",
                    help="weights: best (the best validation loss, where the run kept them; else the "
                         "last) or last (default: best)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")

    comp = sub.add_parser("compress", help="compress a file losslessly with a language model")
    comp.add_argument("input", help="file to compress, or - for stdin")
    comp.add_argument("output", help="archive to write, or - for stdout")
    how = comp.add_mutually_exclusive_group(required=True)
    how.add_argument("--model", type=Path, metavar="RUN", help="a trained character run (pretrained mode)")
    how.add_argument("--online", action="store_true",
                     help="no trained model: a byte-level model learns while it codes")
    _add_compress_flags(comp)
    comp.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")

    dec = sub.add_parser("decompress", help="restore a file from a charlm archive")
    dec.add_argument("input", help="archive, or - for stdin")
    dec.add_argument("output", help="file to write, or - for stdout")
    dec.add_argument("--model", type=Path, metavar="RUN", help="the run the archive was made with, if any")
    dec.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    return parser


COMPRESS_HELP = {
    "lanes": "parts of the input coded side by side (faster, larger); 0 = 1 online, 8 with --model",
    "block": "symbols per lane between two updates of the model",
    "lr": "Adam's learning rate of the network while coding; 0 = the network does not learn",
    "mix_lr": "Adam's learning rate of the weights mixing the network and the context experts (per symbol)",
    "orders": "context orders mixed with the network, comma-separated; 'none' = the network alone",
    "match": "context length of the match expert (follows earlier text that repeats); 0 = off",
    "words": "word experts: 0, 1 (the word so far) or 2 (and the word before it)",
    "limit": "a context's counts halve when one reaches this (recent text weighs more)",
    "rows": "hashed rows per context expert (a power of two)",
    "total": "frequency total of the arithmetic coder",
    "threads": "torch threads (the decoder uses the same)",
    "cell": "online mode: rnn, gru or lstm",
    "hidden": "online mode: hidden units",
    "layers": "online mode: recurrent layers",
    "embedding": "online mode: byte embedding width",
    "seed": "online mode: seed of the initial weights",
}


def _orders(text: str) -> tuple[int, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected orders like 1,2,3,4,5,6 or none, got {text!r}") from None


def _add_compress_flags(parser: argparse.ArgumentParser) -> None:
    from .compression import CompressSettings

    for f in dataclasses.fields(CompressSettings):
        kind = _orders if f.name == "orders" else float if f.name == "lr" else type(f.default)
        shown = ",".join(map(str, f.default)) if f.name == "orders" else \
            "2.5e-3 online, 3e-4 with --model" if f.name == "lr" else f.default
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=argparse.SUPPRESS,
                            metavar="K,K" if f.name == "orders" else kind.__name__.upper(),
                            help=f"{COMPRESS_HELP[f.name]} (default: {shown})")


def cmd_corpora(args: argparse.Namespace) -> int:
    from .corpora import CORPORA, embedded_file, is_cached

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
    """A setting as the command line would give it: ``--max-tokens -1``, ``--bf16``, ``--no-detach``."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def cmd_recipes(args: argparse.Namespace) -> int:
    from .config import load_recipe, recipe_names

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
    from . import distributed
    from .config import check_recipe_device, from_recipe
    from .train import train

    given = {k.replace("-", "_"): v for k, v in vars(args).items() if k not in _GLOBAL_ARGS}
    if distributed.launched_by_torchrun() and args.resume is None and args.out is None:
        raise ValueError("--out is needed under torchrun: every process must name the same run folder")
    try:
        if args.resume is not None:
            result = train(resume=args.resume, **given)
        else:
            if args.recipe:
                check_recipe_device(args.recipe, given)
            config = from_recipe(args.recipe, **given)
            name = args.recipe or config.model
            out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
            result = train(config, out=out)
        distributed.teardown(wait_for_all=True)
    finally:
        distributed.teardown()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    val = f", validation perplexity {result.val.perplexity:.2f}" if result.val else ""
    print(f"perplexity {result.perplexity:.1f}, {result.tokens_per_sec:.1f} tokens/sec on "
          f"{result.device}{val}")
    print(f"run saved in {result.run_dir}")
    return 0


_GLOBAL_ARGS = {"command", "debug", "quiet", "out", "resume", "recipe"}


def cmd_generate(args: argparse.Namespace) -> int:
    from .checkpoint import describe_weights, load
    from .config import DEFAULT_PREFIXES
    from .device import resolve_device
    from .generate import GenerateConfig, generate, stream

    run = load(args.run, which=args.which, device=resolve_device(args.device))
    train_cfg = run.config.get("train", {})
    prefix = args.prefix if args.prefix is not None else (
        train_cfg.get("prefix") or DEFAULT_PREFIXES.get(train_cfg.get("corpus"), ""))
    if args.prefix is None and not prefix:
        raise ValueError("--prefix is needed: the run records no prefix to start from")
    try:
        config = GenerateConfig(num_preds=args.num_preds, greedy=args.greedy, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, num_samples=args.num_samples,
                                seed=args.seed, strict=args.strict)
    except ValueError as err:  # "top_p must be ..." -> "--top-p must be ...": name the flag
        field, _, rest = str(err).partition(" ")
        raise ValueError(f"--{field.replace('_', '-')} {rest}") from None
    if config.num_samples > 1:  # several samples: print each whole, separated by a blank line
        logging.getLogger("charlm").info("weights: %s", describe_weights(run.weights))
        print("\n\n".join(generate(run.model, run.vocab, prefix, config, token=run.token)))
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
    from .evaluate import evaluate_run

    result, token, what = evaluate_run(args.run, corpus=args.corpus, split=args.split,
                                       which=args.which, device=args.device)
    unit = "character" if token == "char" else "token"
    print(json.dumps({"perplexity": result.perplexity, f"bits_per_{unit}": result.bits_per_token,
                      "loss": result.loss, "num_tokens": result.num_tokens, "data": what}))
    print(f"perplexity {result.perplexity:.3f}, {result.bits_per_token:.3f} bits per {unit} "
          f"on {result.num_tokens} tokens of {what}")
    return 0


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if path.is_dir():
        raise ValueError(f"{name}: is a folder, not a file")
    return path.read_bytes()


def _write_output(name: str, data: bytes, force: bool) -> None:
    """stdout, or the file written whole (a temporary file renamed), never half."""
    if name == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from .checkpoint import save_file

    path = Path(name)
    if path.exists() and not force:
        raise ValueError(f"{name}: already exists (use --force to overwrite)")
    save_file(path, lambda f: f.write(data))


def _check_paths(args: argparse.Namespace) -> None:
    if args.input != "-" and args.output != "-" and Path(args.input).resolve() == Path(args.output).resolve():
        raise ValueError("input and output are the same file")


def _progress_bar(args: argparse.Namespace, what: str):
    """A tqdm bar on a terminal's stderr for long inputs; None otherwise."""
    if args.quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="sym", unit_scale=True, desc=what, file=sys.stderr, leave=False,
               mininterval=0.5)

    def update(done: int, total: int) -> None:
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
    from .compression import CompressSettings, compress

    _check_paths(args)
    names = {f.name for f in dataclasses.fields(CompressSettings)}
    try:
        settings = CompressSettings(**{k: v for k, v in vars(args).items() if k in names})
    except ValueError as err:  # "lanes must be ..." -> "--lanes must be ...": name the flag
        raise ValueError(f"--{err}") from None
    if args.model is not None:
        online_only = sorted(set(vars(args)) & {"cell", "hidden", "layers", "embedding", "seed"})
        if online_only:
            raise ValueError(f"--{online_only[0]} shapes the online model; a --model run brings its own")
        if not args.model.is_dir():
            raise ValueError(f"--model {args.model}: no such run folder")
    if args.output == "-" and sys.stdout.isatty():
        raise ValueError("refusing to write an archive to a terminal; give a file or redirect stdout")
    return _transform(args, "compress", lambda data, progress: compress(
        data, model=args.model, settings=settings, progress=progress))


def cmd_decompress(args: argparse.Namespace) -> int:
    from .compression import decompress

    _check_paths(args)
    return _transform(args, "decompress", lambda archive, progress: decompress(
        archive, model=args.model, progress=progress))


def _transform(args: argparse.Namespace, verb: str, fn) -> int:
    """Read the input, run `fn` under a progress bar, write the output whole, report on stderr."""
    given = _read_input(args.input)
    progress, close = _progress_bar(args, verb)
    start = time.perf_counter()
    try:
        result = fn(given, progress)
    finally:
        close()
    seconds = time.perf_counter() - start
    _write_output(args.output, result, args.force)
    if not args.quiet:
        original, archive = (given, result) if verb == "compress" else (result, given)
        _report(f"{verb}ed", len(original), len(archive), seconds)
    return 0


COMMANDS = {"corpora": cmd_corpora, "recipes": cmd_recipes, "info": cmd_info, "train": cmd_train,
            "generate": cmd_generate, "evaluate": cmd_evaluate, "compress": cmd_compress,
            "decompress": cmd_decompress}


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
    main_process = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
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
    from .checkpoint import CheckpointError
    from .corpora import CorpusError
    from .train import TrainingDiverged, TrainingInterrupted

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
