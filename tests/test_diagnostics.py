"""The convergence gate: a healthy fit passes; a stuck chain, divergences or an implausible outcome mean fail,
naming the parameter."""

import dataclasses

import numpy as np
import pytest

from tyche_lib import convergence_check, fit_posterior, initial_plan
from tyche_lib.simulate import continuous, segment_flip, simulate_round


@pytest.fixture(scope="module")
def binary():
    scenario = segment_flip()
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=4_000, round=1, rng=11)
    return rows, fit_posterior(rows, scenario.spec(), draws=300, tune=500, chains=2, rng=11)


@pytest.fixture(scope="module")
def gaussian():
    scenario = continuous(pre_period_correlation=None)
    rows = simulate_round(scenario, initial_plan(scenario.spec()), n=600, round=1, rng=12)
    return rows, fit_posterior(rows, scenario.spec(), draws=300, tune=500, chains=2, rng=12)


def _with_posterior(posterior, change):
    """A copy of ``posterior`` whose draws are changed in place by ``change(idata)``."""
    idata = posterior.idata.copy()
    change(idata)
    return dataclasses.replace(posterior, idata=idata)


def test_a_healthy_fit_passes_and_reports_its_margins(binary, gaussian):
    rows, post = binary
    result = convergence_check(post, rows["converted"])
    assert result.passed and result.failures.empty
    assert result.max_r_hat <= 1.05 and result.min_ess_bulk >= 100 and result.divergences == 0
    assert "posterior converged" in result.message
    rows, post = gaussian
    result = convergence_check(post, rows[post.spec.primary.name])
    assert result.passed, result.message
    assert result.outcome_bound == pytest.approx(10 * rows[post.spec.primary.name].abs().max())


def test_a_chain_stuck_elsewhere_fails_naming_the_coefficient(binary):
    _, post = binary

    def shift_second_chain(idata):
        # The second chain explores a different mode for the arm terms: what a stuck chain looks like.
        values = idata.posterior["arm"].values
        values[1] += 5 * values.std()

    result = convergence_check(_with_posterior(post, shift_second_chain))
    assert not result.passed
    failed = result.failures[result.failures["criterion"] == "r_hat"]
    assert len(failed) and failed["parameter"].str.startswith("arm[").all()
    assert "r_hat of arm[" in result.message and "no plan is built from it" in result.message


def test_divergences_beyond_one_percent_of_draws_fail(binary):
    _, post = binary

    def diverge(idata, share):
        flags = np.zeros(idata.sample_stats["diverging"].shape, dtype=bool)
        flags.flat[: int(share * flags.size)] = True
        idata.sample_stats["diverging"].values[...] = flags

    assert convergence_check(_with_posterior(post, lambda i: diverge(i, 0.005))).passed
    result = convergence_check(_with_posterior(post, lambda i: diverge(i, 0.05)))
    assert not result.passed and result.divergences == 30
    assert "divergences of sampler = 30" in result.message


def test_an_outcome_mean_off_the_data_scale_fails_naming_the_arm(gaussian):
    rows, post = gaussian
    outcome = rows[post.spec.primary.name]
    treatment = post.spec.treatments[0]

    def blow_up(idata):
        # A sparse arm whose effect ran away: its coefficient a thousand times the data's scale.
        arm = idata.posterior["arm"]
        level = [str(v) for v in arm.coords[arm.dims[-1]].values].index(treatment)
        arm.values[..., level] += 1_000 * outcome.abs().max()

    result = convergence_check(_with_posterior(post, blow_up), outcome)
    assert not result.passed
    failed = result.failures[result.failures["criterion"] == "outcome_mean"]
    assert list(failed["parameter"].str.contains(f"arm={treatment}")) == [True]
    assert result.max_outcome_mean > result.outcome_bound
