"""The online compressor of this checkout against another (the release before, say), side by side.

    python -m benchmarks.compression_speedup --against OTHER/src [--target x86-64-v3] [--rounds 3]

For each shared corpus, both checkouts compress and decompress it in turn, round after round (so
that a noisy machine slows both alike), each in a process of its own with the same
``CHARLM_KERNELS_TARGET``; the time is that of ``charlm.compress`` and ``charlm.decompress`` alone,
without Python's start. Prints the median KB/s of the original each way, the ratio of the two
checkouts, and the bits per byte of the coded bytes (the frames, without the header, which names
the kernel): where the two compute the same arithmetic they must be equal, and the script says
whether the coded bytes are the very same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from charlm.data.corpora import locate

CORPORA = ("timemachine", "tinyshakespeare", "war-of-the-worlds")
HERE = Path(__file__).resolve().parents[1] / "src"

# Run inside each checkout's own process: one compress and one decompress of the file, timed.
_ONE = """
import hashlib, json, sys, time
import charlm
from charlm.compression.container import unpack
data = open(sys.argv[1], "rb").read()
t = time.perf_counter(); archive = charlm.compress(data); coding = time.perf_counter() - t
t = time.perf_counter(); back = charlm.decompress(archive); decoding = time.perf_counter() - t
assert back == data
coded = b"".join(frame.data for frame in unpack(archive)[1])
print(json.dumps({"compress": coding, "decompress": decoding, "coded_bits": 8 * len(coded),
                  "digest": hashlib.sha256(coded).hexdigest()}))
"""


def one(src: Path, file: Path, target: str) -> dict[str, float | str]:
    env = {**os.environ, "PYTHONPATH": str(src), "CHARLM_KERNELS_TARGET": target}
    done = subprocess.run([sys.executable, "-c", _ONE, str(file)], env=env, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, required=True, help="the other checkout's src folder")
    parser.add_argument("--target", default="x86-64-v3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--corpora", nargs="+", default=list(CORPORA))
    args = parser.parse_args()
    warm = Path(tempfile.mkdtemp()) / "warm.txt"  # each checkout's kernel built before any timing
    warm.write_bytes(b"the kernels are built once, before anything is timed\n")
    one(args.against, warm, args.target), one(HERE, warm, args.target)
    print(f"kernel build {args.target}; {args.rounds} rounds; medians; KB/s of the original\n")
    print("| file | bits per byte (coded bytes) | before: compress / decompress | now | speed-up each way "
          "| the same coded bytes |")
    print("|---|---:|---:|---:|---:|---|")
    for name in args.corpora:
        file = locate(name)
        runs: dict[str, list[dict[str, float | str]]] = {"before": [], "now": []}
        for _ in range(args.rounds):
            runs["before"].append(one(args.against, file, args.target))
            runs["now"].append(one(HERE, file, args.target))
        size = file.stat().st_size
        speed = {side: {way: statistics.median(size / 1000 / float(r[way]) for r in results)
                        for way in ("compress", "decompress")} for side, results in runs.items()}
        bits = {side: float(results[0]["coded_bits"]) / size for side, results in runs.items()}
        same = {r["digest"] for results in runs.values() for r in results}
        print(f"| {file.name} ({size // 1000} KB) | {bits['before']:.4f} / {bits['now']:.4f} "
              f"| {speed['before']['compress']:.1f} / {speed['before']['decompress']:.1f} "
              f"| {speed['now']['compress']:.1f} / {speed['now']['decompress']:.1f} "
              f"| {speed['now']['compress'] / speed['before']['compress']:.2f}x / "
              f"{speed['now']['decompress'] / speed['before']['decompress']:.2f}x "
              f"| {'yes' if len(same) == 1 else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
