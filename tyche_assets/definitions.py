"""Assembles Tyche's code location from its domains; defines nothing itself.

Dagster loads ``defs`` lazily (``@dg.definitions``): importing this module reads no file, so a
worker process or a test can import it anywhere; the specs folder is read when Dagster loads the
code location, and an invalid spec is logged there and left out, never fatal.
"""

from __future__ import annotations

import logging

import dagster as dg

from . import experiments, ingest, model, policy, quality, report
from .jobs import round_job
from .resources import default_resources

log = logging.getLogger("tyche")


def build_definitions(root: str | None = None) -> dg.Definitions:
    """The code location for the project folder ``root`` (default: $TYCHE_ROOT or the working directory)."""
    resources = default_resources(root)
    specs, spec_errors = resources["experiments"].load_all()
    for file, err in spec_errors.items():
        # Reported, not raised: one bad spec must not take down the other experiments.
        log.error("invalid experiment spec %s: %s", file, err)
    return dg.Definitions.merge(
        ingest.definitions(specs.values()),
        quality.definitions(),
        model.definitions(),
        policy.definitions(),
        report.definitions(),
        experiments.definitions(),
        dg.Definitions(jobs=[round_job], resources=resources),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
