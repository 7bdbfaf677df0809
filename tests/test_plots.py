"""Figure invariants: trace counts, colours keyed by minimum, highlights, NaN handling."""

import functools
import re

import numpy as np
import pytest

from lossbarcode import minima_barcode, plots
from lossbarcode.topology import Barcode, death_pair

# The design's counter-example: L(a)=0, L(c)=1, L(b)=2; barriers c-a 5, c-b 3, b-a 3.5.
LOSSES = np.array([0.0, 2.0, 1.0])  # a = 0, b = 1, c = 2
BARRIERS = np.array([[np.inf, 3.5, 5.0], [3.5, np.inf, 3.0], [5.0, 3.0, np.inf]])
PAIRS = np.array([[0, 1], [0, 2], [1, 2]])


@pytest.fixture
def barcode() -> Barcode:
    return minima_barcode(LOSSES, BARRIERS)


def profiles():
    t = np.linspace(0, 1, 11)
    out = []
    for i, j in PAIRS:
        out.append((t, np.interp(t, [0, 0.5, 1], [LOSSES[i], BARRIERS[i, j], LOSSES[j]])))
    return out


def test_minimum_colors_are_keyed_by_index_not_by_bar(barcode):
    assert barcode.minima.tolist() == [0, 2, 1]
    colors = plots.minimum_colors(barcode.minima)
    assert colors == [plots.minimum_color(0), plots.minimum_color(2), plots.minimum_color(1)]
    assert plots.minimum_color(3) == plots.minimum_color(3 + len(plots.PALETTE))
    fig = plots.barcode_figure(barcode, colors=colors)
    assert list(fig.data[0].marker.color) == colors
    diagram = plots.diagram_figure(barcode, colors=colors)
    assert list(diagram.data[-1].marker.color) == colors


def test_barcode_figure_keeps_its_defaults_and_marks_essential_bars(barcode):
    fig = plots.barcode_figure(barcode)
    assert [t.name for t in fig.data] == ["bars", "essential"]
    assert list(fig.data[0].marker.color) == plots.bar_colors(3)
    assert np.asarray(fig.data[0].customdata).tolist() == [[0, 0], [2, 1], [1, 2]]
    assert list(fig.data[1].text) == ["∞"]
    # the essential bar reaches the right edge of the axis
    right = fig.layout.xaxis.range[1]
    assert fig.data[0].base[0] + fig.data[0].x[0] == pytest.approx(right)
    with pytest.raises(ValueError, match="one entry per bar"):
        plots.barcode_figure(barcode, colors=["red"])


def test_barcode_highlight_fades_the_other_bars(barcode):
    fig = plots.barcode_figure(barcode, highlight=2)
    opacity = np.array(fig.data[0].marker.opacity)
    assert opacity[1] == 1 and np.all(opacity[[0, 2]] < 0.5)
    assert list(fig.data[0].marker.line.width) == [0, 2.5, 0]
    diagram = plots.diagram_figure(barcode, highlight=2)
    assert list(diagram.data[-1].marker.size) == [9, 15, 9]


def test_zero_length_bars_get_a_visible_marker():
    bars = minima_barcode(np.array([0.0, 1.0, 1.0]),
                          np.array([[np.inf, 1.0, 1.0], [1.0, np.inf, 1.0],
                                    [1.0, 1.0, np.inf]]))
    fig = plots.barcode_figure(bars)
    short = [t for t in fig.data if t.name == "short bars"]
    assert len(short) == 1 and sorted(np.asarray(short[0].customdata)[:, 0].tolist()) == [1, 2]


def test_death_pair_and_path_colors(barcode):
    # union-find: b (1) dies at 3 on path 1-2 (index 2), c (2) dies at 3.5 on path 0-1 (index 0)
    assert death_pair(barcode, PAIRS, 1) == 2
    assert death_pair(barcode, PAIRS, 2) == 0
    assert death_pair(barcode, PAIRS, 0) is None  # essential
    assert death_pair(barcode, PAIRS[:1], 1) is None  # its path is not in the list
    colors = plots.path_colors(barcode, PAIRS)
    assert colors == [plots.minimum_color(2), plots.NEUTRAL, plots.minimum_color(1)]


