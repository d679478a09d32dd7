"""Round rows: one schema, two consumers (validate_rows and the quality suite) that agree row for row."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tyche_lib import RowsError, initial_plan, model_frame, simulate, validate_rows
from tyche_lib.core import row_schema, spec_from_dict, unknown_columns
from tyche_lib.core._rows import rows_reference_markdown
from tyche_lib.measure import quality_check

SCENARIO = simulate.segment_flip()
SIM_SPEC = SCENARIO.spec(id="rows")
# Every kind of column: listed and open categories, a boolean, a bounded number, the three metric
# families and a pre-period column.
SPEC = spec_from_dict(
    {
        "id": "rows",
        "arms": ["control", "green", "blue"],
        "covariates": {
            "device": {"type": "categorical", "levels": ["mobile", "desktop"]},
            "channel": "categorical",
            "returning": "boolean",
            "age": {"type": "numeric", "minimum": 18, "maximum": 80},
        },
        "metrics": {
            "primary": {"name": "converted", "family": "binary"},
            "guardrails": [{"name": "latency_ms", "family": "continuous", "direction": "increase_is_bad"}],
            "secondary": [{"name": "revenue", "family": "hurdle"}],
        },
        "pre_period": "pre_revenue",
    }
)
ROOT = Path(__file__).resolve().parents[1]


def clean() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "experiment_id": "rows",
            "round": 2,
            "visitor_id": [f"v{i}" for i in range(6)],
            "assigned_at": pd.date_range("2026-01-07", periods=6, freq="h", tz="UTC"),
            "cell": ["control", "explore", "optimized", "optimized", "explore", "optimized"],
            "segment_id": ["s0", "s0", "s1", "s1", "s0", "s1"],
            "arm": ["control", "green", "blue", "green", "control", "blue"],
            "assignment_prob": [0.1, 0.05, 0.45, 1.0, 0.1, 0.45],
            "device": ["mobile", "desktop", "mobile", "mobile", "desktop", "desktop"],
            "channel": ["ads", "mail", "ads", "direct", "ads", "mail"],
            "returning": [True, False, True, True, False, False],
            "age": [18.0, 33.0, 45.5, 80.0, 27.0, 61.0],
            "converted": [0, 1, 0, 1, 0, 0],
            "latency_ms": [310.0, -2.5, 290.1, 305.0, 330.2, 299.9],
            "revenue": [0.0, 12.5, 0.0, 3.0, 0.0, 0.0],
            "pre_revenue": [0.0, 4.0, 1.5, 0.0, 0.0, 2.0],
        }
    )


def setting(column, value, row=2):
    """The clean frame with one value replaced (the column becomes object, as a CSV may carry it)."""

    def corrupt(rows):
        rows[column] = rows[column].astype(object)
        rows.loc[row, column] = value
        return rows

    return corrupt


def column(name, values):
    return lambda rows: rows.assign(**{name: values})


# (case id, corruption, the column that must be named, keyword arguments of both consumers)
BAD = [
    ("bool_TRUE", setting("returning", "TRUE"), "returning", {}),
    ("bool_text_1.0", setting("returning", "1.0"), "returning", {}),
    ("bool_yes", setting("returning", "yes"), "returning", {}),
    ("bool_padded", setting("returning", " true"), "returning", {}),
    ("bool_2", setting("returning", 2), "returning", {}),
    ("prob_zero", setting("assignment_prob", 0.0), "assignment_prob", {}),
    ("prob_1.5", setting("assignment_prob", 1.5), "assignment_prob", {}),
    ("prob_nan", setting("assignment_prob", np.nan), "assignment_prob", {}),
    ("prob_text", setting("assignment_prob", "0.5"), "assignment_prob", {}),
    ("unknown_arm", setting("arm", "purple"), "arm", {}),
    ("unknown_cell", setting("cell", "holdout"), "cell", {}),
    ("duplicate_visitor", setting("visitor_id", "v1"), "visitor_id", {}),
    ("empty_visitor", setting("visitor_id", ""), "visitor_id", {}),
    ("whitespace_visitor", setting("visitor_id", " \t"), "visitor_id", {}),
    ("null_visitor", setting("visitor_id", None), "visitor_id", {}),
    ("missing_metric", lambda r: r.drop(columns="converted"), "converted", {}),
    ("missing_segment_id", lambda r: r.drop(columns="segment_id"), "segment_id", {}),
    ("missing_pre_period", lambda r: r.drop(columns="pre_revenue"), "pre_revenue", {}),
    ("null_covariate", setting("device", None), "device", {}),
    ("null_metric", setting("latency_ms", np.nan), "latency_ms", {}),
    ("negative_revenue", setting("revenue", -5.0), "revenue", {}),
    ("binary_2", setting("converted", 2), "converted", {}),
    ("binary_half", setting("converted", 0.5), "converted", {}),
    ("infinite_latency", setting("latency_ms", np.inf), "latency_ms", {}),
    ("age_out_of_range", setting("age", 200.0), "age", {}),
    ("age_text", setting("age", "old"), "age", {}),
    ("timestamp_yesterday", setting("assigned_at", "yesterday"), "assigned_at", {}),
    ("timestamp_us_format", setting("assigned_at", "01/07/2026"), "assigned_at", {}),
    ("round_not_integer", setting("round", 2.5), "round", {}),
    ("round_zero", setting("round", 0), "round", {}),
    ("wrong_experiment", setting("experiment_id", "other"), "experiment_id", {"experiment_id": "rows"}),
    ("wrong_round", setting("round", 3), "round", {"round": 2}),
    ("unknown_level", setting("device", "watch"), "device", {}),
    ("level_as_number", column("device", [1, 2, 1, 1, 2, 2]), "device", {}),
    ("no_rows", lambda r: r.iloc[:0], "rows", {}),
]


@pytest.mark.parametrize("corrupt, name, kwargs", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_both_consumers_refuse_the_same_bad_rows(corrupt, name, kwargs):
    rows = corrupt(clean())
    with pytest.raises(RowsError) as info:
        validate_rows(rows, SPEC, **kwargs)
    assert info.value.column == name, str(info.value)
    assert f"column '{name}'" in str(info.value)
    result = quality_check(rows, SPEC, **kwargs)
    assert not result.success
    assert name in {f.column for f in result.failures}, result.message


# (case id, change to the clean frame, keyword arguments); every accepted encoding appears once.
GOOD = [
    ("clean", lambda r: r, {}),
    ("partition_given", lambda r: r, {"experiment_id": "rows", "round": 2}),
    ("bool_text_lower", column("returning", ["true", "false"] * 3), {}),
    ("bool_text_title", column("returning", ["True", "False"] * 3), {}),
    ("bool_text_digits", column("returning", ["1", "0"] * 3), {}),
    ("bool_ints", column("returning", [1, 0] * 3), {}),
    ("bool_floats", column("returning", [1.0, 0.0] * 3), {}),
    ("bool_numpy", column("returning", np.array([True, False] * 3)), {}),
    ("bool_mixed_object", column("returning", pd.Series([True, "false", 1, "0", "True", 0], dtype=object)), {}),
    ("bool_nullable_dtype", column("returning", pd.array([True, False] * 3, dtype="boolean")), {}),
    ("binary_bool", column("converted", [False, True] * 3), {}),
    ("binary_float", column("converted", [0.0, 1.0] * 3), {}),
    ("float_ints", column("age", [18, 20, 30, 40, 50, 80]), {}),
    ("float_nullable_dtype", column("latency_ms", pd.array([1.5, 2.0] * 3, dtype="Float64")), {}),
    ("float_object_numbers", column("pre_revenue", pd.Series([0, 1.5, np.int32(2), 3, 0, 0], dtype=object)), {}),
    ("round_nullable_dtype", column("round", pd.array([2] * 6, dtype="Int64")), {}),
    ("visitor_ids_numbers", column("visitor_id", range(6)), {}),
    ("timestamp_naive", column("assigned_at", pd.date_range("2026-01-07", periods=6, freq="h")), {}),
    (
        "timestamp_iso_text",
        column(
            "assigned_at",
            [
                "2026-01-07",
                "2026-01-07T10:30",
                "2026-01-07T10:30:00Z",
                "2026-01-07 10:30:00",
                "2026-01-07T10:30:00.123+02:00",
                "2026-01-07T10:30:00-0500",
            ],
        ),
        {},
    ),
    ("optional_columns_absent", lambda r: r.drop(columns=["experiment_id", "round"]), {}),
    ("extra_column", column("utm_source", ["x"] * 6), {}),
    ("no_rows_allowed", lambda r: r.iloc[:0], {"allow_empty": True}),
]


@pytest.mark.parametrize("change, kwargs", [case[1:] for case in GOOD], ids=[case[0] for case in GOOD])
def test_both_consumers_accept_the_same_good_rows(change, kwargs):
    rows = change(clean())
    result = quality_check(rows, SPEC, **kwargs)
    assert result.success, result.message
    out = validate_rows(rows, SPEC, **kwargs)
    assert out["returning"].dtype == bool and out["converted"].dtype == float and out["age"].dtype == float
    assert out["assignment_prob"].dtype == float and out["visitor_id"].map(type).eq(str).all()
    if "assigned_at" in out:
        assert str(out["assigned_at"].dtype) == "datetime64[ns, UTC]"
    if "round" in out:
        assert out["round"].dtype == np.int64
    assert list(out.columns) == list(rows.columns)  # nothing dropped, nothing added


def test_encodings_normalise_to_the_same_values():
    rows = clean().assign(
        returning=pd.Series([True, "false", 1, "0", "True", 0], dtype=object),
        assigned_at=[
            "2026-01-07T00:00:00Z",
            "2026-01-07T03:00:00+02:00",
            "2026-01-07 02:00",
            "2026-01-07",
            "2026-01-07T04:00",
            "2026-01-07T05:00",
        ],
    )
    out = validate_rows(rows, SPEC)
    assert out["returning"].tolist() == [True, False, True, False, True, False]
    stamps = out["assigned_at"].dt.strftime("%H:%M").tolist()
    assert stamps == ["00:00", "01:00", "02:00", "00:00", "04:00", "05:00"]  # naive text is UTC


def test_unknown_columns_are_kept_and_listed():
    rows = clean().assign(utm_source="ads", score=1.5)
    assert unknown_columns(rows, SPEC) == ["utm_source", "score"]
    out = validate_rows(rows, SPEC)
    assert out["utm_source"].tolist() == ["ads"] * 6 and out["score"].tolist() == [1.5] * 6
    result = quality_check(rows, SPEC)
    assert result.success and result.unknown_columns == ("utm_source", "score")
    assert result.statistics["unknown_columns"] == ["utm_source", "score"]
    assert "utm_source" in result.message


def test_the_schema_describes_every_column_once():
    schema = row_schema(SPEC)
    assert schema.names == (
        *("experiment_id", "round", "visitor_id", "assigned_at", "cell", "segment_id", "arm", "assignment_prob"),
        *("device", "channel", "returning", "age", "converted", "latency_ms", "revenue", "pre_revenue"),
    )
    assert [c.name for c in schema.columns if not c.required] == ["experiment_id", "round"]
    assert schema["revenue"].minimum == 0 and schema["assignment_prob"].strict_minimum
    assert schema["channel"].allowed is None and schema["device"].allowed == ("mobile", "desktop")
    rules = [check.rule for check in schema.checks()]
    assert len(rules) == len(set(rules))  # each failure is reported under its own name
    # A model fit validates covariates and metrics only: visitor ids may repeat across rounds.
    assert "visitor_id" not in row_schema(SPEC).select(assignment=False).names


def test_the_rows_reference_is_generated():
    assert (ROOT / "docs" / "rows.md").read_text() == rows_reference_markdown()
    for name in ("visitor_id", "assignment_prob", "assigned_at"):
        assert f"| `{name}` |" in rows_reference_markdown()


def test_clean_simulated_rows_are_typed():
    rows = simulate.simulate_round(SCENARIO, initial_plan(SIM_SPEC), 200, 1, rng=1)
    rows["returning"] = rows["returning"].map({True: "true", False: "false"})  # as a CSV may carry it
    out = validate_rows(rows, SIM_SPEC, experiment_id="rows", round=1)
    assert out["returning"].dtype == bool and out["age"].dtype == float
    frame = model_frame(out, SIM_SPEC)
    # control first as the ordered reference level, whatever the alphabet says
    assert list(frame["arm"].cat.categories) == list(SIM_SPEC.arms) and frame["arm"].cat.ordered
    assert set(frame["returning"].cat.categories) == {"true", "false"}


@pytest.mark.parametrize(
    "corrupt, name, value, fragment",
    [
        (lambda r: r.drop(columns=["converted"]), "converted", "<missing>", "must have a 'converted' column"),
        (setting("arm", "purple", row=3), "arm", "purple", "unknown arm"),
        (setting("assignment_prob", 1.2, row=0), "assignment_prob", 1.2, "(0, 1]"),
        (setting("converted", 2.0, row=0), "converted", 2.0, "0 or 1"),
        (setting("visitor_id", "v0", row=1), "visitor_id", "v0", "duplicate"),
        (setting("age", "old"), "age", "old", "numeric"),
        (setting("device", "watch"), "device", "watch", "not a level"),
        (setting("cell", None), "cell", None, "null"),
        (lambda r: r.iloc[:0], "rows", 0, "allow_empty=True"),
    ],
)
def test_errors_name_the_column_the_value_and_the_fix(corrupt, name, value, fragment):
    with pytest.raises(RowsError) as info:
        validate_rows(corrupt(clean()), SPEC)
    assert (info.value.column, info.value.value) == (name, value)
    assert fragment in str(info.value)
