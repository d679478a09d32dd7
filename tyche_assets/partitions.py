"""Experiment × round partitions, and the round arithmetic no partition mapping expresses."""

from __future__ import annotations

import re

import dagster as dg

experiment_partitions = dg.DynamicPartitionsDefinition(name="experiment")
round_partitions = dg.DynamicPartitionsDefinition(name="round")
experiment_round_partitions = dg.MultiPartitionsDefinition(
    {"experiment": experiment_partitions, "round": round_partitions}
)

_ROUND_KEY = re.compile(r"^r(\d{3,})$")


def round_key(round: int) -> str:
    """Partition key of a round: zero-padded so keys sort, e.g. ``r001``."""
    if round < 1:
        raise ValueError(f"round = {round}: rounds are numbered from 1")
    return f"r{int(round):03d}"


def round_number(key: str) -> int:
    m = _ROUND_KEY.match(key)
    if not m:
        raise ValueError(f"round partition key {key!r}: expected r<NNN>, e.g. r001")
    return int(m.group(1))


def partition_key(experiment_id: str, round: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"experiment": experiment_id, "round": round_key(round)})


def experiment_and_round(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[str, int]:
    """The (experiment id, round number) of the partition being run."""
    keys = context.partition_key.keys_by_dimension
    return keys["experiment"], round_number(keys["round"])


def previous_round(round: int) -> int | None:
    """The round before ``round``; ``None`` for the first."""
    return round - 1 if round > 1 else None


def rounds_up_to(round: int) -> list[int]:
    """All rounds 1..round: the data a round's posterior is fitted on."""
    return list(range(1, round + 1))


def register_partitions(instance: dg.DagsterInstance, experiment_id: str, rounds: list[int]) -> None:
    """Add the experiment and its rounds to the dynamic partitions (idempotent)."""
    if not instance.has_dynamic_partition(experiment_partitions.name, experiment_id):
        instance.add_dynamic_partitions(experiment_partitions.name, [experiment_id])
    existing = set(instance.get_dynamic_partitions(round_partitions.name))
    new = [round_key(r) for r in rounds if round_key(r) not in existing]
    if new:
        instance.add_dynamic_partitions(round_partitions.name, new)
