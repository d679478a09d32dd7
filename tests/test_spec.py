"""Experiment specs: defaults, YAML loading and errors that name the field, the value and the fix."""

import pytest

from tyche_lib import SpecError, check_spec_revision, load_spec, spec_from_dict

BASE = {
    "id": "checkout",
    "arms": ["control", "green", "blue"],
    "covariates": {
        "device": {"type": "categorical", "levels": ["mobile", "desktop"]},
        "returning": "boolean",
        "age": {"type": "numeric", "buckets": 4},
    },
    "metrics": {
        "primary": {"name": "converted", "family": "binary"},
        "guardrails": [{"name": "latency_ms", "family": "continuous", "direction": "increase_is_bad", "tolerance": 5}],
    },
}


def spec_with(**changes):
    d = {**BASE, **changes}
    return spec_from_dict({k: v for k, v in d.items() if v is not None})


def test_defaults_follow_the_design():
    spec = spec_with()
    assert spec.control == "control" and spec.treatments == ("green", "blue")
    assert (spec.min_control_weight, spec.min_explore_weight, spec.epsilon) == (0.05, 0.05, 0.02)
    assert spec.optimized_weight == pytest.approx(0.9)
    assert spec.covariate("age").buckets == 4
    assert spec.guardrails[0].direction == "increase_is_bad"


