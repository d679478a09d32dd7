"""Plots of plans, policy trees and effects, as matplotlib Figures and Dagster-ready markdown.

Figures are built on matplotlib's object API with an Agg canvas attached, never through pyplot:
no global backend switch, no figure registered with pyplot, nothing to leak between calls.
"""

from __future__ import annotations

import base64
import io
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..core._plans import CELLS, Plan

__all__ = [
    "arm_colors",
    "plot_cells",
    "plot_policy_tree",
    "plot_effects_over_rounds",
    "experiment_evolution_gif",
    "figure_to_png_bytes",
    "png_markdown",
]

CONTROL_COLOR = "#7f7f7f"
# tab10 without its grey, which marks the control arm.
TREATMENT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)
CELL_COLORS = {"control": "#bdbdbd", "explore": "#9ecae1", "optimized": "#fdae6b"}
EFFECT_COLUMNS = ("round", "arm", "estimate", "lower", "upper")
_RULE_WIDTH = 70  # characters per line of a wrapped rule


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    """Colour of each arm: grey for the control (the first arm), tab10 for the treatments in order.

    Every Tyche plot takes its colours from here, so an arm looks the same in all of them.

    Examples
    --------
    >>> arm_colors(["control", "green", "blue"])
    {'control': '#7f7f7f', 'green': '#1f77b4', 'blue': '#ff7f0e'}
    """
    arms = list(arms)
    return {
        arm: CONTROL_COLOR if i == 0 else TREATMENT_COLORS[(i - 1) % len(TREATMENT_COLORS)]
        for i, arm in enumerate(arms)
    }


def _new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _require_plan(plan: Any, name: str = "plan") -> Plan:
    if not isinstance(plan, Plan):
        raise TypeError(f"{name} = {type(plan).__name__}: pass a tyche_lib.Plan")
    return plan


def _pct(w: float) -> str:
    return f"{100 * w:.0f}%" if w >= 0.01 or w == 0 else f"{100 * w:.1f}%"


def _segment_label(segment: Any) -> str:
    text = f"{segment.id}: {segment.rule}"
    return "\n".join(textwrap.wrap(text, _RULE_WIDTH, break_long_words=False)) or segment.id


def _draw_cells(ax, plan: Plan) -> None:
    left = 0.0
    for cell in CELLS:
        w = plan.weights[cell]
        ax.barh(0, w, left=left, color=CELL_COLORS[cell], edgecolor="white")
        if w >= 0.15:  # narrower cells are named in the title only: their label would not fit
            ax.text(left + w / 2, 0, f"{cell} {_pct(w)}", ha="center", va="center", fontsize=8)
        left += w
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, 0.5)
    ax.set_yticks([])
    ax.set_xticks([])
    shares = " · ".join(f"{cell} {_pct(plan.weights[cell])}" for cell in CELLS)
    ax.set_title(f"cells (share of traffic): {shares}", fontsize=9, loc="left")
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)


