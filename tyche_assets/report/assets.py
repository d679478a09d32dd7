"""round_report: anytime-valid effects, guardrails, decision quantities and the recommendation.

The report of a round whose sample-ratio check failed is HALT, written by that check itself
(``TycheStorage.write_halt_report``): a failed blocking check skips every asset downstream of the
round, this one included, so the check is the one place that still runs.
"""

import dagster as dg
import numpy as np
import pandas as pd

from tyche_lib import (
    DecisionQuantities,
    ExperimentSpec,
    Plan,
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

from ..partitions import experiment_and_round, experiment_round_partitions, previous_round, rounds_up_to
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import (
    EFFECT_COLUMNS,
    HELD_OUT_COLUMNS,
    TycheStorage,
    effects_table,
    json_safe,
    recommendation_record,
)


def _records(frame: pd.DataFrame) -> list[dict]:
    return json_safe(frame.astype(object).where(frame.notna(), None).to_dict("records"))


def _history(storage: TycheStorage, spec: ExperimentSpec, round_: int) -> list[DecisionQuantities]:
    """Decision quantities of the rounds before ``round_``, oldest first, arms in spec order."""
    experiment_id = spec.id
    before = previous_round(round_)
    if before is None:
        return []
    with storage.connect() as conn:
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
    deps=["policy_tree"],
    pool=DUCKDB_POOL,
    code_version="round_report-2",
    group_name="report",
    kinds={"json", "duckdb"},
)
def round_report(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Effects per treatment overall and per segment (anytime-valid interval, always-valid p-value,
    BH decision), guardrail verdicts, P(best), expected loss, the value of one more round and the
    SHIP / CONTINUE / STOP recommendation; written to DuckDB and ``reports/<experiment>/<round key>.json``.

    ``held_out_segment_effects`` scores the segments of the plan that governed round r on round r's
    rows only (``segment_effects``), the intervals to quote for a segment: the per-segment effects
    over all rounds use the segments just found on those same rows and inherit the selection.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    decision = spec.decision
    fitted = storage.load_posterior_with_rows(spec, round_, _report_columns(spec))
    tree = storage.load_tree(experiment_id, round_)
    rows = fitted.observed  # every usable round <= r, as the posterior saw them
    rounds = sorted(int(r) for r in rows["round"].unique())
    sample_ratio = storage.check_result(experiment_id, round_, "round_visitors_sample_ratio")
    plan_in_force = storage.plan_in_force(experiment_id, round_)
    # Fails closed: a round without a stored sample-ratio result is not interpreted.
    sample_ratio_ok = sample_ratio[0] if sample_ratio is not None else None

    metrics = analyze_metrics(rows, spec)
    segments = tree.segment_of(rows)
    tree_segment_effects = _segment_effects(rows, spec, segments)
    this_round = rows[rows["round"] == round_]
    held_out = (
        _held_out_segment_effects(
            this_round, spec, plan_in_force, derive_seed(experiment_id, round_, "segment_effects")
        )
        if plan_in_force is not None
        else pd.DataFrame(columns=HELD_OUT_COLUMNS)
    )
    quantities = decision_quantities(fitted, segments=segments, round=round_)
    history = [*_history(storage, spec, round_), quantities]
    rec = recommend(
        sample_ratio_ok,
        metrics,
        history,
        settings=spec.decision,
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
    table = effects_table(experiment_id, round_, effects)
    dq = quantities.to_frame()
    with storage.connect() as conn:
        storage.replace_partition(
            conn, "decision_quantities", experiment_id, round_, dq.assign(experiment_id=experiment_id)
        )
    report = {
        "experiment_id": experiment_id,
        "round": round_,
        "rounds_used": rounds,
        "rows": len(rows),
        "recommendation": recommendation_record(rec),
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
    storage.store_report(experiment_id, round_, report, table, held_out, context.run.run_id)

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
            "prob_best": dg.MetadataValue.json(json_safe(quantities.prob_best.round(4).to_dict())),
            "value_of_one_more_round": float(value.value),
            "effects_over_rounds": dg.MetadataValue.md(
                png_markdown(plot_effects_over_rounds(path, arms=spec.arms, metric=spec.primary.name))
            ),
            "report_file": dg.MetadataValue.path(str(storage.report_path(experiment_id, round_))),
        },
    )
