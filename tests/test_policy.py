"""The policy tree on hand-built posteriors with planted heterogeneity.

The posteriors' contrasts are designed functions of the covariates, the same in every draw, so the
posterior-mean contrasts are known and each visitor's best arm is planted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tyche_lib import (
    DiscoveredSegment,
    PolicyTree,
    Posterior,
    RowsError,
    Rule,
    fit_policy_tree,
    spec_from_dict,
)

ARMS = ["control", "green", "blue"]
COVARIATES = {"device": "categorical", "returning": "boolean", "age": "numeric"}


@dataclass(eq=False)
class PlantedPosterior(Posterior):
    """Control mean 0.1; a treatment's mean adds the planted contrast (profiles × treatments)."""

    contrast_of: Callable[[pd.DataFrame], np.ndarray] | None = None

    def outcome_mean_draws(self, profiles, arm):
        base = np.full((self.n_draws, len(profiles)), 0.1)
        if arm == self.spec.control:
            return base
        return base + self.contrast_of(profiles)[None, :, self.spec.treatments.index(arm)]


def make_posterior(observed: pd.DataFrame, contrast_of, covariates=COVARIATES) -> PlantedPosterior:
    spec = spec_from_dict(
        {
            "id": "tree",
            "arms": ARMS,
            "covariates": covariates,
            "metrics": {"primary": {"name": "y", "family": "binary"}},
        }
    )
    idata = az.InferenceData(posterior=xr.Dataset({"mu": (("chain", "draw"), np.zeros((1, 4)))}))
    return PlantedPosterior(spec=spec, observed=observed, idata=idata, contrast_of=contrast_of)


def visitors(n: int, seed: int, devices=("mobile", "desktop", "tablet"), p=None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "device": rng.choice(list(devices), n, p=p),
            "returning": rng.random(n) < 0.5,
            "age": rng.integers(18, 71, n).astype(float),
        }
    )


def planted_best(rows: pd.DataFrame) -> np.ndarray:
    """Mobile: green; other devices over 40: blue; other devices 40 or younger: control."""
    mobile, old = (rows["device"] == "mobile").to_numpy(), (rows["age"] > 40).to_numpy()
    return np.where(mobile, "green", np.where(old, "blue", "control"))


def planted_contrasts(rows: pd.DataFrame) -> np.ndarray:
    best = planted_best(rows)
    green = np.where(best == "green", 0.05, -0.02)
    blue = np.where(best == "blue", 0.04, np.where(best == "green", 0.0, -0.01))
    return np.column_stack([green, blue])


@pytest.fixture(scope="module")
def planted():
    post = make_posterior(visitors(3000, seed=1), planted_contrasts)
    return post, fit_policy_tree(post, max_depth=2, min_segment_share=0.05, rng=3)


def test_segments_separate_the_planted_groups(planted):
    post, tree = planted
    best = planted_best(post.observed)
    seg = tree.segment_of(post.observed)
    for s in tree.segments:
        members = best[seg == s.id]
        # every member of a segment has the same planted best arm, and the segment leads with it
        assert set(members) == {s.leading_arm}
    assert {s.leading_arm for s in tree.segments} == {"control", "green", "blue"}
    assert [s.id for s in tree.segments] == [f"s{i}" for i in range(1, len(tree.segments) + 1)]


def test_segment_statistics_are_those_of_the_rows_the_rule_matches(planted):
    post, tree = planted
    per_row = post.mean_contrasts()
    for s in tree.segments:
        mask = s.rule.matches(post.observed)
        assert s.n == mask.sum()
        assert s.share == pytest.approx(mask.mean(), abs=1e-12)
        expected = per_row[mask].mean(axis=0)
        assert list(s.mean_contrasts) == ["green", "blue"]
        assert list(s.mean_contrasts.values()) == pytest.approx(expected, abs=1e-12)
    assert sum(s.n for s in tree.segments) == tree.n_visitors == len(post.observed)


def test_rules_are_readable_and_the_text_rendering_shows_them(planted):
    _, tree = planted
    text = str(tree)
    for s in tree.segments:
        for c in s.rule.conditions:
            assert c.feature in COVARIATES  # covariate names, not one-hot columns such as "device=mobile"
            if c.feature == "device":
                assert c.operator in ("in", "not in") and set(c.levels) <= {"mobile", "desktop", "tablet"}
            if c.feature == "age":
                assert c.operator in ("<=", ">") and 40 < c.threshold < 41
        # one condition per covariate and operator: repeated tests on a path are merged
        keys = [(c.feature, c.operator) for c in s.rule.conditions]
        assert len(keys) == len(set(keys))
        assert f"{s.id}: {s.rule} -> {s.leading_arm}" in text
    assert any("device in {mobile}" in str(s.rule) for s in tree.segments)