def test_profiles_figure_hover_names_pair_and_barrier_and_highlights_one(barcode):
    fig = plots.profiles_figure(profiles(), PAIRS, BARRIERS[PAIRS[:, 0], PAIRS[:, 1]],
                                colors=plots.path_colors(barcode, PAIRS), highlight=2)
    lines, tops = fig.data[:3], fig.data[3]
    assert [t.name for t in lines] == ["0–1", "0–2", "1–2"] and tops.name == "barriers"
    assert lines[2].customdata[0].tolist() == [1, 2, 3.0]
    assert "barrier" in lines[0].hovertemplate and "path" in lines[0].hovertemplate
    assert lines[2].line.width > lines[0].line.width
    assert lines[2].opacity > lines[0].opacity
    assert np.allclose(tops.y, [3.5, 5.0, 3.0])
    with pytest.raises(ValueError):
        plots.profiles_figure(profiles(), PAIRS[:2])
    with pytest.raises(ValueError):
        plots.profiles_figure(profiles(), PAIRS, highlight=3)


def test_profiles_figure_handles_nan_losses():
    t = np.linspace(0, 1, 5)
    fig = plots.profiles_figure([(t, np.array([0, np.nan, 2, 1, 0.5])), (t, np.full(5, np.nan))],
                                np.array([[0, 1], [0, 2]]))
    assert len(fig.data) == 3
    assert np.isnan(fig.data[0].y[1])
    assert list(fig.data[2].y) == [2.0]  # the all-NaN path has no barrier marker


SUMMARY = [
    {"arch": "fcn", "width": w, "depth": d, "n_params": 10 * w * d, "runs": 2,
     "to_score_mean": 1.0 / (w * d), "to_score_std": 0.1 / w, "to_score_seeds": [0.9 / (w * d),
                                                                                  1.1 / (w * d)],
     "seeds": [0, 1], "test_error_mean": 0.1}
    for d in (1, 2) for w in (4, 8, 16)
]


def test_scaling_figure_groups_by_the_other_axis():
    fig = plots.scaling_figure(SUMMARY, x="width", score_variant="l2")
    assert len(fig.data) == 4  # (mean, seeds) x 2 depths
    means = fig.data[0::2]
    assert [t.name for t in means] == ["depth 1", "depth 2"]
    assert list(means[0].x) == [4, 8, 16] and np.allclose(means[0].error_y.array,
                                                          [0.025, 0.0125, 0.00625])
    assert len(fig.data[1].x) == 6  # every seed of depth 1
    assert fig.layout.yaxis.title.text == "TO-score (l2)"
    by_depth = plots.scaling_figure(SUMMARY, x="depth", log_x=True, log_y=True)
    assert len(by_depth.data) == 6 and by_depth.layout.xaxis.type == "log"
    assert by_depth.layout.yaxis.type == "log"
    with pytest.raises(ValueError):
        plots.scaling_figure(SUMMARY, x="k")


def test_scaling_figure_drops_nonpositive_scores_on_log_axes():
    rows = [dict(SUMMARY[0], to_score_mean=0.0, to_score_seeds=[0.0, 0.0]), SUMMARY[1]]
    fig = plots.scaling_figure(rows, log_y=True)
    assert list(fig.data[0].x) == [8] and len(fig.data[1].x) == 2
    fig = plots.scaling_figure(rows)
    assert list(fig.data[0].x) == [4, 8]


def test_barcodes_overlay_figure_one_trace_per_scale(barcode):
    other = minima_barcode(LOSSES / 2, BARRIERS / 2)
    fig = plots.barcodes_overlay_figure({"width 4": barcode, "width 8": other})
    assert [t.name for t in fig.data] == ["width 4", "width 8", "essential"]
    assert list(fig.data[1].y) == [4, 5, 6]  # offset below the first block
    assert len(fig.data[2].x) == 2  # one ∞ per barcode
    assert list(fig.layout.yaxis.ticktext) == ["width 4", "width 8"]
    assert fig.data[0].marker.color != fig.data[1].marker.color


