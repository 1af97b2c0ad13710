"""Summarise a py-spy raw profile (`charles bench TARGET --profile FILE.txt`): per thread, the
functions with the most samples on top of the stack (self) and anywhere in it (total).

    python scripts/profile_top.py prof.txt [--under Player.run] [--top 15]

`--under NAME` keeps only the stacks that pass through a frame whose function is NAME (the
player loop, say, rather than imports and set-up).
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict


def _function(frame: str) -> str:
    return frame.split(" (", 1)[0]


def _without_line(frame: str) -> str:
    """`f (file.py:12)` -> `f (file.py)`: one row per function, not per line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if ":" in where else frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", help="py-spy --format raw output")
    ap.add_argument("--under", default=None, help="only stacks through this function")
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    own: dict[str, Counter[str]] = defaultdict(Counter)
    total: dict[str, Counter[str]] = defaultdict(Counter)
    samples: Counter[str] = Counter()
    with open(args.raw, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            processes = [f.split(":", 1)[0] for f in frames if f.startswith("process ")]  # parent, child, ...
            threads = [f for f in frames if f.startswith("thread ")]
            thread = f"{processes[-1] if processes else '?'} {threads[0] if threads else ''}".strip()
            calls = [_without_line(f) for f in frames if " (" in f and not f.startswith(("process", "thread"))]
            names = [_function(f) for f in calls]
            if not calls or (args.under and args.under not in names):
                continue
            n = int(count)
            samples[thread] += n
            own[thread][calls[-1]] += n
            for frame in set(calls):
                total[thread][frame] += n
    for thread, n in samples.most_common():
        print(f"\n{thread}: {n} samples")
        print("  self:")
        for frame, k in own[thread].most_common(args.top):
            print(f"    {100 * k / n:5.1f}%  {frame}")
        print("  total:")
        for frame, k in total[thread].most_common(args.top):
            print(f"    {100 * k / n:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
