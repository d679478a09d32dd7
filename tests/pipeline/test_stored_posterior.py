"""The stored posterior: rebuilt without its rows for the tree and the allocation, checked against the rows for the report."""

import dagster as dg
import pandas as pd
import pytest

from tyche_lib import decision_quantities, fit_policy_tree, thompson_allocation

pytestmark = pytest.mark.slow

VISITORS = 4_000
COLUMNS = ["round", "assigned_at", "arm", "device", "returning", "converted"]


def _first_round(project):
    project.add_experiment("flip")
    rows = project.simulate("flip", 1, VISITORS)
    project.land("flip", 1, rows)
    assert project.run_round("flip", 1).success
    return rows, project.defs.resources["experiments"].spec("flip")


def test_posterior_without_its_rows_gives_what_the_rows_give(project):
    _, spec = _first_round(project)
    light = project.storage.load_posterior(spec, 1)
    full = project.storage.load_posterior_with_rows(spec, 1, COLUMNS)
    assert list(light.observed.columns) == ["device", "returning"]
    assert len(light.observed) == len(full.observed) == VISITORS

    tree = fit_policy_tree(light, rng=3)
    assert tree.to_dict() == fit_policy_tree(full, rng=3).to_dict()
    assert thompson_allocation(light, tree.segments) == thompson_allocation(full, tree.segments)
    by_profile = decision_quantities(light, segments=tree.segment_of(light.observed))
    by_row = decision_quantities(full, segments=tree.segment_of(full.observed))
    pd.testing.assert_frame_equal(by_profile.to_frame(), by_row.to_frame())

    with project.storage.connect() as conn:
        conn.execute(f'DROP TABLE "{project.storage.visitors_table("flip")}"')
    assert len(project.storage.load_posterior(spec, 1).observed) == VISITORS  # no row read


def test_rows_ingested_again_since_the_fit_are_refused(project):
    rows, spec = _first_round(project)
    model_file = project.storage.posterior_model_data_path("flip", 1)
    model_data = pd.read_parquet(model_file)
    tampered = model_data.copy()
    tampered.loc[0, "trials"] += 1
    tampered.to_parquet(model_file)
    with pytest.raises(ValueError, match="model_data is not the frame the posterior was fitted on"):
        project.storage.load_posterior(spec, 1)
    model_data.to_parquet(model_file)

    # Stored rows changed behind the posterior's back (ingest itself only stages a round until its
    # checks pass, and the posterior that accepts it refits): the report refuses to read them.
    first = rows["visitor_id"].iloc[0]
    project.query("UPDATE visitors_flip SET converted = 1 - converted WHERE visitor_id = ?", [first])
    with pytest.raises(dg.Failure, match="not the rows its round 1 posterior was fitted on"):
        project.storage.load_posterior_with_rows(spec, 1, COLUMNS)