def test_projection_figure_2d_3d_and_nan_values():
    rng = np.random.default_rng(0)
    minima = rng.normal(size=(4, 2))
    paths = [np.linspace(minima[0], minima[1], 5), np.linspace(minima[2], minima[3], 5)]
    fig = plots.projection_figure(minima, None, paths, np.array([[0, 1], [2, 3]]))
    assert len(fig.data) == 3 and fig.data[2].name == "minima"
    assert list(fig.data[2].marker.color) == plots.minimum_colors(range(4))
    values = np.array([0.1, np.nan, 0.3, np.inf])
    fig = plots.projection_figure(minima, values, paths, np.array([[0, 1], [2, 3]]),
                                  color_label="segment length", highlight=2)
    assert [t.name for t in fig.data[2:]] == ["minima", "no value"]
    assert list(fig.data[2].marker.color) == [0.1, 0.3]
    assert list(fig.data[3].customdata) == [1, 3]
    assert list(fig.data[2].marker.size) == [12, 20]
    fig3 = plots.projection_figure(rng.normal(size=(4, 3)), values, [rng.normal(size=(5, 3))],
                                   np.array([[0, 1]]))
    assert fig3.data[0].type == "scatter3d" and len(fig3.data) == 3
    with pytest.raises(ValueError):
        plots.projection_figure(rng.normal(size=(4, 4)))


def test_generalization_figure_drops_nonfinite_and_states_the_tests_off_the_data():
    from lossbarcode.stats import spearman_test, stratified_spearman

    groups = {"constant lr": (np.array([np.inf, 0.1, 0.2, 0.3]), np.array([0.1, 0.2, 0.3, 0.4])),
              "annealed lr": (np.array([0.0, np.nan]), np.array([0.5, 0.6]))}
    pooled = spearman_test(np.concatenate([g[0] for g in groups.values()]),
                           np.concatenate([g[1] for g in groups.values()]))
    within = stratified_spearman(groups).combined
    fig = plots.generalization_figure(groups, {"pooled": pooled, "within runs": within})
    assert [t.name for t in fig.data] == ["constant lr", "annealed lr"]
    assert list(fig.data[0].x) == [0.1, 0.2, 0.3] and list(fig.data[0].customdata) == [1, 2, 3]
    assert len(fig.data[1].x) == 1
    title = fig.layout.title.text
    assert f"ρ = {pooled.rho:.3f}" in title and f"p = {pooled.p_text()} (exact)" in title
    assert f"n = {pooled.n}" in title and "within runs" in title
    assert "2 essential/diverged" in title
    assert not fig.layout.annotations  # nothing drawn over the points
    assert fig.data[0].marker.symbol != fig.data[1].marker.symbol
    fig = plots.generalization_figure(groups, {"pooled": spearman_test([0.1, 0.2], [1, 2])})
    assert "not enough" in fig.layout.title.text
    ties = spearman_test(np.arange(30.0), np.arange(30.0))
    assert "p ≤ " in plots.generalization_figure(groups, {"pooled": ties}).layout.title.text


def test_slice_figure_marks_the_three_trained_minima():
    from lossbarcode import grid_barcode

    x = y = np.linspace(-1, 1, 21)
    loss = (x[:, None] ** 2 - 0.5) ** 2 + y[None, :] ** 2
    bars = grid_barcode(loss)
    points = np.array([[-0.7, 0.0], [0.7, 0.0], [0.0, 0.5]])
    fig = plots.slice_figure(x, y, loss, bars, points, [3, 5, 6])
    assert fig.data[-1].name == "trained minima"
    assert list(fig.data[-1].marker.color) == plots.minimum_colors([3, 5, 6])
    surface = plots.slice_figure(x, y, loss, bars, points, [3, 5, 6], kind="surface")
    assert surface.data[0].type == "surface" and surface.data[-1].type == "scatter3d"


def test_barcode_limits_cover_every_barcode(barcode):
    other = minima_barcode(LOSSES + 10, BARRIERS + 10)
    lo, hi = plots.barcode_limits(barcode, other)
    assert lo < 0 and hi > 13.5
    fig = plots.barcode_figure(barcode, x_range=(lo, hi))
    assert tuple(fig.layout.xaxis.range) == (lo, hi)


def test_provenance_strings():
    from lossbarcode.cli import reproduce_command
    from lossbarcode.config import ExperimentConfig
    from lossbarcode.provenance import describe_config

    config = ExperimentConfig(width=8, k=4, schedule="anneal", device="cpu")
    assert reproduce_command(config) == ("lossbarcode run --width 8 --minima 4 "
                                         "--schedule anneal --device cpu")
    assert reproduce_command(ExperimentConfig()) == "lossbarcode run"
    text = describe_config(config)
    assert "width 8" in text and "K = 4" in text and "anneal" in text and "l2" in text
    assert "widths varied" in describe_config(config, varied=("width",))


