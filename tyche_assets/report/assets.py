"""round_report: anytime-valid effects, guardrails, decision quantities and the recommendation.

The report of a round whose sample-ratio check failed is HALT, written by that check itself
(:func:`write_halt_report`): a failed blocking check skips every asset downstream of the round,
this one included, so the check is the one place that still runs.
"""

import json
import math

import dagster as dg
import numpy as np
import pandas as pd

from tyche_lib import (
    Decision,
    DecisionQuantities,
    ExperimentSpec,
    Plan,
    Recommendation,
    analyze_metrics,
    decision_quantities,
    derive_seed,
    expected_value_of_one_more_round,
    mad_confidence_path,
    plot_effects_over_rounds,
    png_markdown,
    recommend,
    segment_effects,
)

from ..model.assets import load_posterior_with_rows
from ..partitions import experiment_and_round, experiment_round_partitions, previous_round, round_key, rounds_up_to
from ..policy.assets import load_tree, policy_tree
from ..resources import DUCKDB_POOL, ExperimentCatalog, TycheStorage
from ..storage import connect, plan_in_force_json, replace_partition, write_text_atomic


def _clean(value):
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _records(frame: pd.DataFrame) -> list[dict]:
    return _clean(frame.astype(object).where(frame.notna(), None).to_dict("records"))


HELD_OUT_COLUMNS = [
    "segment_id",
    "rule_text",
    "treatment",
    "n_control",
    "n_treatment",
    "mean",
    "sd",
    "lower_50",
    "upper_50",
    "lower_90",
    "upper_90",
    "prob_positive",
]


def _store_report(
    storage: TycheStorage,
    experiment_id: str,
    round_: int,
    report: dict,
    effects: pd.DataFrame,
    held_out: pd.DataFrame,
    run_id: str,
) -> None:
    text = json.dumps(_clean(report), sort_keys=True, indent=2) + "\n"
    row = pd.DataFrame(
        [
            {
                "experiment_id": experiment_id,
                "round": round_,
                "recommendation": report["recommendation"]["decision"],
                "report_json": text,
                "run_id": run_id,
            }
        ]
    )
    with connect(storage) as conn:
        replace_partition(conn, "reports", experiment_id, round_, row)
        replace_partition(conn, "report_effects", experiment_id, round_, effects)
        replace_partition(
            conn,
            "held_out_segment_effects",
            experiment_id,
            round_,
            held_out.assign(experiment_id=experiment_id, round=round_),
        )
    write_text_atomic(storage.report_path(experiment_id, round_key(round_)), text)


def _recommendation_dict(rec: Recommendation) -> dict:
    return {
        "decision": str(rec.decision),
        "arm": rec.arm,
        "reasons": list(rec.reasons),
        "stop_arms": list(rec.stop_arms),
    }


def write_halt_report(storage: TycheStorage, experiment_id: str, round_: int, message: str, run_id: str) -> None:
    """Record HALT for a round whose sample-ratio check failed: no effect is interpreted."""
    rec = Recommendation(
        decision=Decision.HALT,
        arm=None,
        reasons=(
            f"sample-ratio mismatch in round {round_}: the data cannot be trusted; investigate the assignment "
            f"before reading any effect",
            message,
        ),
    )
    report = {
        "experiment_id": experiment_id,
        "round": round_,
        "recommendation": _recommendation_dict(rec),
        "effects": [],
        "guardrails": [],
        "decision_quantities": [],
    }
    _store_report(
        storage,
        experiment_id,
        round_,
        report,
        _effects_table(experiment_id, round_, pd.DataFrame()),
        pd.DataFrame(columns=HELD_OUT_COLUMNS),
        run_id,
    )


EFFECT_COLUMNS = [
    "metric",
    "role",
    "segment_id",
    "arm",
    "estimate",
    "lower",
    "upper",
    "p_value",
    "q_value",
    "discovery",
]


def _effects_table(experiment_id: str, round_: int, effects: pd.DataFrame) -> pd.DataFrame:
    out = effects.reindex(columns=EFFECT_COLUMNS).rename(columns={"discovery": "significant"}).copy()
    out.insert(0, "round", round_)
    out.insert(0, "experiment_id", experiment_id)
    out["significant"] = out["significant"].astype("boolean")
    return out


