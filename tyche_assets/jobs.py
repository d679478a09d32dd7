"""round_job: every asset and check of one experiment × round partition."""

import dagster as dg

from .partitions import experiment_round_partitions

ROUND_GROUPS = ("ingest", "model", "policy", "report")

round_job = dg.define_asset_job(
    "round_job",
    selection=dg.AssetSelection.groups(*ROUND_GROUPS),
    partitions_def=experiment_round_partitions,
    description="One round of one experiment: ingest → blocking checks → posterior → tree → allocation → plan → report.",
)