def test_scaling_figure_of_a_cross_sweep_draws_only_the_curves():
    def row(width, depth):
        return {"arch": "fcn", "width": width, "depth": depth, "n_params": width * depth,
                "runs": 1, "to_score_mean": 1.0 / width / depth, "to_score_std": 0.0,
                "to_score_seeds": [1.0 / width / depth], "seeds": [0]}

    cross = [row(w, 2) for w in (4, 8, 16)] + [row(8, d) for d in (1, 3)]
    vs_width = plots.scaling_figure(cross, x="width")
    vs_depth = plots.scaling_figure(cross, x="depth")
    means = [t for t in vs_width.data if t.mode == "lines+markers"]
    assert [t.name for t in means] == ["depth 2"]
    assert [t.name for t in vs_depth.data if t.mode == "lines+markers"] == ["width 8"]
    single = plots.scaling_figure([row(4, 2), row(8, 3)], x="width")
    assert len([t for t in single.data if t.mode == "lines+markers"]) == 2  # nothing to drop


def test_scaling_figure_puts_unresolved_scores_on_the_floor():
    rows = [dict(SUMMARY[0], to_score_mean=0.0, to_score_seeds=[0.0, 1e-6]), SUMMARY[1]]
    fig = plots.scaling_figure(rows, log_y=True, floor=1e-4)
    # A zero (and a score below the floor) is drawn on the floor, not dropped.
    assert list(fig.data[0].x) == [4, 8] and fig.data[0].y[0] == pytest.approx(1e-4)
    assert sorted(fig.data[1].y)[:2] == pytest.approx([1e-4, 1e-4])
    assert [s.y0 for s in fig.layout.shapes] == [pytest.approx(1e-4)]
    linear = plots.scaling_figure(rows, floor=1e-4)
    assert linear.data[0].y[0] == 0.0  # on a linear axis the value itself
    # The floor's note sits on its line: plotly reads an annotation's y on a log axis as
    # log10 (add_hline's own annotation landed at 10**1e-4, decades above the line).
    (note,) = [a for a in fig.layout.annotations if "resolution floor" in a.text]
    assert note.yref == "y" and note.y == pytest.approx(-4)
    (note,) = [a for a in linear.layout.annotations if "resolution floor" in a.text]
    assert note.y == pytest.approx(1e-4)


def test_spans_decades():
    assert plots.spans_decades([0.3, 0.002])
    assert not plots.spans_decades([0.3, 0.05])
    assert not plots.spans_decades([0.3, 0.0, 0.05])  # zeros carry no scale
    assert not plots.spans_decades([0.01, 0.0], floor=0.005)  # a zero sits on the floor
    assert plots.spans_decades([0.3, 0.0], floor=1e-4)


def test_barcode_figure_hatches_bars_from_unconverged_paths(barcode):
    certified = np.array([False, True, False])  # bar 0 is essential: never hatched
    fig = plots.barcode_figure(barcode, certified=certified)
    shapes = list(fig.data[0].marker.pattern.shape)
    essential = np.isinf(barcode.deaths)
    assert [s == "/" for s in shapes] == list(~certified & ~essential)
    assert all(("unconverged" in h) == (s == "/") for h, s in zip(fig.data[0].hovertext,
                                                                    shapes, strict=True))
    assert set(plots.barcode_figure(barcode).data[0].marker.pattern.shape) == {""}
    with pytest.raises(ValueError, match="certified"):
        plots.barcode_figure(barcode, certified=[True])


def test_path_history_figure_dashes_unconverged_paths():
    hist = [np.array([1.0, 0.5, 0.2001, 0.2]), np.array([2.0, 1.0, 0.6])]
    steps = [np.array([0, 50, 100, 150]), np.array([0, 50, 100])]
    fig = plots.path_history_figure(hist, steps, PAIRS[:2], [True, False],
                                    floors=np.array([0.2, 0.0]))
    assert [t.name for t in fig.data] == ["0–1", "0–2 (unconverged)"]
    assert [t.line.dash for t in fig.data] == ["solid", "dash"]
    assert list(fig.data[0].x) == [0, 50, 100, 150]
    assert fig.layout.yaxis.type == "log"  # excesses from 1e-4 to 2 span decades
    assert fig.data[0].y[-1] > 0  # a zero excess is drawn at the bottom, not dropped
    plain = plots.path_history_figure(hist, steps, PAIRS[:2], [True, True])
    assert plain.layout.yaxis.type == "linear" and list(plain.data[1].y) == [2.0, 1.0, 0.6]


