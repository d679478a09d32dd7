"""Decision quantities from posterior draws, value of one more round, graduation and recommendation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tyche_lib import (
    BinaryPosterior,
    Decision,
    DecisionQuantities,
    DecisionSettings,
    analyze_metrics,
    decision_quantities,
    expected_value_of_one_more_round,
    graduation,
    recommend,
    spec_from_dict,
)

ARMS = ["control", "a", "b"]
LEVELS = {"desktop": 0, "mobile": 1}


@dataclass(eq=False)
class KnownPosterior(BinaryPosterior):
    """A posterior whose draws are given: E[Y | device, arm] per draw (draws × 2 devices)."""

    table: dict | None = None

    @property
    def n_draws(self) -> int:
        return next(iter(self.table.values())).shape[0]

    def outcome_mean_draws(self, profiles, arm):
        return self.table[arm][:, profiles["device"].map(LEVELS).to_numpy()]


def _spec(**metrics):
    return spec_from_dict(
        {
            "id": "checkout",
            "arms": ARMS,
            "covariates": {"device": {"type": "categorical", "levels": ["desktop", "mobile"]}},
            "metrics": metrics or {"primary": {"name": "converted", "family": "binary"}},
        }
    )


def _visitors(n_desktop=30, n_mobile=10):
    return pd.DataFrame({"device": ["desktop"] * n_desktop + ["mobile"] * n_mobile})


def _posterior(effects, sd=0.02, draws=2000, seed=0, base=0.2):
    """Draws of E[Y | device, arm] = base + effect[arm][device] + noise."""
    rng = np.random.default_rng(seed)
    table = {arm: base + np.asarray(effects.get(arm, (0.0, 0.0))) + rng.normal(0, sd, (draws, 2)) for arm in ARMS}
    return KnownPosterior(spec=_spec(), observed=_visitors(), idata=None, table=table)


# -- decision quantities ------------------------------------------------------------------------


def test_quantities_match_the_draws_per_segment_and_overall():
    post = _posterior({"a": (0.02, -0.01), "b": (-0.01, 0.03)}, seed=1)
    rows = _visitors(30, 10)
    segments = ["desk"] * 25 + [None] * 5 + ["mob"] * 10  # five desktop visitors in no segment
    q = decision_quantities(post, rows, segments=segments, round=4)
    contrast = {arm: post.table[arm] - post.table["control"] for arm in ARMS}  # draws × device
    theta = np.stack([contrast[a] for a in ARMS], axis=-1)  # draws × device × arm; control = 0
    # Segment "desk" is all desktop, "mob" all mobile; overall weights devices 30 : 10.
    by_seg = {"desk": theta[:, 0], "mob": theta[:, 1], "overall": 0.75 * theta[:, 0] + 0.25 * theta[:, 1]}
    for name, th in by_seg.items():
        best = np.bincount(th.argmax(axis=1), minlength=3) / len(th)
        loss = (th.max(axis=1, keepdims=True) - th).mean(axis=0)
        worse = (th[:, 1:] < 0).mean(axis=0)
        got_best = q.prob_best if name == "overall" else q.prob_best_by_segment.loc[name]
        got_loss = q.expected_loss if name == "overall" else q.expected_loss_by_segment.loc[name]
        got_worse = q.prob_worse if name == "overall" else q.prob_worse_by_segment.loc[name]
        np.testing.assert_allclose(got_best[ARMS], best, atol=1e-12)
        np.testing.assert_allclose(got_loss[ARMS], loss, atol=1e-12)
        np.testing.assert_allclose(got_worse[ARMS[1:]], worse, atol=1e-12)
    assert q.segment_sizes.to_dict() == {"desk": 25, "mob": 10}
    assert q.round == 4 and q.contrast_draws.shape == (2000, 2)
    assert q.prob_best.sum() == pytest.approx(1.0)


def test_control_counts_as_an_arm_with_contrast_zero():
    post = _posterior({"a": (-0.1, -0.1), "b": (-0.2, -0.05)}, sd=0.01, seed=2)
    q = decision_quantities(post)
    assert q.prob_best["control"] == 1.0 and q.expected_loss["control"] == 0.0
    assert q.leader == "control"
    assert q.expected_loss["a"] == pytest.approx(-q.mean_effect["a"], rel=1e-9)


def test_segments_must_label_every_row():
    with pytest.raises(ValueError, match="one label per row"):
        decision_quantities(_posterior({}), segments=["x"] * 3)


def test_table_round_trip():
    q = decision_quantities(_posterior({"a": (0.02, 0.0)}, seed=3), segments=["s1"] * 20 + ["s2"] * 20, round=2)
    back = DecisionQuantities.from_frame(q.to_frame())
    assert back.arms == q.arms and back.round == 2
    for name in ("prob_best", "expected_loss", "prob_worse", "mean_effect"):
        pd.testing.assert_series_equal(getattr(back, name), getattr(q, name), check_names=False)
    for name in ("prob_best_by_segment", "expected_loss_by_segment", "prob_worse_by_segment", "mean_effect_by_segment"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(q, name), check_names=False)
    assert back.segment_sizes.to_dict() == q.segment_sizes.to_dict()


# -- value of one more round --------------------------------------------------------------------


def _one_treatment_quantities(mu, s, draws=20000, seed=4):
    rng = np.random.default_rng(seed)
    c = rng.normal(mu, s, (draws, 1))
    return DecisionQuantities(
        arms=("control", "t"),
        prob_best=pd.Series({"control": np.mean(c <= 0), "t": np.mean(c > 0)}),
        expected_loss=pd.Series(dtype=float),
        prob_worse=pd.Series(dtype=float),
        mean_effect=pd.Series(dtype=float),
        prob_best_by_segment=pd.DataFrame(),
        expected_loss_by_segment=pd.DataFrame(),
        prob_worse_by_segment=pd.DataFrame(),
        mean_effect_by_segment=pd.DataFrame(),
        segment_sizes=pd.Series(dtype=np.int64),
        contrast_draws=c,
    )


def test_value_of_one_more_round_matches_the_normal_closed_form():
    q = _one_treatment_quantities(mu=0.005, s=0.01)
    visitors, share, var = 2000, np.array([0.5, 0.5]), np.array([0.16, 0.17])
    res = expected_value_of_one_more_round(
        q, visitors=visitors, allocation=share, outcome_variance=var, rng=5, n_sims=20000
    )
    c = q.contrast_draws[:, 0]
    m, s2 = c.mean(), c.var(ddof=1)
    noise = (var / (visitors * share)).sum()
    r = np.sqrt(s2**2 / (s2 + noise))
    closed = r * stats.norm.pdf(m / r) + m * stats.norm.cdf(m / r) - max(m, 0.0)
    # MC sd of the mean of max(0, μ') over 20,000 draws is below r / √20,000 ≈ 0.007 r; allow 5 sd.
    assert res.value == pytest.approx(closed, abs=5 * 0.007 * r)
    evpi = np.maximum(c, 0).mean() - max(m, 0.0)
    assert res.expected_loss_now == pytest.approx(evpi, rel=1e-12)
    assert 0 < res.value < res.expected_loss_now


def test_value_grows_with_visitors_towards_perfect_information():
    post = _posterior({"a": (0.01, 0.0), "b": (0.0, 0.012)}, sd=0.02, seed=6)
    q = decision_quantities(post)
    values = [
        expected_value_of_one_more_round(
            q,
            visitors=n,
            allocation={"control": 0.4, "a": 0.3, "b": 0.3},
            outcome_variance={"control": 0.16, "a": 0.16, "b": 0.16},
            rng=7,
        ).value
        for n in (100, 1000, 10_000, 100_000, 10**9)
    ]
    # Common random numbers and antithetic pairs make the estimate exactly monotone in the round size.
    assert values[0] >= 0 and all(np.diff(values) > 0)
    # Infinite data is perfect information: the value tends to today's expected loss (normal
    # approximation of non-normal draws: within 10 %).
    assert values[-1] == pytest.approx(
        expected_value_of_one_more_round(
            q, visitors=10, allocation=[0.4, 0.3, 0.3], outcome_variance=[0.16] * 3, rng=7
        ).expected_loss_now,
        rel=0.1,
    )


def test_value_of_information_refuses_bad_allocation():
    q = _one_treatment_quantities(0.0, 0.01, draws=100)
    with pytest.raises(ValueError, match="allocation"):
        expected_value_of_one_more_round(q, visitors=10, allocation=[1.0, 0.0], outcome_variance=[1, 1], rng=0)
    with pytest.raises(ValueError, match="outcome_variance lacks arm 't'"):
        expected_value_of_one_more_round(q, visitors=10, allocation=[0.5, 0.5], outcome_variance={"control": 1}, rng=0)


# -- graduation -----------------------------------------------------------------------------------


def _history(effects, rounds, sd=0.005):
    return [decision_quantities(_posterior(effects, sd=sd, seed=10 + r), round=r) for r in range(1, rounds + 1)]


def test_graduation_ships_only_after_sustained_rounds():
    winning = {"a": (0.03, 0.03), "b": (0.0, 0.0)}
    unclear = {"a": (0.0, 0.0), "b": (0.0, 0.0)}
    history = _history(unclear, 1) + _history(winning, 3)
    rule = dict(loss_threshold=0.001, prob_best=0.95, sustained_rounds=3)
    assert graduation(history[:3], **rule).decision == Decision.CONTINUE  # two good rounds only
    ship = graduation(history, **rule)
    assert ship.decision == Decision.SHIP and ship.arm == "a"
    assert "met 3 of 3" in ship.reasons[0]
    assert graduation(history, **{**rule, "loss_threshold": 0.0}).decision == Decision.CONTINUE


def test_graduation_counts_only_the_rounds_since_an_arm_was_added():
    winning = {"a": (0.03, 0.03), "b": (0.0, 0.0)}
    # The first three rounds ran before arm "b" was added (their quantities name other arms).
    before = [dataclasses.replace(q, arms=("control", "a")) for q in _history(winning, 3)]
    after = _history(winning, 2)
    rule = dict(loss_threshold=0.001, prob_best=0.95, sustained_rounds=3)
    assert graduation(before + after, **rule).decision == Decision.CONTINUE  # 2 rounds since the revision
    assert graduation(before + after + _history(winning, 1), **rule).decision == Decision.SHIP


def test_graduation_takes_the_spec_decision_block_whole_and_explicit_thresholds_override_it():
    winning = {"a": (0.03, 0.03), "b": (0.0, 0.0)}
    history = _history({"a": (0.0, 0.0), "b": (0.0, 0.0)}, 1) + _history(winning, 3)
    three = DecisionSettings(loss_threshold=0.001, prob_best=0.95, sustained_rounds=3)
    four = DecisionSettings(loss_threshold=0.001, prob_best=0.95, sustained_rounds=4)
    assert graduation(history, settings=three).decision == Decision.SHIP
    assert graduation(history, settings=four).decision == Decision.CONTINUE  # only 3 good rounds
    assert graduation(history, settings=four, sustained_rounds=3).decision == Decision.SHIP


def test_graduation_stops_a_treatment_worse_everywhere_for_sustained_rounds_but_not_one_worse_somewhere():
    history = _history({"a": (0.0, 0.0), "b": (-0.03, -0.03)}, 3)
    once = graduation(history[-1:], loss_threshold=1e-6)  # one round: not yet
    assert once.decision == Decision.CONTINUE
    assert any("b is worse than control everywhere now, 1 of 3 rounds" in r for r in once.reasons)
    stop = graduation(history, loss_threshold=1e-6)
    assert stop.decision == Decision.STOP and stop.stop_arms == ("b",)
    assert "3 rounds in a row" in stop.reasons[0]
    # A round in between where b was not worse everywhere breaks the run.
    broken = [*history[:1], *_history({"a": (0.0, 0.0), "b": (0.0, 0.0)}, 1), *history[1:]]
    assert graduation(broken, loss_threshold=1e-6).decision == Decision.CONTINUE
    mixed = [
        decision_quantities(_posterior({"b": (-0.03, 0.03)}, sd=0.005, seed=20), segments=["desk"] * 30 + ["mob"] * 10)
    ]
    assert mixed[0].prob_worse["b"] > 0.95  # worse overall (desktop dominates) ...
    assert graduation(mixed, loss_threshold=1e-6).decision == Decision.CONTINUE  # ... but not on mobile


def test_graduation_ends_on_control_when_control_is_best():
    history = _history({"a": (-0.03, -0.03), "b": (-0.02, -0.04)}, 3)
    res = graduation(history, loss_threshold=0.001)
    assert res.decision == Decision.STOP and res.stop_arms == ("a", "b")
    assert "control is best" in res.reasons[0]


# -- recommendation: rules in order ---------------------------------------------------------------


def _metrics(n, seed, *, latency_harm=0.0, lift=0.08):
    rng = np.random.default_rng(seed)
    arm = rng.choice(ARMS, n)
    rows = pd.DataFrame(
        {
            "arm": arm,
            "assignment_prob": 1 / 3,
            "converted": (rng.random(n) < 0.2 + lift * (arm == "a")).astype(float),
            "latency": rng.normal(300, 20, n) + latency_harm * (arm == "a"),
        }
    )
    spec = _spec(
        primary={"name": "converted", "family": "binary"},
        guardrails=[{"name": "latency", "family": "continuous", "direction": "increase_is_bad", "tolerance": 5.0}],
    )
    return analyze_metrics(rows, spec, t_star=n)


@dataclass
class _Srm:
    passed: bool
    message: str


def test_rules_fire_in_the_stated_order():
    history = _history({"a": (0.03, 0.03)}, 3)
    rule = dict(loss_threshold=0.001)
    harmful, clean = _metrics(9000, 30, latency_harm=40.0), _metrics(9000, 30)
    assert harmful.primary().set_index("arm").at["a", "discovery"]
    # 1. Sample-ratio mismatch beats everything, even a winning, harmful arm.
    halt = recommend(_Srm(False, "sample ratio mismatch: cells"), harmful, history, **rule)
    assert halt.decision == Decision.HALT and halt.arm is None
    assert "sample ratio mismatch: cells" in halt.reasons[0] and "no effect is interpreted" in halt.reasons[0]
    assert recommend(False, clean, history, **rule).decision == Decision.HALT
    missing = recommend(None, clean, history, **rule)  # no stored result: fails closed
    assert missing.decision == Decision.HALT and "no sample-ratio result" in missing.reasons[0]
    # 2. A failed guardrail blocks shipping the otherwise winning arm.
    blocked = recommend(True, harmful, history, **rule)
    assert blocked.decision == Decision.STOP and blocked.arm == "a" and blocked.stop_arms == ("a",)
    assert any("do not ship a: guardrail latency failed" in r for r in blocked.reasons)
    # 3. Significant primary after FDR, no guardrail failure, graduation agrees: ship.
    ship = recommend(_Srm(True, "sample ratio check passed"), clean, history, **rule)
    assert ship.decision == Decision.SHIP and ship.arm == "a"
    assert [r.split(" ")[0] for r in ship.reasons[:2]] == ["sample", "a"]  # SRM, then the candidate


def test_stop_needs_the_printed_interval_below_zero_as_well_as_the_posterior():
    history = _history({"a": (-0.03, -0.03), "b": (0.0, 0.0)}, 3)
    assert graduation(history, loss_threshold=0.001).stop_arms == ("a",)
    harmful = _metrics(9000, 33, lift=-0.08)  # a's interval lies below zero
    assert harmful.primary().set_index("arm").at["a", "upper"] < 0
    stop = recommend(True, harmful, history, loss_threshold=0.001)
    assert stop.decision == Decision.STOP and stop.stop_arms == ("a",)
    unclear = _metrics(300, 34, lift=0.0)  # the same posterior verdict, an interval that contains 0
    keep = recommend(True, unclear, history, loss_threshold=0.001)
    assert keep.decision == Decision.CONTINUE and not keep.stop_arms
    assert any(r.startswith("not stopping a yet: its primary effect interval") for r in keep.reasons)


def test_ship_needs_both_significance_and_sustained_graduation():
    history = _history({"a": (0.03, 0.03)}, 3)
    early = recommend(True, _metrics(9000, 31), history[:2], loss_threshold=0.001)
    assert early.decision == Decision.CONTINUE and any("ship candidate" in r for r in early.reasons)
    weak = recommend(True, _metrics(300, 32, lift=0.0), history, loss_threshold=0.001)
    assert weak.decision == Decision.CONTINUE
    assert any("not shipping a yet" in r for r in weak.reasons)


def test_recommend_refuses_an_unknown_sample_ratio_input():
    with pytest.raises(TypeError, match="SampleRatioResult"):
        recommend("ok", _metrics(300, 33), _history({}, 1), loss_threshold=0.001)
