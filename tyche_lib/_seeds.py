"""Seeds for every random step, derived from (experiment, round, purpose)."""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed"]


def derive_seed(experiment_id: str, round: int, purpose: str) -> int:
    """A 63-bit seed that depends only on the experiment, the round and the step's purpose.

    Re-running a round (a backfill) therefore draws the same random numbers, and two steps of
    one round (``"posterior"``, ``"policy_tree"``) never share a stream.

    Examples
    --------
    >>> derive_seed("checkout", 3, "posterior") == derive_seed("checkout", 3, "posterior")
    True
    >>> derive_seed("checkout", 3, "posterior") != derive_seed("checkout", 4, "posterior")
    True
    """
    key = f"{experiment_id}\x1f{int(round)}\x1f{purpose}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1
