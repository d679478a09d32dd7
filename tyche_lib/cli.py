"""The ``tyche`` command line: ``tyche assign --plan plan.json --visitors visitors.csv``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .core._plans import Plan
from .core._spec import load_spec
from .policy._assign import Assigner

__all__ = ["main"]


def _assign(args: argparse.Namespace) -> int:
    plan = Plan.from_json(Path(args.plan).read_text())
    # Ids stay text: read as numbers, "007" would hash as "7".
    visitors = pd.read_csv(args.visitors, dtype={"visitor_id": str})
    excluded = []
    if args.exclude:
        excluded = [line.strip() for line in Path(args.exclude).read_text().splitlines() if line.strip()]
    salt, traffic_share = args.salt, args.traffic_share
    if args.spec:
        spec = load_spec(args.spec)
        if spec.id != plan.experiment_id:
            raise ValueError(
                f"--spec is experiment {spec.id!r} but --plan is for {plan.experiment_id!r}: pass matching files"
            )
        salt = spec.salt if salt is None else salt
        traffic_share = spec.traffic_share if traffic_share is None else traffic_share
    traffic_share = 1.0 if traffic_share is None else traffic_share
    assigner = Assigner(plan, salt, traffic_share=traffic_share, excluded=excluded)
    out = assigner.assign(visitors)
    # Every column a round row needs besides the outcomes: the rows can be landed as they are.
    out.insert(0, "experiment_id", plan.experiment_id)
    out.insert(1, "round", plan.round)
    if "assigned_at" not in out.columns:
        out.insert(3, "assigned_at", pd.Timestamp.now(tz="UTC").isoformat())
    if args.enrolled_only:
        out = out[out["cell"] != "excluded"]
    if args.out:
        out.to_csv(args.out, index=False)
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one subcommand per task."""
    parser = argparse.ArgumentParser(prog="tyche", description="Tyche: multi-round adaptive experiments.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    assign = commands.add_parser(
        "assign",
        help="assign visitors to cells and arms under a plan",
        description="Assign each visitor of a CSV (a visitor_id column and the covariates the plan's "
        "rules test) to a cell, segment and arm, with its assignment probability.",
    )
    assign.add_argument("--plan", required=True, help="plan JSON, as published by the pipeline")
    assign.add_argument("--visitors", required=True, help="CSV with visitor_id and covariate columns")
    assign.add_argument("--spec", default=None, help="experiment spec YAML: supplies the salt and traffic share")
    assign.add_argument("--salt", default=None, help="hashing salt (default: the spec's, else none)")
    assign.add_argument(
        "--traffic-share",
        type=float,
        default=None,
        help="share of visitors in the experiment (default: the spec's, else 1)",
    )
    assign.add_argument("--exclude", default=None, help="file of visitor ids never enrolled, one per line")
    assign.add_argument(
        "--enrolled-only", action="store_true", help="drop visitors outside the experiment from the output"
    )
    assign.add_argument("--out", default=None, help="output CSV (default: standard output)")
    assign.set_defaults(run=_assign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tyche`` command; returns the exit status.

    Bad input (a missing file, an invalid plan, a visitors file without the needed columns) prints
    one line naming the problem to standard error and returns 2.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError) as e:  # PlanError and pandas' parse errors are ValueErrors
        print(f"tyche {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
