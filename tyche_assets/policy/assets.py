"""policy_tree → allocation → round_plan: segments, per-segment Thompson allocation, the published plan."""

import base64
import json

import dagster as dg
import pandas as pd

from tyche_lib import (
    build_plan,
    derive_seed,
    experiment_evolution_gif,
    fit_policy_tree,
    plot_cells,
    plot_policy_tree,
    png_markdown,
    thompson_allocation,
)

from ..lineage import code_version, text_version
from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=["posterior"],
    pool=DUCKDB_POOL,
    code_version="policy_tree-2",
    group_name="policy",
    kinds={"sklearn"},
)
def policy_tree(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """A shallow tree on posterior-mean contrasts; its leaves are the segments, each with a readable rule."""
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    fitted = storage.load_posterior(spec, round_)
    seed = derive_seed(experiment_id, round_, "policy_tree")
    tree = fit_policy_tree(
        fitted,
        max_depth=spec.max_depth,
        min_segment_share=spec.min_segment_share,
        rng=seed,
        split_confidence=spec.split_confidence,
    )
    version = text_version(storage.save_tree(experiment_id, round_, tree))
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
    with storage.connect() as conn:
        storage.replace_partition(conn, "segments", experiment_id, round_, table)
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
    fitted = storage.load_posterior(spec, round_)
    tree = storage.load_tree(experiment_id, round_)
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
    with storage.connect() as conn:
        storage.replace_partition(conn, "allocations", experiment_id, round_, table)
    preview = build_plan(spec, round_ + 1, tree, weights)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "allocation": dg.MetadataValue.md(pd.DataFrame(weights).T.rename_axis("segment").round(4).to_markdown()),
            "cells_and_allocation": dg.MetadataValue.md(png_markdown(plot_cells(preview))),
        },
    )


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
    ``plans/<experiment>/<round key>.json`` with the lineage that produced it.

    The JSON holds only what the inputs determine (data versions, code version, spec hash, rows per
    round, seeds, model summary), so a backfill reproduces it byte for byte; the run that published it
    is recorded in the plans table, the asset metadata and ``plans/<experiment>/<round key>.run.json``.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    tree = storage.load_tree(experiment_id, round_)
    weights = storage.load_allocation(experiment_id, round_, spec.arms)
    lineage = storage.round_lineage(experiment_id, round_)
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
    version = storage.publish_plan(plan, produced_by_round=round_, run_id=run_id)
    plan_file = storage.plan_path(experiment_id, plan.round)
    # All plans published so far, one frame each; plans from before a change of arms cannot share the frames.
    frames = [p for p in storage.published_plans(experiment_id) if p.arms == plan.arms]
    evolution = experiment_evolution_gif(frames, storage.evolution_gif_path(experiment_id))
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
