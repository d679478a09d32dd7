"""Sample-ratio check benchmark: false alarms on valid rounds, power against rows lost from one arm.

    python bench/srm_power.py            # full run: writes bench/srm_results.md and bench/srm_results.json
    python bench/srm_power.py --quick    # 200 valid rounds and 50 loss replicates per setting;
                                         # writes bench/srm_results_quick.{md,json}

What is measured, for two 4-arm experiments (the demo, ``segment_flip`` with the spec in
experiments/segment_flip_demo.yaml, and ``no_heterogeneity``), each under two plans (the initial
plan, and a later-round plan with three leaves and skewed allocations down to the 0.02 / 4 floor),
with 20,000-visitor rounds simulated by ``simulate_round``:

- the false-alarm rate of ``sample_ratio_check`` at its default alpha = 0.001 over valid rounds,
  with a Clopper-Pearson 95% interval (and at alpha = 0.01 and 0.05, from the same rounds: the
  result's ``adjusted_pvalue`` is the smallest alpha at which a round fails);
- its power when a random 20% of the rows of one arm are dropped, for each arm in turn (control
  included), and for the reviewer's case, 40% of one arm's optimized-cell rows; "named" counts the
  caught rounds in which that arm, and no other, fails an arm-total test with a deficit;
- how each kind of component test is calibrated on the valid rounds (p below 1, 10 and 100 times
  its share of alpha, against what a calibrated test gives);
- its run time on one 20,000-row and one 1,000,000-row round.

Every seed derives from ``BASE_SEED``, the setting and the replicate, so a re-run reproduces every
figure; the loss replicates reuse the first valid rounds of each setting. The script writes the
markdown and JSON next to itself; every number in them is computed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
from scipy import stats

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from tyche_lib import Condition, Plan, PlanSegment, Rule, initial_plan, load_spec  # noqa: E402
from tyche_lib.measure._srm import ALPHA_SHARES, sample_ratio_check  # noqa: E402
from tyche_lib.simulate import Scenario, no_heterogeneity, segment_flip, simulate_round  # noqa: E402

BASE_SEED = 20_260_105
ROUND_SIZE = 20_000
ALPHA = 0.001  # what tyche_assets' round_visitors_sample_ratio passes (SAMPLE_RATIO_ALPHA)
CALIBRATION_ALPHAS = (0.001, 0.01, 0.05)
LOSS_CASES = {
    "lose 20% of the arm's rows": (0.2, None),
    "lose 40% of the arm's optimized-cell rows (the issue)": (0.4, "optimized"),
}
FULL = {"valid": 2_500, "power": 500}
QUICK = {"valid": 200, "power": 50}
TIMING_SIZES = (ROUND_SIZE, 1_000_000)
TIMING_REPEATS = 5
CHUNK = 100


# -- the experiments and plans ---------------------------------------------------------------------


def _demo_initial_plan() -> Plan:
    return initial_plan(load_spec(REPO_ROOT / "experiments" / "segment_flip_demo.yaml"))


def demo_initial() -> tuple[Scenario, Plan]:
    return segment_flip(), _demo_initial_plan()


def demo_later() -> tuple[Scenario, Plan]:
    """Round 3 of the demo as the pipeline publishes it: the true tree, confident where the data are."""
    arms = segment_flip().arms  # control, flip, flat, mild
    non_mobile = Condition("device", "not in", levels=("mobile",))
    segments = (
        PlanSegment(
            "mobile",
            Rule((Condition("device", "in", levels=("mobile",)),)),
            dict(zip(arms, (0.005, 0.985, 0.005, 0.005))),
        ),
        PlanSegment(
            "returning",
            Rule((non_mobile, Condition("returning", "is", threshold=1.0))),
            dict(zip(arms, (0.1, 0.005, 0.12, 0.775))),
        ),
        PlanSegment(
            "new",
            Rule((non_mobile, Condition("returning", "is", threshold=0.0))),
            dict(zip(arms, (0.55, 0.005, 0.3, 0.145))),
        ),
    )
    return segment_flip(), Plan("segment_flip_demo", 3, arms, dict(_demo_initial_plan().weights), segments)


def no_het_initial() -> tuple[Scenario, Plan]:
    scenario = no_heterogeneity()
    return scenario, initial_plan(scenario.spec())


def no_het_later() -> tuple[Scenario, Plan]:
    """Round 3 of no_heterogeneity: leaves split on noise, large_lift winning, control and no_lift at the floor."""
    scenario = no_heterogeneity()
    arms = scenario.arms  # control, small_lift, large_lift, no_lift
    new = Condition("returning", "is", threshold=0.0)
    segments = (
        PlanSegment(
            "returning",
            Rule((Condition("returning", "is", threshold=1.0),)),
            dict(zip(arms, (0.005, 0.15, 0.84, 0.005))),
        ),
        PlanSegment(
            "new_young", Rule((new, Condition("age", "<=", threshold=35.0))), dict(zip(arms, (0.005, 0.3, 0.69, 0.005)))
        ),
        PlanSegment(
            "new_older", Rule((new, Condition("age", ">", threshold=35.0))), dict(zip(arms, (0.02, 0.2, 0.765, 0.015)))
        ),
    )
    weights = dict(initial_plan(scenario.spec()).weights)
    return scenario, Plan("no_heterogeneity", 3, arms, weights, segments)


@dataclass(frozen=True)
class Setting:
    name: str
    build: Callable[[], tuple[Scenario, Plan]]


SETTINGS = (
    Setting("demo (segment_flip), initial plan", demo_initial),
    Setting("demo (segment_flip), round-3 plan", demo_later),
    Setting("no_heterogeneity, initial plan", no_het_initial),
    Setting("no_heterogeneity, round-3 plan", no_het_later),
)


# -- one chunk of replicates (runs in a worker process) --------------------------------------------


def _lose(rows: pd.DataFrame, arm: str, share: float, cell: str | None, rng: np.random.Generator) -> pd.DataFrame:
    """``rows`` without a random ``share`` of the rows of ``arm`` (in ``cell`` only, if given)."""
    hit = rows["arm"].to_numpy() == arm
    if cell is not None:
        hit &= rows["cell"].to_numpy() == cell
    candidates = np.flatnonzero(hit)
    keep = np.ones(len(rows), dtype=bool)
    keep[rng.choice(candidates, size=round(share * len(candidates)), replace=False)] = False
    return rows[keep]


# The arm-total test that is the score statistic for each kind of loss: over the round when rows are
# lost from every cell, over the optimized cell when only that cell lost them.
Z_LEVEL = {None: "arm totals", "optimized": "optimized arm totals"}
CALIBRATION_FACTORS = (1, 10, 100)


def _arm_z(result, arm: str, level: str) -> float:
    totals = result.tests[result.tests["level"] == level].set_index("arm")["statistic"]
    return float(totals[arm])


def run_chunk(setting_index: int, start: int, stop: int, n_power: int) -> dict:
    """Replicates ``start`` … ``stop - 1`` of one setting: valid rounds, and losses for the first ``n_power``."""
    scenario, plan = SETTINGS[setting_index].build()
    adjusted, alarm_levels, expected = [], [], []
    # Per kind of test: how many ran, how many had p below f x its threshold (f = 1, 10, 100), and
    # how many a calibrated test would have (the sum of f x threshold).
    calibration: dict[str, dict] = {}
    losses: dict[str, dict[str, list]] = {case: {a: [] for a in plan.arms} for case in LOSS_CASES}
    for rep in range(start, stop):
        rows = simulate_round(
            scenario, plan, ROUND_SIZE, plan.round, np.random.default_rng([BASE_SEED, setting_index, rep])
        )
        result = sample_ratio_check(rows, plan, alpha=ALPHA)
        adjusted.append(result.adjusted_pvalue)
        if not result.passed:
            alarm_levels.append(str(result.tests.loc[result.tests["failed"], "level"].iloc[0]))
        stochastic = result.tests[result.tests["threshold"].notna()]
        for level, group in stochastic.groupby("level"):
            zero = {"tests": 0, "hits": [0] * len(CALIBRATION_FACTORS), "expected": [0.0] * len(CALIBRATION_FACTORS)}
            tally = calibration.setdefault(str(level), zero)
            tally["tests"] += len(group)
            for i, f in enumerate(CALIBRATION_FACTORS):
                tally["hits"][i] += int((group["pvalue"] < f * group["threshold"]).sum())
                tally["expected"][i] += float(f * group["threshold"].sum())
        if rep == 0:
            totals = result.tests[result.tests["level"] == "arm totals"].set_index("arm")
            expected = [float(totals.loc[a, "expected"][a]) for a in plan.arms]
        if rep >= n_power:
            continue
        for case_index, (case, (share, cell)) in enumerate(LOSS_CASES.items()):
            for arm_index, arm in enumerate(plan.arms):
                rng = np.random.default_rng([BASE_SEED, setting_index, rep, 1 + case_index, arm_index])
                lossy = sample_ratio_check(_lose(rows, arm, share, cell, rng), plan, alpha=ALPHA)
                tests = lossy.tests
                totals = tests[tests["level"].isin(list(Z_LEVEL.values())) & tests["failed"]]
                named = set(totals.loc[totals["statistic"] < 0, "arm"]) == {arm}
                losses[case][arm].append((not lossy.passed, named, _arm_z(lossy, arm, Z_LEVEL[cell])))
    return {
        "setting": setting_index,
        "start": start,
        "adjusted": adjusted,
        "alarm_levels": alarm_levels,
        "calibration": calibration,
        "expected": expected,
        "losses": losses,
    }


# -- aggregation and output -----------------------------------------------------------------------


def _interval(k: int, n: int) -> list[float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return [float(ci.low), float(ci.high)]


def _aggregate(chunks: list[dict], n_power: int) -> list[dict]:
    out = []
    for i, setting in enumerate(SETTINGS):
        mine = sorted((c for c in chunks if c["setting"] == i), key=lambda c: c["start"])
        _, plan = setting.build()
        adjusted = np.concatenate([c["adjusted"] for c in mine])
        alarms = {str(a): int((adjusted < a).sum()) for a in CALIBRATION_ALPHAS}
        power: dict[str, dict[str, dict]] = {}
        for case in LOSS_CASES:
            power[case] = {}
            for arm in plan.arms:
                records = [r for c in mine for r in c["losses"][case][arm]]
                caught = sum(r[0] for r in records)
                mean_z = float(np.mean([r[2] for r in records]))
                power[case][arm] = {
                    "replicates": len(records),
                    "caught": caught,
                    "power": caught / len(records),
                    "power_95ci": _interval(caught, len(records)),
                    "named": sum(r[1] for r in records),
                    "mean_z_of_the_arm_total": mean_z,
                    "ceiling": float(stats.norm.cdf(-mean_z - stats.norm.isf(ALPHA))),
                }
        calibration: dict[str, dict] = {}
        for c in mine:
            for level, tally in c["calibration"].items():
                total = calibration.setdefault(
                    level,
                    {"tests": 0, "hits": [0] * len(CALIBRATION_FACTORS), "expected": [0.0] * len(CALIBRATION_FACTORS)},
                )
                total["tests"] += tally["tests"]
                total["hits"] = [a + b for a, b in zip(total["hits"], tally["hits"])]
                total["expected"] = [a + b for a, b in zip(total["expected"], tally["expected"])]
        out.append(
            {
                "setting": setting.name,
                "plan_round": plan.round,
                "plan_segments": {s.id: {"rule": str(s.rule), "allocation": dict(s.allocation)} for s in plan.segments},
                "cell_weights": dict(plan.weights),
                "expected_rows_per_arm": dict(zip(plan.arms, mine[0]["expected"])),
                "valid_rounds": int(len(adjusted)),
                "false_alarms": alarms,
                "false_alarm_rate": alarms[str(ALPHA)] / len(adjusted),
                "false_alarm_95ci": _interval(alarms[str(ALPHA)], len(adjusted)),
                "false_alarm_tests": [lvl for c in mine for lvl in c["alarm_levels"]],
                "calibration": calibration,
                "loss_replicates_per_arm": n_power,
                "power": power,
            }
        )
    return out


def _time_check() -> dict:
    scenario, plan = demo_later()
    timings = {}
    for n in TIMING_SIZES:
        rows = simulate_round(scenario, plan, n, plan.round, np.random.default_rng([BASE_SEED, 99, n]))
        seconds = []
        for _ in range(TIMING_REPEATS):
            t0 = time.perf_counter()
            sample_ratio_check(rows, plan, alpha=ALPHA)
            seconds.append(time.perf_counter() - t0)
        timings[str(n)] = {"median_s": statistics.median(seconds), "min_s": min(seconds), "repeats": TIMING_REPEATS}
    return timings


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
    }


def _calibration_rows(settings: list[dict]) -> list[str]:
    rows = []
    for level in ALPHA_SHARES:
        tallies = [s["calibration"][level] for s in settings if level in s["calibration"]]
        hits = np.sum([t["hits"] for t in tallies], axis=0)
        expected = np.sum([t["expected"] for t in tallies], axis=0)
        cells = " | ".join(f"{int(h)} ({e:.1f})" for h, e in zip(hits, expected))
        rows.append(f"| {level} | {sum(t['tests'] for t in tallies):,} | {cells} |")
    return rows


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render(results: dict) -> str:
    settings = results["settings"]
    total_rounds = sum(s["valid_rounds"] for s in settings)
    total_alarms = sum(s["false_alarms"][str(ALPHA)] for s in settings)
    pooled_ci = _interval(total_alarms, total_rounds)
    case20, case40 = LOSS_CASES
    worst = min(
        ((s["setting"], arm, p) for s in settings for arm, p in s["power"][case20].items()), key=lambda t: t[2]["power"]
    )
    worst_issue = min(
        ((s["setting"], arm, p) for s in settings for arm, p in s["power"][case40].items()), key=lambda t: t[2]["power"]
    )
    lines = [
        "# Sample-ratio check: false alarms and power",
        "",
        f"Written by `python bench/srm_power.py{' --quick' if results['quick'] else ''}` on {results['written']} "
        f"({results['run_minutes']:.1f} min with {results['workers']} worker process(es)). Every figure below is "
        "computed by `bench/srm_power.py`; re-run it to reproduce.",
        "",
        "## Summary",
        "",
        f"- **False alarms** at alpha = {ALPHA} (what the pipeline passes): {total_alarms} in {total_rounds:,} valid "
        f"{ROUND_SIZE:,}-visitor rounds = {_pct(total_alarms / total_rounds)} "
        f"(95% CI {_pct(pooled_ci[0])} to {_pct(pooled_ci[1])}); weighted Bonferroni bounds it by {_pct(ALPHA)}.",
        f"- **Losing 20% of one arm's rows**: worst case over the {len(settings)} settings x 4 arms is "
        f"{_pct(worst[2]['power'])} (95% CI {_pct(worst[2]['power_95ci'][0])} to {_pct(worst[2]['power_95ci'][1])}; "
        f"{worst[0]}, arm `{worst[1]}`, which expects "
        f"{next(s for s in settings if s['setting'] == worst[0])['expected_rows_per_arm'][worst[1]]:.0f} rows). "
        "Every other row of the power table below is the same or higher.",
        f"- **The issue's case** (40% of one arm's optimized-cell rows): worst case {_pct(worst_issue[2]['power'])} "
        f"({worst_issue[0]}, arm `{worst_issue[1]}`).",
        f"- **Speed**: {results['timing'][str(TIMING_SIZES[1])]['median_s']:.2f} s for a {TIMING_SIZES[1]:,}-row round "
        f"(median of {TIMING_REPEATS}), {1000 * results['timing'][str(ROUND_SIZE)]['median_s']:.1f} ms for {ROUND_SIZE:,} rows.",
        "",
        "## Test family",
        "",
        "Weighted Bonferroni over the stochastic tests, alpha shares "
        + ", ".join(f"{k} {v}" for k, v in ALPHA_SHARES.items())
        + " (see the `sample_ratio_check` docstring): one exact Poisson-binomial test per arm of its total over the "
        "round given the visitors per segment, and the same over the optimized cell given its visitors per segment; "
        "the cells test; the arms within each cell x segment. Deterministic checks (impossible arms, recorded "
        "segment vs the plan's rules) fail outright.",
        "",
        "## Machine and seeds",
        "",
        f"- {results['machine']['platform']}; {results['machine']['cpu_count']} CPUs "
        f"({results['machine']['usable_cpus']} usable); Python {results['machine']['python']}, numpy "
        f"{results['machine']['numpy']}, scipy {results['machine']['scipy']}, pandas {results['machine']['pandas']}",
        f"- Code: commit {results['commit']}",
        f"- Seeds: round `[{BASE_SEED}, setting, replicate]`, loss `[{BASE_SEED}, setting, replicate, 1 + case, arm]` "
        "(numpy `default_rng`); settings numbered from 0 in the order below.",
        f"- {results['valid_rounds']:,} valid rounds per setting; the first {results['power_replicates']} of them are "
        "reused, one loss per arm and case, for the power.",
        "",
        "## False alarms on valid rounds",
        "",
        "| setting | rounds | alarms at 0.001 | rate (95% CI) | alarms at 0.01 | alarms at 0.05 | tests that fired at 0.001 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in settings:
        fa, ci = s["false_alarms"], s["false_alarm_95ci"]
        fired = ", ".join(
            f"{k} x{v}" for k, v in pd.Series(s["false_alarm_tests"], dtype=object).value_counts().items()
        )
        lines.append(
            f"| {s['setting']} | {s['valid_rounds']:,} | {fa['0.001']} | {_pct(s['false_alarm_rate'])} "
            f"({_pct(ci[0])} to {_pct(ci[1])}) | {fa['0.01']} ({_pct(fa['0.01'] / s['valid_rounds'])}) | "
            f"{fa['0.05']} ({_pct(fa['0.05'] / s['valid_rounds'])}) | {fired or '-'} |"
        )
    lines += [
        f"| **all** | {total_rounds:,} | {total_alarms} | {_pct(total_alarms / total_rounds)} "
        f"({_pct(pooled_ci[0])} to {_pct(pooled_ci[1])}) | "
        f"{sum(s['false_alarms']['0.01'] for s in settings)} | {sum(s['false_alarms']['0.05'] for s in settings)} | |",
        "",
        "Each kind of test, over all settings: how many p-values fell below f times the test's share of alpha, "
        "against how many a calibrated test gives (the sum of f x share). The family's rate is at most the sum of "
        "its tests' rates, so calibrated components bound it by alpha; the f = 10 and 100 columns measure the "
        "calibration with more events than the f = 1 column can.",
        "",
        "| test | tests run | " + " | ".join(f"p < {f} x share: seen (calibrated)" for f in CALIBRATION_FACTORS) + " |",
        "| --- | --- | " + " | ".join("---" for _ in CALIBRATION_FACTORS) + " |",
        *_calibration_rows(settings),
        "",
        "## Power against rows lost from one arm",
        "",
        "Power = share of the lossy rounds that fail the check at alpha = 0.001 (95% Clopper-Pearson interval); "
        "named = share of the caught rounds in which that arm, and no other, fails an arm-total test with a "
        "deficit; z = mean z-score of the arm's total in the lossy rounds, over the round (first table) or over "
        "the optimized cell (second table), the score statistic for that kind of loss; ceiling = the power of a "
        f"single one-sided z-test of that total spending all of alpha = {ALPHA} on this one alternative, "
        "Phi(-z - z_(1-alpha)): no test of these counts does much better.",
        "",
    ]
    for case in LOSS_CASES:
        lines += [
            f"### {case}",
            "",
            "| setting | arm | expected rows | replicates | power (95% CI) | named | z | ceiling |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in settings:
            for arm, p in s["power"][case].items():
                named = p["named"] / p["caught"] if p["caught"] else float("nan")
                lines.append(
                    f"| {s['setting']} | {arm} | {s['expected_rows_per_arm'][arm]:.0f} | {p['replicates']} | "
                    f"{_pct(p['power'])} ({_pct(p['power_95ci'][0])} to {_pct(p['power_95ci'][1])}) | "
                    f"{_pct(named)} | {p['mean_z_of_the_arm_total']:.1f} | {_pct(p['ceiling'])} |"
                )
        lines.append("")
    lines += ["## Plans", ""]
    for s in settings:
        cells = ", ".join(f"{c} {w:g}" for c, w in s["cell_weights"].items())
        lines.append(f"- **{s['setting']}** (plan round {s['plan_round']}; cells {cells}):")
        for seg_id, seg in s["plan_segments"].items():
            alloc = ", ".join(f"{a} {w:g}" for a, w in seg["allocation"].items())
            lines.append(f"  - `{seg_id}` ({seg['rule']}): {alloc}")
    lines += [
        "",
        "## Check speed",
        "",
        "| rows | median (s) | fastest (s) |",
        "| --- | --- | --- |",
        *(f"| {int(n):,} | {t['median_s']:.3f} | {t['min_s']:.3f} |" for n, t in results["timing"].items()),
        "",
    ]
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    except OSError:
        return "unknown (no git)"
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 valid rounds and 50 loss replicates per setting")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="worker processes")
    parser.add_argument("--render", type=Path, help="rewrite the markdown from a results JSON and exit")
    args = parser.parse_args()
    if args.render:
        results = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(render(results))
        return
    sizes = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    jobs = [
        (i, start, min(start + CHUNK, sizes["valid"]), sizes["power"])
        for i in range(len(SETTINGS))
        for start in range(0, sizes["valid"], CHUNK)
    ]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        chunks = list(pool.map(run_chunk, *zip(*jobs)))
    timing = _time_check()
    results = {
        "quick": args.quick,
        "written": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "workers": args.workers,
        "machine": _machine(),
        "commit": _commit(),
        "base_seed": BASE_SEED,
        "round_size": ROUND_SIZE,
        "alpha": ALPHA,
        "alpha_shares": ALPHA_SHARES,
        "valid_rounds": sizes["valid"],
        "power_replicates": sizes["power"],
        "settings": _aggregate(chunks, sizes["power"]),
        "timing": timing,
    }
    results["run_minutes"] = (time.perf_counter() - t0) / 60
    stem = "srm_results_quick" if args.quick else "srm_results"
    (BENCH_DIR / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (BENCH_DIR / f"{stem}.md").write_text(render(results))
    print((BENCH_DIR / f"{stem}.md").read_text())


if __name__ == "__main__":
    main()
