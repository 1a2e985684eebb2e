"""The grid the `auto` recipe of `charlm train PATH` is to be fitted on (issue: your own text).

Every run trains a character LSTM on one text for a fixed wall-clock budget and is scored by the
exact validation loss of its best weights. The grid crosses texts of several sizes with model
widths, depths and dropouts, then batch shapes, and appends one JSON line per run to a results file:
a run already there is skipped, so the grid can be filled in over several sessions. Run nothing else
while it measures: the budget is wall-clock time.

    python -m benchmarks.auto_grid --texts timemachine --minutes 2
    python -m benchmarks.auto_grid --stage batch --texts shakespeare-1m --minutes 10
    python -m benchmarks.auto_grid --table          # what the results file holds, best first per text
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

from charlm import TrainConfig, train
from charlm.config import from_recipe
from charlm.data.textfiles import read_file_text
from charlm.evaluation import evaluate_run
from charlm.hardware import machine
from charlm.training import auto

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "auto-grid.jsonl"

# name -> (files of CHARLM_DATA joined in order, characters kept from the start; None = all)
TEXTS = {
    "shakespeare-100k": (["tinyshakespeare.txt"], 100_000),
    "timemachine": (["timemachine.txt"], None),
    "war-of-the-worlds": (["36-0.txt"], None),
    "shakespeare-1m": (["tinyshakespeare.txt"], None),
    "three-books": (["timemachine.txt", "36-0.txt", "tinyshakespeare.txt"], None),
    # other kinds: Chinese lyrics (60,000 characters, 2,500 of them distinct), and 5 MB of news
    "jaychou": (["jaychou_lyrics.txt.zip:jaychou_lyrics.txt"], None),
    "ptb-5m": (["ptb.zip:ptb/ptb.train.txt"], None),
}
# What every run shares: the 10-minute recipe's optimisation, on the user's raw text.
COMMON = dict(clean="raw", max_tokens=-1, cell="lstm", impl="builtin", embedding=64, optimizer="adamw",
              lr=3e-3, weight_decay=0.01, lr_schedule="cosine", warmup_steps=50, min_lr=1e-4,
              epochs=1_000_000, eval_every=1, val_rows=16, sample_every=0, save_every=1, device="cpu")
# Stage "model": widths x depths x dropout, at one batch shape; stage "batch": batch shapes.
MODELS = [dict(num_hiddens=h, num_layers=n, dropout=r if n > 1 else 0.0, dropout_output=r,
               batch_size=32, num_steps=128)
          for h, n, r in itertools.product((128, 256, 512), (1, 2), (0.0, 0.2, 0.4))]
BATCHES = [dict(batch_size=b, num_steps=t) for b, t in ((16, 64), (32, 64), (32, 256), (64, 128))]


def model_spec(spec: str) -> dict:
    """``"512x2:0.2"`` -> a 2 x 512 LSTM with dropout 0.2 between layers and on the output, batch 32 x 128:
    one point of the model grid, for a search that starts from a few sizes and refines around the best."""
    size, _, rate = spec.partition(":")
    width, _, depth = size.partition("x")
    num_hiddens, num_layers, r = int(width), int(depth or 1), float(rate or 0)
    return dict(num_hiddens=num_hiddens, num_layers=num_layers, dropout=r if num_layers > 1 else 0.0,
                dropout_output=r, batch_size=32, num_steps=128)


def read_member(data: Path, name: str) -> str:
    """A file of the data folder, or ``archive.zip:member``, as text."""
    archive, _, member = name.partition(":")
    if not member:
        return read_file_text(data / archive)
    with zipfile.ZipFile(data / archive) as z:
        return z.read(member).decode("utf-8")


def make_text(name: str, data: Path, folder: Path) -> Path:
    files, keep = TEXTS[name]
    text = "".join(read_member(data, f) for f in files)
    path = folder / f"{name}.txt"
    path.write_text(text[:keep] if keep else text, encoding="utf-8")
    return path


def done(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    return [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line]


def key(record: dict) -> tuple:
    return record["text"], record["minutes"], json.dumps(record["settings"], sort_keys=True)


def config_for(path: Path, settings: dict, minutes: float) -> tuple[TrainConfig, dict]:
    """The run of one grid point: `settings` over what every run shares; or, for the settings
    ``{"recipe": "auto"}``, what `charlm train PATH --max-minutes M` chooses, and for
    ``{"recipe": NAME}``, a shipped recipe on this text with this budget. Returns the config and
    the settings chosen, for the record."""
    recipe = settings.get("recipe")
    if recipe == "auto":
        config, choice, _ = auto.configure({"corpus": str(path), "max_minutes": minutes, "device": "cpu"})
        chosen = {k: choice.settings[k] for k in ("num_hiddens", "num_layers", "dropout", "dropout_output",
                                                  "batch_size", "num_steps")}
        return config, {**chosen, "line": auto.describe(choice, config)}
    if recipe:  # the recipe's model for the precision this machine trains in
        config = from_recipe(recipe, corpus=str(path), max_minutes=minutes, device="cpu")
        model = config.model
        return config, {"num_hiddens": model.num_hiddens, "num_layers": model.num_layers,
                        "dropout": model.dropout, "dropout_output": model.dropout_output,
                        "batch_size": config.batch_size, "num_steps": config.num_steps}
    return TrainConfig.of(corpus=str(path), max_minutes=minutes, **COMMON, **settings), {}


def run_one(name: str, path: Path, settings: dict, minutes: float, folder: Path) -> dict:
    start = time.perf_counter()
    out = folder / "run"
    config, chosen = config_for(path, settings, minutes)
    result = train(config, out=out)
    score, _, _ = evaluate_run(out, split="val", device="cpu")  # exact: one row, the best weights
    facts = machine.probe()
    scored = [r for r in result.history if "val_loss" in r]
    best = min(scored, key=lambda r: r["val_loss"]) if scored else {"epoch": len(result.history)}
    # Where the best weights were and how far training went: an early best with a low training loss
    # is a model that memorised the text; a best at the end, one that ran out of time.
    return {"text": name, "chars": len(path.read_text(encoding="utf-8")), "minutes": minutes,
            "settings": settings, "val_bpc": round(score.bits_per_token, 4), "epochs": len(result.history),
            "best_epoch": best["epoch"],
            "train_bpc": round(result.history[-1]["train_loss"] / math.log(2), 4),
            "params": sum(p.numel() for p in result.model.parameters()), "vocab_size": len(result.vocab),
            # the median epoch's speed: a run that shared the CPU shows here
            "tokens_per_sec": round(statistics.median(r["tokens_per_sec"] for r in result.history)),
            **({"chosen": chosen} if chosen else {}),
            "seconds": round(time.perf_counter() - start, 1), "machine": facts.cpu_model,
            "cores": facts.cores, "precision": machine.choose_precision("auto", facts, "cpu").value}


def table(records: list[dict]) -> str:
    """The grid as docs/auto.md shows it: each text and budget, best first, the auto recipe's and
    the 10-minute recipe's runs marked."""
    lines = ["| machine | text | minutes | run | model | dropout | batch | passes (best at) | "
             "validation bits/char | behind the best |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (where, name, minutes), runs in sorted(_by_text(records).items()):
        best = min((r["val_bpc"] for r in runs if "recipe" not in r["settings"]), default=math.inf)
        for r in sorted(runs, key=lambda r: r["val_bpc"]):
            s = {**r["settings"], **r.get("chosen", {})}
            run = s.get("recipe", "grid")
            model = f"{s['num_layers']} x {s['num_hiddens']}"
            dropout = f"{s['dropout']:g} / {s['dropout_output']:g}"
            batch = f"{s['batch_size']} x {s['num_steps']}"
            at = f" ({r['best_epoch']})" if "best_epoch" in r else ""
            behind = f"{100 * (r['val_bpc'] / best - 1):+.1f} %" if best < math.inf else "-"
            lines.append(f"| {where} | {name} | {minutes:g} | {run} | {model} | {dropout} | {batch} | "
                         f"{r['epochs']}{at} | {r['val_bpc']:.4f} | {behind} |")
    return "\n".join(lines)


def replay(records: list[dict]) -> str:
    """What the rules would choose for each text and budget of the grid, at the speeds the grid
    measured for each model (no training): the chosen point, its score if the grid has it, and the
    grid's best. How the rules' constants are fitted: change one, replay, compare."""
    lines = ["| machine | text | minutes | rules choose | its bits/char | grid's best | best bits/char |",
             "|---|---|---|---|---|---|---|"]
    for (where, name, minutes), runs in sorted(_by_text(records).items()):
        grid = [r for r in runs if "recipe" not in r["settings"]]
        speeds = {}
        for r in grid:
            # older records lack the speed: their epochs over their seconds (validations included)
            rate = r.get("tokens_per_sec") or r["epochs"] * r["chars"] * 0.9 / r["seconds"]
            speeds.setdefault((r["settings"]["num_hiddens"], r["settings"]["num_layers"]), []).append(rate)
        if not speeds:
            continue

        def speed(config, speeds=speeds):
            return statistics.median(speeds[config.model.num_hiddens, config.model.num_layers])

        vocab = grid[0].get("vocab_size", 66)
        train_chars = int(grid[0]["chars"] * 0.9)
        ladder = [size for size in auto.LADDER if size in speeds]  # the sizes the grid measured
        choice = auto.choose(train_chars, vocab, minutes, speed, ladder=ladder)
        point = {k: choice.settings[k] for k in ("num_hiddens", "num_layers")}
        rate = choice.settings["dropout_output"]
        same = [r for r in grid if all(r["settings"][k] == v for k, v in point.items())]
        near = min(same, key=lambda r: abs(r["settings"]["dropout_output"] - rate), default=None)
        best = min(grid, key=lambda r: r["val_bpc"])
        shown = f"{point['num_layers']} x {point['num_hiddens']}, dropout {rate:g}"
        found = f"{near['val_bpc']:.4f} (dropout {near['settings']['dropout_output']:g})" if near else "-"
        lines.append(f"| {where} | {name} | {minutes:g} | {shown} | {found} | {_point(best)} | "
                     f"{best['val_bpc']:.4f} |")
    return "\n".join(lines)


def summary(records: list[dict]) -> str:
    """Per text and budget: the grid's best, the auto recipe and the 10-minute recipe, and how far
    the auto recipe is from each (negative: ahead)."""
    lines = ["| machine | text | characters | minutes | grid's best | auto chose | auto | 10-minute recipe | "
             "auto vs best | auto vs recipe |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (where, name, minutes), runs in sorted(_by_text(records).items()):
        grid = [r for r in runs if "recipe" not in r["settings"]]
        autos = [r for r in runs if r["settings"].get("recipe") == "auto"]
        recipes = [r for r in runs if r["settings"].get("recipe") not in (None, "auto")]
        best = min(grid, key=lambda r: r["val_bpc"], default=None)
        auto_run, recipe = (autos or [None])[-1], (recipes or [None])[-1]

        chose = _point({"settings": auto_run["chosen"]}) if auto_run else "-"
        shown_best = f"{_point(best)}: {_bpc(best)}" if best else "-"
        lines.append(f"| {where} | {name} | {runs[0]['chars']:,} | {minutes:g} | {shown_best} | {chose} | "
                     f"{_bpc(auto_run)} | {_bpc(recipe)} | {_versus(auto_run, best)} | "
                     f"{_versus(auto_run, recipe)} |")
    return "\n".join(lines)


def _bpc(record: dict | None) -> str:
    return f"{record['val_bpc']:.4f}" if record else "-"


def _versus(record: dict | None, other: dict | None) -> str:
    return f"{100 * (record['val_bpc'] / other['val_bpc'] - 1):+.1f} %" if record and other else "-"


def _by_text(records: list[dict]) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault((r["machine"], r["text"], r["minutes"]), []).append(r)
    return out


def _point(record: dict) -> str:
    s = {**record["settings"], **record.get("chosen", {})}
    return f"{s['num_layers']} x {s['num_hiddens']}, dropout {s['dropout_output']:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", nargs="*", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--stage", choices=("model", "batch", "auto", "recipe"), default="model",
                        help="model: sizes and dropouts; batch: batch shapes of the best model; auto: what "
                             "the auto recipe chooses; recipe: shakespeare-cpu-10min on the text")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--models", nargs="*", type=model_spec, metavar="WIDTHxDEPTH:DROPOUT",
                        help="stage model: these points instead of the whole grid (512x2:0.2 ...)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--table", action="store_true", help="print the results file as a table and stop")
    parser.add_argument("--summary", action="store_true",
                        help="print the auto recipe against the grid's best and the 10-minute recipe")
    parser.add_argument("--replay", action="store_true",
                        help="print what the rules would choose on each text at the grid's measured speeds")
    args = parser.parse_args()
    if args.table:
        print(table(done(args.results)))
        return
    if args.summary:
        print(summary(done(args.results)))
        return
    if args.replay:
        print(replay(done(args.results)))
        return
    data = Path(os.environ.get("CHARLM_DATA", "../shared/data"))
    seen = {key(r) for r in done(args.results)}
    for name in args.texts:
        grid = args.models or MODELS
        if args.stage == "batch":  # the best model of stage "model" on this text, at other batch shapes
            best = min((r for r in done(args.results) if r["text"] == name and r["minutes"] == args.minutes
                        and "recipe" not in r["settings"]),
                       key=lambda r: r["val_bpc"])
            grid = [{**best["settings"], **shape} for shape in BATCHES]
        if args.stage in ("auto", "recipe"):
            grid = [{"recipe": "auto" if args.stage == "auto" else "shakespeare-cpu-10min"}]
        with tempfile.TemporaryDirectory() as tmp:
            path = make_text(name, data, Path(tmp))
            for settings in grid:
                record = {"text": name, "minutes": args.minutes, "settings": settings}
                if key(record) in seen:
                    continue
                with tempfile.TemporaryDirectory() as run_folder:
                    record = run_one(name, path, settings, args.minutes, Path(run_folder))
                print(json.dumps(record), flush=True)
                with args.results.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
