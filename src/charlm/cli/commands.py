"""The commands that train, resume, generate, evaluate, serve and list: each a thin layer over the API."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from ..fields import flag
from ..hardware import launch
from .files import write_output
from .parsers import settings_given


def _or_english(run: Path | None) -> Path:
    """The RUN given, or charlm's English model, said in one line: a command that needs a model
    works before anything is trained."""
    if run is not None:
        return run
    logging.getLogger("charlm").info("no RUN given: using english, charlm's general English model "
                                     "(docs/english.md)")
    return Path("english")



def cmd_corpora(args: argparse.Namespace) -> int:
    from ..data.corpora import CORPORA, embedded_file, is_cached

    for name, spec in CORPORA.items():
        where = is_cached(name)
        status = f"available: {where}" if where else f"not cached: downloads from {spec.url}"
        if where and where == embedded_file(spec):
            status = f"available: shipped with charlm ({where})"
        print(f"{name:18} {spec.description}\n{'':18} {status}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..info import format_report, report

    data = report()
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 0


def _as_flag(name: str, value: Any) -> str:
    """A setting as the command line would give it: ``--max-tokens -1``, ``--no-detach``."""
    if isinstance(value, bool):
        return flag(name) if value else f"--no-{flag(name)[2:]}"
    return f"{flag(name)} {value}"


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..config import load_recipe, recipe_names

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
    from ..config import TrainConfig, check_recipe_device, default_recipe, from_recipe
    from ..training import auto
    from ..training.run import train

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
    from ..training.run import RESUMABLE

    return _report_training(_resume(args.run, {k: v for k, v in vars(args).items() if k in RESUMABLE}))


def _resume(run: Path, changes: dict[str, Any]):
    from ..training.run import resume

    return _distributed(lambda: resume(run, **changes))


def continue_after_restart(out: Path | None, given: dict[str, Any]) -> bool:
    """Whether `charlm train --out OUT` continues the run in OUT instead of starting one: only in workers
    that torchrun restarted after a failure (``--max-restarts``), and only if OUT holds a checkpoint of
    a run with the settings given, i.e. the run this same command started before the failure. Any
    other run in OUT is refused as ever: a restart must never take over a run it did not start."""
    if launch.restarts() == 0 or out is None or not (out / "trainer.pt").is_file():
        return False
    from ..checkpoint import run_configs

    _, saved = run_configs(out)
    return saved is not None and saved.replace(**given) == saved


def _need_out_under_torchrun(out: Path | None) -> None:
    if launch.launched_by_torchrun() and out is None:
        raise ValueError("--out is needed under torchrun: every process must name the same run folder")


def _distributed(run: Any) -> Any:
    """Run training, then end the process group (waiting for every rank when it went well)."""
    from ..hardware import distributed

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
    from ..checkpoint import describe_weights, load
    from ..generation import GenerateConfig, generate, stream
    from ..hardware.device import resolve_device

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
            write_output(str(args.out), text.encode("utf-8"), force=True)
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
    from ..evaluation import evaluate_run

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


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export

    if args.output.exists() and not args.force:
        raise ValueError(f"{args.output}: already exists (use --force to overwrite)")
    out = export(args.run, args.output, which=args.which)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    from ..serve import open_server

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

