"""Where the online compressor's time goes, stage by stage, from a sampling profile.

    python -m benchmarks.compression_stages FILE [--target x86-64-v3] [--src OTHER/src]

Needs Linux ``perf`` (``apt-get install linux-perf``) and the C compiler. It builds the kernel for
`--target` with ``-g`` added (debug information changes no instruction) into a cache of its own,
runs ``charlm compress FILE`` under ``perf record`` (4,000 samples a second of each thread), and
gives each sample to a stage by the function it fell in, the functions that the compiler inlined
into the kernel's two big ones (``bits_code``, ``cm_step``) read from ``perf annotate``. Each stage
is given in microseconds of CPU per byte of FILE (samples / 4,000 / bytes): the coding thread, the
network's learner thread (on the second core where there is one), and Python with torch (start-up,
reading, writing). `--src` profiles another checkout's charlm (the
release before, say) the same way, so two profiles compare side by side.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# The stages of issue "The common CPU", and the kernel's functions in each (kernel.c's five
# stages, bits.c's bitwise models and mixers, net.c's network).
STAGES = {
    "the network, coding thread (forward: products, cell)": {
        "cm_net_forward", "affine", "cell", "squashes", "cm_net_advance", "apply", "point_at"},
    "the network's learner thread (backpropagation, Adam)": {
        "backprop", "dotf", "axpy", "learn_block", "adam_next", "adam_update", "sum_squares",
        "learner_main"},
    "exp over arrays (both softmaxes, the cell's squashes)": {"exps"},
    "the symbol experts (counts, match, contexts)": {
        "predict", "count", "move_on", "context_rows", "order_hash", "match_hash", "bucket_of", "mix32",
        "prefetch_span", "prefetch"},
    "the symbol mixture (mixing, its softmax, its map, its learning)": {
        "mix", "softmax", "network_weight", "refine_likeliest", "learn_map", "network_gradient",
        "mixing_gradient", "adam_step", "dot", "seen_mass", "weight_at", "learn_from", "cm_step",
        "cm_exp", "cm_exp.part.0"},
    "the bitwise models (contexts, slots, trees, stretch)": {
        "bits_contexts", "follow_text", "hash3", "bit_buckets", "bucket_of_half", "prefetch_buckets",
        "bit_inputs", "table_stretch", "stretch_of", "counts_tree", "bits_tree", "bits_trees",
        "tree_input", "counts_input", "split_input", "cm_log"},
    "the bitwise mixers and maps (mix, refine, learn)": {
        "bit_mix", "bit_refine", "bit_learn", "squash", "knot_of"},
    "the arithmetic coder": {"encode", "emit", "decode", "next_bit", "code_symbol", "bits_code"},
}
OUTLINED = ("bits_code", "cm_step")  # whose samples are split by the functions inlined into them


def stage_of(function: str) -> str:
    for stage, functions in STAGES.items():
        if function in functions:
            return stage
    return "Python, torch and the system (start-up, reading, writing)"


def inlined_shares(annotated: str) -> collections.Counter[str]:
    """`perf annotate --stdio` of one symbol: its percentages summed by the inlined function each
    instruction belongs to (the last ``name():`` line above it)."""
    shares: collections.Counter[str] = collections.Counter()
    function = "?"
    for line in annotated.splitlines():
        named = re.match(r"\s+:\s+\d+\s+(\w+)\(\):\s*$", line)
        if named:
            function = named.group(1)
            continue
        sample = re.match(r"\s+(\d+\.\d+) :\s+[0-9a-f]+:", line)
        if sample:
            shares[function] += float(sample.group(1))
    return shares


def profile(file: Path, target: str, src: Path | None) -> collections.Counter[str]:
    env = {**os.environ, "CHARLM_KERNELS_TARGET": target}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    with tempfile.TemporaryDirectory() as tmp:
        env["XDG_CACHE_HOME"] = tmp
        build = ("from charlm.compression import build; from charlm.hardware import machine; "
                 f"build.compile_to(build.built({target!r}), build.FLAGS + ('-g',) + "
                 f"machine.target_flags({target!r}))")
        subprocess.run([sys.executable, "-c", build], env=env, check=True)  # builds, then -g over it
        data = Path(tmp) / "perf.data"
        subprocess.run(["perf", "record", "-q", "-F", "4000", "-o", str(data), sys.executable, "-m", "charlm",
                        "compress", str(file), str(Path(tmp) / "out.chlm")], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        report = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "sym",
                                 "--stdio", "-n"], capture_output=True, text=True, check=True).stdout
        shares: collections.Counter[str] = collections.Counter()
        for line in report.splitlines():
            row = re.match(r"\s+\d+\.\d+%\s+(\d+)\s+\[[.k]\]\s+(\S+)", line)
            if not row:
                continue
            micros = int(row.group(1)) / 4000 / file.stat().st_size * 1e6  # of CPU, per byte
            percent, symbol = micros, row.group(2)
            if symbol in OUTLINED:
                annotated = subprocess.run(["perf", "annotate", "-i", str(data), "--stdio", "-s", symbol],
                                           capture_output=True, text=True).stdout
                inside = inlined_shares(annotated)
                total = sum(inside.values()) or 1.0
                for function, part in inside.items():
                    shares[stage_of(function if function != "?" else symbol)] += percent * part / total
            else:
                shares[stage_of(symbol)] += percent
        return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--target", default="x86-64-v3")
    parser.add_argument("--src", type=Path, action="append", default=[],
                        help="another checkout's src folder, profiled beside this one")
    args = parser.parse_args()
    columns = {"this checkout": profile(args.file, args.target, None)}
    for src in args.src:
        columns[str(src)] = profile(args.file, args.target, src)
    stages = [*STAGES, "Python, torch and the system (start-up, reading, writing)"]
    print("| stage (µs of CPU per byte) | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{shares[stage]:.1f}" for shares in columns.values()) + " |")
    print("| all | " + " | ".join(f"{sum(shares.values()):.1f}" for shares in columns.values()) + " |")


if __name__ == "__main__":
    main()