# --------------------------------------------------------------------------- teaching views


def contrast(color: str, background: str) -> float:
    """WCAG 2 contrast ratio of two colours ("#rrggbb" or "rgb(r, g, b)")."""
    def luminance(c: str) -> float:
        if c.startswith("#"):
            rgb = [int(c[i:i + 2], 16) for i in (1, 3, 5)]
        else:
            rgb = [float(v) for v in c[c.index("(") + 1:c.index(")")].split(",")[:3]]
        lin = [v / 255 / 12.92 if v / 255 <= 0.03928 else ((v / 255 + 0.055) / 1.055) ** 2.4
               for v in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    a, b = sorted((luminance(color), luminance(background)))
    return (b + 0.05) / (a + 0.05)


DARK_BACKGROUND, LIGHT_BACKGROUND = "#0e1117", "#ffffff"


@pytest.mark.parametrize(("toy", "min_length"), [("quartic", 0.0), ("three_hump_camel", 0.0),
                                                 ("rastrigin", 0.0), ("six_hump_camel", 0.05)])
def test_sublevel_animation_frames_are_the_sublevel_components(toy, min_length):
    from lossbarcode import grid_barcode, sublevel_components, toys
    from lossbarcode.animation import level_range, sublevel_animation

    axes, values = toys.get(toy).grid(61)
    full = grid_barcode(values, "full")
    barcode = full.filter(min_length)
    levels = np.linspace(*level_range(values, full), 12)
    fig = plots.clear_of_toolbar(sublevel_animation(axes, values, barcode, levels,
                                                    max_points=31))
    steps = fig.layout.sliders[0].steps
    assert len(fig.frames) == len(steps) == levels.size > 1
    assert [list(s.args[0]) for s in steps] == [[f.name] for f in fig.frames]
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"
    # Issue 20's overlaps: the slider and its "level c =" label lie on a row below the
    # buttons (beside them, Pause covered the label), and nothing is written in the gap
    # between the two plots (the bars' axis title ran into the map on a phone).
    menu, slider = fig.layout.updatemenus[0], fig.layout.sliders[0]
    assert slider.y < menu.y and slider.x == 0 and slider.len == 1
    assert not fig.layout.yaxis2.title.text and "by birth" in fig.layout.xaxis2.title.text
    shown = np.array([f.layout.meta for f in fig.frames])
    assert np.all(np.diff(shown) > 0)
    n = len(barcode)
    bar_of_minimum = dict(zip(barcode.minima.tolist(), range(n), strict=True))
    for frame, level in zip(fig.frames, shown, strict=True):
        category = np.asarray(frame.data[0].z).T if values.ndim == 2 else np.asarray(
            frame.data[0].marker.color)
        every = sublevel_components(values, level, "full")
        reference = every[(slice(None, None, 2),) * values.ndim]  # 61 -> 31 points per axis
        assert category.shape == reference.shape
        assert np.array_equal(category == n + 1, reference < 0)  # above the level: not drawn
        below = reference >= 0
        expected = [bar_of_minimum.get(int(m), n) for m in reference[below]]  # n: filtered out
        assert np.array_equal(category[below], expected)
        opacity = np.asarray(frame.data[1].marker.opacity)
        alive = (barcode.births <= level) & (barcode.deaths > level)
        assert np.array_equal(opacity == 1, alive)
        if min_length == 0:  # one bar alive per component (the elder rule)
            assert alive.sum() == np.unique(every[every >= 0]).size
        assert list(frame.data[2].x) == [level, level]
        assert f": {np.unique(every[every >= 0]).size} component" in frame.layout.title.text


def test_sublevel_animation_rejects_bad_arguments():
    from lossbarcode import grid_barcode, toys
    from lossbarcode.animation import sublevel_animation

    axes, values = toys.get("himmelblau").grid(21)
    barcode = grid_barcode(values)
    with pytest.raises(ValueError, match="levels"):
        sublevel_animation(axes, values, barcode, [])
    with pytest.raises(ValueError, match="start"):
        sublevel_animation(axes, values, barcode, [1.0, 2.0], start=2)
    with pytest.raises(ValueError, match="one entry per bar"):
        sublevel_animation(axes, values, barcode, [1.0], colors=["red"])


def test_diagram_infinity_row_is_clear_of_the_numeric_ticks(barcode):
    fig = plots.diagram_figure(barcode, level=1.5)
    ticks = list(fig.layout.yaxis.tickvals)
    text = list(fig.layout.yaxis.ticktext)
    infinity = ticks[text.index(plots.INFINITY_MARK)]
    numeric = np.array([t for t, s in zip(ticks, text, strict=True) if s != plots.INFINITY_MARK])
    lo, hi = fig.layout.xaxis.range
    assert numeric.size >= 2 and np.all(numeric <= hi)
    assert infinity - numeric.max() >= 0.1 * (hi - lo)  # a visible gap, not a shared row
    essential = np.isinf(barcode.deaths)
    assert np.all(np.asarray(fig.data[-1].y)[essential] == infinity)
    assert fig.layout.yaxis.range[1] > infinity


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (-0.37, 0.95), (1e-4, 3e-3), (-250, 1200)])
def test_nice_ticks_are_round_evenly_spaced_and_inside(lo, hi):
    ticks = plots.nice_ticks(lo, hi)
    assert 3 <= ticks.size <= 11
    assert ticks.min() >= lo and ticks.max() <= hi
    assert np.allclose(np.diff(ticks), ticks[1] - ticks[0])


