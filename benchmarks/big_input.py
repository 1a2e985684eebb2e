"""Big inputs: the CLI's compress and decompress of one file, the speed over each successive MB.

    /usr/bin/time -v python -m benchmarks.big_input compress big.txt big.chlm
    /usr/bin/time -v python -m benchmarks.big_input decompress big.chlm big.out

Runs ``charlm compress`` / ``decompress`` (`charlm.cli.main`) with the progress bar replaced by a
log: one line per MB of the original, its KB/s, then the whole run's. Peak memory is what
``/usr/bin/time -v`` reports around it (docs/compression.md, "Big inputs").
"""

from __future__ import annotations

import sys
import time

from charlm import cli

MB = 1 << 20


def _per_mb_log(args, what: str):
    marks = [(0, time.perf_counter())]

    def update(done: int, total: int | None) -> None:
        if done >= len(marks) * MB or (total is not None and done == total and done > marks[-1][0]):
            now = time.perf_counter()
            before, then = marks[-1]
            marks.append((done, now))
            rate = (done - before) / 1000 / (now - then)
            print(f"{what} {before / MB:6.2f}-{done / MB:6.2f} MB: {rate:6.1f} KB/s", file=sys.stderr,
                  flush=True)

    return update, lambda: None


def main(argv: list[str]) -> int:
    cli._progress_bar = _per_mb_log
    start = time.perf_counter()
    code = cli.main([*argv, "--force"])
    print(f"{argv[0]}: {time.perf_counter() - start:.1f} s in all", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