def _draw_segments(ax, plan: Plan, colors: Mapping[str, str], slots: int | None = None) -> None:
    """One stacked bar per segment (top to bottom), its rule written above the bar."""
    slots = slots or len(plan.segments)
    for i, seg in enumerate(plan.segments):
        y = -i
        left = 0.0
        for arm in plan.arms:
            w = seg.allocation[arm]
            ax.barh(y, w, left=left, height=0.5, color=colors[arm], edgecolor="white")
            if w >= 0.06:
                ax.text(left + w / 2, y, _pct(w), ha="center", va="center", fontsize=7, color="white")
            left += w
        ax.text(0, y + 0.3, _segment_label(seg), ha="left", va="bottom", fontsize=7.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(-slots + 0.5, 1.0)
    ax.set_yticks([])
    ax.xaxis.set_major_formatter(lambda x, _: f"{100 * x:.0f}%")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_title("optimized cell: allocation per segment", fontsize=9, loc="left")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


def _arm_legend(fig: Figure, arms: Sequence[str], colors: Mapping[str, str], **kwargs: Any) -> None:
    handles = [Patch(color=colors[a], label=a) for a in arms]
    fig.legend(handles=handles, ncols=min(len(arms), 6), fontsize=8, frameon=False, **kwargs)


def plot_cells(plan: Plan) -> Figure:
    """The plan's three cells and each segment's allocation within the optimized cell.

    Parameters
    ----------
    plan : Plan

    Returns
    -------
    matplotlib.figure.Figure
        Top: one bar split into the control, explore and optimized cells by weight. Below: one
        bar per segment, labelled with its id and rule, split by arm (legend below).

    See Also
    --------
    png_markdown : render for Dagster metadata.

    Examples
    --------
    >>> from tyche_lib import spec_from_dict, initial_plan
    >>> spec = spec_from_dict({"id": "demo", "arms": ["control", "green"], "covariates": {},
    ...                        "metrics": {"primary": {"name": "y", "family": "binary"}}})
    >>> fig = plot_cells(initial_plan(spec))
    >>> png_markdown(fig, alt="cells").startswith("![cells](data:image/png;base64,")
    True
    """
    plan = _require_plan(plan)
    colors = arm_colors(plan.arms)
    n = len(plan.segments)
    fig = _new_figure((8, 1.6 + 0.75 * n), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[1.0, 0.9 * n + 0.4])
    _draw_cells(fig.add_subplot(grid[0]), plan)
    _draw_segments(fig.add_subplot(grid[1]), plan, colors)
    _arm_legend(fig, plan.arms, colors, loc="outside lower center")
    fig.suptitle(f"{plan.experiment_id} · plan for round {plan.round}", fontsize=10)
    return fig


def _segments_of(plan_or_tree: Any) -> tuple[Sequence[Any], Sequence[str]]:
    segments = getattr(plan_or_tree, "segments", None)
    arms = getattr(plan_or_tree, "arms", None)
    if segments is None or arms is None or not all(hasattr(s, "id") and hasattr(s, "rule") for s in segments):
        raise TypeError(
            f"plan_or_tree = {type(plan_or_tree).__name__}: pass a Plan or a PolicyTree "
            "(anything with .arms and .segments having .id and .rule)"
        )
    if not segments:
        raise ValueError("plan_or_tree has no segments: nothing to draw")
    return segments, arms


def _leaf_text(segment: Any) -> tuple[str, str]:
    """The box text of a leaf and its leading arm."""
    lines = [str(segment.id)]
    share = getattr(segment, "share", None)
    if share is not None:
        lines[0] += f" · {_pct(share)} of visitors"
    allocation = getattr(segment, "allocation", None)
    if allocation:
        leading = max(allocation, key=allocation.get)
        lines.append(f"leading: {leading}")
        lines += [f"{arm} {_pct(w)}" for arm, w in allocation.items()]
    else:
        leading = segment.leading_arm
        lines.append(f"leading: {leading}")
        lines += [f"{arm} {v:+.3g}" for arm, v in getattr(segment, "mean_contrasts", {}).items()]
    return "\n".join(lines), leading


class _Node:
    def __init__(self, condition: Any = None):
        self.condition = condition  # the edge from the parent
        self.children: list[_Node] = []
        self.segment: Any = None
        self.x = 0.0
        self.depth = 0


def _build_trie(segments: Sequence[Any]) -> _Node:
    """A tree whose root-to-leaf conditions are each segment's rule, sharing common prefixes."""
    root = _Node()
    for seg in segments:
        node = root
        for cond in seg.rule.conditions:
            child = next((c for c in node.children if c.condition == cond and c.segment is None), None)
            if child is None:
                child = _Node(cond)
                child.depth = node.depth + 1
                node.children.append(child)
            node = child
        if node.segment is not None or node.children:
            # A rule that is a prefix of another rule: give the segment its own leaf under the node.
            leaf = _Node(None)
            leaf.depth = node.depth + 1
            node.children.append(leaf)
            node = leaf
        node.segment = seg
    return root


def _layout(node: _Node, next_x: list[float]) -> None:
    if not node.children:
        node.x = next_x[0]
        next_x[0] += 1.0
        return
    for child in node.children:
        _layout(child, next_x)
    node.x = float(np.mean([c.x for c in node.children]))


def _walk(node: _Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def plot_policy_tree(plan_or_tree: Any) -> Figure:
    """The policy tree: each leaf a box with its segment, leading arm and allocation.

    The tree is rebuilt from the segments' rules: a rule is the conjunction of the conditions on
    its leaf's path, so leaves whose rules start alike share those branches. Each edge is labelled
    with its condition; reading from the root to a leaf gives that segment's rule.

    Parameters
    ----------
    plan_or_tree : Plan or PolicyTree
        A plan's leaves show their allocation; a policy tree's show the share of visitors and the
        posterior-mean contrasts.

    Returns
    -------
    matplotlib.figure.Figure
        Leaf boxes are tinted with the leading arm's colour (see :func:`arm_colors`).
    """
    segments, arms = _segments_of(plan_or_tree)
    colors = arm_colors(arms)
    root = _build_trie(segments)
    _layout(root, [0.0])
    nodes = list(_walk(root))
    n_leaves = sum(1 for n in nodes if not n.children)
    depth = max(n.depth for n in nodes)
    fig = _new_figure((max(4.0, 2.4 * n_leaves), 1.0 + 1.5 * (depth + 1)))
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.9))
    ax.set_axis_off()
    ax.set_xlim(-0.6, n_leaves - 0.4)
    ax.set_ylim(-depth - 0.6, 0.35)
    for node in nodes:
        for child in node.children:
            ax.plot([node.x, child.x], [-node.depth, -child.depth], color="#555555", lw=1, zorder=1)
            if child.condition is not None:
                ax.text(
                    (node.x + child.x) / 2,
                    -(node.depth + child.depth) / 2,
                    str(child.condition),
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    zorder=3,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none"),
                )
        if node.segment is not None:
            text, leading = _leaf_text(node.segment)
            edge = colors.get(leading, CONTROL_COLOR)
            # An opaque tint (not alpha) so the edges behind the box stay hidden.
            face: Any = 0.25 * np.array(to_rgb(edge)) + 0.75
        else:
            features = sorted({c.condition.feature for c in node.children if c.condition is not None})
            lines = ["all visitors"] if node is root else []
            if features:
                lines.append("split on " + ", ".join(features))
            text = "\n".join(lines)
            face, edge = "white", "#555555"
        ax.text(
            node.x,
            -node.depth,
            text,
            ha="center",
            va="center",
            fontsize=8,
            zorder=4,
            bbox=dict(boxstyle="round,pad=0.4", fc=face, ec=edge),
        )
    title = "policy tree"
    if isinstance(plan_or_tree, Plan):
        title += f" · {plan_or_tree.experiment_id} round {plan_or_tree.round}"
    ax.set_title(title, fontsize=10)
    return fig


