"""What the trainer's window held before each scored version, beside its score.

For every version of a learning curve's `evaluation.json` (from `--from-min` on), the
environments of the episodes the collectors finished in the `--span-s` seconds before it was
published (their `episode_done` log lines in `supervise.log`), and the correlation of each
share with the versions' scores and mean speeds: does the swing follow what the collectors
happened to drive? (docs/evaluation.md "(ai)")

    scripts/window_composition.py WORK [--from-min 20] [--span-s 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.games.sim.look import Look

#: per window: the mean over its episodes of each feature of an `environment` dict (a share for the flags)
FEATURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "traffic": lambda env: env["traffic_density"],
    "truck": lambda env: env["car"] == "truck",
    "daylight": lambda env: Look.of(env["weather"], env["time_of_day"]).daylight,  # the simulator's: 0 night .. 1 noon
    "wet": lambda env: env["weather"] in ("rain", "fog"),
    "aggressive": lambda env: env["npc_style"] == "aggressive",
    "calm": lambda env: env["npc_style"] == "calm",
}


def episodes(log_path: Path) -> list[tuple[float, dict[str, Any], float]]:
    """(end time, environment, model-driven share) of every logged episode that names its environment."""
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        if '"episode_done"' not in line or "{" not in line:
            continue
        row = json.loads(line[line.index("{"):])
        if "environment" not in row:
            continue
        end = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
        out.append((end, row["environment"], row["model_ticks"] / max(1, row["ticks"])))
    return out


def correlation(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None where either side does not vary."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(xs, ys)


def windows(work: Path, from_min: float, span_s: float) -> dict[str, Any]:
    """Per version the window's shares, then r of each share against score and mean speed."""
    evaluation = json.loads((work / "evaluation.json").read_text())
    logged = episodes(work / "supervise.log")
    rows = []
    for version in evaluation["versions"]:
        minutes = (version["created"] - evaluation["t0"]) / 60
        if minutes < from_min or version.get("ratio_to_npc") is None:
            continue
        held = [e for e in logged if version["created"] - span_s <= e[0] <= version["created"]]
        if not held:
            continue
        shares = {name: statistics.fmean(float(f(env)) for _, env, _ in held) for name, f in FEATURES.items()}
        shares["model_driven"] = statistics.fmean(share for _, _, share in held)
        rows.append({"version": version["version"], "minutes": round(minutes, 2), "episodes": len(held),
                     "ratio_to_npc": version["ratio_to_npc"], "mean_speed_mps": version["metrics"]["mean_speed_mps"],
                     "window": {k: round(v, 3) for k, v in shares.items()}})
    names = [*FEATURES, "model_driven"]
    return {"versions": rows, "correlation": {
        name: {target: correlation([r["window"][name] for r in rows], [r[target] for r in rows])
               for target in ("ratio_to_npc", "mean_speed_mps")} for name in names}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="a learning curve's WORK folder (evaluation.json, supervise.log)")
    parser.add_argument("--from-min", type=float, default=20.0, help="versions published from this minute on")
    parser.add_argument("--span-s", type=float, default=120.0, help="seconds of episodes before each version")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = windows(args.work, args.from_min, args.span_s)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for row in result["versions"]:
        print(f"v{row['version']} {row['minutes']:5.1f} min {row['ratio_to_npc']:.2f} {row['mean_speed_mps']:.1f} m/s "
              f"{row['episodes']} episodes {row['window']}")
    for name, rs in result["correlation"].items():
        print(f"{name:13s} " + "  ".join(f"r({t}) {'-' if r is None else f'{r:+.2f}'}" for t, r in rs.items()))


if __name__ == "__main__":
    main()
