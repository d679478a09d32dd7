"""Quality suite: every kind of bad row fails with the column named and an example shown."""

import time

import numpy as np
import pandas as pd
import pytest

from tyche_lib import initial_plan
from tyche_lib.core import row_schema
from tyche_lib.measure import quality_check, quality_suite
from tyche_lib.simulate import continuous, hurdle_revenue, no_heterogeneity, segment_flip, simulate_round

SCENARIO = segment_flip(pre_period_correlation=0.5)
SPEC = SCENARIO.spec()


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return simulate_round(SCENARIO, initial_plan(SPEC), 2000, 1, rng=3)


def only_failure(result, column):
    assert not result.success
    failures = [f for f in result.failures if f.column == column]
    assert len(failures) == 1, result.message
    return failures[0]


@pytest.mark.parametrize("make", [segment_flip, no_heterogeneity, hurdle_revenue, continuous])
def test_clean_simulated_rows_pass(make):
    scenario = make()
    rows = simulate_round(scenario, initial_plan(scenario.spec()), 3000, 2, rng=1)
    result = quality_check(rows, scenario.spec())
    assert result.success, result.message
    assert result.failures == () and result.statistics["failed"] == 0
    assert result.statistics["rows"] == 3000 and result.statistics["expectations"] > 20
    assert "passed" in result.message


def test_missing_column_is_reported_as_missing_and_the_rest_still_runs(clean):
    bad = clean.drop(columns="arm")
    bad.loc[5, "converted"] = 2
    result = quality_check(bad, SPEC)
    missing = only_failure(result, "arm")
    assert missing.expectation == "expect_column_to_exist"
    assert "column 'arm': missing" in missing.message and "visitor_id" in missing.message
    # the other expectations were evaluated: a bad outcome elsewhere is still caught
    assert only_failure(result, "converted").examples == [2]


@pytest.mark.parametrize(
    "column, bad_value, rule",
    [
        ("arm", "purple", "arm is one of the spec's arms"),
        ("cell", "holdout", "cell is control, explore or optimized"),
        ("converted", 2, "converted is 0 or 1"),
        ("region", "mars", "region is a level listed in the spec"),
        ("age", 200.0, "age is in [18, 80]"),
        ("returning", "maybe", "returning is true or false"),
        ("latency_ms", np.inf, "latency_ms is finite"),
    ],
)
def test_a_bad_value_is_named_with_its_row(clean, column, bad_value, rule):
    bad = clean.copy()
    bad[column] = bad[column].astype(object)
    bad.loc[17, column] = bad_value
    failure = only_failure(quality_check(bad, SPEC), column)
    assert failure.rule == rule
    assert failure.examples == [bad_value] and failure.example_rows == [17] and failure.unexpected_count == 1
    assert (
        f"column '{column}'" in failure.message and repr(bad_value) in failure.message and "row 17" in failure.message
    )


def test_probabilities_must_be_in_zero_one(clean):
    bad = clean.copy()
    bad.loc[3, "assignment_prob"] = 0.0
    bad.loc[8, "assignment_prob"] = 1.2
    failure = only_failure(quality_check(bad, SPEC), "assignment_prob")
    assert failure.rule == "assignment_prob is in (0, 1]"
    assert failure.examples == [0.0, 1.2] and failure.example_rows == [3, 8] and failure.unexpected_count == 2
    exactly_one = clean.assign(assignment_prob=1.0)  # 1 is allowed (a single-arm routing)
    assert quality_check(exactly_one, SPEC).success


def test_duplicate_visitor_ids(clean):
    bad = clean.copy()
    bad.loc[12, "visitor_id"] = bad.loc[11, "visitor_id"]
    failure = only_failure(quality_check(bad, SPEC), "visitor_id")
    assert failure.rule == "visitor_id is unique" and failure.unexpected_count == 2
    assert failure.examples == [clean.loc[11, "visitor_id"]] * 2 and failure.example_rows == [11, 12]


def test_nulls(clean):
    bad = clean.copy()
    bad.loc[4, "device"] = None
    bad.loc[6, "pre_value"] = np.nan
    result = quality_check(bad, SPEC)
    for column, row in (("device", 4), ("pre_value", 6)):
        failure = only_failure(result, column)
        assert failure.rule == f"{column} has no nulls"
        assert failure.examples == [None] and failure.example_rows == [row]


