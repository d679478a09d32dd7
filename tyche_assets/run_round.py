"""Run one experiment × round from the shell, as the landing sensor would, and say what happened.

    python -m tyche_assets.run_round <experiment> <round> [--root PROJECT]

Materialises ``round_job`` for that partition in this process on the Dagster instance in
$DAGSTER_HOME (default ``<root>/dagster_home``, the one ``make dev`` shows), registering the
partition first. Prints each check's verdict and, when the round is refused, the reason; exits 0
when the round published its plan for the next round, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import dagster as dg

from .definitions import build_definitions
from .partitions import partition_key, register_partitions


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data is not None and data.user_failure_data.description:
            messages.append(f"{event.step_key}: {data.user_failure_data.description}")
        elif data.error is not None:
            messages.append(f"{event.step_key}: {data.error.message.strip()}")
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="the experiment id (its spec's `id`)")
    parser.add_argument("round", type=int, help="the round number, from 1")
    parser.add_argument("--root", default=os.environ.get("TYCHE_ROOT", os.getcwd()), help="the project folder")
    args = parser.parse_args(argv)
    if args.round < 1:
        parser.error(f"round = {args.round}: rounds are numbered from 1")

    root = Path(args.root).resolve()
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(root / "dagster_home")))
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists() and (root / "dagster.yaml").exists():
        shutil.copy(root / "dagster.yaml", home / "dagster.yaml")
    defs = build_definitions(str(root))
    with dg.DagsterInstance.get() as instance:
        register_partitions(instance, args.experiment, [args.round])
        result = defs.resolve_job_def("round_job").execute_in_process(
            partition_key=partition_key(args.experiment, args.round),
            instance=instance,
            raise_on_error=False,
            tags={"tyche/experiment": args.experiment},
        )
    for evaluation in result.get_asset_check_evaluations():
        verdict = "PASS" if evaluation.passed else "FAIL"
        message = evaluation.metadata.get("message")
        print(f"  check {evaluation.asset_check_key.name:<30} {verdict}  {message.value if message else ''}")
    plan = defs.resources["storage"].plan_path(args.experiment, args.round + 1)
    if result.success and plan.exists():
        print(f"round {args.round} of {args.experiment}: the plan for round {args.round + 1} is {plan}")
        return 0
    for message in _failure_messages(result) or ["the run did not publish a plan"]:
        print(message, file=sys.stderr)
    print(
        f"round {args.round} of {args.experiment}: no plan published; the plan in force stays in force", file=sys.stderr
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
