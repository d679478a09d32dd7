"""posterior_convergence: no plan is built from a posterior that did not converge or blew up."""

import dagster as dg

from tyche_lib import convergence_check

from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage

# The asset the check guards, by key (defined in this domain's assets module).
POSTERIOR = dg.AssetKey("posterior")


# In the DuckDB pool: reading the stored fit looks up its rounds in DuckDB.
@dg.asset_check(asset=POSTERIOR, blocking=True, partitions_def=experiment_round_partitions, pool=DUCKDB_POOL)
def posterior_convergence(
    context: dg.AssetCheckExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog
):
    """R-hat, bulk ESS and divergences of the stored fit, and every expected outcome on the data's scale.

    Blocking: when it fails, policy_tree, allocation, round_plan and round_report do not run, and
    the plan in force stays in force.
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    fitted = storage.load_posterior(spec, round_)
    # The frame bambi fitted holds the outcome for row-level fits; a binary fit's means are
    # probabilities and need no scale.
    model_data = getattr(fitted, "model_data", None)
    outcome = model_data[spec.primary.name] if model_data is not None and spec.primary.name in model_data else None
    result = convergence_check(fitted, outcome)
    metadata = {
        "divergences": result.divergences,
        "draws": result.draws,
        "max_r_hat": result.max_r_hat if result.max_r_hat is not None else float("nan"),
        "min_ess_bulk": result.min_ess_bulk if result.min_ess_bulk is not None else float("nan"),
        "max_outcome_mean": result.max_outcome_mean,
    }
    if len(result.failures):
        metadata["failures"] = dg.MetadataValue.md(result.failures.astype(str).to_markdown(index=False))
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.message,
        metadata={"message": result.message, **metadata},
    )
