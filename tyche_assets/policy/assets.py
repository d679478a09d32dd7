"""policy_tree → allocation → round_plan: segments, per-segment Thompson allocation, the published plan."""

import base64
import json

import dagster as dg
import pandas as pd

from tyche_lib import (
    Plan,
    PolicyTree,
    build_plan,
    derive_seed,
    experiment_evolution_gif,
    fit_policy_tree,
    plot_cells,
    plot_policy_tree,
    png_markdown,
    thompson_allocation,
)

from ..experiments.plans import publish_plan
from ..lineage import code_version, text_version
from ..model.assets import load_posterior, posterior
from ..partitions import experiment_and_round, experiment_round_partitions, round_key
from ..resources import DUCKDB_POOL, ExperimentCatalog, TycheStorage
from ..storage import connect, replace_partition, write_text_atomic


def load_tree(storage: TycheStorage, experiment_id: str, round_: int) -> PolicyTree:
    path = storage.tree_path(experiment_id, round_key(round_))
    if not path.exists():
        raise dg.Failure(f"no policy tree stored for {experiment_id} round {round_}: materialise 'policy_tree' first")
    return PolicyTree.from_dict(json.loads(path.read_text()))


def load_allocation(storage: TycheStorage, experiment_id: str, round_: int, arms) -> dict[str, dict[str, float]]:
    with connect(storage) as conn:
        rows = conn.execute(
            "SELECT segment_id, arm, weight FROM allocations WHERE experiment_id = ? AND round = ?",
            [experiment_id, round_],
        ).df()
    if rows.empty:
        raise dg.Failure(f"no allocation stored for {experiment_id} round {round_}: materialise 'allocation' first")
    return {
        seg: {a: float(group.set_index("arm").loc[a, "weight"]) for a in arms}
        for seg, group in rows.groupby("segment_id", sort=True)
    }


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=[posterior],
    pool=DUCKDB_POOL,
    code_version="policy_tree-2",
    group_name="policy",
    kinds={"sklearn"},
)
def policy_tree(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """A shallow tree on posterior-mean contrasts; its leaves are the segments, each with a readable rule."""
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    fitted = load_posterior(storage, spec, experiment_id, round_)
    seed = derive_seed(experiment_id, round_, "policy_tree")
    tree = fit_policy_tree(
        fitted,
        max_depth=spec.max_depth,
        min_segment_share=spec.min_segment_share,
        rng=seed,
        split_confidence=spec.split_confidence,
    )
    text = json.dumps(tree.to_dict(), sort_keys=True, indent=2)
    version = text_version(text)
    write_text_atomic(storage.tree_path(experiment_id, round_key(round_)), text)
    table = pd.DataFrame(
        [
            {
                "experiment_id": experiment_id,
                "round": round_,
                "segment_id": s.id,
                "rule_json": json.dumps(s.rule.to_dict(), sort_keys=True),
                "rule_text": str(s.rule),
                "share": s.share,
                "n": s.n,
                "leading_arm": s.leading_arm,
                "data_version": version,
            }
            for s in tree.segments
        ]
    )
    with connect(storage) as conn:
        replace_partition(conn, "segments", experiment_id, round_, table)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "segments": len(tree.segments),
            "seed": str(seed),
            "tree": dg.MetadataValue.md("```\n" + str(tree) + "\n```"),
        },
    )


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=[policy_tree],
    pool=DUCKDB_POOL,
    code_version="allocation-1",
    group_name="policy",
    kinds={"duckdb"},
)
def allocation(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Per-segment Thompson allocation: each arm's share is its posterior probability of being the segment's best."""
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    fitted = load_posterior(storage, spec, experiment_id, round_)
    tree = load_tree(storage, experiment_id, round_)
    weights = thompson_allocation(fitted, tree.segments, epsilon=spec.epsilon)
    version = text_version(json.dumps(weights, sort_keys=True))
    table = pd.DataFrame(
        [
            {
                "experiment_id": experiment_id,
                "round": round_,
                "segment_id": seg,
                "arm": arm,
                "weight": w,
                "data_version": version,
            }
            for seg, alloc in weights.items()
            for arm, w in alloc.items()
        ]
    )
    with connect(storage) as conn:
        replace_partition(conn, "allocations", experiment_id, round_, table)
    preview = build_plan(spec, round_ + 1, tree, weights)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "allocation": dg.MetadataValue.md(pd.DataFrame(weights).T.rename_axis("segment").round(4).to_markdown()),
            "cells_and_allocation": dg.MetadataValue.md(png_markdown(plot_cells(preview))),
        },
    )


def _data_versions(conn, experiment_id: str, round_: int) -> dict:
    fit = conn.execute(
        "SELECT rounds_used, data_version, seed, method, n_rows, draws, family FROM posterior_fits "
        "WHERE experiment_id = ? AND round = ?",
        [experiment_id, round_],
    ).fetchall()[0]
    rounds_used = [int(r) for r in fit[0].split(",")]
    per_round = conn.execute(
        "SELECT round, data_version, n_rows FROM round_data WHERE experiment_id = ? AND list_contains(?, round) ORDER BY round",
        [experiment_id, rounds_used],
    ).fetchall()
    tree_version = conn.execute(
        "SELECT any_value(data_version) FROM segments WHERE experiment_id = ? AND round = ?", [experiment_id, round_]
    ).fetchall()[0][0]
    alloc_version = conn.execute(
        "SELECT any_value(data_version) FROM allocations WHERE experiment_id = ? AND round = ?", [experiment_id, round_]
    ).fetchall()[0][0]
    summary = conn.execute(
        "SELECT parameter, mean, sd FROM posterior_summaries WHERE experiment_id = ? AND round = ? ORDER BY parameter",
        [experiment_id, round_],
    ).fetchall()
    return {
        "data_versions": {
            "round_visitors": {round_key(r): v for r, v, _ in per_round},
            "posterior": fit[1],
            "policy_tree": tree_version,
            "allocation": alloc_version,
        },
        "rows_per_round": {round_key(r): int(n) for r, _, n in per_round},
        "posterior_seed": int(fit[2]),
        "model_summary": {
            "family": fit[6],
            "method": fit[3],
            "n_rows": int(fit[4]),
            "draws": int(fit[5]),
            "coefficients": {p: {"mean": round(m, 6), "sd": round(s, 6)} for p, m, s in summary},
        },
    }


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=[allocation],
    pool=DUCKDB_POOL,
    code_version="round_plan-1",
    group_name="policy",
    kinds={"json", "duckdb"},
)
def round_plan(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """The plan for round r + 1 (control, explore and optimized cells), published to the plans table and
    ``plans/<experiment>/r<NNN>.json`` with the lineage that produced it.

    The JSON holds only what the inputs determine (data versions, code version, spec hash, rows per
    round, seeds, model summary), so a backfill reproduces it byte for byte; the run that published it
    is recorded in the plans table, the asset metadata and ``plans/<experiment>/r<NNN>.run.json``.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    tree = load_tree(storage, experiment_id, round_)
    weights = load_allocation(storage, experiment_id, round_, spec.arms)
    with connect(storage) as conn:
        lineage = _data_versions(conn, experiment_id, round_)
    lineage.update(
        {
            "produced_by_round": round_,
            "code_version": code_version(),
            "spec_hash": spec.content_hash(),
            "policy_tree_seed": derive_seed(experiment_id, round_, "policy_tree"),
        }
    )
    plan = build_plan(spec, round_ + 1, tree, weights, lineage=lineage)
    run_id = context.run.run_id
    with connect(storage) as conn:
        version = publish_plan(conn, storage, plan, produced_by_round=round_, run_id=run_id)
    plan_file = storage.plan_path(experiment_id, round_key(plan.round))
    write_text_atomic(
        plan_file.with_suffix(".run.json"),
        json.dumps({"run_id": run_id, "plan_data_version": version, "plan_file": plan_file.name}, indent=2) + "\n",
    )
    with connect(storage) as conn:
        history = conn.execute(
            "SELECT plan_json FROM plans WHERE experiment_id = ? ORDER BY governs_round", [experiment_id]
        ).fetchall()
    # All plans published so far, one frame each; plans from before a change of arms cannot share the frames.
    frames = [p for p in (Plan.from_json(text) for (text,) in history) if p.arms == plan.arms]
    evolution = experiment_evolution_gif(frames, storage.path("plans", experiment_id, "evolution.gif"))
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "governs_round": plan.round,
            "plan_file": dg.MetadataValue.path(str(plan_file)),
            "run_id": run_id,
            "code_version": lineage["code_version"],
            "spec_hash": lineage["spec_hash"],
            "lineage": dg.MetadataValue.json(plan.to_dict()["lineage"]),
            "segments": dg.MetadataValue.md(
                "\n".join(
                    f"- **{s.id}** `{s.rule}`: " + ", ".join(f"{a} {w:.1%}" for a, w in s.allocation.items())
                    for s in plan.segments
                )
            ),
            "cells_and_allocation": dg.MetadataValue.md(png_markdown(plot_cells(plan))),
            "policy_tree": dg.MetadataValue.md(png_markdown(plot_policy_tree(plan))),
            "evolution_gif": dg.MetadataValue.path(str(evolution)),
            "evolution": dg.MetadataValue.md(
                f"![evolution of {experiment_id}](data:image/gif;base64,{base64.b64encode(evolution.read_bytes()).decode()})"
            ),
        },
    )
