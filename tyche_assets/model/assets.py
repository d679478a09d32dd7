"""posterior: the Bayesian heterogeneous-effect model, refitted on all usable rounds <= r."""

import dagster as dg
import numpy as np
import pandas as pd

from tyche_lib import Posterior, derive_seed, fit_posterior

from ..lineage import array_version
from ..partitions import experiment_and_round, experiment_round_partitions
from ..resources import DUCKDB_POOL, ExperimentCatalog
from ..storage import TycheStorage


def posterior_version(posterior: Posterior) -> str:
    """Content hash of the draws (the NetCDF file itself carries no clock, but hash the values)."""
    post = posterior.idata.posterior
    return array_version(*(post[v].values for v in sorted(post.data_vars)))


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=["round_visitors"],
    pool=DUCKDB_POOL,
    code_version="posterior-3",
    group_name="model",
    kinds={"pymc", "duckdb"},
)
def posterior(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Posterior of the primary metric with arm × covariate interactions, on every round <= r that passed its checks.

    Draws are stored as NetCDF (``storage/posteriors/<experiment>/<round key>.nc``) and summarised in
    ``posterior_summaries``. The sampler seed derives from (experiment, round).
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    rounds = storage.passed_rounds(experiment_id, round_)
    if round_ not in rounds:
        raise dg.Failure(
            f"round {round_} of {experiment_id} has not passed its blocking checks: "
            "materialise round_visitors with its checks first"
        )
    # The round enters the experiment's history only now, with every blocking check passed.
    storage.accept_round(experiment_id, round_, context.run.run_id)
    rows = storage.load_visitors(
        experiment_id,
        rounds,
        columns=["arm", *spec.covariate_names, spec.primary.name],
        first_exposure=spec.repeat_visitors,
    )
    seed = derive_seed(experiment_id, round_, "posterior")
    fitted = fit_posterior(rows, spec, rng=seed)
    storage.save_posterior(fitted, experiment_id, round_)
    version = posterior_version(fitted)
    summary = fitted.summary()
    coefficients = summary.coefficients.reset_index(names="parameter")
    hdi_low, hdi_high = [c for c in coefficients.columns if str(c).startswith("hdi_")]
    table = pd.DataFrame(
        {
            "experiment_id": experiment_id,
            "round": round_,
            "parameter": coefficients["parameter"].astype(str),
            "mean": coefficients["mean"],
            "sd": coefficients["sd"],
            "hdi_low": coefficients[hdi_low],
            "hdi_high": coefficients[hdi_high],
            "r_hat": coefficients["r_hat"] if "r_hat" in coefficients else np.nan,
            "ess_bulk": coefficients["ess_bulk"] if "ess_bulk" in coefficients else np.nan,
        }
    )
    fit_row = pd.DataFrame(
        [
            {
                "experiment_id": experiment_id,
                "round": round_,
                "family": spec.primary.family,
                "method": fitted.method,
                "n_rows": len(rows),
                "rounds_used": ",".join(map(str, rounds)),
                "seed": seed,
                "draws": fitted.n_draws,
                "netcdf_path": str(storage.posterior_path(experiment_id, round_)),
                "data_version": version,
                "fit_seconds": fitted.fit_seconds,
                "run_id": context.run.run_id,
            }
        ]
    )
    with storage.connect() as conn:
        storage.replace_partition(conn, "posterior_summaries", experiment_id, round_, table)
        storage.replace_partition(conn, "posterior_fits", experiment_id, round_, fit_row)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "rows": len(rows),
            "rounds_used": dg.MetadataValue.json(rounds),
            "method": fitted.method,
            "fit_seconds": round(fitted.fit_seconds, 2),
            "seed": str(seed),
            "divergences": summary.divergences,
            "max_r_hat": summary.max_r_hat if summary.max_r_hat is not None else float("nan"),
            "summary": dg.MetadataValue.md(coefficients.round(4).to_markdown(index=False)),
        },
    )
