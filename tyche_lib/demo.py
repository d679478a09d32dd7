"""Library-level demo: segment_flip for four rounds through tyche_lib alone (no Dagster).

    python -m tyche_lib.demo [--rounds 4] [--visitors 20000]

Each round: the plan in force routes simulated visitors → the posterior is refitted on all rounds
so far → the policy tree finds segments → Thompson allocation per segment → the next plan.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pandas as pd

from . import simulate
from .core._plans import build_plan, initial_plan
from .core._seeds import derive_seed
from .model._engine import fit_posterior
from .policy._allocation import thompson_allocation
from .policy._tree import fit_policy_tree


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--visitors", type=int, default=20_000)
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.getLogger("pymc").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*BLAS.*")

    scenario = simulate.segment_flip()
    spec = scenario.spec(id="segment_flip_library_demo")
    plan = initial_plan(spec)
    history = []
    for round_ in range(1, args.rounds + 1):
        rows = simulate.simulate_round(
            scenario, plan, args.visitors, round_, rng=derive_seed(spec.id, round_, "traffic")
        )
        history.append(rows)
        observed = pd.concat(history, ignore_index=True)
        start = time.perf_counter()
        posterior = fit_posterior(
            observed, spec, draws=args.draws, tune=args.draws, rng=derive_seed(spec.id, round_, "posterior")
        )
        fit_seconds = time.perf_counter() - start
        tree = fit_policy_tree(
            posterior,
            max_depth=spec.max_depth,
            min_segment_share=spec.min_segment_share,
            rng=derive_seed(spec.id, round_, "policy_tree"),
            split_confidence=spec.split_confidence,
        )
        allocation = thompson_allocation(posterior, tree.segments, epsilon=spec.epsilon)
        plan = build_plan(spec, round_ + 1, tree, allocation)
        best = simulate.true_best_arm(scenario, observed)
        members = tree.segment_of(observed)
        print(
            f"\n=== round {round_}: {len(observed):,} visitors so far, posterior fit {fit_seconds:.1f} s "
            f"({posterior.method}) ==="
        )
        for seg in tree.segments:
            truth = pd.Series(best[members == seg.id]).value_counts(normalize=True)
            alloc = "  ".join(f"{a} {w:5.1%}" for a, w in allocation[seg.id].items())
            print(f"  {seg.id:<4} {str(seg.rule):<50} share {seg.share:5.1%}")
            print(f"       allocation: {alloc}")
            print(f"       true best arm of members: {', '.join(f'{a} {s:.0%}' for a, s in truth.items())}")


if __name__ == "__main__":
    main()