def test_new_colours_read_on_the_light_and_dark_theme():
    colours = [plots.LEVEL_COLOR] + [c for n in range(1, 12) for c in plots.scale_colors(n)]
    for colour in colours:
        assert contrast(colour, DARK_BACKGROUND) >= 3, colour
        assert contrast(colour, LIGHT_BACKGROUND) >= 3, colour
    # the scale still runs from one hue to another
    first, last = plots.scale_colors(2)
    assert first != last


def test_landscape_level_contour_is_not_white():
    from lossbarcode import grid_barcode, toys

    axes, values = toys.get("himmelblau").grid(21)
    fig = plots.landscape_figure(axes, values, grid_barcode(values), level=50.0)
    contour = [t for t in fig.data if t.type == "contour"][0]
    assert contour.line.color == plots.LEVEL_COLOR and contour.showlegend is not False


def test_clear_of_toolbar_puts_the_title_below_the_toolbar(barcode):
    fig = plots.diagram_figure(barcode)
    cleared = plots.clear_of_toolbar(fig)
    assert fig.layout.title.pad.t is None  # a copy: the figure passed in is unchanged
    title = cleared.layout.title
    assert (title.x, title.xanchor, title.yref, title.pad.t) == (0, "left", "container",
                                                                  plots.TOOLBAR_HEIGHT)
    assert cleared.layout.margin.t >= plots.TOOLBAR_HEIGHT + plots.TITLE_HEIGHT
    with_legend = plots.clear_of_toolbar(plots.slice_figure(
        np.linspace(0, 1, 5), np.linspace(0, 1, 5), np.arange(25.0).reshape(5, 5) % 7,
        plots.Barcode.from_dict(minima_barcode([0.0, 1.0], [[0, 2], [2, 0]]).to_dict()),
        np.zeros((3, 2)), [0, 1, 2]))
    assert with_legend.layout.margin.t >= (plots.TOOLBAR_HEIGHT + plots.TITLE_HEIGHT
                                           + plots.LEGEND_ROW)


def test_barcodes_overlay_normalised_per_run(barcode):
    scaled = Barcode(births=barcode.births * 10 + 3, deaths=barcode.deaths * 10 + 3,
                     minima=barcode.minima, saddles=barcode.saddles,
                     merged_into=barcode.merged_into)
    fig = plots.barcodes_overlay_figure({"a": barcode, "b": scaled}, normalize="range")
    (a_base, a_width), (b_base, b_width) = [(np.asarray(t.base, dtype=float),
                                             np.asarray(t.x, dtype=float)) for t in fig.data[:2]]
    assert np.allclose(a_base, b_base) and np.allclose(a_width, b_width)  # same bars
    finite = np.isfinite(barcode.deaths)
    assert a_base.min() == 0 and np.max((a_base + a_width)[finite]) == pytest.approx(1)
    assert "normalised" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="normalize"):
        plots.barcodes_overlay_figure({"a": barcode}, normalize="max")


