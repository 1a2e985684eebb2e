"""The speed suite: ``python -m benchmarks`` measures and rewrites docs/benchmarks.md.

    python -m benchmarks                      # every setup, about 10 minutes on 2 CPU cores
    python -m benchmarks --setups lstm-256 --repeats 3 --no-doc    # a quick look
    python -m benchmarks --device cuda        # on a GPU (figures marked with the device)

Training (:mod:`benchmarks.speed`): tokens/s of every variant, interleaved, with the median and the
range over repetitions, the ratio to the book's scratch code and to charlm's ``builtin`` in the same
precision, the achieved GFLOP/s of the dense products, and the memory a step needs.
Ceiling: the GFLOP/s of ``torch.mm`` on this machine at the recurrent product's shape and at
1024^3, fp32 and bf16. Generation (:mod:`benchmarks.generation`): characters/s, one and 64 streams.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

import torch

from charlm.hardware import machine
from charlm.models import native

from . import generation, speed

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
NOTES = "<!-- hand-written analysis below: kept when `python -m benchmarks` rewrites this file -->"


def matmul_gflops(m: int, k: int, n: int, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Median GFLOP/s of ``(m, k) @ (k, n)`` over five timed rounds of about `seconds` / 5."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(10):
        a @ b
    rounds = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 5:
            a @ b
            count += 1
        rounds.append(2 * m * k * n * count / (time.perf_counter() - start) / 1e9)
    return sorted(rounds)[2]


def ceiling_rows(setups: list[speed.Setup]) -> list[str]:
    shapes = {(1024, 1024, 1024)} | {(s.batch_size, s.num_hiddens, s.gates * s.num_hiddens) for s in setups}
    rows = ["| product (m, k) @ (k, n) | fp32 GFLOP/s | bf16 GFLOP/s |", "|---|---|---|"]
    for m, k, n in sorted(shapes):
        rows.append(f"| ({m}, {k}) @ ({k}, {n}) | {matmul_gflops(m, k, n, torch.float32):,.0f} | "
                    f"{matmul_gflops(m, k, n, torch.bfloat16):,.0f} |")
    return rows


def training_rows(setup: speed.Setup, args: argparse.Namespace) -> list[str]:
    names = speed.variants(setup, args.device)
    data = speed.random_batch(setup)
    steps = {name: speed.VARIANTS[name](setup, data) for name in names}
    timings = speed.measure(steps, setup.tokens, repeats=args.repeats, iterations=args.iterations)
    base = timings.get(speed.BASELINE)
    rows = []
    for name in names:
        t = timings[name]
        builtin = timings["charlm builtin bf16" if name.endswith("bf16") else "charlm builtin"]
        gflops = setup.flops() * t.median / setup.tokens / 1e9
        memory = speed.peak_memory_mb(setup, name) if args.memory else float("nan")
        versus_book = f"{t.median / base.median:.2f}x" if base else "-"
        rows.append(f"| {setup.name} | {name} | {t.median:,.0f} ({t.spread[0]:,.0f}-{t.spread[1]:,.0f}) | "
                    f"{versus_book} | {t.median / builtin.median:.2f}x | {gflops:,.0f} | {memory:.1f} |")
        print(rows[-1], flush=True)
    return rows


def generation_rows(args: argparse.Namespace) -> list[str]:
    rows = ["| model | variant | characters/s (range) | vs predict_ch8 |", "|---|---|---|---|"]
    for name in ("rnn-512", "lstm-256"):
        setup = speed.SETUPS[name]
        timings = generation.measure(setup, repeats=args.repeats)
        base = timings["book's predict_ch8"].median
        for variant, t in timings.items():
            rows.append(f"| {name} | {variant} | {t.median:,.0f} ({t.spread[0]:,.0f}-{t.spread[1]:,.0f}) | "
                        f"{t.median / base:.2f}x |")
            print(rows[-1], flush=True)
    growth = generation.memory_growth_mb(speed.SETUPS["rnn-512"])
    rows.append(f"\nResident memory gained between character 1,000 and character 20,000 of one stream "
                f"(rnn-512, `charlm.generation.stream`): {growth:.2f} MiB.")
    return rows


INTRO = [
    "# Benchmarks", "",
    "Written by `python -m benchmarks`: one section per kind of machine measured, each replaced only when "
    "that kind runs the suite again (the header of each names the CPU, its instruction sets, the threads "
    "and the device). Repetitions are interleaved; medians, with the range in brackets.", "",
    "Setups: `rnn-512` is the book's RNN (512 hidden), `gru-256` and `lstm-256` its GRU and LSTM, all "
    "on 28 one-hot tokens, batch 32, 35 steps; `lstm-2x512` is tiny-shakespeare sized (vocabulary 65, "
    "a 64-wide embedding, 2 x 512 LSTM, batch 64, 100 steps). A step is forward, cross-entropy, "
    "backward, clipping to norm 1 and SGD. \"vs charlm builtin\" compares with `impl=\"builtin\"` "
    "(torch.nn) in the same precision. GFLOP/s counts the dense products of a step "
    "(`benchmarks.speed.Setup.flops`), the one-hot product excluded. Step memory: peak resident memory "
    "during a step above what is held between steps, in a fresh process. \"charlm scratch\" runs on "
    "charlm's C++ kernels; \"Python loops\" is the same model on the fallback used where they cannot "
    "be built. `python -m benchmarks.load` measures training beside other processes.", "",
]
_KIND = re.compile(r"<!-- kind: (.*?) -->\n(.*?)<!-- end of kind -->\n", re.S)
# Variables that make this CPU act as a lesser one (oneDNN, MKL and charlm's kernels held to AVX2).
_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY", "CHARLM_KERNELS_TARGET")


def machine_kind(device: str) -> str:
    """The section's title: the device, the CPU and its instruction sets, and any limit set on them."""
    facts = machine.probe()
    kind = f"{device}: {facts.describe_cpu()}"
    if device != "cpu" and facts.cuda:
        kind = f"{device}: {facts.cuda}, beside {facts.describe_cpu()}"
    limits = [f"{k}={os.environ[k]}" for k in _LIMITS if k in os.environ]
    return kind + (f", held to {' '.join(limits)}" if limits else "")


