"""The main job: the demo experiment end to end through the real Dagster pipeline.

Four rounds of ``segment_flip``. Each round's traffic is simulated from the plan the pipeline
published for that round, dropped into the landing folder as a parquet file, picked up by the
landing sensor and materialised by ``round_job`` on a persistent SQLite Dagster instance
($DAGSTER_HOME, default ./dagster_home) and the project's DuckDB file, so ``make dev`` shows it all.

    python -m tyche_assets.demo [--rounds 4] [--visitors 20000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import dagster as dg
import pandas as pd

from tyche_lib import Plan, derive_seed, simulate

from .definitions import build_definitions
from .experiments.sensors import register_experiments
from .ingest.sensors import landing_sensor

DEMO_EXPERIMENT = "segment_flip_demo"
# The per-step event log goes to the Dagster instance (see `make dev`); the console gets the summary.
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _reset(root: Path, storage) -> None:
    """Start the demo experiment over (other experiments' data is left alone)."""
    for sub in (
        ("landing",),
        ("plans",),
        ("reports",),
        ("storage", "raw"),
        ("storage", "posteriors"),
        ("storage", "trees"),
    ):
        shutil.rmtree(root.joinpath(*sub, DEMO_EXPERIMENT), ignore_errors=True)
    storage.purge_experiment(DEMO_EXPERIMENT)


def _summary(
    round_: int,
    rows: pd.DataFrame,
    plan_next: Plan | None,
    checks: pd.DataFrame,
    report: dict | None,
    scenario,
    seconds: float,
) -> str:
    lines = [f"\n=== round {round_}: {len(rows):,} visitors, round_job {seconds:.1f} s ==="]
    for _, c in checks.iterrows():
        lines.append(f"  check {c.check_name:<30} {'PASS' if c.passed else 'FAIL'}  {c.message}")
    if report is not None:
        rec = report["recommendation"]
        lines.append(f"  report: {rec['decision']}{' ' + rec['arm'] if rec['arm'] else ''}")
        lines.extend(f"    - {reason}" for reason in rec["reasons"])
        held_out = pd.DataFrame(report.get("held_out_segment_effects") or [])
        if len(held_out):
            # The segments that routed this round, scored on it alone, next to the simulation's truth.
            truth = pd.DataFrame(simulate.true_contrasts(scenario, rows), columns=list(scenario.treatments))
            truth = truth.groupby(rows["segment_id"].to_numpy()).mean()
            lines.append("  held-out segment effects (90% interval; true average effect of the members):")
            for segment_id, group in held_out.groupby("segment_id", sort=True):
                effects = "  ".join(
                    f"{e.treatment} {e.mean:+.3f} [{e.lower_90:+.3f}, {e.upper_90:+.3f}] (true {truth.loc[segment_id, e.treatment]:+.3f})"
                    for e in group.itertuples(index=False)
                )
                lines.append(f"    {segment_id:<4} {effects}")
    if plan_next is None:
        lines.append("  no plan published: the plan in force stays in force")
        return "\n".join(lines)
    segments = plan_next.segment_of(rows)
    best = simulate.true_best_arm(scenario, rows)
    lines.append(f"  plan for round {plan_next.round}: cells {dict(plan_next.weights)}")
    for seg in plan_next.segments:
        members = segments == seg.id
        true_best = pd.Series(best[members]).value_counts(normalize=True)
        top = max(seg.allocation, key=seg.allocation.get)
        alloc = "  ".join(f"{a} {w:5.1%}" for a, w in seg.allocation.items())
        truth = ", ".join(f"{a} {s:.0%}" for a, s in true_best.items())
        lines.append(f"  {seg.id:<4} {str(seg.rule):<55} share {members.mean():5.1%}")
        lines.append(f"       allocation: {alloc}   (top: {top}; true best arm of members: {truth})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("pymc").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*BLAS.*")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--visitors", type=int, default=20_000)
    parser.add_argument("--root", default=os.environ.get("TYCHE_ROOT", os.getcwd()))
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(root / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (root / "dagster.yaml").exists():
        shutil.copy(root / "dagster.yaml", home / "dagster.yaml")
    defs = build_definitions(str(root))
    storage, experiments = defs.resources["storage"], defs.resources["experiments"]
    job = defs.resolve_job_def("round_job")
    scenario = simulate.segment_flip()
    _reset(root, storage)

    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        registered, errors = register_experiments(instance, experiments, storage)
        for file, message in errors.items():
            print(f"invalid spec {file}: {message}", file=sys.stderr)
        cursor = None
        for round_ in range(1, args.rounds + 1):
            plan = storage.plan_in_force(DEMO_EXPERIMENT, round_)
            rows = simulate.simulate_round(
                scenario, plan, args.visitors, round_, rng=derive_seed(DEMO_EXPERIMENT, round_, "demo-traffic")
            )
            landing = root / "landing" / DEMO_EXPERIMENT / f"round={round_}"
            landing.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(landing / "visitors.parquet", index=False)

            # The landing sensor turns the new file into partitions and a run request, as the daemon would.
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as ctx:
                result = landing_sensor(ctx)
            cursor = result.cursor
            t0 = time.perf_counter()
            for run in result.run_requests:
                job.execute_in_process(
                    partition_key=run.partition_key,
                    instance=instance,
                    tags=run.tags,
                    raise_on_error=False,
                    run_config=QUIET_RUN,
                )
            seconds = time.perf_counter() - t0
            with storage.connect() as conn:
                checks = conn.execute(
                    "SELECT check_name, passed, message FROM round_checks WHERE experiment_id = ? AND round = ? ORDER BY check_name",
                    [DEMO_EXPERIMENT, round_],
                ).df()
                published = conn.execute(
                    "SELECT plan_json FROM plans WHERE experiment_id = ? AND governs_round = ?",
                    [DEMO_EXPERIMENT, round_ + 1],
                ).fetchall()[:1]
                report = conn.execute(
                    "SELECT report_json FROM reports WHERE experiment_id = ? AND round = ?", [DEMO_EXPERIMENT, round_]
                ).fetchall()
            plan_next = Plan.from_json(published[0][0]) if published else None
            report = json.loads(report[0][0]) if report else None
            print(_summary(round_, rows, plan_next, checks, report, scenario, seconds), flush=True)
    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. Plans: {root / 'plans' / DEMO_EXPERIMENT}; "
        f"DuckDB: {root / 'storage' / 'tyche.duckdb'}; browse with `make dev` (DAGSTER_HOME={home})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
