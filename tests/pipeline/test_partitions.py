"""Round keys and the round arithmetic no partition mapping expresses."""

import dagster as dg
import pytest

from tyche_assets.partitions import (
    partition_key,
    previous_round,
    register_partitions,
    round_key,
    round_number,
    rounds_up_to,
)


def test_round_keys_sort_and_parse():
    keys = [round_key(r) for r in (1, 2, 10, 100, 1000)]
    assert keys == sorted(keys) == ["r001", "r002", "r010", "r100", "r1000"]
    assert [round_number(k) for k in keys] == [1, 2, 10, 100, 1000]
    with pytest.raises(ValueError, match="r<NNN>"):
        round_number("round-3")
    with pytest.raises(ValueError, match="from 1"):
        round_key(0)


def test_previous_round_and_rounds_up_to():
    assert previous_round(1) is None and previous_round(4) == 3
    assert rounds_up_to(3) == [1, 2, 3]


def test_register_partitions_is_idempotent():
    with dg.instance_for_test() as instance:
        register_partitions(instance, "exp", [1, 2])
        register_partitions(instance, "exp", [2, 3])
        assert instance.get_dynamic_partitions("experiment") == ["exp"]
        assert instance.get_dynamic_partitions("round") == ["r001", "r002", "r003"]
    assert partition_key("exp", 2).keys_by_dimension == {"experiment": "exp", "round": "r002"}
