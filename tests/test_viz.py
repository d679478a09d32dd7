"""Plots: they render, say what they show (rules, arms), keep arm colours, and leak no figures."""

import base64
import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.text import Text
from PIL import Image

from tyche_lib import (
    Condition,
    DiscoveredSegment,
    Plan,
    PlanSegment,
    PolicyTree,
    Rule,
    arm_colors,
    experiment_evolution_gif,
    figure_to_png_bytes,
    plot_cells,
    plot_effects_over_rounds,
    plot_policy_tree,
    png_markdown,
)

ARMS = ("control", "blue", "green", "red")
MOBILE = Condition("device", "in", levels=("mobile",))
OTHER = Condition("device", "not in", levels=("mobile",))
YOUNG = Condition("age", "<=", 40.0)
OLDER = Condition("age", ">", 40.0)
RULES = (Rule((MOBILE, YOUNG)), Rule((MOBILE, OLDER)), Rule((OTHER,)))


def _plan(rnd=2, shift=0.0):
    allocs = ((0.1, 0.2, 0.3, 0.4), (0.7 - shift, 0.1, 0.1, 0.1 + shift), (0.05, 0.05, 0.45, 0.45))
    segments = tuple(
        PlanSegment(f"s{i}", rule, dict(zip(ARMS, alloc))) for i, (rule, alloc) in enumerate(zip(RULES, allocs), 1)
    )
    return Plan("checkout", rnd, ARMS, {"control": 0.05, "explore": 0.05, "optimized": 0.9}, segments)


def _effects(rounds=4, infinite_first=True):
    rows = []
    for r in range(1, rounds + 1):
        for i, arm in enumerate(ARMS[1:], 1):
            est = 0.01 * i * r / rounds
            half = 0.05 / np.sqrt(r)
            lo, hi = (-np.inf, np.inf) if (infinite_first and r == 1) else (est - half, est + half)
            rows.append((r, arm, est, lo, hi))
    return pd.DataFrame(rows, columns=["round", "arm", "estimate", "lower", "upper"])


def _texts(fig):
    """All text on the figure, whitespace-normalised (rules may be wrapped over lines)."""
    return " ".join(" ".join(t.get_text().split()) for t in fig.findobj(Text))


def _png(fig):
    data = figure_to_png_bytes(fig)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.size[0] >= 300 and image.size[1] >= 200
    # A blank canvas of this size compresses to under 2 kB and has no ink; a chart has both.
    assert len(data) > 5_000
    ink = (np.asarray(image.convert("L")) < 200).mean()
    assert ink > 0.005
    return image


@pytest.fixture(autouse=True)
def no_figure_leaks():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def test_plot_cells_labels_cells_segment_rules_and_arms():
    plan = _plan()
    fig = plot_cells(plan)
    text = _texts(fig)
    for rule in RULES:
        assert str(rule) in text
    for arm in ARMS:
        assert arm in text
    assert "control 5%" in text and "optimized 90%" in text
    _png(fig)


def test_arm_colours_are_the_same_in_every_plot():
    colors = arm_colors(ARMS)
    assert len(set(colors.values())) == len(ARMS)
    legend = plot_cells(_plan()).legends[0]
    for handle, label in zip(legend.legend_handles, legend.get_texts()):
        assert np.allclose(handle.get_facecolor(), plt.matplotlib.colors.to_rgba(colors[label.get_text()]))
    effects = plot_effects_over_rounds(_effects(), arms=ARMS)
    for ax in effects.axes:
        arm = ax.get_title().split(" vs ")[0]
        assert ax.lines[0].get_color() == colors[arm]
    # Without the arm list, treatments in spec order still get the spec's colours.
    default = plot_effects_over_rounds(_effects())
    assert [ax.lines[0].get_color() for ax in default.axes] == [colors[a] for a in ARMS[1:]]


def test_plot_policy_tree_rebuilds_the_tree_from_a_plan():
    fig = plot_policy_tree(_plan())
    text = _texts(fig)
    # Shared prefix drawn once: one edge for "device in {mobile}", then the age split below it.
    assert text.count(str(MOBILE)) == 1
    for cond in (OTHER, YOUNG, OLDER):
        assert str(cond) in text
    assert "leading: red" in text and "leading: control" in text
    _png(fig)


def test_plot_policy_tree_takes_a_fitted_policy_tree():
    segments = tuple(
        DiscoveredSegment(f"s{i}", rule, share, n, lead, {"blue": 0.01, "green": -0.02, "red": 0.03})
        for i, (rule, share, n, lead) in enumerate(
            zip(RULES, (0.3, 0.2, 0.5), (300, 200, 500), ("red", "control", "green")), 1
        )
    )
    tree = PolicyTree(segments, ARMS, max_depth=2, min_segment_share=0.05, seed=0, n_visitors=1000)
    fig = plot_policy_tree(tree)
    text = _texts(fig)
    assert "s3 · 50% of visitors" in text and "leading: green" in text and "red +0.03" in text
    _png(fig)
    single = Plan(
        "checkout",
        1,
        ARMS,
        {"control": 0.05, "explore": 0.05, "optimized": 0.9},
        (PlanSegment("all", Rule(), {a: 0.25 for a in ARMS}),),
    )
    _png(plot_policy_tree(single))


def test_plot_effects_handles_infinite_bounds():
    fig = plot_effects_over_rounds(_effects(), metric="converted")
    assert len(fig.axes) == 3
    ymin, ymax = fig.axes[0].get_ylim()
    assert np.isfinite(ymin) and np.isfinite(ymax)
    assert "unbounded" in _texts(fig)
    assert "effect on converted" in _texts(fig)
    _png(fig)


def test_png_markdown_is_a_base64_png_image_and_closes_the_figure():
    fig = plt.figure()  # even a pyplot figure is released
    fig.add_subplot().plot([0, 1], [1, 0])
    md = png_markdown(fig, alt="effects")
    assert md.startswith("![effects](data:image/png;base64,") and md.endswith(")")
    payload = base64.b64decode(md[len("![effects](data:image/png;base64,") : -1])
    assert Image.open(io.BytesIO(payload)).format == "PNG"


def test_evolution_gif_has_one_frame_per_round(tmp_path):
    plans = [_plan(rnd=r, shift=0.1 * r) for r in range(1, 6)]
    path = experiment_evolution_gif(plans, tmp_path / "evolution.gif", effects=_effects(rounds=5))
    assert path.stat().st_size > 20_000
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == len(plans)
        assert gif.info["duration"] == 1000
        sizes = set()
        for i in range(gif.n_frames):
            gif.seek(i)
            sizes.add(gif.size)
        assert len(sizes) == 1


def test_bad_input_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match="'upper'"):
        plot_effects_over_rounds(_effects().drop(columns="upper"))
    with pytest.raises(ValueError, match="empty"):
        experiment_evolution_gif([], tmp_path / "x.gif")
    other = Plan.from_dict({**_plan().to_dict(), "experiment_id": "pricing"})
    with pytest.raises(ValueError, match="one experiment per GIF"):
        experiment_evolution_gif([_plan(), other], tmp_path / "x.gif")
    with pytest.raises(TypeError, match="Plan"):
        plot_cells({"segments": []})