def _effects_frame(history: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(history, pd.DataFrame):
        raise TypeError(f"history = {type(history).__name__}: pass a DataFrame with columns {list(EFFECT_COLUMNS)}")
    missing = [c for c in EFFECT_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(
            f"history lacks column '{missing[0]}': it needs {list(EFFECT_COLUMNS)}, found {list(history.columns)}"
        )
    if history.empty:
        raise ValueError("history is empty: no effect estimates to plot")
    frame = history[list(EFFECT_COLUMNS)].copy()
    for col in ("estimate", "lower", "upper"):
        frame[col] = pd.to_numeric(frame[col], errors="raise").astype(float)
    return frame.sort_values(["arm", "round"])


def _effect_limits(frame: pd.DataFrame) -> tuple[float, float]:
    values = frame[["estimate", "lower", "upper"]].to_numpy().ravel()
    finite = values[np.isfinite(values)]
    lo, hi = (min(finite.min(), 0.0), max(finite.max(), 0.0)) if finite.size else (-1.0, 1.0)
    pad = 0.1 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _draw_effects(ax, frame: pd.DataFrame, arms: Sequence[str], colors, ylim, rounds) -> bool:
    """Estimate lines and confidence-sequence bands; returns whether a bound was infinite."""
    unbounded = False
    for arm in arms:
        part = frame[frame["arm"] == arm]
        if part.empty:
            continue
        lower, upper = part["lower"].to_numpy(), part["upper"].to_numpy()
        unbounded |= bool(np.isinf(lower).any() or np.isinf(upper).any())
        # An infinite bound is drawn to the edge of the panel: the band is open on that side.
        ax.fill_between(part["round"], np.clip(lower, *ylim), np.clip(upper, *ylim), color=colors[arm], alpha=0.2, lw=0)
        ax.plot(part["round"], part["estimate"], marker="o", ms=3, color=colors[arm], label=arm)
    ax.axhline(0.0, color="black", lw=0.8, ls="--")
    ax.set_ylim(*ylim)
    ax.set_xlim(min(rounds) - 0.3, max(rounds) + 0.3)
    ax.set_xticks(list(rounds))
    ax.tick_params(labelsize=7)
    return unbounded


def plot_effects_over_rounds(
    history: pd.DataFrame, *, arms: Sequence[str] | None = None, metric: str | None = None
) -> Figure:
    """Each treatment's effect estimate and confidence-sequence band, round by round.

    Parameters
    ----------
    history : DataFrame
        Columns ``round``, ``arm`` (a treatment), ``estimate``, ``lower``, ``upper``; a bound may
        be infinite (a confidence sequence with too little data), drawn open to the panel's edge.
    arms : sequence of str, optional
        All arms, control first, to colour treatments as the other plots do. Default: a control
        followed by the treatments in order of first appearance.
    metric : str, optional
        Names the y axis.

    Returns
    -------
    matplotlib.figure.Figure
        One panel per treatment on a shared y axis, with a dashed line at zero.

    Raises
    ------
    ValueError
        When a column is missing or the history is empty.
    """
    frame = _effects_frame(history)
    treatments = list(dict.fromkeys(history["arm"]))
    colors = arm_colors(arms if arms is not None else ["control", *treatments])
    unknown = [a for a in treatments if a not in colors]
    if unknown:
        raise ValueError(f"history arm {unknown[0]!r} is not one of arms {list(arms or [])}")
    ylim = _effect_limits(frame)
    rounds = sorted(frame["round"].unique())
    fig = _new_figure((3.2 * len(treatments) + 0.6, 3.2), layout="constrained")
    axes = fig.subplots(1, len(treatments), sharey=True, squeeze=False)[0]
    unbounded = False
    for ax, arm in zip(axes, treatments):
        unbounded |= _draw_effects(ax, frame, [arm], colors, ylim, rounds)
        ax.set_title(f"{arm} vs control", fontsize=9)
        ax.set_xlabel("round", fontsize=8)
    axes[0].set_ylabel(f"effect on {metric}" if metric else "effect", fontsize=8)
    note = " (bands reaching an edge are unbounded)" if unbounded else ""
    fig.suptitle(f"effect estimates with confidence sequences{note}", fontsize=10)
    return fig


def experiment_evolution_gif(
    history: Sequence[Plan],
    path: str | Path,
    *,
    effects: pd.DataFrame | None = None,
    frame_seconds: float = 1.0,
    dpi: int = 80,
) -> Path:
    """An animated GIF of an experiment round by round: cells, segments and allocations.

    Parameters
    ----------
    history : sequence of Plan
        The plans of one experiment, one per round, in order.
    path : str or Path
        Where to write the GIF.
    effects : DataFrame, optional
        Effect history as for :func:`plot_effects_over_rounds`; frame ``r`` shows rounds ≤ ``r``.
    frame_seconds : float
        How long each frame shows.
    dpi : int

    Returns
    -------
    Path
        ``path``; the GIF has one frame per plan and loops.

    Raises
    ------
    ValueError
        When ``history`` is empty, its plans belong to different experiments or arms, or
        ``frame_seconds`` is not positive.
    """
    plans = [_require_plan(p, f"history[{i}]") for i, p in enumerate(history)]
    if not plans:
        raise ValueError("history is empty: pass the plans of at least one round")
    for i, p in enumerate(plans):
        if (p.experiment_id, tuple(p.arms)) != (plans[0].experiment_id, tuple(plans[0].arms)):
            raise ValueError(
                f"history[{i}] is experiment {p.experiment_id!r} with arms {list(p.arms)}; history[0] is "
                f"{plans[0].experiment_id!r} with {list(plans[0].arms)}: one experiment per GIF"
            )
    if not frame_seconds > 0:
        raise ValueError(f"frame_seconds = {frame_seconds!r}: must be > 0")
    from PIL import Image  # Pillow ships with matplotlib

    arms = plans[0].arms
    colors = arm_colors(arms)
    slots = max(len(p.segments) for p in plans)
    frame = _effects_frame(effects) if effects is not None else None
    ylim = _effect_limits(frame) if frame is not None else None
    rounds = [p.round for p in plans]
    height = 1.6 + 0.75 * slots + (2.6 if frame is not None else 0.0)
    images = []
    for plan in plans:
        # Fixed axes rectangles (no automatic layout): every frame has the same geometry.
        fig = _new_figure((8, height), dpi=dpi)
        inch = 1.0 / height
        top = 1 - 0.45 * inch
        cells_ax = fig.add_axes((0.04, top - 0.7 * inch, 0.92, 0.55 * inch))
        _draw_cells(cells_ax, plan)
        seg_h = 0.75 * slots * inch
        seg_ax = fig.add_axes((0.04, top - 1.1 * inch - seg_h, 0.92, seg_h))
        _draw_segments(seg_ax, plan, colors, slots)
        if frame is not None:
            eff_ax = fig.add_axes((0.08, 0.55 * inch, 0.88, 1.7 * inch))
            upto = frame[frame["round"] <= plan.round]
            _draw_effects(eff_ax, upto, [a for a in arms if a in set(frame["arm"])], colors, ylim, rounds)
            eff_ax.set_ylabel("effect", fontsize=8)
            eff_ax.set_title("effects vs control", fontsize=9, loc="left")
        _arm_legend(fig, arms, colors, loc="lower center", bbox_to_anchor=(0.5, 0.0))
        fig.suptitle(f"{plan.experiment_id} · round {plan.round}", fontsize=11, y=1 - 0.1 * inch)
        canvas = fig.canvas
        assert isinstance(canvas, FigureCanvasAgg)  # _new_figure attaches an Agg canvas
        canvas.draw()
        images.append(Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB"))
    path = Path(path)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 * frame_seconds)), loop=0)
    return path


def _close(fig: Figure) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)  # a figure made through pyplot stays registered until closed


def figure_to_png_bytes(fig: Figure, *, dpi: int = 100, close: bool = True) -> bytes:
    """Render a figure to PNG bytes, then (by default) close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        if close:
            _close(fig)
    return buffer.getvalue()


def png_markdown(fig: Figure, *, alt: str = "plot", dpi: int = 100) -> str:
    """``![alt](data:image/png;base64,…)`` for a figure, e.g. ``MetadataValue.md`` in Dagster; closes it."""
    encoded = base64.b64encode(figure_to_png_bytes(fig, dpi=dpi)).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})"
