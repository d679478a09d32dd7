"""The posterior engine: models that recover known effects, agree across data plans, and reload exactly."""

import hashlib

import arviz as az
import numpy as np
import pytest
from scipy.special import expit

from tyche_lib import (
    BinaryPosterior,
    ContinuousPosterior,
    HurdlePosterior,
    RowsError,
    convergence_check,
    describe_model,
    fit_posterior,
    initial_plan,
)
from tyche_lib.simulate import (
    continuous,
    hurdle_revenue,
    segment_flip,
    simulate_round,
    true_contrasts,
)

# Few draws keep the suite fast; NUTS on these small models mixes well enough that 2 × 200 draws
# give effective sample sizes in the hundreds (checked where it matters, through az.ess).
FAST = {"draws": 200, "tune": 200, "chains": 2}


def scenario_rows(scenario, n, rng):
    return simulate_round(scenario, initial_plan(scenario.spec()), n=n, round=1, rng=rng)


def effective_sizes(post, draws):
    """Bulk ESS of every derived quantity in ``draws`` (chains*draws, ...), chains as sampled."""
    chains = post.idata.posterior.sizes["chain"]
    by_chain = draws.reshape(chains, draws.shape[0] // chains, *draws.shape[1:])
    return az.ess(az.convert_to_dataset(by_chain))["x"].values


def model_profiles(post):
    """One observed row per model-scale profile (numeric buckets collapsed)."""
    frame = post.description.design_frame(post.observed, post.spec.control)
    names = list(post.description.covariate_names)
    first = frame.groupby(names, observed=True).head(1).index
    return post.observed.loc[first].reset_index(drop=True)


@pytest.fixture(scope="module")
def flip():
    """segment_flip (4 arms, categorical + boolean + bucketed age): aggregated fit.

    The guardrail column is dropped: a fit needs only the primary metric.
    """
    scenario = segment_flip()
    rows = scenario_rows(scenario, 20_000, rng=101).drop(columns="latency_ms")
    return scenario, rows, fit_posterior(rows, scenario.spec(), rng=1, **FAST)


@pytest.fixture(scope="module")
def revenue():
    scenario = hurdle_revenue()
    rows = scenario_rows(scenario, 12_000, rng=202)
    return scenario, rows, fit_posterior(rows, scenario.spec(), rng=2, **FAST)


@pytest.fixture(scope="module")
def value():
    scenario = continuous()
    rows = scenario_rows(scenario, 10_000, rng=303)
    return scenario, rows, fit_posterior(rows, scenario.spec(), rng=3, **FAST)


# -- the model description (no sampling) ----------------------------------------------------------


def test_binary_with_categorical_covariates_is_aggregated_and_numeric_is_not():
    scenario = segment_flip()
    rows = scenario_rows(scenario, 2_000, rng=1)
    spec = scenario.spec()
    d = describe_model(rows, spec)
    assert d.aggregated and d.bambi_family == "binomial"
    assert d.formulas == ("p(successes, trials) ~ arm * (device + returning + region + age)",)
    counts = d.model_data(rows)
    assert counts["trials"].sum() == len(rows) and counts["successes"].sum() == rows["converted"].sum()
    assert len(counts) == len(counts[["device", "returning", "region", "age", "arm"]].drop_duplicates())

    unbucketed = scenario.spec(
        covariates={"device": {"type": "categorical", "levels": ["mobile", "desktop", "tablet"]}, "age": "numeric"}
    )
    d_rows = describe_model(rows, unbucketed)
    assert not d_rows.aggregated and d_rows.bambi_family == "bernoulli"
    with pytest.raises(ValueError, match="age"):
        describe_model(rows, unbucketed, aggregate=True)


def test_bucket_edges_come_from_observed_rows_and_code_new_rows_identically():
    scenario = segment_flip()
    rows = scenario_rows(scenario, 4_000, rng=2)
    d = describe_model(rows, scenario.spec())
    age = next(c for c in d.covariates if c.name == "age")
    assert np.allclose(age.edges, np.unique(np.quantile(rows["age"], [0.25, 0.5, 0.75])))
    coded = d.design_frame(rows)["age"]
    # Each bucket holds the values between consecutive edges, (lo, hi].
    bounds = [-np.inf, *age.edges, np.inf]
    for i, level in enumerate(age.levels):
        inside = rows["age"][(coded == level).to_numpy()]
        assert (inside > bounds[i]).all() and (inside <= bounds[i + 1]).all()
    # New rows outside the observed range land in the end buckets, with the stored edges.
    new = rows.head(2).assign(age=[-1e9, 1e9])
    assert list(d.design_frame(new)["age"]) == [age.levels[0], age.levels[-1]]


def test_numeric_covariates_are_standardised_on_observed_rows():
    scenario = continuous()
    rows = scenario_rows(scenario, 3_000, rng=3)
    spec = scenario.spec(covariates={"age": "numeric", "returning": "boolean"})
    d = describe_model(rows, spec)
    z = d.design_frame(rows)["age"]
    assert abs(z.mean()) < 1e-9 and abs(z.std(ddof=0) - 1) < 1e-9
    assert d.formulas == ("value ~ arm * (age + returning)",)


def test_hurdle_models_both_parts_and_no_covariates_gives_arm_only():
    scenario = hurdle_revenue()
    rows = scenario_rows(scenario, 1_000, rng=4)
    d = describe_model(rows, scenario.spec())
    assert d.formulas == ("revenue ~ arm * (device + returning + region)", "psi ~ arm * (device + returning + region)")
    bare = describe_model(rows, scenario.spec(covariates={}))
    assert bare.formulas == ("revenue ~ arm", "psi ~ arm")


def test_description_round_trips_through_its_dict():
    scenario = segment_flip()
    rows = scenario_rows(scenario, 2_000, rng=5)
    d = describe_model(rows, scenario.spec())
    assert type(d).from_dict(d.to_dict()) == d


# -- errors ---------------------------------------------------------------------------------------


def test_bad_rows_raise_errors_naming_what_is_wrong():
    scenario = segment_flip()
    spec = scenario.spec()
    rows = scenario_rows(scenario, 500, rng=6)
    with pytest.raises(ValueError, match="no rows"):
        fit_posterior(rows.iloc[:0], spec, rng=0)
    with pytest.raises(RowsError, match="converted"):
        fit_posterior(rows.drop(columns="converted"), spec, rng=0)
    with pytest.raises(RowsError, match="only one arm"):
        fit_posterior(rows.assign(arm="flip"), spec, rng=0)
    with pytest.raises(RowsError, match="unknown arm"):
        fit_posterior(rows.assign(arm="nope"), spec, rng=0)
    with pytest.raises(RowsError, match="device"):
        fit_posterior(rows.drop(columns="device"), spec, rng=0)
    with pytest.raises(ValueError, match="aggregate=True"):
        fit_posterior(scenario_rows(continuous(), 500, rng=7), continuous().spec(), rng=0, aggregate=True)


@pytest.mark.slow
def test_no_covariates_fits_arm_only():
    scenario = segment_flip()
    spec = scenario.spec(covariates={})
    rows = scenario_rows(scenario, 8_000, rng=8)
    post = fit_posterior(rows, spec, rng=9, **FAST)
    assert post.description.formulas == ("p(successes, trials) ~ arm",) and post.model_info["n_cells"] == 4
    draws = post.contrast_draws()
    assert draws.shape == (400, len(rows), 3)
    # One profile: every row has the same contrast draws.
    assert np.array_equal(draws[:, 0, :], draws[:, -1, :])
    # With 2,000 rows per arm the posterior mean is the difference in observed rates up to Monte
    # Carlo error (sd / sqrt(ESS)), 4 such errors allowed, plus 5% of a posterior sd for the prior's
    # pull and the curvature of expit (each under 3% of a sd at this sample size).
    rates = rows.groupby("arm")["converted"].mean()
    observed = np.array([rates[a] - rates[spec.control] for a in spec.treatments])
    mean, sd = draws[:, 0, :].mean(axis=0), draws[:, 0, :].std(axis=0)
    assert np.all(np.abs(mean - observed) < 4 * sd / np.sqrt(effective_sizes(post, draws[:, 0, :])) + 0.05 * sd)


# -- reading the draws ----------------------------------------------------------------------------


@pytest.mark.slow
def test_four_arms_and_contrast_draw_shapes(flip):
    scenario, rows, post = flip
    assert isinstance(post, BinaryPosterior) and post.arms == scenario.arms and len(post.arms) == 4
    assert post.method == "aggregated" and post.model_info["n_rows"] == len(rows)
    assert "latency_ms" not in post.observed.columns  # guardrails are not required
    draws = post.contrast_draws()
    assert draws.shape == (post.n_draws, len(rows), 3) == (400, len(rows), 3)
    # Chunked iteration reproduces the full array exactly.
    chunked = np.concatenate([block for _, block in post.iter_contrast_draws(chunk_rows=3_001)], axis=1)
    assert np.array_equal(chunked, draws)
    # Group means equal averaging the per-row draws over the members.
    groups = np.where(rows["device"] == "mobile", 0, np.where(rows["returning"], 1, -1))
    means, sizes = post.mean_contrast_draws(groups, 2)
    for g in range(2):
        assert sizes[g] == (groups == g).sum()
        np.testing.assert_allclose(means[:, g, :], draws[:, groups == g, :].mean(axis=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.mean_contrasts(), draws.mean(axis=0), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["flip", "revenue", "value"])
def test_outcome_means_match_bambi_predict(which, request):
    _, rows, post = request.getfixturevalue(which)
    sample = rows.iloc[:40]
    arm = post.treatments[0]
    new = post.description.design_frame(sample, arm)
    predicted = post.model.predict(post.idata, kind="response_params", data=new, inplace=False).posterior
    n = len(sample)
    if isinstance(post, HurdlePosterior):
        # psi = P(Y > 0) in PyMC's HurdleLogNormal; E[Y] = psi · exp(mu + sigma² / 2).
        sigma = predicted["sigma"].values.reshape(-1, 1)
        expected = predicted["psi"].values.reshape(-1, n) * np.exp(predicted["mu"].values.reshape(-1, n) + sigma**2 / 2)
    else:
        expected = predicted[post.model.family.likelihood.parent].values.reshape(-1, n)
    np.testing.assert_allclose(post.outcome_mean_draws(sample, arm), expected, rtol=1e-9)


@pytest.mark.slow
def test_summary_reports_coefficients_and_diagnostics(flip):
    _, _, post = flip
    s = post.summary()
    assert "Intercept" in s.coefficients.index and {"mean", "sd", "hdi_5%", "hdi_95%", "r_hat"} <= set(s.coefficients)
    assert s.divergences == int(post.idata.sample_stats["diverging"].sum())
    assert s.max_r_hat == s.coefficients["r_hat"].max() and s.max_r_hat < 1.05
    d = s.to_dict()
    assert d["method"] == "aggregated" and len(d["coefficients"]) == len(s.coefficients)


# -- reproducibility ------------------------------------------------------------------------------


@pytest.mark.slow
def test_same_seed_same_draws_and_netcdf_round_trip(flip, tmp_path):
    scenario, rows, post = flip
    again = fit_posterior(rows, scenario.spec(), rng=1, **FAST)
    for name, var in post.idata.posterior.data_vars.items():
        assert np.array_equal(var.values, again.idata.posterior[name].values), name
    paths = [post.to_netcdf(tmp_path / "a.nc"), again.to_netcdf(tmp_path / "b.nc")]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1, "a refit with the same seed must write the same file"

    loaded = BinaryPosterior.from_netcdf(paths[0], rows, scenario.spec())
    assert isinstance(loaded, BinaryPosterior) and loaded.method == post.method
    assert loaded.description == post.description
    assert np.array_equal(loaded.contrast_draws(), post.contrast_draws())
    with pytest.raises(ValueError, match="rows differ"):
        BinaryPosterior.from_netcdf(paths[0], rows.iloc[1:], scenario.spec())
    with pytest.raises(ValueError, match="not a ContinuousPosterior"):
        ContinuousPosterior.from_netcdf(paths[0], rows, scenario.spec())

    other = fit_posterior(rows, scenario.spec(), rng=2, **FAST)
    assert not np.array_equal(other.idata.posterior["Intercept"].values, post.idata.posterior["Intercept"].values)


@pytest.mark.slow
def test_aggregated_and_row_level_binary_fits_agree(flip):
    scenario, rows, aggregated = flip
    # Both fits tune long enough for the dense mass matrix to settle (~500 steps): with 200 the
    # spread of heavy-tailed small-profile contrasts is estimated from too few effective draws.
    settled = {**FAST, "tune": 500}
    aggregated = fit_posterior(rows, scenario.spec(), rng=1, **settled)
    row_level = fit_posterior(rows, scenario.spec(), rng=5, aggregate=False, **settled)
    assert row_level.method == "rows" and row_level.description.bambi_family == "bernoulli"
    profiles = model_profiles(aggregated)
    a = aggregated.profile_contrast_draws(profiles)
    r = row_level.profile_contrast_draws(profiles)
    # The two are the same posterior sampled twice, so the posterior means differ only by Monte
    # Carlo error: each mean's standard error is sd / sqrt(ESS) (ESS of that very contrast). 4.5
    # standard errors of the difference: a true model gives |z| > 4.5 with probability 7e-6 per
    # contrast (< 0.01 over these ~300), while a different likelihood or prior shifts means by
    # far more.
    se = np.sqrt(
        a.std(axis=0) ** 2 / effective_sizes(aggregated, a) + r.std(axis=0) ** 2 / effective_sizes(row_level, r)
    )
    z = (a.mean(axis=0) - r.mean(axis=0)) / se
    assert np.abs(z).max() < 4.5
    # The check is sharp: its tolerance is a small fraction of the posterior spread.
    assert np.median(4.5 * se / a.std(axis=0)) < 0.5
    # Posterior spreads agree too (an sd estimate's relative error is about 1 / sqrt(2 ESS) ≈ 5%).
    np.testing.assert_allclose(a.std(axis=0), r.std(axis=0), rtol=0.25)


# -- recovering known effects ---------------------------------------------------------------------


def coverage(post, scenario, prob=0.90):
    """Share of (model profile, treatment) pairs whose central ``prob`` interval holds the truth."""
    profiles = model_profiles(post)
    draws = post.profile_contrast_draws(profiles)
    lo, hi = np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
    truth = true_contrasts(scenario, profiles)
    return ((lo <= truth) & (truth <= hi)).mean()


def segment_interval(post, members, treatment, prob=0.90):
    """Central ``prob`` interval of a treatment's contrast averaged over the member rows."""
    means, _ = post.mean_contrast_draws(np.where(members, 0, -1), 1)
    draws = means[:, 0, post.treatments.index(treatment)]
    return np.quantile(draws, [(1 - prob) / 2, (1 + prob) / 2])


# The intervals of one fit share coefficients, so coverage over its profiles is far from a binomial
# count: with ~30 free contrast coefficients the effective number of independent intervals is ~30,
# giving a coverage sd near sqrt(0.9 · 0.1 / 30) ≈ 0.055. A lower bound of 0.75 (≈ 2.7 sd below
# nominal) flags biased contrasts; the interaction priors shrink the many zero effects, so coverage
# above nominal is allowed. Each test then checks that the intervals are informative: the
# scenario's headline effect, at least 4.5 posterior sd from zero at these sample sizes, has a 90%
# interval that excludes zero (fails for under 1% of seeds when the model is right).
MIN_COVERAGE = 0.75


@pytest.mark.slow
def test_binary_contrasts_recover_the_segment_flip(flip):
    scenario, rows, post = flip
    assert coverage(post, scenario) >= MIN_COVERAGE
    # flip: +5pp on mobile, -5pp elsewhere (posterior sd ≈ 0.8pp per segment here).
    mobile = (rows["device"] == "mobile").to_numpy()
    assert segment_interval(post, mobile, "flip")[0] > 0
    assert segment_interval(post, ~mobile, "flip")[1] < 0


@pytest.mark.slow
def test_hurdle_contrasts_recover_revenue_effects(revenue):
    scenario, rows, post = revenue
    assert coverage(post, scenario) >= MIN_COVERAGE
    # Revenue contrasts are heavy-tailed (a segment's contrast has a posterior sd near 1 on a mean
    # near 3 here), so the headline check is on the purchase part: discount lifts P(Y > 0) by +3pp
    # for new visitors (sd ≈ 0.6pp here). It also pins psi's orientation: were psi P(Y = 0), it
    # would flip.
    new = rows[~rows["returning"].astype(bool)]
    lift = expit(post.linear_predictor_draws(new, "discount", "psi")) - expit(
        post.linear_predictor_draws(new, "control", "psi")
    )
    assert np.quantile(lift.mean(axis=1), 0.05) > 0


@pytest.mark.slow
def test_continuous_contrasts_recover_the_age_split(value):
    scenario, rows, post = value
    assert coverage(post, scenario) >= MIN_COVERAGE
    # tutorial: +1.0 up to age 40 (posterior sd ≈ 0.21 here), -0.5 above.
    young = (rows["age"] <= 40).to_numpy()
    assert segment_interval(post, young, "tutorial")[0] > 0
    assert segment_interval(post, young, "tutorial").mean() > segment_interval(post, ~young, "tutorial").mean()


@pytest.mark.slow
@pytest.mark.parametrize("make", [continuous, hurdle_revenue], ids=["continuous", "hurdle"])
def test_an_arm_without_rows_fits_on_its_prior_and_stays_on_the_data_scale(make):
    # An arm added by a spec revision has no rows yet; the data-scaled explicit priors keep the
    # model proper (bambi's defaults gave its columns an infinite prior scale).
    scenario = make()
    spec = scenario.spec()
    rows = scenario_rows(scenario, 2_000, rng=8)
    new_arm = spec.treatments[0]
    post = fit_posterior(rows[rows["arm"] != new_arm], spec, draws=300, tune=500, chains=2, rng=8)
    assert new_arm not in post.arms_with_data() and spec.control in post.arms_with_data()
    result = convergence_check(post, rows[spec.primary.name])
    assert result.passed, result.message
