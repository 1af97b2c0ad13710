"""Benchmarks: each target measures one stage against its ceiling, side by side in one run.

A target is a function in `pipeline/bench/<name>.py` returning `result(...)`; the CLI
(`workers/bench.py`) lists the targets in `TARGETS` and prints one JSON object each.
"""

from __future__ import annotations

import platform
import time
from typing import Any


def result(name: str, value: float, unit: str, ceiling: float | None, details: dict[str, Any],
           lower_is_better: bool = False) -> dict[str, Any]:
    """The one shape every benchmark prints: ratio = the share of the ceiling reached, so 1.0
    is the limit either way (value / ceiling; ceiling / value for latencies; None without one)."""
    ratio = None
    if ceiling:
        ratio = (ceiling / value if value else 0.0) if lower_is_better else value / ceiling
    return {
        "name": name,
        "value": round(float(value), 4),
        "unit": unit,
        "ceiling": None if ceiling is None else round(float(ceiling), 4),
        "ratio": None if ratio is None else round(ratio, 4),
        "details": {**details, "machine": machine_summary()},
    }


def machine_summary() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def timed(fn: Any, seconds: float, min_iters: int = 3) -> tuple[int, float]:
    """Call `fn()` repeatedly for about `seconds`; return (iterations, elapsed seconds)."""
    start = time.perf_counter()
    n = 0
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n, time.perf_counter() - start


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table for docs/benchmarks.md: figure, ceiling, machine, date."""
    rows = ["| target | value | unit | ceiling | ratio | machine | date |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for res in results:
        m = res["details"]["machine"]
        machine = f"{m.get('gpu') or 'CPU'}, {m['cpu_count']} cores"
        rows.append(f"| `{res['name']}` | {res['value']} | {res['unit']} | {res['ceiling']} | {res['ratio']} "
                    f"| {machine} | {m['date']} |")
    return "\n".join(rows) + "\n"
