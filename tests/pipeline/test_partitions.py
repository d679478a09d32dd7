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


def test_round_keys_sort_as_rounds_past_999():
    rounds = [1, 2, 10, 998, 999, 1000, 1001, 99_999, 100_000, 999_999]
    keys = [round_key(r) for r in rounds]
    assert sorted(keys) == keys  # string order is round order
    assert keys[3:7] == ["r000998", "r000999", "r001000", "r001001"]
    assert sorted(reversed(keys)) == keys
    assert [round_number(k) for k in keys] == rounds


def test_round_keys_of_the_first_layout_still_parse():
    assert [round_number(k) for k in ("r001", "r999", "r1000")] == [1, 999, 1000]


def test_round_keys_reject_what_is_not_a_round():
    for bad in ("round-3", "r1", "r01", "r000000", "3"):
        with pytest.raises(ValueError, match="expected r<round>"):
            round_number(bad)
    for bad in (0, 1_000_000):
        with pytest.raises(ValueError, match="numbered from 1"):
            round_key(bad)


def test_previous_round_and_rounds_up_to():
    assert previous_round(1) is None and previous_round(4) == 3
    assert rounds_up_to(3) == [1, 2, 3]


def test_register_partitions_is_idempotent_and_adds_rounds_in_order():
    with dg.instance_for_test() as instance:
        register_partitions(instance, "exp", [1, 2])
        register_partitions(instance, "exp", [2, 3])
        register_partitions(instance, "other")
        # Dagster lists dynamic partitions in the order they were added: numeric, not the order given.
        register_partitions(instance, "exp", [1001, 999, 1000])
        assert instance.get_dynamic_partitions("experiment") == ["exp", "other"]
        assert instance.get_dynamic_partitions("round") == [
            "r000001",
            "r000002",
            "r000003",
            "r000999",
            "r001000",
            "r001001",
        ]
    assert partition_key("exp", 1000).keys_by_dimension == {"experiment": "exp", "round": "r001000"}
