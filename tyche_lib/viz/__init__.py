"""Plots of plans, trees and effects, and the animated evolution of an experiment (matplotlib)."""

from ._plots import (
    arm_colors,
    experiment_evolution_gif,
    figure_to_png_bytes,
    plot_cells,
    plot_effects_over_rounds,
    plot_policy_tree,
    png_markdown,
)

__all__ = [
    "arm_colors",
    "experiment_evolution_gif",
    "figure_to_png_bytes",
    "plot_cells",
    "plot_effects_over_rounds",
    "plot_policy_tree",
    "png_markdown",
]