def _history(storage: TycheStorage, spec: ExperimentSpec, round_: int) -> list[DecisionQuantities]:
    """Decision quantities of the rounds before ``round_``, oldest first, arms in spec order."""
    experiment_id = spec.id
    before = previous_round(round_)
    if before is None:
        return []
    with connect(storage) as conn:
        frame = conn.execute(
            "SELECT * FROM decision_quantities WHERE experiment_id = ? AND list_contains(?, round) ORDER BY round",
            [experiment_id, rounds_up_to(before)],
        ).df()
    # SQL returns rows in no particular order; DecisionQuantities reads the arm order from them.
    frame["arm_order"] = frame["arm"].map({a: i for i, a in enumerate(spec.arms)})
    frame = frame.sort_values(["round", "arm_order"], kind="mergesort").drop(columns=["arm_order", "experiment_id"])
    return [DecisionQuantities.from_frame(g) for _, g in frame.groupby("round", sort=True)]


def _report_columns(spec: ExperimentSpec) -> list[str]:
    """What the report reads of the rows: arrival order, routing, covariates, every metric (not visitor ids)."""
    pre_period = [spec.pre_period] if spec.pre_period else []
    return [
        "round",
        "assigned_at",
        "cell",
        "segment_id",
        "arm",
        "assignment_prob",
        *spec.covariate_names,
        *(m.name for m in spec.metrics),
        *pre_period,
    ]


def _held_out_segment_effects(rows: pd.DataFrame, spec: ExperimentSpec, plan: Plan, seed: int) -> pd.DataFrame:
    """The plan in force's segments scored on this round alone: data the tree that chose them never saw."""
    table = segment_effects(rows, spec, rng=seed).table
    rules = {s.id: str(s.rule) for s in plan.segments}
    return table.assign(rule_text=table["segment_id"].map(rules)).reindex(columns=HELD_OUT_COLUMNS)