def test_rules_round_trip_through_to_dict_and_json(planted):
    post, tree = planted
    stored = json.loads(json.dumps(tree.to_dict()))
    again = PolicyTree.from_dict(stored)
    assert again == tree
    for s, d in zip(tree.segments, stored["segments"]):
        assert Rule.from_dict(d["rule"]) == s.rule
        assert d["rule_text"] == str(s.rule)
        assert DiscoveredSegment.from_dict(d) == s
    assert (again.segment_of(post.observed) == tree.segment_of(post.observed)).all()


def test_rules_partition_all_visitors_including_unseen_levels(planted):
    _, tree = planted
    new = visitors(500, seed=9, devices=("mobile", "desktop", "tablet", "watch"))
    hits = np.stack([s.rule.matches(new) for s in tree.segments]).sum(axis=0)
    assert (hits == 1).all()
    # an unseen level has every one-hot column 0, so it routes like a non-mobile device
    watch = new[new["device"] == "watch"]
    assert len(watch) > 0
    as_desktop = watch.assign(device="desktop")
    assert (tree.segment_of(watch) == tree.segment_of(as_desktop)).all()


def test_boolean_splits_read_as_is_true_or_false():
    def contrasts(rows):
        ret = rows["returning"].to_numpy()
        return np.column_stack([np.where(ret, -0.02, 0.03), np.where(ret, 0.04, -0.01)])

    post = make_posterior(visitors(1000, seed=2), contrasts)
    tree = fit_policy_tree(post, max_depth=2, rng=0)
    assert [str(s.rule) for s in tree.segments] == ["returning is False", "returning is True"]
    assert [s.rule.conditions[0].threshold for s in tree.segments] == [0.0, 1.0]
    assert [s.leading_arm for s in tree.segments] == ["green", "blue"]


def test_repeated_categorical_splits_merge_into_one_set():
    # Four devices: a -> green, b -> blue, c and d -> control. The leaf holding c and d is reached by
    # "not in {a}" then "not in {b}" (in either order), which must read as one condition.
    def contrasts(rows):
        d = rows["device"].to_numpy()
        return np.column_stack([np.where(d == "a", 0.05, -0.01), np.where(d == "b", 0.05, -0.01)])

    post = make_posterior(visitors(2000, seed=4, devices=("a", "b", "c", "d")), contrasts)
    tree = fit_policy_tree(post, max_depth=2, rng=0)
    rules = {s.leading_arm: str(s.rule) for s in tree.segments}
    assert rules == {"green": "device in {a}", "blue": "device in {b}", "control": "device not in {a, b}"}


def test_min_segment_share_is_respected_and_binds():
    # Tablets are 3% of visitors and the only ones for whom blue wins.
    def contrasts(rows):
        tablet = (rows["device"] == "tablet").to_numpy()
        return np.column_stack([np.where(tablet, -0.05, 0.02), np.where(tablet, 0.08, -0.01)])

    post = make_posterior(visitors(4000, seed=5, p=[0.5, 0.47, 0.03]), contrasts)
    coarse = fit_policy_tree(post, max_depth=2, min_segment_share=0.05, rng=0)
    assert all(s.share >= 0.05 for s in coarse.segments)
    assert all(s.leading_arm != "blue" for s in coarse.segments)
    fine = fit_policy_tree(post, max_depth=2, min_segment_share=0.02, rng=0)
    assert [str(s.rule) for s in fine.segments if s.leading_arm == "blue"] == ["device in {tablet}"]
    assert all(s.share >= 0.02 for s in fine.segments)


def test_deterministic_given_seed():
    post = make_posterior(visitors(1500, seed=6), planted_contrasts)
    first = fit_policy_tree(post, max_depth=3, min_segment_share=0.05, rng=42)
    assert fit_policy_tree(post, max_depth=3, min_segment_share=0.05, rng=42).to_dict() == first.to_dict()


def test_no_split_when_only_the_size_of_an_effect_changes():
    # Green is best everywhere, by more on mobile: sibling leaves with the same leading arm merge back.
    def contrasts(rows):
        mobile = (rows["device"] == "mobile").to_numpy()
        return np.column_stack([np.where(mobile, 0.06, 0.02), np.full(len(rows), -0.01)])

    post = make_posterior(visitors(1000, seed=7), contrasts)
    tree = fit_policy_tree(post, rng=0)
    assert [(s.id, s.rule, s.leading_arm, s.share) for s in tree.segments] == [("all", Rule(), "green", 1.0)]
    assert (tree.segment_of(post.observed) == "all").all()


