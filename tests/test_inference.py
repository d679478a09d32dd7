"""Anytime-valid measurement: MAD confidence sequences (vs pyssed), AIPW, CUPED, mSPRT, many metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tyche_lib import (
    BinaryPosterior,
    RowsError,
    analyze_metrics,
    cuped,
    cuped_outcome_model,
    mad_confidence_path,
    mad_confidence_sequence,
    msprt,
    outcome_predictions,
    spec_from_dict,
)

ALPHA = 0.05


def mc_limit(rate: float, n: int, sds: float = 3.0) -> float:
    """Upper Monte Carlo limit for an observed rate whose true value is at most ``rate``."""
    return rate + sds * np.sqrt(rate * (1 - rate) / n)


# -- agreement with pyssed 0.2.0 ----------------------------------------------------------------


def _pyssed_log(mad, n: int, k: int):
    """The logged (arm, propensity, outcome) sequence of a pyssed MAD run, from its own records."""
    chosen = np.array([np.flatnonzero([mad._n[a][i + 1] - mad._n[a][i] for a in range(k)])[0] for i in range(n)])
    propensity = np.array([mad._probs[a][i] for i, a in enumerate(chosen)])
    return chosen, propensity, np.asarray(mad._rewards, dtype=float)


def _assert_matches_pyssed(path: pd.DataFrame, mad, k: int, chosen: np.ndarray, offset: int = 0):
    for a in range(1, k):
        ours = path[path["arm"] == str(a)]
        est = np.asarray(mad._ate[a][offset:], dtype=float)
        rad = np.asarray(mad._cs_radius[a][offset:], dtype=float)
        defined = ours["estimate"].notna().to_numpy()
        assert defined.sum() > len(est) - 20  # the comparison covers nearly the whole path
        np.testing.assert_allclose(ours["estimate"].to_numpy()[defined], est[defined], rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours["radius"].to_numpy()[defined], rad[defined], rtol=0, atol=1e-8)
        # Where we wait, arm a has not been seen yet (pyssed starts once any treatment arrived).
        seen = np.cumsum(chosen[offset:] == a) > 0
        assert not (seen & ~defined & (np.cumsum(chosen[offset:] == 0) > 0)).any()


@pytest.mark.parametrize("k, continuous", [(2, False), (4, True)])
def test_mad_agrees_with_pyssed_on_its_own_logged_run(k, continuous):
    from pyssed import MAD
    from pyssed.bandit import Reward, TSBernoulli

    rng = np.random.default_rng(11 + k)
    np.random.seed(11 + k)  # noqa: NPY002  # pyssed's Thompson sampler draws from the global numpy state
    means = [0.3, 0.5, 0.2, 0.6][:k]

    def reward(arm):
        y = rng.normal(1 + means[arm], 1.0) if continuous else float(rng.random() < means[arm])
        return Reward(float(y))

    mad = MAD(bandit=TSBernoulli(k=k, control=0, reward=reward), alpha=ALPHA, delta=lambda t: 1 / t**0.24, t_star=500)
    n = 300
    for _ in range(n):
        mad.pull(early_stopping=False, mc_adjust="Bonferroni")
    chosen, propensity, y = _pyssed_log(mad, n, k)
    rows = pd.DataFrame({"arm": chosen.astype(str), "assignment_prob": propensity, "y": y})
    path = mad_confidence_path(rows, outcome="y", control="0", t_star=500, alpha=ALPHA, arms=[str(a) for a in range(k)])
    _assert_matches_pyssed(path, mad, k, chosen)
    last = mad_confidence_sequence(
        rows, outcome="y", control="0", t_star=500, alpha=ALPHA, arms=[str(a) for a in range(k)]
    )
    np.testing.assert_allclose(last["estimate"], [mad._ate[a][-1] for a in range(1, k)], atol=1e-8)


def test_aipw_agrees_with_pyssed_covariate_adjusted_mad():
    from pyssed import MAD
    from pyssed.bandit import Reward, TSBernoulli
    from pyssed.model import FastOLSModel
    from pyssed.utils import prep_dummies

    k, n = 3, 120
    rng = np.random.default_rng(7)
    np.random.seed(7)  # noqa: NPY002
    effects, xs = [0.0, 0.4, -0.2], []

    def reward(arm):
        x = rng.normal()
        xs.append(x)
        return Reward(float(1 + 2 * x + effects[arm] + rng.normal(0, 0.5)), covariates=pd.DataFrame({"x": [x]}))

    mad = MAD(
        bandit=TSBernoulli(k=k, control=0, reward=reward),
        alpha=ALPHA,
        delta=lambda t: 1 / t**0.24,
        t_star=200,
        model=FastOLSModel,
        n_warmup=1,
        pooled=True,
    )
    for _ in range(n):
        mad.pull(early_stopping=False, mc_adjust="Bonferroni")
    chosen, propensity, y = _pyssed_log(mad, n, k)
    x = np.asarray(xs)
    # pyssed's own outcome model, refitted before every unit on the units before it.
    predictions = np.zeros((n, k))
    for i in range(1, n):
        design = prep_dummies(pd.DataFrame({"x": x[:i], "arm": chosen[:i]}), list(range(k)), add_constant=True)
        model = FastOLSModel(X=design, y=y[:i]).fit()
        for a in range(k):
            unit = prep_dummies(pd.DataFrame({"x": [x[i]]}), list(range(k)), add_constant=True, arm=a)
            predictions[i, a] = model.predict(unit)[0]
    # pyssed skips the warm-up unit; so do we.
    rows = pd.DataFrame({"arm": chosen.astype(str), "assignment_prob": propensity, "y": y}).iloc[1:]
    outcome_model = pd.DataFrame(predictions[1:], columns=[str(a) for a in range(k)], index=rows.index)
    path = mad_confidence_path(
        rows,
        outcome="y",
        control="0",
        t_star=200,
        alpha=ALPHA,
        arms=[str(a) for a in range(k)],
        outcome_model=outcome_model,
    )
    _assert_matches_pyssed(path, mad, k, chosen, offset=1)


def test_path_is_linear_time_on_a_million_rows():
    rng = np.random.default_rng(0)
    n = 1_000_000
    rows = pd.DataFrame({"arm": rng.choice(["c", "t1", "t2"], n), "assignment_prob": 1 / 3, "y": rng.normal(size=n)})
    start = time.perf_counter()
    path = mad_confidence_path(rows, outcome="y", control="c", t_star=n, looks=[n // 2, n])
    # pyssed's O(n²) re-summing would take hours here; running sums take well under a second.
    assert time.perf_counter() - start < 10
    assert len(path) == 4
    half, full = path[path["n"] == n // 2].set_index("arm"), path[path["n"] == n].set_index("arm")
    assert (full["radius"] < half["radius"]).all() and (full["n_control"] > half["n_control"]).all()


# -- anytime validity under adaptive allocation --------------------------------------------------


def simulate_adaptive(rates, n_experiments, rounds, per_round, seed, adaptive=True):
    """Binary outcomes in many experiments at once (numpy over experiments).

    Round 1 is uniform; later rounds route 5 % to the control cell, 5 % uniformly and 90 % by
    Thompson win shares of Beta posteriors of the data so far: the probabilities depend on past
    outcomes, which is what the sequences must withstand.
    """
    rng = np.random.default_rng(seed)
    k, e = len(rates), n_experiments
    rates = np.asarray(rates)
    probs = np.full((e, k), 1 / k)
    successes, counts = np.zeros((e, k)), np.zeros((e, k))
    arms, ys, ps = [], [], []
    for _ in range(rounds):
        u = rng.random((e, per_round, 1))
        arm = (u > probs.cumsum(axis=1)[:, None, :]).sum(axis=-1).clip(max=k - 1)
        y = (rng.random((e, per_round)) < rates[arm]).astype(float)
        onehot = arm[..., None] == np.arange(k)
        successes += (onehot * y[..., None]).sum(axis=1)
        counts += onehot.sum(axis=1)
        arms.append(arm)
        ys.append(y)
        ps.append(np.take_along_axis(probs, arm, axis=1))
        if adaptive:
            draws = rng.beta(1 + successes, 1 + counts - successes, size=(200, e, k))
            wins = (draws.argmax(axis=-1)[..., None] == np.arange(k)).mean(axis=0)
            probs = 0.05 * (np.arange(k) == 0) + 0.05 / k + 0.9 * wins
    return np.concatenate(arms, axis=1), np.concatenate(ys, axis=1), np.concatenate(ps, axis=1)


def _rows(arm_codes, y, p, names):
    return pd.DataFrame({"arm": np.asarray(names)[arm_codes], "assignment_prob": p, "y": y})


def _centred(rows, arms):
    return cuped_outcome_model(rows, outcome="y", arms=arms)


def test_aa_anytime_interval_holds_alpha_while_naive_t_tests_do_not():
    e, rounds, per_round = 400, 10, 200
    arms, y, p = simulate_adaptive([0.2, 0.2], e, rounds, per_round, seed=1)
    looks = per_round * np.arange(1, rounds + 1)
    names = ["control", "treatment"]
    excluded = np.zeros((e, 2), dtype=bool)  # plain IPW, centred (as analyze_metrics reports)
    for i in range(e):
        rows = _rows(arms[i], y[i], p[i], names)
        for j, model in enumerate([None, _centred(rows, names)]):
            path = mad_confidence_path(
                rows, outcome="y", control="control", t_star=rounds * per_round, looks=looks, outcome_model=model
            )
            excluded[i, j] = ((path["lower"] > 0) | (path["upper"] < 0)).any()
    # Naive analysis after every round: Welch t-test of the arm means so far, at 5 %.
    treated = (arms == 1).astype(float)
    n1 = np.cumsum(treated, axis=1)[:, looks - 1]
    n0 = np.cumsum(1 - treated, axis=1)[:, looks - 1]
    s1 = np.cumsum(y * treated, axis=1)[:, looks - 1]
    s0 = np.cumsum(y * (1 - treated), axis=1)[:, looks - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m1, m0 = s1 / n1, s0 / n0
        se = np.sqrt(m1 * (1 - m1) / (n1 - 1) + m0 * (1 - m0) / (n0 - 1))
        naive = (np.abs(m1 - m0) / se > stats.norm.ppf(1 - ALPHA / 2)).any(axis=1)
    # 400 experiments: binomial sd of a 5 % rate is 1.1 points; 3 sd above alpha is 8.3 %.
    limit = mc_limit(ALPHA, e)
    assert (excluded.mean(axis=0) <= limit).all()
    assert naive.mean() > limit


@pytest.mark.parametrize("centred, per_round", [(True, 300), (False, 1000)])
def test_sequences_cover_true_effects_at_every_look_in_adaptive_experiments(centred, per_round):
    # Plain IPW is asymptotic: with 300 visitors a round, probabilities down to 1/60 and a 10 %
    # outcome, rare successes leave its variance term short early on (about 92 % coverage in
    # simulation); centred scores cover at that size, plain IPW once rounds are larger.
    rates = np.array([0.10, 0.14, 0.10])
    e, rounds = 400, 10
    arms, y, p = simulate_adaptive(rates, e, rounds, per_round, seed=2)
    looks = per_round * np.arange(1, rounds + 1)
    names = ["control", "better", "same"]
    truth = {"better": rates[1] - rates[0], "same": rates[2] - rates[0]}
    covered = np.zeros(e, dtype=bool)
    final_radius = np.zeros(e)
    for i in range(e):
        rows = _rows(arms[i], y[i], p[i], names)
        path = mad_confidence_path(
            rows,
            outcome="y",
            control="control",
            t_star=rounds * per_round,
            looks=looks,
            outcome_model=_centred(rows, names) if centred else None,
        )
        true = path["arm"].map(truth)
        covered[i] = ((path["lower"] <= true) & (true <= path["upper"])).all()
        final_radius[i] = path.loc[path["n"] == looks[-1], "radius"].max()
    # Both treatments jointly (Bonferroni), at all 10 looks: at least 95 %, less 3 binomial sd
    # (400 experiments: sd 1.1 points).
    assert covered.mean() >= 1 - mc_limit(ALPHA, e)
    # Not vacuous: the allocation moved (probabilities vary) and the intervals are informative.
    assert p.std() > 0.1 and p.min() < 0.02
    assert np.median(final_radius) < 0.25


def test_p_value_is_below_alpha_exactly_when_a_sequence_has_excluded_zero():
    rng = np.random.default_rng(3)
    n = 3000
    rows = pd.DataFrame({"arm": rng.choice(["c", "t"], n), "assignment_prob": 0.5})
    rows["y"] = rng.normal(0.12 * (rows["arm"] == "t"), 1.0)
    path = mad_confidence_path(rows, outcome="y", control="c", t_star=n, correction="none")
    ever_excluded = np.maximum.accumulate(((path["lower"] > 0) | (path["upper"] < 0)).to_numpy())
    assert ever_excluded.any() and not ever_excluded.all()  # the sequence crosses zero in the run
    np.testing.assert_array_equal(path["p_value"].to_numpy() <= ALPHA, ever_excluded)
    assert path["p_value"].is_monotonic_decreasing


def test_undefined_until_control_and_treatment_seen_and_looks_by_round():
    rows = pd.DataFrame(
        {
            "round": [1, 1, 1, 2, 2, 2],
            "arm": ["c", "c", "t", "c", "t", "u"],
            "assignment_prob": 0.5,
            "y": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0],
        }
    )
    path = mad_confidence_path(rows, outcome="y", control="c", t_star=100, arms=["c", "t", "u"], looks="round")
    t = path[path["arm"] == "t"]
    u = path[path["arm"] == "u"]
    assert t["round"].tolist() == [1, 2] and t["n"].tolist() == [3, 6]
    assert np.isfinite(t["estimate"]).all()
    assert np.isnan(u["estimate"].iloc[0]) and u["radius"].iloc[0] == np.inf
    assert u["lower"].iloc[0] == -np.inf and u["upper"].iloc[0] == np.inf
    assert np.isfinite(u["estimate"].iloc[1])
    # IPW by hand for t after round 2: (1/.5 + 1/.5 - 1/.5 - 0 - 0 + 0) / 6
    assert t["estimate"].iloc[1] == pytest.approx(2 / 6)


def test_bonferroni_widens_with_more_treatments():
    rng = np.random.default_rng(4)
    rows = pd.DataFrame(
        {"arm": rng.choice(["c", "a", "b", "d"], 4000), "assignment_prob": 0.25, "y": rng.normal(size=4000)}
    )
    both = mad_confidence_sequence(rows, outcome="y", control="c", t_star=4000)
    plain = mad_confidence_sequence(rows, outcome="y", control="c", t_star=4000, correction="none")
    assert (both["radius"] > plain["radius"]).all()
    assert both.columns.tolist()[:6] == ["arm", "estimate", "lower", "upper", "radius", "p_value"]
    np.testing.assert_allclose(both["estimate"], plain["estimate"])


@pytest.mark.parametrize(
    "change, column",
    [
        (lambda r: r.drop(columns="assignment_prob"), "assignment_prob"),
        (lambda r: r.assign(assignment_prob=1.5), "assignment_prob"),
        (lambda r: r.assign(y=np.nan), "y"),
        (lambda r: r.assign(arm="zzz"), "arm"),
    ],
)
def test_bad_rows_name_the_column(change, column):
    rows = pd.DataFrame({"arm": ["c", "t"], "assignment_prob": 0.5, "y": [0.0, 1.0]})
    with pytest.raises(RowsError) as err:
        mad_confidence_sequence(change(rows), outcome="y", control="c", t_star=10, arms=["c", "t"])
    assert err.value.column == column and column in str(err.value)


def test_bad_settings_are_refused_with_the_value():
    rows = pd.DataFrame({"arm": ["c", "t"], "assignment_prob": 0.5, "y": [0.0, 1.0]})
    with pytest.raises(ValueError, match="t_star"):
        mad_confidence_sequence(rows, outcome="y", control="c", t_star=0)
    with pytest.raises(ValueError, match="correction"):
        mad_confidence_sequence(rows, outcome="y", control="c", t_star=10, correction="holm")
    with pytest.raises(ValueError, match="alpha"):
        mad_confidence_sequence(rows, outcome="y", control="c", t_star=10, alpha=1.2)
    bad_model = pd.DataFrame({"c": [0.0, np.nan], "t": [0.0, 0.0]})
    with pytest.raises(ValueError, match="use 0.0"):
        mad_confidence_sequence(rows, outcome="y", control="c", t_star=10, outcome_model=bad_model)
    with pytest.raises(ValueError, match="lacks a column for arm 't'"):
        mad_confidence_sequence(rows, outcome="y", control="c", t_star=10, outcome_model=bad_model[["c"]])


# -- AIPW with an outcome model from earlier rounds ---------------------------------------------


def test_aipw_with_earlier_round_model_is_narrower_and_still_covers():
    e, rounds, per_round = 300, 5, 400
    rng = np.random.default_rng(5)
    n = rounds * per_round
    x = rng.normal(size=(e, n))
    p_treat = np.repeat([0.5, 0.3, 0.7, 0.2, 0.8], per_round)  # moves between rounds
    treated = rng.random((e, n)) < p_treat
    ate = 0.3
    y = 1 + 2 * x + treated * (ate + 0.2 * x) + rng.normal(0, 0.5, size=(e, n))
    p = np.where(treated, p_treat, 1 - p_treat)
    # Per-arm least squares of y on x on rounds before r predicts round r (zeros in round 1).
    model = np.zeros((e, n, 2))
    for r in range(1, rounds):
        past = slice(0, r * per_round)
        now = slice(r * per_round, (r + 1) * per_round)
        for a, mask in enumerate([~treated[:, past], treated[:, past]]):
            w = mask.astype(float)
            cnt = w.sum(1, keepdims=True)
            mx, my = (w * x[:, past]).sum(1, keepdims=True) / cnt, (w * y[:, past]).sum(1, keepdims=True) / cnt
            slope = (w * (x[:, past] - mx) * (y[:, past] - my)).sum(1, keepdims=True) / (
                (w * (x[:, past] - mx) ** 2).sum(1, keepdims=True)
            )
            model[:, now, a] = my + slope * (x[:, now] - mx)
    looks = per_round * np.arange(1, rounds + 1)
    covered = np.zeros(e, dtype=bool)
    ratio = np.zeros(e)
    for i in range(e):
        rows = pd.DataFrame({"arm": np.where(treated[i], "t", "c"), "assignment_prob": p[i], "y": y[i]})
        om = pd.DataFrame(model[i], columns=["c", "t"], index=rows.index)
        aipw = mad_confidence_path(rows, outcome="y", control="c", t_star=n, looks=looks, outcome_model=om)
        ipw = mad_confidence_path(rows, outcome="y", control="c", t_star=n, looks=looks)
        covered[i] = ((aipw["lower"] <= ate) & (ate <= aipw["upper"])).all()
        ratio[i] = aipw["radius"].iloc[-1] / ipw["radius"].iloc[-1]
    # 300 experiments: 3 binomial sd of a 5 % miss rate is 3.8 points.
    assert covered.mean() >= 1 - mc_limit(ALPHA, e)
    # Residual variance 0.25 + 0.04 x² against E[Y²] ≈ 6: the interval should shrink by half at least.
    assert (ratio < 1).all() and np.median(ratio) < 0.5


@dataclass(eq=False)
class KnownPosterior(BinaryPosterior):
    """A posterior whose draws are given: E[Y | device, arm] per draw."""

    table: dict | None = None  # arm -> draws × device levels

    @property
    def n_draws(self) -> int:
        return next(iter(self.table.values())).shape[0]

    def outcome_mean_draws(self, profiles, arm):
        level = profiles["device"].map({"desktop": 0, "mobile": 1}).to_numpy()
        return self.table[arm][:, level]


def _device_spec():
    return spec_from_dict(
        {
            "id": "demo",
            "arms": ["control", "a"],
            "covariates": {"device": {"type": "categorical", "levels": ["desktop", "mobile"]}},
            "metrics": {"primary": {"name": "y", "family": "binary"}},
        }
    )


def test_outcome_predictions_are_posterior_means_per_row_and_arm():
    rng = np.random.default_rng(6)
    table = {"control": rng.random((50, 2)), "a": rng.random((50, 2))}
    rows = pd.DataFrame({"device": ["mobile", "desktop", "mobile"]}, index=[10, 11, 12])
    post = KnownPosterior(spec=_device_spec(), observed=rows, idata=None, table=table)
    pred = outcome_predictions(post, rows)
    assert pred.index.tolist() == [10, 11, 12] and pred.columns.tolist() == ["control", "a"]
    np.testing.assert_allclose(pred["a"], table["a"].mean(0)[[1, 0, 1]])
    np.testing.assert_allclose(pred["control"], table["control"].mean(0)[[1, 0, 1]])


# -- CUPED ---------------------------------------------------------------------------------------


def test_cuped_reduces_variance_by_rho_squared():
    rng = np.random.default_rng(8)
    n, rho = 20_000, 0.6
    pre = rng.normal(10, 2, n)
    post = 5 + rho * (pre - 10) / 2 * 3 + np.sqrt(1 - rho**2) * 3 * rng.normal(size=n)
    rows = pd.DataFrame({"pre": pre, "y": post, "arm": rng.choice(["c", "t"], n)})
    res = cuped(rows, outcome="y", pre_period="pre")
    # sd of a sample ρ² at n = 20,000 is about 2ρ(1-ρ²)/√n = 0.0054; 0.025 is over 4 sd.
    assert res.variance_reduction == pytest.approx(rho**2, abs=0.025)
    assert res.variance_reduction == pytest.approx(res.correlation**2, abs=1e-9)
    assert res.theta == pytest.approx(np.polyfit(pre, post, 1)[0], rel=1e-9)
    assert res.adjusted.mean() == pytest.approx(post.mean())
    fixed = cuped(rows, outcome="y", pre_period="pre", theta=0.0)
    assert fixed.variance_reduction == pytest.approx(0.0, abs=1e-12)


def test_cuped_refuses_constant_pre_period():
    rows = pd.DataFrame({"pre": [1.0, 1.0, 1.0], "y": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="'pre' is constant"):
        cuped(rows, outcome="y", pre_period="pre")


def test_cuped_outcome_model_uses_only_earlier_rows():
    rng = np.random.default_rng(9)
    rows = pd.DataFrame({"x": rng.normal(size=50)})
    rows["y"] = 3 + 2 * rows["x"] + rng.normal(size=50)
    model = cuped_outcome_model(rows, outcome="y", arms=["c", "t"], pre_period="x", warmup=2)
    for i in (2, 10, 49):
        past = rows.iloc[:i]
        theta = np.cov(past["x"], past["y"], ddof=0)[0, 1] / past["x"].var(ddof=0)
        expected = past["y"].mean() + theta * (rows["x"].iloc[i] - past["x"].mean())
        assert model["t"].iloc[i] == pytest.approx(expected, rel=1e-9)
    warm = cuped_outcome_model(rows, outcome="y", arms=["c", "t"], pre_period="x", warmup=20)
    running_mean = rows["y"].expanding().mean().shift(1).fillna(0.0)
    np.testing.assert_allclose(warm["c"].iloc[:20], running_mean.iloc[:20], rtol=1e-12)
    assert not np.allclose(warm["c"].iloc[20:], running_mean.iloc[20:])
    changed = rows.copy()
    changed.loc[20, "y"] += 100  # a later outcome never moves an earlier prediction
    again = cuped_outcome_model(changed, outcome="y", arms=["c", "t"], pre_period="x", warmup=2)
    np.testing.assert_array_equal(again["c"].iloc[:21], model["c"].iloc[:21])
    assert (model["c"] == model["t"]).all()


def test_cuped_model_narrows_mad_sequences_and_covers():
    e, n, rho, ate = 200, 3000, 0.8, 0.2
    rng = np.random.default_rng(10)
    pre = rng.normal(size=(e, n))
    treated = rng.random((e, n)) < 0.5
    y = 4 + rho * pre + np.sqrt(1 - rho**2) * rng.normal(size=(e, n)) + ate * treated
    widths = np.zeros((e, 3))
    covered = np.zeros(e, dtype=bool)
    for i in range(e):
        rows = pd.DataFrame({"arm": np.where(treated[i], "t", "c"), "assignment_prob": 0.5, "y": y[i], "x": pre[i]})
        runs = [
            mad_confidence_sequence(rows, outcome="y", control="c", t_star=n),
            mad_confidence_sequence(
                rows,
                outcome="y",
                control="c",
                t_star=n,
                outcome_model=cuped_outcome_model(rows, outcome="y", arms=["c", "t"]),
            ),
            mad_confidence_sequence(
                rows,
                outcome="y",
                control="c",
                t_star=n,
                outcome_model=cuped_outcome_model(rows, outcome="y", arms=["c", "t"], pre_period="x"),
            ),
        ]
        widths[i] = [r["radius"].iloc[0] for r in runs]
        covered[i] = runs[2]["lower"].iloc[0] <= ate <= runs[2]["upper"].iloc[0]
    # Centring removes the mean level (E[Y²] = 17 → var 1); CUPED removes ρ² of the rest.
    assert (widths[:, 1] < widths[:, 0]).all() and (widths[:, 2] < widths[:, 1]).all()
    assert np.median(widths[:, 2] / widths[:, 1]) < np.sqrt(1 - rho**2) + 0.1
    assert covered.mean() >= 1 - mc_limit(ALPHA, e)  # 200 experiments: 3 sd = 4.6 points


# -- mSPRT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["binary", "continuous"])
def test_msprt_is_valid_under_the_null_at_every_look(family):
    e, n = 1000, 2000
    rng = np.random.default_rng(12)
    arms = rng.random((e, n)) < 0.5
    y = (rng.random((e, n)) < 0.2).astype(float) if family == "binary" else rng.exponential(3.0, (e, n))
    looks = np.arange(200, n + 1, 200)
    p_paths = np.zeros((e, len(looks)))
    for i in range(e):
        rows = pd.DataFrame({"arm": np.where(arms[i], "b", "a"), "y": y[i]})
        res = msprt(rows, outcome="y", control="a", treatment="b", family=family, looks=looks)
        p_paths[i] = res.path["p_value"]
    assert (np.diff(p_paths, axis=1) <= 0).all()
    # Rejected by look j (running minimum): at most alpha at every look; 1000 experiments, 3 sd = 2.1 points.
    assert ((p_paths <= ALPHA).mean(axis=0) <= mc_limit(ALPHA, e)).all()


def test_msprt_rejects_a_large_effect():
    e, n = 200, 2000
    rng = np.random.default_rng(13)
    arms = rng.random((e, n)) < 0.5
    y = (rng.random((e, n)) < np.where(arms, 0.3, 0.2)).astype(float)
    rejected = [
        msprt(
            pd.DataFrame({"arm": np.where(arms[i], "b", "a"), "y": y[i]}),
            outcome="y",
            control="a",
            treatment="b",
            family="binary",
        ).rejected
        for i in range(e)
    ]
    # z ≈ 5 at the end: the always-valid test must find it nearly always.
    assert np.mean(rejected) > 0.95


def test_msprt_statistic_matches_the_formula_and_default_is_scale_free():
    rng = np.random.default_rng(14)
    rows = pd.DataFrame({"arm": rng.choice(["a", "b", "other"], 900), "y": rng.normal(2, 1, 900)})
    tau2 = 0.04
    res = msprt(rows, outcome="y", control="a", treatment="b", tau2=tau2)
    a, b = rows.loc[rows["arm"] == "a", "y"], rows.loc[rows["arm"] == "b", "y"]
    v = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
    diff = b.mean() - a.mean()
    lam = np.sqrt(v / (v + tau2)) * np.exp(tau2 * diff**2 / (2 * v * (v + tau2)))
    assert res.path["statistic"].iloc[-1] == pytest.approx(lam, rel=1e-9)
    assert res.path["n_control"].iloc[-1] == len(a) and res.path["n_treatment"].iloc[-1] == len(b)
    base = msprt(rows, outcome="y", control="a", treatment="b")
    scaled = msprt(rows.assign(y=rows["y"] * 100 + 7), outcome="y", control="a", treatment="b")
    np.testing.assert_allclose(scaled.path["p_value"], base.path["p_value"], rtol=1e-8)


def test_msprt_refuses_non_binary_outcome_for_binary_family():
    rows = pd.DataFrame({"arm": ["a", "b"], "y": [0.0, 2.0]})
    with pytest.raises(RowsError, match="binary"):
        msprt(rows, outcome="y", control="a", treatment="b", family="binary")


# -- many metrics ---------------------------------------------------------------------------------


def _metrics_spec(**extra):
    d = {
        "id": "checkout",
        "arms": ["control", "green", "blue"],
        "covariates": {"device": "categorical"},
        "metrics": {
            "primary": {"name": "converted", "family": "binary"},
            "guardrails": [
                {"name": "latency", "family": "continuous", "direction": "increase_is_bad", "tolerance": 5.0},
                {"name": "revenue", "family": "continuous", "direction": "decrease_is_bad", "tolerance": 0.5},
            ],
            "secondary": [{"name": "clicks", "family": "continuous"}, {"name": "pages", "family": "continuous"}],
        },
    }
    d.update(extra)
    return spec_from_dict(d)


def _metrics_rows(n, seed, *, latency_harm=0.0, revenue_harm=0.0, lift=0.0):
    rng = np.random.default_rng(seed)
    arm = rng.choice(["control", "green", "blue"], n, p=[0.4, 0.3, 0.3])
    prob = np.select([arm == "control", arm == "green"], [0.4, 0.3], 0.3)
    green, blue = arm == "green", arm == "blue"
    return pd.DataFrame(
        {
            "round": np.repeat(np.arange(1, 5), n // 4),
            "arm": arm,
            "assignment_prob": prob,
            "device": "web",
            "converted": (rng.random(n) < 0.2 + lift * green).astype(float),
            "latency": rng.normal(300, 20, n) + latency_harm * blue,
            "revenue": rng.normal(20, 4, n) - revenue_harm * green,
            "clicks": rng.poisson(3 + 0.3 * green, n).astype(float),
            "pages": rng.poisson(5, n).astype(float),
        }
    )


def test_bh_q_values_match_scipy_and_the_step_up_rule():
    rows = _metrics_rows(8000, 15, lift=0.05)
    res = analyze_metrics(rows, _metrics_spec(), t_star=8000)
    eff = res.effects
    family = eff[eff["role"] != "guardrail"]
    assert len(family) == 3 * 2 and eff.loc[eff["role"] == "guardrail", "q_value"].isna().all()
    np.testing.assert_allclose(family["q_value"], stats.false_discovery_control(family["p_value"], method="bh"))
    # Step-up by hand: reject the k smallest p-values, k the largest with p_(k) <= k/m · fdr.
    ps = family["p_value"].to_numpy()
    order = np.sort(ps)
    passing = np.flatnonzero(order <= np.arange(1, len(ps) + 1) / len(ps) * res.fdr)
    cutoff = order[passing[-1]] if len(passing) else -1.0
    np.testing.assert_array_equal(family["discovery"].to_numpy(), ps <= cutoff)
    found = set(zip(family.loc[family["discovery"], "metric"], family.loc[family["discovery"], "arm"]))
    assert ("converted", "green") in found and ("clicks", "green") in found
    assert ("pages", "blue") not in found


def test_planted_guardrail_regressions_are_caught():
    rows = _metrics_rows(8000, 16, latency_harm=40.0, revenue_harm=3.0)
    res = analyze_metrics(rows, _metrics_spec(), t_star=8000)
    verdict = res.guardrails.set_index(["metric", "arm"])["verdict"]
    assert verdict[("latency", "blue")] == "fail"
    assert verdict[("revenue", "green")] == "fail"
    assert verdict[("latency", "green")] != "fail" and verdict[("revenue", "blue")] != "fail"
    assert res.failed_guardrails() == {"blue": ("latency",), "green": ("revenue",)}
    g = res.effects[(res.effects["metric"] == "latency") & (res.effects["arm"] == "blue")].iloc[0]
    assert g["lower"] > 5.0 and g["verdict"] == "fail"


def test_guardrail_passes_when_harm_beyond_tolerance_is_excluded():
    rows = _metrics_rows(20000, 17)
    spec = _metrics_spec()
    res = analyze_metrics(rows, spec, t_star=20000)
    lat = res.guardrails[res.guardrails["metric"] == "latency"]
    # With 20k rows the latency interval (sd 20) is a few ms wide: harm above 5 ms is excluded.
    assert (lat["verdict"] == "pass").all() and (lat["upper"] < 5.0).all()
    no_tolerance = analyze_metrics(
        rows,
        _metrics_spec(
            metrics={
                "primary": {"name": "converted", "family": "binary"},
                "guardrails": [{"name": "latency", "family": "continuous", "direction": "increase_is_bad"}],
            }
        ),
        t_star=20000,
    )
    # Tolerance 0 and no true change: the interval straddles 0, so neither pass nor fail.
    assert set(no_tolerance.guardrails["verdict"]) == {"inconclusive"}


def test_analyze_metrics_uses_pre_period_and_sorts_by_arrival():
    rng = np.random.default_rng(18)
    n = 6000
    pre = rng.normal(20, 4, n)
    rows = _metrics_rows(n, 18)
    rows["revenue"] = 0.9 * pre + rng.normal(0, 1.5, n)
    rows["pre_revenue"] = pre
    spec = _metrics_spec(pre_period="pre_revenue")
    with_pre = analyze_metrics(rows, spec, t_star=n)
    without = analyze_metrics(rows.drop(columns="pre_revenue"), _metrics_spec(), t_star=n)
    r1 = with_pre.effects[with_pre.effects["metric"] == "revenue"]["radius"].to_numpy()
    r0 = without.effects[without.effects["metric"] == "revenue"]["radius"].to_numpy()
    assert (r1 < 0.6 * r0).all()
    # Arrival order comes from round and assigned_at: shuffled rows give the same sequences.
    rows["assigned_at"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    shuffled = analyze_metrics(rows.sample(frac=1.0, random_state=0), spec, t_star=n)
    pd.testing.assert_frame_equal(shuffled.effects, with_pre.effects)
    with pytest.raises(RowsError, match="pre_revenue"):
        analyze_metrics(rows.drop(columns="pre_revenue"), spec, t_star=n)


def test_analyze_metrics_accepts_rounds_concatenated_with_repeated_index():
    rows = _metrics_rows(4000, 19)
    repeated = pd.concat([rows.iloc[:2000], rows.iloc[2000:].reset_index(drop=True)])
    assert not repeated.index.is_unique
    spec = _metrics_spec()
    pd.testing.assert_frame_equal(
        analyze_metrics(repeated, spec, t_star=4000).effects, analyze_metrics(rows, spec, t_star=4000).effects
    )
    with pytest.raises(ValueError, match="duplicate labels"):
        analyze_metrics(repeated, spec, t_star=4000, outcome_models={"converted": rows[[]].assign(control=0.0)})