def _segment_effects(rows: pd.DataFrame, spec: ExperimentSpec, segments: np.ndarray) -> pd.DataFrame:
    parts = []
    for seg in pd.unique(segments):
        members = rows[segments == seg]
        share = len(members) / len(rows)
        result = analyze_metrics(
            members,
            spec,
            t_star=max(1.0, spec.decision.planned_visitors * share),
            alpha=spec.decision.alpha,
            fdr=spec.decision.fdr,
        )
        parts.append(result.effects.assign(segment_id=seg))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=[policy_tree],
    pool=DUCKDB_POOL,
    code_version="round_report-2",
    group_name="report",
    kinds={"json", "duckdb"},
)
def round_report(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Effects per treatment overall and per segment (anytime-valid interval, always-valid p-value,
    BH decision), guardrail verdicts, P(best), expected loss, the value of one more round and the
    SHIP / CONTINUE / STOP recommendation; written to DuckDB and ``reports/<experiment>/rNNN.json``.

    ``held_out_segment_effects`` scores the segments of the plan that governed round r on round r's
    rows only (``segment_effects``), the intervals to quote for a segment: the per-segment effects
    over all rounds use the segments just found on those same rows and inherit the selection.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    decision = spec.decision
    fitted = load_posterior_with_rows(storage, spec, experiment_id, round_, _report_columns(spec))
    tree = load_tree(storage, experiment_id, round_)
    rows = fitted.observed  # every usable round <= r, as the posterior saw them
    rounds = sorted(int(r) for r in rows["round"].unique())
    with connect(storage) as conn:
        srm = conn.execute(
            "SELECT passed, message FROM round_checks WHERE experiment_id = ? AND round = ? AND check_name = ?",
            [experiment_id, round_, "round_visitors_sample_ratio"],
        ).fetchall()
        plan_json = plan_in_force_json(conn, experiment_id, round_)
    sample_ratio_ok = bool(srm[0][0]) if srm else True

    metrics = analyze_metrics(rows, spec, t_star=decision.planned_visitors, alpha=decision.alpha, fdr=decision.fdr)
    segments = tree.segment_of(rows)
    tree_segment_effects = _segment_effects(rows, spec, segments)
    this_round = rows[rows["round"] == round_]
    held_out = (
        _held_out_segment_effects(
            this_round, spec, Plan.from_json(plan_json), derive_seed(experiment_id, round_, "segment_effects")
        )
        if plan_json is not None
        else pd.DataFrame(columns=HELD_OUT_COLUMNS)
    )
    quantities = decision_quantities(fitted, segments=segments, round=round_)
    history = [*_history(storage, spec, round_), quantities]
    rec = recommend(
        sample_ratio_ok,
        metrics,
        history,
        loss_threshold=decision.loss_threshold,
        prob_best=decision.prob_best,
        sustained_rounds=decision.sustained_rounds,
        stop_prob=decision.stop_prob,
    )
    arm_share = this_round["arm"].value_counts(normalize=True).reindex(spec.arms).fillna(0.0) + 1e-9
    variance = rows.groupby("arm", observed=True)[spec.primary.name].var().reindex(spec.arms).fillna(0.0) + 1e-12
    value = expected_value_of_one_more_round(
        quantities,
        visitors=len(this_round),
        allocation=(arm_share / arm_share.sum()).to_dict(),
        outcome_variance=variance.to_dict(),
        rng=derive_seed(experiment_id, round_, "value_of_one_more_round"),
    )

    overall = metrics.effects.assign(segment_id=None)
    effects = pd.concat([overall, tree_segment_effects], ignore_index=True)
    table = _effects_table(experiment_id, round_, effects)
    dq = quantities.to_frame()
    with connect(storage) as conn:
        replace_partition(conn, "decision_quantities", experiment_id, round_, dq.assign(experiment_id=experiment_id))
    report = {
        "experiment_id": experiment_id,
        "round": round_,
        "rounds_used": rounds,
        "rows": len(rows),
        "recommendation": _recommendation_dict(rec),
        "effects": _records(overall[EFFECT_COLUMNS[:2] + EFFECT_COLUMNS[3:]]),
        "segment_effects": _records(tree_segment_effects.reindex(columns=EFFECT_COLUMNS)),
        "held_out_segment_effects": _records(held_out),
        "segments": [s.to_dict() for s in tree.segments],
        "guardrails": _records(metrics.guardrails),
        "decision_quantities": _records(dq),
        "value_of_one_more_round": {
            "value": value.value,
            "expected_loss_now": value.expected_loss_now,
            "visitors": value.visitors,
        },
    }
    _store_report(storage, experiment_id, round_, report, table, held_out, context.run.run_id)

    path = mad_confidence_path(
        rows,
        outcome=spec.primary.name,
        control=spec.control,
        t_star=decision.planned_visitors,
        alpha=decision.alpha,
        arms=spec.arms,
        looks="round",
    )
    primary = metrics.primary()
    return dg.MaterializeResult(
        metadata={
            "recommendation": str(rec.decision),
            "arm": rec.arm or "",
            "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in rec.reasons)),
            "primary_effects": dg.MetadataValue.md(
                primary[["arm", "estimate", "lower", "upper", "p_value", "q_value", "discovery"]]
                .round(5)
                .to_markdown(index=False)
            ),
            "held_out_segment_effects": dg.MetadataValue.md(
                held_out.round(5).to_markdown(index=False) if len(held_out) else "no plan in force"
            ),
            "guardrails": dg.MetadataValue.md(
                metrics.guardrails.round(5).to_markdown(index=False) if len(metrics.guardrails) else "none"
            ),
            "prob_best": dg.MetadataValue.json(_clean(quantities.prob_best.round(4).to_dict())),
            "value_of_one_more_round": float(value.value),
            "effects_over_rounds": dg.MetadataValue.md(
                png_markdown(plot_effects_over_rounds(path, arms=spec.arms, metric=spec.primary.name))
            ),
            "report_file": dg.MetadataValue.path(str(storage.report_path(experiment_id, round_key(round_)))),
        },
    )