# --------------------------------------------------------------------------- numbers and type

TINY = 1e-4  # losses this small are where plotly's default writes SI prefixes ("400μ")
# a number written with an SI prefix, as plotly's default does ("400μ", "1.5k", "2B")
SI_NUMBER = re.compile(r"^[−-]?\d+(\.\d+)?[yzafpnμmkMGTPEZYB]$")


@functools.cache
def every_figure() -> dict:
    """Every figure builder, on small synthetic inputs with loss values near 1e-4 (and a 3-D
    and a colour-bar variant where a builder draws one); built once (the tests read them)."""
    from lossbarcode import grid_barcode, toys
    from lossbarcode.animation import sublevel_animation
    from lossbarcode.stats import spearman_test

    bars = minima_barcode(LOSSES * TINY, BARRIERS * TINY)
    axes, values = toys.get("quartic").grid(21)
    tiny_values = values * TINY
    x = y = np.linspace(-1, 1, 11)
    loss = ((x[:, None] ** 2 - 0.5) ** 2 + y[None, :] ** 2) * TINY
    grid = grid_barcode(loss)
    points = np.array([[-0.7, 0.0], [0.7, 0.0], [0.0, 0.5]])
    small = [dict(row, to_score_mean=row["to_score_mean"] * TINY,
                  to_score_seeds=[s * TINY for s in row["to_score_seeds"]]) for row in SUMMARY]
    minima = np.random.default_rng(0).normal(size=(3, 3))
    lengths = np.array([1.0, 2.0, 3.0]) * TINY
    return {
        "barcode": plots.barcode_figure(bars, level=1.5 * TINY),
        "diagram": plots.diagram_figure(bars, level=1.5 * TINY),
        "landscape 1-D": plots.landscape_figure(
            [np.linspace(-1, 1, 41)], np.linspace(-1, 1, 41) ** 2 * TINY,
            grid_barcode(np.linspace(-1, 1, 41) ** 2 * TINY)),
        "landscape heatmap": plots.landscape_figure(axes, tiny_values, grid_barcode(tiny_values),
                                                    level=float(np.median(tiny_values))),
        "landscape surface": plots.landscape_figure(axes, tiny_values, grid_barcode(tiny_values),
                                                    kind="surface"),
        "profiles": plots.profiles_figure([(t, loss * TINY) for t, loss in profiles()], PAIRS),
        "scaling": plots.scaling_figure(small, floor=TINY / 10),
        "scaling log": plots.scaling_figure(small, log_y=True, floor=TINY / 10),
        "path history": plots.path_history_figure(
            [np.array([3.0, 2.0]) * TINY, np.array([4.0, 3.5]) * TINY],
            [np.array([0, 50]), np.array([0, 50])], PAIRS[:2], [True, False]),
        "overlay": plots.barcodes_overlay_figure({"width 4": bars}),
        "projection 2-D": plots.projection_figure(minima[:, :2], lengths),
        "projection 3-D": plots.projection_figure(minima, lengths),
        "generalization": plots.generalization_figure(
            {"run": (lengths, np.array([0.1, 0.2, 0.3]))},
            {"pooled": spearman_test(lengths, [0.1, 0.2, 0.3])}),
        "slice": plots.slice_figure(x, y, loss, grid, points, [0, 1, 2]),
        "slice surface": plots.slice_figure(x, y, loss, grid, points, [0, 1, 2], kind="surface"),
        "animation": sublevel_animation(axes, tiny_values, grid_barcode(tiny_values), 4,
                                        max_points=21),
    }


def drawn_axes(fig) -> dict:
    """Found independently of the code under test: ``name -> axis`` for every axis a trace
    draws its numbers on (2-D axes, 3-D scene axes, shown colour bars)."""
    found = {}
    for trace in fig.data:
        if "scene" in trace:
            scene = trace.scene or "scene"
            for a in ("xaxis", "yaxis", "zaxis"):
                found[f"{scene}.{a}"] = fig.layout[scene][a]
        elif "xaxis" in trace:
            for a, ref in (("xaxis", trace.xaxis or "x"), ("yaxis", trace.yaxis or "y")):
                found[a + ref[1:]] = fig.layout[a + ref[1:]]
        if "colorbar" in trace and trace.showscale is not False:
            found[f"{trace.type} colorbar"] = trace.colorbar
        if "marker" in trace and "colorbar" in trace.marker and trace.marker.showscale:
            found[f"{trace.type} marker colorbar"] = trace.marker.colorbar
    return found


