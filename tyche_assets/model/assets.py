"""posterior: the Bayesian heterogeneous-effect model, refitted on all usable rounds <= r."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from tyche_lib import ExperimentSpec, Posterior, derive_seed, fit_posterior
from tyche_lib.model import BinaryPosterior, ContinuousPosterior, HurdlePosterior

from ..ingest.assets import round_visitors
from ..lineage import array_version
from ..partitions import experiment_and_round, experiment_round_partitions, round_key
from ..resources import DUCKDB_POOL, ExperimentCatalog, TycheStorage
from ..storage import connect, load_visitors, passed_rounds, replace_partition

_RESULT_TYPES = {"binary": BinaryPosterior, "continuous": ContinuousPosterior, "hurdle": HurdlePosterior}


def posterior_version(posterior: Posterior) -> str:
    """Content hash of the draws (the NetCDF file itself carries no clock, but hash the values)."""
    post = posterior.idata.posterior
    return array_version(*(post[v].values for v in sorted(post.data_vars)))


# Visitor-count column of the stored profiles: not an identifier, so it never names a covariate.
PROFILE_VISITORS = "visitors (count)"


def _rounds_used(storage: TycheStorage, experiment_id: str, round_: int) -> list[int]:
    with connect(storage) as conn:
        row = conn.execute(
            "SELECT rounds_used FROM posterior_fits WHERE experiment_id = ? AND round = ?", [experiment_id, round_]
        ).fetchall()[:1]
    if not row:
        raise dg.Failure(f"no posterior stored for {experiment_id} round {round_}: materialise 'posterior' first")
    return [int(r) for r in row[0][0].split(",")]


def load_posterior(storage: TycheStorage, spec: ExperimentSpec, experiment_id: str, round_: int) -> Posterior:
    """The posterior the ``posterior`` asset stored for this partition, rebuilt without reading its rows.

    Its ``observed`` holds the covariates of the visitors it was fitted on, one row per visitor,
    grouped by covariate profile: all the policy tree and the allocation read of it (see
    ``from_model_data``).
    """
    _rounds_used(storage, experiment_id, round_)
    files = _posterior_files(storage, experiment_id, round_)
    profiles = pd.read_parquet(files["profiles"])
    visitors = profiles.pop(PROFILE_VISITORS).to_numpy()
    observed = profiles.take(np.repeat(np.arange(len(profiles)), visitors)).reset_index(drop=True)
    fitted = _from_files(files, spec, observed)
    if len(observed) != fitted.model_info["n_rows"]:
        raise dg.Failure(
            f"stored profiles of {experiment_id} round {round_} count {len(observed)} visitors, the posterior "
            f"{fitted.model_info['n_rows']}: materialise 'posterior' again"
        )
    return fitted


def load_posterior_with_rows(
    storage: TycheStorage, spec: ExperimentSpec, experiment_id: str, round_: int, columns: list[str]
) -> Posterior:
    """The stored posterior with ``columns`` of the rows it was fitted on, in arrival order, as ``observed``.

    The rows are read back from DuckDB (validated when stored) and checked against the draws.
    """
    rounds = _rounds_used(storage, experiment_id, round_)
    files = _posterior_files(storage, experiment_id, round_)
    with connect(storage) as conn:
        rows = load_visitors(conn, experiment_id, rounds, columns=columns)
    fitted = _from_files(files, spec, rows)
    if not fitted.fitted_on(rows):
        raise dg.Failure(
            f"the stored rows of {experiment_id} rounds {rounds} are not the rows its round {round_} posterior was "
            "fitted on (was a round ingested again since?): materialise 'posterior' again"
        )
    return fitted


def _posterior_files(storage: TycheStorage, experiment_id: str, round_: int) -> dict[str, Path]:
    key = round_key(round_)
    files = {
        "draws": storage.posterior_path(experiment_id, key),
        "model frame": storage.posterior_model_data_path(experiment_id, key),
        "profiles": storage.posterior_profiles_path(experiment_id, key),
    }
    missing = [name for name, path in files.items() if not path.exists()]
    if missing:
        raise dg.Failure(
            f"the posterior of {experiment_id} round {round_} has no stored {' or '.join(missing)} (stored by an "
            "older version of the posterior asset?): materialise 'posterior' again"
        )
    return files


def _from_files(files: dict[str, Path], spec: ExperimentSpec, observed: pd.DataFrame) -> Posterior:
    return _RESULT_TYPES[spec.primary.family].from_model_data(
        files["draws"], pd.read_parquet(files["model frame"]), spec, observed
    )


def _save(storage: TycheStorage, fitted: Posterior, experiment_id: str, round_: int) -> None:
    """Draws as NetCDF, with the frame they were fitted on and the covariate profiles of the rows.

    With those the consumers rebuild the posterior without reading the rows again. Both are small
    for a binary metric (counts per profile × arm); a row-level fit's frame is one row per visitor.
    """
    key = round_key(round_)
    fitted.to_netcdf(storage.posterior_path(experiment_id, key))
    fitted.model_data.to_parquet(storage.posterior_model_data_path(experiment_id, key))
    profiles = fitted.profiles()
    profiles.frame.assign(**{PROFILE_VISITORS: profiles.counts}).to_parquet(
        storage.posterior_profiles_path(experiment_id, key), index=False
    )


@dg.asset(
    partitions_def=experiment_round_partitions,
    deps=[round_visitors],
    pool=DUCKDB_POOL,
    code_version="posterior-2",
    group_name="model",
    kinds={"pymc", "duckdb"},
)
def posterior(context: dg.AssetExecutionContext, storage: TycheStorage, experiments: ExperimentCatalog):
    """Posterior of the primary metric with arm × covariate interactions, on every round <= r that passed its checks.

    Draws are stored as NetCDF (``storage/posteriors/<experiment>/rNNN.nc``) and summarised in
    ``posterior_summaries``. The sampler seed derives from (experiment, round).
    """
    experiment_id, round_ = experiment_and_round(context)
    spec = experiments.spec(experiment_id)
    with connect(storage) as conn:
        rounds = passed_rounds(conn, experiment_id, round_)
        if round_ not in rounds:
            raise dg.Failure(
                f"round {round_} of {experiment_id} has not passed its blocking checks: "
                "materialise round_visitors with its checks first"
            )
        rows = load_visitors(conn, experiment_id, rounds, columns=["arm", *spec.covariate_names, spec.primary.name])
    seed = derive_seed(experiment_id, round_, "posterior")
    fitted = fit_posterior(rows, spec, rng=seed)
    _save(storage, fitted, experiment_id, round_)
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
                "netcdf_path": str(storage.posterior_path(experiment_id, round_key(round_))),
                "data_version": version,
                "fit_seconds": fitted.fit_seconds,
                "run_id": context.run.run_id,
            }
        ]
    )
    with connect(storage) as conn:
        replace_partition(conn, "posterior_summaries", experiment_id, round_, table)
        replace_partition(conn, "posterior_fits", experiment_id, round_, fit_row)
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