def test_load_spec_from_yaml(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("id: exp\narms: [a, b]\nmetrics:\n  primary: {name: y, family: hurdle}\n")
    spec = load_spec(path)
    assert spec.arms == ("a", "b") and spec.primary.family == "hurdle"


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        ({"id": "Bad Id"}, "id", "must match"),
        ({"arms": ["only"]}, "arms", "at least two arms"),
        ({"arms": ["a", "a"]}, "arms", "distinct"),
        ({"metrics": {"primary": {"name": "y", "family": "poisson"}}}, "metrics.primary.family", "binary"),
        ({"metrics": {}}, "metrics.primary", "required"),
        ({"covariates": {"device": {"type": "text"}}}, "covariates.device.type", "categorical"),
        ({"covariates": {"arm": "boolean"}}, "covariates.arm", "reserved"),
        ({"cells": {"min_control_weight": 0}}, "cells.min_control_weight", "never dropped"),
        ({"cells": {"min_control_weight": 0.6, "min_explore_weight": 0.5}}, "cells", "< 1"),
        ({"epsilon": 1.5}, "epsilon", "[0.0, 1.0]"),
        ({"tree": {"max_depth": 9}}, "tree.max_depth", "integer"),
        ({"tree": {"split_confidence": 1}}, "tree.split_confidence", "never split"),
        ({"tree": {"split_confidence": -0.5}}, "tree.split_confidence", "[0.0, 1.0]"),
        ({"tree": {"max_dept": 3}}, "tree.max_dept", "unknown field"),
        ({"schedule": "daily"}, "schedule", "cron"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_invalid_specs_name_field_value_and_fix(changes, field, fragment):
    with pytest.raises(SpecError) as info:
        spec_with(**changes)
    assert info.value.field == field
    assert f"'{field}'" in str(info.value) and fragment in str(info.value)


def test_load_spec_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("id: bad\narms: [a, b]\nmetrics: {primary: {name: y, family: binary}}\nepsilon: -1\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: invalid spec field 'epsilon' = -1"):
        load_spec(path)
    path.write_text("id: [unclosed\n")
    with pytest.raises(SpecError, match="valid YAML"):
        load_spec(path)


def test_content_hash_changes_with_any_field():
    assert spec_with().content_hash() == spec_with().content_hash()
    assert spec_with().content_hash() != spec_with(epsilon=0.03).content_hash()


def test_content_hash_is_the_one_plans_already_record():
    """Plans in storage carry the spec hash in their lineage: the same YAML must hash the same."""
    spec = spec_from_dict(
        {
            **BASE,
            "covariates": {**BASE["covariates"], "age": {"type": "numeric", "buckets": 4, "minimum": 1, "maximum": 99}},
            "metrics": {
                "primary": {"name": "converted", "family": "binary", "minimum": 0},
                "guardrails": BASE["metrics"]["guardrails"],
                "secondary": [{"name": "rev", "family": "hurdle"}],
            },
            "cells": {"min_control_weight": 0.1, "min_explore_weight": 0},
            "traffic_share": 1,
            "salt": 12,
            "start_date": "2026-01-01",
            "end_date": "2026-02-01",
            "status": "draft",
            "decision": {"alpha": 0.1, "planned_visitors": 5000},
            "tree": {"max_depth": 3},
            "posterior": {"draws": 200},
        }
    )
    assert spec.content_hash() == "339ce0cf30397c90cfd59958e7e597a97eddb7d7089a99d4c76f238aa9527989"
    assert spec_with(revision=1, retired_arms=[]).content_hash() == spec_with().content_hash()
    assert spec_with(revision=2).content_hash() != spec_with().content_hash()


@pytest.mark.parametrize(
    "changes, field, allowed",
    [
        ({"colour": "blue"}, "colour", "'arms', 'audience', 'cells'"),
        ({"covariates": {"device": {"type": "boolean", "colour": 1}}}, "covariates.device.colour", "'buckets'"),
        (
            {"metrics": {"primary": {"name": "y", "family": "binary", "direction": "up"}}},
            "metrics.primary.direction",
            "'family'",
        ),
        (
            {"metrics": {"primary": {"name": "y", "family": "binary"}, "tertiary": []}},
            "metrics.tertiary",
            "'guardrails'",
        ),
        (
            {
                "metrics": {
                    "primary": {"name": "y", "family": "binary"},
                    "guardrails": [{"name": "g", "family": "binary", "tol": 1}],
                }
            },
            "metrics.guardrails.0.tol",
            "'tolerance'",
        ),
        (
            {
                "metrics": {
                    "primary": {"name": "y", "family": "binary"},
                    "secondary": [{"name": "s", "family": "binary", "tolerance": 1}],
                }
            },
            "metrics.secondary.0.tolerance",
            "'family'",
        ),
        ({"cells": {"min_control": 0.1}}, "cells.min_control", "'min_control_weight', 'min_explore_weight'"),
        ({"tree": {"depth": 2}}, "tree.depth", "'max_depth'"),
        ({"posterior": {"draw": 50}}, "posterior.draw", "'chains', 'draws', 'tune'"),
        ({"decision": {"alpa": 0.1}}, "decision.alpa", "'alpha'"),
        ({"source": {"kind": "landing", "folder": "landing"}}, "source.folder", "'kind', 'path'"),
    ],
)
def test_unknown_keys_are_refused_at_every_level(changes, field, allowed):
    with pytest.raises(SpecError) as info:
        spec_with(**changes)
    assert info.value.field == field
    assert "unknown field" in str(info.value) and allowed in str(info.value)


def test_a_source_option_is_named_but_its_value_never_echoed():
    secret = {"kind": "sql", "url": "sqlite:///x.db", "query": "SELECT 1", "pasword": "hunter2"}
    with pytest.raises(SpecError) as info:
        spec_with(source=secret)
    assert info.value.field == "source.pasword" and "'query'" in str(info.value)
    assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value.value)


def test_a_source_kind_registered_later_keeps_its_options_for_when_it_is_built():
    spec = spec_with(source={"kind": "not_registered_yet", "bucket": "b"})
    assert (spec.source.kind, dict(spec.source.options)) == ("not_registered_yet", {"bucket": "b"})


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        ({"posterior": {"draws": 5}}, "posterior.draws", "integer in [10, 100000]"),
        ({"posterior": {"draws": 50.0}}, "posterior.draws", "integer in [10, 100000]"),
        ({"cells": [0.1]}, "cells", "must be a mapping with the keys ['min_control_weight', 'min_explore_weight']"),
        ({"metrics": {"primary": "converted"}}, "metrics.primary", "must be a mapping with the keys"),
        ({"covariates": {"device": 3}}, "covariates.device", "a covariate is a type"),
        ({"covariates": ["device"]}, "covariates", "mapping of column name to type"),
        ({"covariates": {"device": {"type": "boolean", "name": "d"}}}, "covariates.device.name", "named by its key"),
        (
            {"covariates": {"device": {"type": "boolean", "levels": ["a", "b"]}}},
            "covariates.device.levels",
            "categorical",
        ),
        ({"covariates": {"age": {"type": "numeric", "buckets": 1}}}, "covariates.age.buckets", "[2, 100]"),
        (
            {
                "metrics": {
                    "primary": {"name": "y", "family": "binary"},
                    "guardrails": [{"name": "g", "family": "binary", "direction": "up"}],
                }
            },
            "metrics.guardrails.0.direction",
            "'increase_is_bad' or 'decrease_is_bad'",
        ),
        ({"arms": ["control", "a,b"]}, "arms.1", "without commas"),
        ({"epsilon": True}, "epsilon", "a number in [0.0, 1.0]"),
        ({"start_date": 20260101}, "start_date", "ISO date"),
        ({"revision": 0}, "revision", "greater than or equal to 1"),
        ({"retired_arms": ["control"]}, "retired_arms.0", "control arm is never retired"),
        ({"retired_arms": ["green", "purple"]}, "retired_arms.1", "one of the arms"),
        ({"schedule": "99 99 * * *"}, "schedule", "five-field cron"),
        ({"schedule": "daily"}, "schedule", "five-field cron"),
        ({"schedule": "0 0 6 * * *"}, "schedule", "five-field cron"),
        ({"schedule": "0 6 30 2 *"}, "schedule", "February"),
    ],
)
def test_each_error_names_its_yaml_path_and_what_is_allowed(changes, field, fragment):
    with pytest.raises(SpecError) as info:
        spec_with(**changes)
    assert info.value.field == field
    assert f"'{field}'" in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("cron", ["0 6 * * 1", "*/15 8-18 * * mon-fri", "@daily"])