def section(args: argparse.Namespace, training: list[str], ceiling: list[str], gen: list[str]) -> str:
    status = native.build_status()
    built = f"built for {status.target}" if status.built else f"NOT built ({status.reason}): Python loops"
    header = ["| setup | variant | tokens/s (range) | vs book's scratch | vs charlm builtin | GFLOP/s | "
              "step memory MiB |", "|---|---|---|---|---|---|---|"]
    return "\n".join([
        f"## {machine_kind(args.device)}", "",
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}; "
        f"{args.repeats} interleaved repetitions of {args.iterations} training steps per variant; "
        f"C++ kernels {built}.", "",
        "### Training", "", *header, *training, "",
        "### The ceiling: matrix products", "", *ceiling, "",
        "### Generation (greedy, untrained models, 200 characters after a 15-character prefix)", "", *gen, "",
    ])


def document(old: str, kind: str, text: str) -> str:
    """The doc with this kind's section replaced (or added), the other kinds' and the notes kept."""
    tables, _, notes = old.partition(NOTES)
    kinds = dict(_KIND.findall(tables))
    kinds[kind] = text + "\n"
    blocks = [f"<!-- kind: {k} -->\n{body}<!-- end of kind -->\n" for k, body in kinds.items()]
    return "\n".join([*INTRO, *blocks]) + f"\n{NOTES}{notes or chr(10)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="*", default=list(speed.SETUPS), choices=list(speed.SETUPS))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--iterations", type=int, default=10, help="training steps per round (default 10)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory runs")
    parser.add_argument("--no-doc", dest="write_doc", action="store_false", help="do not rewrite the doc")
    args = parser.parse_args()
    if args.device != "cpu":
        torch.set_default_device(args.device)
        args.memory = False  # the memory runs read /proc, which sees host memory only
    training = []
    for name in args.setups:
        training += training_rows(speed.SETUPS[name], args)
    ceiling = ceiling_rows([speed.SETUPS[name] for name in args.setups])
    print("\n".join(ceiling))
    gen = generation_rows(args)
    if args.write_doc:
        old = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        DOC.write_text(document(old, machine_kind(args.device), section(args, training, ceiling, gen)),
                       encoding="utf-8")
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
