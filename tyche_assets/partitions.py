"""Experiment × round partitions, the round keys, and the round arithmetic no partition mapping expresses.

Round keys are ``r`` and the round number zero-padded to six digits (``r000001``), so that the
string order of keys, which file listings and JSON's sorted keys use, is the numeric order of
rounds up to round 999,999 (a round an hour for a century). Keys of the first layout, three digits
(``r001``), still parse. Dagster lists dynamic partitions in the order they were added, so
:func:`register_partitions` adds rounds in numeric order too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg

experiment_partitions = dg.DynamicPartitionsDefinition(name="experiment")
round_partitions = dg.DynamicPartitionsDefinition(name="round")
experiment_round_partitions = dg.MultiPartitionsDefinition(
    {"experiment": experiment_partitions, "round": round_partitions}
)

ROUND_KEY_DIGITS = 6
MAX_ROUND = 10**ROUND_KEY_DIGITS - 1
# Three digits or more: the keys of the first layout (``r001``) name the same rounds.
_ROUND_KEY = re.compile(r"^r(\d{3,})$")


def round_key(round: int) -> str:
    """Partition key of a round, e.g. ``r000001``: string order is round order."""
    if not 1 <= round <= MAX_ROUND:
        raise ValueError(f"round = {round}: rounds are numbered from 1 to {MAX_ROUND}")
    return f"r{int(round):0{ROUND_KEY_DIGITS}d}"


def round_number(key: str) -> int:
    """The round a key names: ``r000001`` or a key of the first layout, ``r001``."""
    m = _ROUND_KEY.match(key)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"round partition key {key!r}: expected r<round>, e.g. {round_key(1)}")
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


def register_partitions(instance: dg.DagsterInstance, experiment_id: str, rounds: Iterable[int] = ()) -> None:
    """Add the experiment and its rounds to the dynamic partitions, rounds in numeric order (idempotent).

    The one way Tyche adds partitions: the sensors, the schedules, the demo and the tests call it.
    """
    if not instance.has_dynamic_partition(experiment_partitions.name, experiment_id):
        instance.add_dynamic_partitions(experiment_partitions.name, [experiment_id])
    existing = set(instance.get_dynamic_partitions(round_partitions.name))
    new = [key for key in map(round_key, sorted(set(rounds))) if key not in existing]
    if new:
        instance.add_dynamic_partitions(round_partitions.name, new)
