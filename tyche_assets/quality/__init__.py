"""Quality: the blocking checks on a round's rows."""

import dagster as dg

from .checks import round_visitors_probabilities, round_visitors_quality, round_visitors_sample_ratio


def definitions() -> dg.Definitions:
    return dg.Definitions(
        asset_checks=[round_visitors_quality, round_visitors_sample_ratio, round_visitors_probabilities]
    )
