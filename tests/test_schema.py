"""Round rows: normalisation and errors that name the column, the value and the fix."""

import numpy as np
import pytest

from tyche_lib import RowsError, initial_plan, model_frame, simulate, validate_rows

SCENARIO = simulate.segment_flip()
SPEC = SCENARIO.spec(id="rows")


def good_rows(n=200):
    return simulate.simulate_round(SCENARIO, initial_plan(SPEC), n, 1, rng=1)


def test_clean_rows_are_typed():
    rows = good_rows()
    rows["returning"] = rows["returning"].map({True: "true", False: "false"})  # as a CSV may carry it
    out = validate_rows(rows, SPEC)
    assert out["returning"].dtype == bool and out["age"].dtype == float
    frame = model_frame(out, SPEC)
    # control first as the ordered reference level, whatever the alphabet says
    assert list(frame["arm"].cat.categories) == list(SPEC.arms) and frame["arm"].cat.ordered
    assert set(frame["returning"].cat.categories) == {"true", "false"}


@pytest.mark.parametrize(
    "corrupt, column, fragment",
    [
        (lambda r: r.drop(columns=["converted"]), "converted", "must have a 'converted' column"),
        (lambda r: r.assign(arm=np.where(r.index == 3, "purple", r["arm"])), "arm", "unknown arm"),
        (
            lambda r: r.assign(assignment_prob=np.where(r.index == 0, 0.0, r["assignment_prob"])),
            "assignment_prob",
            "(0, 1]",
        ),
        (
            lambda r: r.assign(assignment_prob=np.where(r.index == 0, 1.2, r["assignment_prob"])),
            "assignment_prob",
            "(0, 1]",
        ),
        (lambda r: r.assign(converted=np.where(r.index == 0, 2.0, r["converted"])), "converted", "0 or 1"),
        (
            lambda r: r.assign(visitor_id=r["visitor_id"].where(r.index != 1, r["visitor_id"].iloc[0])),
            "visitor_id",
            "duplicate",
        ),
        (lambda r: r.assign(age=r["age"].astype(object).where(r.index != 2, "old")), "age", "numeric"),
        (lambda r: r.assign(device=r["device"].where(r.index != 2, "watch")), "device", "not a level"),
        (lambda r: r.assign(cell=r["cell"].where(r.index != 2, None)), "cell", "null"),
    ],
)
def test_bad_rows_name_the_column_and_the_fix(corrupt, column, fragment):
    rows = corrupt(good_rows())
    with pytest.raises(RowsError) as info:
        validate_rows(rows, SPEC)
    assert info.value.column == column
    assert f"column '{column}'" in str(info.value) and fragment in str(info.value)
