#!/usr/bin/env python
"""Plot how Charles's driving score grows against wall-clock time and batches.

    python scripts/learning_curve.py export --out var/lc/cpu.json     # from Redis (env as for `charles`)
    python scripts/learning_curve.py plot var/lc/cpu.json --out docs/img/learning_curve_cpu.png

`export` reads every scored version from the evaluation hash (plus the start time: the
moment the server first published the config, i.e. `honcho start`, unless `--t0` says
otherwise). `plot` draws ratio_to_npc and the mean distance between incidents against
minutes since the start (the version's publication time: when the model existed, not
when the evaluator got to it) and against trainer batches, each ratio with its bootstrap
interval as an error bar (versions scored before intervals existed have none), with the
NPC and baseline references (the baseline's interval as a band), `best` ringed, and prints
the numbers the docs quote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.group()
def cli() -> None:
    """Learning-curve export and plot."""


@cli.command()
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--t0", type=float, default=None, help="start time (epoch s); default: config first published")
@click.option("--label", default="", help="what this run was (goes into the plot title)")
def export(out: Path, t0: float | None, label: str) -> None:
    """Write every scored version (and the start time) to a JSON file."""
    from pipeline.evaluate.scoreboard import best_version, read_scores
    from pipeline.log import configure_logging
    from pipeline.observe.status import snapshot
    from pipeline.wire.config_store import fetch_config
    from pipeline.wire.redis_conn import connect, keys_from_env

    configure_logging("learning_curve", level="WARNING")
    r, keys = connect(), keys_from_env()
    if t0 is None:
        raw = r.hget(keys.config, "updated")
        t0 = float(raw) if raw else None
    fetched = fetch_config(r, keys)
    snap = snapshot(r, keys)
    data = {
        "label": label,
        "t0": t0,
        "exported_at": __import__("time").time(),
        "run": fetched[0].run.name if fetched else None,
        "config": json.loads(fetched[0].to_json()) if fetched else None,
        "best": best_version(r, keys),
        "trainer": snap["trainer"],
        "weights": snap["weights"],
        "versions": [rec for _, rec in sorted(read_scores(r, keys).items())],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1))
    click.echo(json.dumps({"versions": len(data["versions"]), "t0": t0, "out": str(out)}))


def summary(data: dict[str, Any], target: float) -> dict[str, Any]:
    """The numbers quoted in docs/evaluation.md."""
    t0 = data["t0"] or min(v["created"] for v in data["versions"])
    rows = [(round((v["created"] - t0) / 60, 2), v["batches"], v["ratio_to_npc"], v["version"],
             (v.get("intervals") or {}).get("ratio_to_npc"))
            for v in data["versions"] if v.get("ratio_to_npc") is not None]
    hit = next(((m, b, r, ver) for m, b, r, ver, _ in rows if r >= target), None)
    best = max(rows, key=lambda x: x[2], default=None)
    first = data["versions"][0] if data["versions"] else None
    return {
        "label": data.get("label"),
        "versions_scored": len(rows),
        "target": target,
        "first_reaching_target": None if hit is None else
        {"minutes": hit[0], "batches": hit[1], "ratio_to_npc": round(hit[2], 3), "version": hit[3]},
        "best": None if best is None else
        {"minutes": best[0], "batches": best[1], "ratio_to_npc": round(best[2], 3), "version": best[3]},
        "npc_mdbi_m": None if first is None else round(first["npc"]["mean_distance_between_incidents_m"], 1),
        "npc_incidents_per_km": None if first is None else round(first["npc"]["incidents_per_km"], 3),
        "baseline_ratio_to_npc": None if first is None else round(first["baseline"]["ratio_to_npc"], 3),
        "points": [{"minutes": m, "batches": b, "ratio_to_npc": round(r, 3), "version": v,
                    "interval": None if ci is None else [round(ci[0], 3), round(ci[1], 3)]}
                   for m, b, r, v, ci in rows],
    }


@cli.command()
@click.argument("exports", nargs=-1, type=click.Path(exists=True, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG file")
@click.option("--title", default="Charles learns to drive")
@click.option("--target", type=float, default=0.5, show_default=True, help="ratio_to_npc target line")
@click.option("--deadline-min", type=float, default=30.0, show_default=True, help="time target line")
def plot(exports: tuple[Path, ...], out: Path, title: str, target: float, deadline_min: float) -> None:
    """Ratio to NPC and distance between incidents against minutes and batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (ax_rt, ax_rb), (ax_dt, ax_ib) = axes
    reported = []
    for path in exports:
        data = json.loads(path.read_text())
        versions = [v for v in data["versions"] if v.get("ratio_to_npc") is not None]
        if not versions:
            raise click.ClickException(f"{path}: no scored versions")
        t0 = data["t0"] or min(v["created"] for v in versions)
        label = data.get("label") or path.stem
        minutes = [(v["created"] - t0) / 60 for v in versions]
        batches = [v["batches"] for v in versions]
        ratio = [v["ratio_to_npc"] for v in versions]
        cis = [(v.get("intervals") or {}).get("ratio_to_npc") for v in versions]
        # error bars: distances below and above the point (0 where a version has no interval)
        yerr = [[r - ci[0] if ci else 0.0 for r, ci in zip(ratio, cis, strict=True)],
                [ci[1] - r if ci else 0.0 for r, ci in zip(ratio, cis, strict=True)]]
        mdbi = [v["metrics"]["mean_distance_between_incidents_m"] for v in versions]
        ipk = [v["metrics"]["incidents_per_km"] for v in versions]
        level = next(((v.get("intervals") or {}).get("level") for v in versions if v.get("intervals")), None)
        bars = f"{label} ({100 * level:.0f}% interval)" if level else label
        ax_rt.errorbar(minutes, ratio, yerr=yerr, fmt="o-", ms=3, capsize=2, elinewidth=0.8, label=bars)
        ax_rb.errorbar(batches, ratio, yerr=yerr, fmt="o-", ms=3, capsize=2, elinewidth=0.8, label=bars)
        best = next((i for i, v in enumerate(versions) if v["version"] == data.get("best")), None)
        if best is not None:
            for ax, xs in ((ax_rt, minutes), (ax_rb, batches)):
                ax.plot([xs[best]], [ratio[best]], "o", ms=9, mfc="none", mec="tab:green", mew=1.5,
                        label=f"best (v{versions[best]['version']})")
        ax_dt.plot(minutes, mdbi, "o-", ms=3, label=f"{label}: model")
        ax_ib.plot(batches, ipk, "o-", ms=3, label=f"{label}: model")
        ref = versions[0]
        ax_dt.axhline(ref["npc"]["mean_distance_between_incidents_m"], ls="--", c="k", lw=1, label="NPC expert")
        ax_dt.axhline(ref["baseline"]["metrics"]["mean_distance_between_incidents_m"], ls=":", c="grey", lw=1,
                      label="baseline (straight, constant throttle)")
        ax_ib.axhline(ref["npc"]["incidents_per_km"], ls="--", c="k", lw=1, label="NPC expert")
        ax_ib.axhline(2 * ref["npc"]["incidents_per_km"], ls="-.", c="k", lw=0.8, label="2 x NPC")
        ax_ib.axhline(ref["baseline"]["metrics"]["incidents_per_km"], ls=":", c="grey", lw=1, label="baseline")
        base_ci = (versions[-1]["baseline"].get("intervals") or {}).get("ratio_to_npc")
        for ax in (ax_rt, ax_rb):
            ax.axhline(ref["baseline"]["ratio_to_npc"], ls=":", c="grey", lw=1)
            if base_ci:
                ax.axhspan(base_ci[0], base_ci[1], color="grey", alpha=0.12, lw=0)
        reported.append(summary(data, target))
    for ax in (ax_rt, ax_rb):
        ax.axhline(1.0, ls="--", c="k", lw=1)
        ax.axhline(target, ls="-.", c="tab:red", lw=0.8)
        ax.set_ylabel("ratio to NPC (distance between incidents)")
        ax.set_ylim(bottom=0)
    ax_rt.axvline(deadline_min, ls="-.", c="tab:red", lw=0.8)
    ax_rt.set_xlabel("minutes since start (version published)")
    ax_rb.set_xlabel("trainer batches")
    ax_dt.set_xlabel("minutes since start (version published)")
    ax_dt.set_ylabel("mean distance between incidents (m)")
    ax_ib.set_xlabel("trainer batches")
    ax_ib.set_ylabel("incidents per km")
    ax_ib.set_yscale("symlog", linthresh=0.1)
    ax_ib.set_ylim(bottom=0)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    click.echo(json.dumps(reported if len(reported) > 1 else reported[0], indent=1))


if __name__ == "__main__":
    cli()