def test_single_segment_without_covariates_or_variation():
    no_covariates = make_posterior(
        pd.DataFrame(index=range(50)), lambda rows: np.tile([-0.01, -0.02], (len(rows), 1)), covariates={}
    )
    tree = fit_policy_tree(no_covariates, rng=0)
    assert [(s.id, s.rule, s.leading_arm, s.n) for s in tree.segments] == [("all", Rule(), "control", 50)]
    one_profile = make_posterior(
        visitors(20, seed=8).assign(device="mobile", returning=True, age=30.0), planted_contrasts
    )
    assert [s.id for s in fit_policy_tree(one_profile, rng=0).segments] == ["all"]


def test_errors_name_the_problem():
    post = make_posterior(visitors(100, seed=0), planted_contrasts)
    with pytest.raises(TypeError, match="pass a Posterior, as returned by fit_posterior"):
        fit_policy_tree(post.observed)
    with pytest.raises(ValueError, match="max_depth = 0: must be an integer >= 1"):
        fit_policy_tree(post, max_depth=0)
    with pytest.raises(ValueError, match=r"min_segment_share = 0.6: must be in \(0, 0.5\]"):
        fit_policy_tree(post, min_segment_share=0.6)
    empty = make_posterior(post.observed.iloc[:0], planted_contrasts)
    with pytest.raises(ValueError, match="posterior.observed has no rows: fit_policy_tree needs"):
        fit_policy_tree(empty)
    tree = fit_policy_tree(post, rng=0)
    with pytest.raises(RowsError, match="needs column 'device'"):
        tree.segment_of(post.observed.drop(columns="device"))


# -- splits the posterior is not sure of ------------------------------------------------------------


@dataclass(eq=False)
class NoisyPosterior(PlantedPosterior):
    """A planted posterior whose treatment means move per draw, by device (uncertain segment effects)."""

    noise_sd: float = 0.01

    def outcome_mean_draws(self, profiles, arm):
        mean = super().outcome_mean_draws(profiles, arm)
        if arm == self.spec.control:
            return mean
        rng = np.random.default_rng(self.spec.arms.index(arm))  # the same draws at every call
        device = pd.Categorical(profiles["device"], categories=["desktop", "mobile", "tablet"]).codes
        return mean + rng.normal(0.0, self.noise_sd, (self.n_draws, 3))[:, device]


def flip_by_device(gap: float):
    """Mobile: green beats blue by ``gap``; other devices: blue beats green by ``gap``; both above control."""

    def contrast_of(rows):
        mobile = (rows["device"] == "mobile").to_numpy()
        return np.column_stack([np.where(mobile, 0.01 + gap, 0.01), np.where(mobile, 0.01, 0.01 + gap)])

    return contrast_of


def noisy_posterior(gap: float) -> NoisyPosterior:
    post = make_posterior(visitors(3000, seed=4), flip_by_device(gap))
    idata = az.InferenceData(posterior=xr.Dataset({"mu": (("chain", "draw"), np.zeros((1, 1000)))}))
    return NoisyPosterior(spec=post.spec, observed=post.observed, idata=idata, contrast_of=post.contrast_of)


def test_a_split_stands_only_where_the_posterior_is_confident_the_best_arm_changes():
    # Per draw, mobile's green-minus-blue is gap + N(0, 0.01) - N(0, 0.01): P(green wins on mobile)
    # = Phi(gap / 0.0141) = 0.98 at gap 0.03 and 0.64 at gap 0.005 (the other side is surer still,
    # its noise averaging two devices). Monte Carlo error of a probability over 1,000 draws: < 0.016.
    strong = fit_policy_tree(noisy_posterior(0.03), max_depth=2, rng=0, split_confidence=0.8)
    assert sorted(s.leading_arm for s in strong.segments) == ["blue", "green"]
    mobile = next(s for s in strong.segments if s.leading_arm == "green")
    assert mobile.rule.matches(
        pd.DataFrame({"device": ["mobile", "desktop"], "returning": [True, False], "age": [30.0, 30.0]})
    ).tolist() == [True, False]

    weak = noisy_posterior(0.005)
    merged = fit_policy_tree(weak, max_depth=2, rng=0, split_confidence=0.8)
    assert [s.id for s in merged.segments] == ["all"]
    # The same posterior with the check off keeps the split its posterior means suggest.
    kept = fit_policy_tree(weak, max_depth=2, rng=0, split_confidence=0.0)
    assert sorted(s.leading_arm for s in kept.segments) == ["blue", "green"]


def test_split_confidence_out_of_range_is_rejected():
    post = noisy_posterior(0.03)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="split_confidence"):
            fit_policy_tree(post, split_confidence=bad)