def test_wrong_types(clean):
    # a whole column of text: the dtype is wrong, the first values are shown
    as_text = clean.assign(assignment_prob=clean["assignment_prob"].astype(str))
    failure = only_failure(quality_check(as_text, SPEC), "assignment_prob")
    assert failure.rule == "assignment_prob is numeric" and failure.unexpected_count == len(clean)
    assert failure.examples[0] == str(clean.loc[0, "assignment_prob"]) and failure.example_rows[0] == 0
    # one text value among numbers: that value and its row; the range check is not reported twice
    mixed = clean.copy()
    mixed["latency_ms"] = mixed["latency_ms"].astype(object)
    mixed.loc[9, "latency_ms"] = "slow"
    failure = only_failure(quality_check(mixed, SPEC), "latency_ms")
    assert failure.rule == "latency_ms is numeric"
    assert failure.examples == ["slow"] and failure.example_rows == [9]


def test_family_and_spec_ranges_of_metrics():
    scenario = hurdle_revenue()
    rows = simulate_round(scenario, initial_plan(scenario.spec()), 1000, 1, rng=2)
    rows.loc[2, "revenue"] = -5.0
    failures = {f.rule: f for f in quality_check(rows, scenario.spec()).failures}
    assert failures["revenue is >= 0"].examples == [-5.0]
    capped = scenario.spec(metrics={"primary": {"name": "revenue", "family": "hurdle", "maximum": 10_000.0}})
    rows.loc[2, "revenue"] = 25_000.0
    failure = only_failure(quality_check(rows, capped), "revenue")
    assert failure.rule == "revenue is in [0, 10000]" and failure.examples == [25_000.0]


def test_suite_is_built_from_the_spec():
    suite = quality_suite(SPEC)
    columns = {e.meta["column"] for e in suite.expectations}
    assert {
        "visitor_id",
        "cell",
        "arm",
        "assignment_prob",
        "segment_id",
        "device",
        "converted",
        "latency_ms",
        "pre_value",
        "rows",
    } <= columns
    rules = [e.meta["rule"] for e in suite.expectations]
    assert len(rules) == len(set(rules))  # each rule is reported under its own name
    # one expectation per check of the row schema, in the same order
    assert rules == [check.rule for check in row_schema(SPEC).checks()]
    # optional columns the rows lack get no expectations
    present = [c for c in row_schema(SPEC).names if c not in ("experiment_id", "round")]
    assert not {"experiment_id", "round"} & {
        e.meta["column"] for e in quality_suite(SPEC, columns=present).expectations
    }


def test_rows_of_another_partition(clean):
    result = quality_check(clean, SPEC, experiment_id="other", round=2)
    assert only_failure(result, "experiment_id").rule == "experiment_id is the partition's experiment"
    wrong_round = only_failure(result, "round")
    assert wrong_round.rule == "round is the partition's round" and wrong_round.unexpected_count == len(clean)
    assert "round 2" in wrong_round.message
    assert quality_check(clean, SPEC, experiment_id=SPEC.id, round=1).success


def test_blank_visitor_ids(clean):
    bad = clean.copy()
    bad.loc[[3, 7], "visitor_id"] = ["", "   "]
    failure = only_failure(quality_check(bad, SPEC), "visitor_id")
    assert failure.rule == "visitor_id is not blank"
    assert failure.examples == ["", "   "] and failure.example_rows == [3, 7]


def test_no_rows(clean):
    result = quality_check(clean.iloc[:0], SPEC)
    failure = only_failure(result, "rows")
    assert failure.rule == "the round has rows" and "rows: none" in failure.message
    assert quality_check(clean.iloc[:0], SPEC, allow_empty=True).success


def test_extra_columns_are_listed_not_failed(clean):
    result = quality_check(clean.assign(utm_source="ads"), SPEC)
    assert result.success and result.unknown_columns == ("utm_source",)
    assert result.statistics["unknown_columns"] == ["utm_source"] and "utm_source" in result.message
    assert quality_check(clean, SPEC).unknown_columns == ()


def test_a_hundred_thousand_rows_in_seconds():
    rows = simulate_round(SCENARIO, initial_plan(SPEC), 100_000, 1, rng=4)
    quality_check(rows.iloc[:10], SPEC)  # context already built by earlier tests; make sure
    t0 = time.perf_counter()
    result = quality_check(rows, SPEC)
    assert result.success
    # ~1.5 s measured on one core; the bound only guards against a pathological slowdown.
    assert time.perf_counter() - t0 < 20