@pytest.mark.parametrize("name", list(every_figure()))
def test_no_figure_writes_si_prefixes_on_its_axes(name):
    """§2 units: a loss of 0.0004 reads "4×10⁻⁴", never "400μ" (plotly's default, "B")."""
    fig = every_figure()[name]
    axes = drawn_axes(fig)
    assert axes, name
    for where, axis in axes.items():
        if axis.tickmode == "array" and axis.ticktext is not None:  # text written by us
            assert not any(SI_NUMBER.match(str(text)) for text in axis.ticktext), (name, where)
            continue
        assert axis.exponentformat not in (None, "B", "SI"), (name, where)
        assert axis.exponentformat == plots.EXPONENT_FORMAT, (name, where)
        assert axis.tickformat in (None, ""), (name, where)  # a tickformat would override it


def test_the_diagram_writes_both_axes_in_one_notation():
    bars = minima_barcode(LOSSES * TINY, BARRIERS * TINY)  # births 0..2e-4, deaths to 5e-4
    fig = plots.diagram_figure(bars)
    x_text, y_text = list(fig.layout.xaxis.ticktext), list(fig.layout.yaxis.ticktext)
    assert y_text[-1] == plots.INFINITY_MARK and y_text[:-1] == x_text
    assert list(fig.layout.xaxis.tickvals) == list(fig.layout.yaxis.tickvals)[:-1]
    assert all(t == "0" or t.endswith("×10<sup>−4</sup>") for t in x_text), x_text
    plain = plots.diagram_figure(minima_barcode(LOSSES, BARRIERS))  # losses 0..5: no power
    assert not any("×10" in t for t in plain.layout.xaxis.ticktext)


@pytest.mark.parametrize(("values", "expected"), [
    ([0.0004, 0.00045, 0.0005], ["4×10<sup>−4</sup>", "4.5×10<sup>−4</sup>",
                                  "5×10<sup>−4</sup>"]),
    ([0.0, 0.25, 0.5, 1.0], ["0", "0.25", "0.5", "1"]),
    ([-0.5, 0.0, 0.5], ["−0.5", "0", "0.5"]),
    ([0.001, 0.0015, 0.002], ["0.001", "0.0015", "0.002"]),  # within 10^±3: plain
    ([2.30315, 2.3032, 2.30325], ["2.30315", "2.3032", "2.30325"]),  # close ticks stay apart
    ([0.0, 20000.0, 40000.0], ["0", "2×10<sup>4</sup>", "4×10<sup>4</sup>"]),
])
def test_tick_text_is_one_notation_without_si_prefixes(values, expected):
    assert plots.tick_text(values) == expected


@pytest.mark.parametrize("name", list(every_figure()))
def test_presentation_fonts_read_from_the_back_of_the_room(name):
    fig = every_figure()[name]
    big = plots.presentation_fonts(fig)
    assert fig.layout.title.font.size is None  # a copy: the figure passed in is unchanged
    # plotly writes a log axis's in-between labels (2, 5) at 3/4 of the tick font
    assert 0.75 * plots.PRESENT_TICK_FONT >= 18 and plots.PRESENT_TITLE_FONT >= 22
    assert big.layout.title.font.size >= 22
    assert fig.layout.height is None or big.layout.height > fig.layout.height  # room for it
    for where, axis in drawn_axes(big).items():
        assert axis.tickfont.size >= 18, (name, where)
        assert axis.title.font.size >= 18, (name, where)
    assert big.layout.legend.font.size >= 18
    assert all(note.font.size >= 18 for note in big.layout.annotations), name
    # the title, at its size, still sits clear of the toolbar and above the plot
    cleared = plots.clear_of_toolbar(big)
    lines = 1 + (big.layout.title.text or "").count("<br>")
    assert cleared.layout.margin.t >= (plots.TOOLBAR_HEIGHT
                                       + lines * plots.LINE_HEIGHT * plots.PRESENT_TITLE_FONT)