def test_a_cron_dagster_accepts_is_kept(cron):
    assert spec_with(schedule=cron).schedule == cron


def test_a_key_left_empty_means_its_default():
    assert spec_with(epsilon=None, cells={"min_control_weight": None}).epsilon == 0.02


def test_specs_are_immutable_and_their_blocks_hashable():
    spec = spec_with()
    with pytest.raises(ValueError):
        spec.epsilon = 0.5
    assert hash(spec.primary) == hash(spec_with().primary) and len(set(spec.covariates)) == 3


def test_retired_arms_leave_the_active_arms():
    spec = spec_with(revision=2, retired_arms=["green"])
    assert spec.active_arms == ("control", "blue") and spec.arms == ("control", "green", "blue")


def revised(previous=None, **changes):
    """Check ``spec_with(**changes)`` as a revision of ``previous`` (default: the base spec)."""
    check_spec_revision(previous or spec_with(), spec_with(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"epsilon": 0.05, "cells": {"min_control_weight": 0.1}, "schedule": "0 6 * * *"},
        {"revision": 2},
        {"revision": 2, "arms": ["control", "green", "blue", "purple"]},
        {"revision": 2, "retired_arms": ["green"]},
        {"revision": 3, "arms": ["control", "green", "blue", "purple"], "retired_arms": ["blue"]},
    ],
)
def test_allowed_revisions(changes):
    revised(**changes)


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        ({"id": "other"}, "id", "keeps the experiment id 'checkout'"),
        ({"arms": ["green", "control", "blue"]}, "arms.0", "control arm never changes"),
        ({"revision": 2, "arms": ["baseline", "green", "blue"]}, "arms.0", "control arm never changes"),
        ({"arms": ["control", "green", "blue", "purple"]}, "arms", "declare revision: 2 to change it"),
        ({"retired_arms": ["blue"]}, "retired_arms", "declare revision: 2 to change it"),
        ({"revision": 2, "arms": ["control", "green"]}, "arms.2", "append-only"),
        ({"revision": 2, "arms": ["control", "blue", "green"]}, "arms.1", "append-only"),
        ({"revision": 2, "arms": ["control", "green", "teal"]}, "arms.2", "retire an arm"),
        ({"covariates": {"device": "boolean"}}, "covariates", "start a new experiment id"),
        ({"revision": 2, "covariates": {"device": "boolean"}}, "covariates", "start a new experiment id"),
        (
            {"metrics": {"primary": {"name": "revenue", "family": "hurdle"}}},
            "metrics.primary",
            "start a new experiment id",
        ),
        (
            {"revision": 2, "metrics": {"primary": {"name": "converted", "family": "continuous"}}},
            "metrics.primary",
            "new experiment id",
        ),
    ],
)
def test_refused_revisions_name_the_field(changes, field, fragment):
    with pytest.raises(SpecError) as info:
        revised(**changes)
    assert info.value.field == field and fragment in str(info.value)


def test_a_revision_never_goes_back_nor_un_retires_an_arm():
    retired = spec_with(revision=2, retired_arms=["green"])
    with pytest.raises(SpecError) as info:
        revised(retired, revision=1, retired_arms=["green"])
    assert info.value.field == "revision" and "lower than the previous revision 2" in str(info.value)
    with pytest.raises(SpecError) as info:
        revised(retired, revision=3)
    assert info.value.field == "retired_arms" and "never un-retired" in str(info.value)
    revised(retired, revision=2, retired_arms=["green"])
