"""Experiment specs: defaults, YAML loading and errors that name the field, the value and the fix."""

import pytest

from tyche_lib import SpecError, load_spec, spec_from_dict

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
