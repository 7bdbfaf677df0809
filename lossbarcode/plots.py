"""Plotly figures of barcodes, persistence diagrams and landscapes.

Colours are tied to bars: bar ``i`` of a barcode is drawn in ``bar_colors(n)[i]`` everywhere —
its segment, its point in the diagram, its minimum on the landscape and its sublevel component —
so the same colour always means the same minimum.

For the minima of a trained result the colour is keyed by the *minimum index* instead
(:func:`minimum_color`): minimum ``m`` has the same colour in the barcode, the persistence
diagram, the loss profile of the path where it died, the minima map and the tables, on every
page. Scales (widths, depths) use a sequential scale (:func:`scale_colors`) and runs a separate
qualitative palette with distinct symbols (:func:`run_style`), so neither is mistaken for a
minimum. Lines and marks that are not tied to a minimum use :data:`NEUTRAL`, a mid grey that
reads on both the light and the dark theme.

Every function is pure: data in, :class:`plotly.graph_objects.Figure` out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go

from lossbarcode.topology import NORMALIZATIONS, Barcode, death_pair, range_normalized

if TYPE_CHECKING:  # scipy.stats costs 0.4 s to import; only the type is needed here
    from lossbarcode.stats import SpearmanTest

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354",
)
BELOW_FILTER = "#9e9e9e"  # components whose bar was filtered out as too short
NEUTRAL = "#8c8c8c"  # lines/marks not tied to a minimum: readable on light and dark themes
LEVEL_COLOR = "#e0218a"  # the level c: magenta, on white, on the dark theme and on Viridis
INFINITY_MARK = "∞"
RUN_COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6",
              "#9d755d")
RUN_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}
# Scales (widths, depths): blue-violet -> magenta -> orange, all of middle lightness, so that
# every colour keeps a 3:1 contrast on white and on the dark theme (#0e1117).
SCALE_COLORSCALE = [[0.0, "#7b5cd6"], [0.5, "#c2379b"], [1.0, "#e8590c"]]
INFINITY_GAP = 0.12  # the diagram's ∞ row sits this share of the finite range above it
# The chart toolbar (plotly's modebar) covers the top right ~32 px of a chart; on a phone it
# spans most of the width, so titles go below it (see clear_of_toolbar).
TOOLBAR_HEIGHT, TITLE_HEIGHT, LEGEND_ROW = 32, 26, 26
# Numbers on every axis: plotly's default exponent format writes SI prefixes ("400μ" for
# 0.0004), which read as a unit on a loss axis; every figure writes 4×10⁻⁴ instead, beyond
# 10^±EXPONENT_ABOVE (plotly's own threshold), and plain decimals within it.
EXPONENT_FORMAT = "power"
EXPONENT_ABOVE = 3
# Presentation mode (a projector, read from the back of a room): font sizes in px.
# tick labels, colour-bar ticks; a log axis writes its 2s and 5s at 3/4 of it: 18 px
PRESENT_TICK_FONT = 24
PRESENT_TEXT_FONT = 20  # axis titles, legends, notes drawn on the chart
PRESENT_TITLE_FONT = 26  # the chart's title
PRESENT_TALLER = 1.4  # the plot grows with its type, so ticks and labels do not crowd
LINE_HEIGHT = 1.3  # a text line's height per px of font


def bar_colors(n: int) -> list[str]:
    """Colour of each of ``n`` bars (cycled palette, bar 0 = the global minimum)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def minimum_color(index: int) -> str:
    """The colour of trained minimum ``index`` (0..K-1), the same on every page."""
    return PALETTE[int(index) % len(PALETTE)]


def minimum_colors(indices: Sequence[int] | np.ndarray) -> list[str]:
    """:func:`minimum_color` of each index, e.g. ``minimum_colors(barcode.minima)``."""
    return [minimum_color(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]


def scale_colors(n: int) -> list[str]:
    """``n`` colours along :data:`SCALE_COLORSCALE` (small scale = blue-violet, large =
    orange), each readable on the light and the dark theme."""
    from plotly.colors import sample_colorscale

    if n <= 0:
        return []
    points = [0.5] if n == 1 else list(np.linspace(0.0, 1.0, n))
    return sample_colorscale(SCALE_COLORSCALE, points)


def clear_of_toolbar(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` whose title sits left-aligned below the chart toolbar, with a top
    margin that fits the toolbar, the title (every line of it, at its font size) and a legend
    row drawn above the plot."""
    fig = go.Figure(fig)
    title = fig.layout.title.text
    legend = fig.layout.legend
    legend_on_top = legend.y is not None and legend.y >= 1 and legend.yanchor == "bottom"
    title_row = max(TITLE_HEIGHT, LINE_HEIGHT * (fig.layout.title.font.size or 0))
    legend_row = max(LEGEND_ROW, LINE_HEIGHT * (legend.font.size or 0))
    lines = 1 + title.count("<br>") if title else 0
    top = round(TOOLBAR_HEIGHT + title_row * lines + legend_row * legend_on_top)
    fig.update_layout(margin_t=max(fig.layout.margin.t or 0, top))
    if title:
        fig.update_layout(title={"x": 0, "xref": "container", "xanchor": "left", "y": 1,
                                 "yref": "container", "yanchor": "top",
                                 "pad": {"t": TOOLBAR_HEIGHT, "l": 12}})
    return fig


def _number_axes(fig: go.Figure) -> list:
    """Every axis of ``fig`` that writes numbers: its 2-D axes, the axes of the 3-D scenes
    its traces use, and the colour bars of the traces that draw one."""
    axes = [*fig.select_xaxes(), *fig.select_yaxes()]
    scenes = {t.scene or "scene" for t in fig.data if "scene" in t}
    for name in sorted(scenes):
        scene = fig.layout[name]
        axes += [scene.xaxis, scene.yaxis, scene.zaxis]
    for trace in fig.data:
        if "colorbar" in trace and trace.showscale is not False:
            axes.append(trace.colorbar)
        if "marker" in trace and "colorbar" in trace.marker and trace.marker.showscale:
            axes.append(trace.marker.colorbar)
    return axes


def plain_numbers(fig: go.Figure) -> go.Figure:
    """``fig`` with every number axis in :data:`EXPONENT_FORMAT` (no SI prefixes), so that a
    figure has one notation; every figure builder ends with it. Returns ``fig``."""
    for axis in _number_axes(fig):
        axis.exponentformat = EXPONENT_FORMAT
    return fig


def tick_text(values: Sequence[float] | np.ndarray) -> list[str]:
    """Labels of the ticks ``values`` (explicit ticks) in the notation plotly writes with
    :data:`EXPONENT_FORMAT`: plain decimals, or one power of ten for all of them when the
    largest is beyond 10^±:data:`EXPONENT_ABOVE`; as few decimals as tell them apart."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    exponent = int(np.floor(np.log10(top) + 0.01)) if top > 0 else 0
    exponent = exponent if abs(exponent) > EXPONENT_ABOVE else 0
    mantissa = v / 10.0**exponent
    tol = 1e-9 * max(1.0, float(np.max(np.abs(mantissa)))) if v.size else 0.0
    decimals = next((d for d in range(13)
                     if np.all(np.abs(np.round(mantissa, d) - mantissa) <= tol)), 12)
    power = f"×10<sup>{'−' if exponent < 0 else ''}{abs(exponent)}</sup>" if exponent else ""
    out = []
    for m in mantissa:
        text = f"{m:.{decimals}f}"
        text = text.rstrip("0").rstrip(".") if "." in text else text
        if float(text) == 0:
            out.append("0")  # no "−0", and no power on a zero
            continue
        out.append(text.replace("-", "−") + power)  # plotly's minus sign
    return out


def presentation_fonts(fig: go.Figure) -> go.Figure:
    """A copy of ``fig`` in type that reads on a projector: tick labels at
    :data:`PRESENT_TICK_FONT`, axis titles, legends and notes at :data:`PRESENT_TEXT_FONT`,
    the title at :data:`PRESENT_TITLE_FONT`. Set on each axis: the dashboard's chart theme
    sets the axes' fonts itself (12 px ticks), which a figure-wide font size does not
    override."""
    fig = go.Figure(fig)
    fig.update_layout(font_size=PRESENT_TEXT_FONT, title_font_size=PRESENT_TITLE_FONT,
                      legend_font_size=PRESENT_TEXT_FONT,
                      legend_title_font_size=PRESENT_TEXT_FONT,
                      # the top margin grows with the title (see clear_of_toolbar)
                      margin_t=round((fig.layout.margin.t or 0) * PRESENT_TITLE_FONT
                                     / TITLE_HEIGHT))
    if fig.layout.height:
        fig.update_layout(height=round(fig.layout.height * PRESENT_TALLER))
    for axis in _number_axes(fig):
        axis.tickfont.size = PRESENT_TICK_FONT
        axis.title.font.size = PRESENT_TEXT_FONT
    for note in fig.layout.annotations:
        note.font.size = max(note.font.size or 0, PRESENT_TEXT_FONT)
    for trace in fig.data:  # labels drawn next to points
        if "textfont" in trace and trace.textfont.size is not None:
            trace.textfont.size = max(trace.textfont.size, PRESENT_TEXT_FONT)
    return fig


def nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) in
    ``[lo, hi]``, shape ``(k,)``."""
    if not hi > lo:
        return np.array([lo], dtype=np.float64)
    raw = (hi - lo) / count
    power = 10.0 ** np.floor(np.log10(raw))
    step = power * min((1, 2, 2.5, 5, 10), key=lambda m: abs(m * power - raw))
    ticks = np.arange(np.ceil(lo / step) * step, hi + 1e-9 * step, step)
    return np.round(ticks / step) * step  # no 0.30000000000000004


def run_style(i: int) -> tuple[str, str]:
    """``(colour, marker symbol)`` of the ``i``-th run in a figure that compares runs."""
    return RUN_COLORS[i % len(RUN_COLORS)], RUN_SYMBOLS[i % len(RUN_SYMBOLS)]


def _x_limits(barcode: Barcode, level: float | None) -> tuple[float, float]:
    if len(barcode) == 0:
        return (-1.0, 1.0) if level is None else (level - 1.0, level + 1.0)
    finite = barcode.deaths[np.isfinite(barcode.deaths)]
    points = [barcode.births.min(), *(finite if finite.size else [barcode.births.max()])]
    if level is not None:
        points.append(level)
    lo, hi = float(min(points)), float(max(points))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def barcode_limits(*barcodes: Barcode) -> tuple[float, float]:
    """A common loss range for several barcodes (pass it as ``x_range`` to compare them)."""
    limits = [_x_limits(b, None) for b in barcodes if len(b)]
    if not limits:
        return -1.0, 1.0
    return min(lo for lo, _ in limits), max(hi for _, hi in limits)


def _alive(barcode: Barcode, level: float | None) -> np.ndarray:
    if level is None:
        return np.ones(len(barcode), dtype=bool)
    return (barcode.births <= level) & (barcode.deaths > level)


def _opacity(barcode: Barcode, level: float | None, highlight: int | None) -> np.ndarray:
    """Faded: bars dead at ``level``, and every bar but the highlighted minimum's."""
    opacity = np.where(_alive(barcode, level), 1.0, 0.3)
    if highlight is not None and np.any(barcode.minima == highlight):
        opacity = np.where(barcode.minima == highlight, 1.0, np.minimum(opacity, 0.25))
    return opacity


def barcode_figure(
    barcode: Barcode,
    level: float | None = None,
    title: str = "Loss barcode",
    labels: Sequence[str] | None = None,
    xaxis_title: str = "loss",
    colors: Sequence[str] | None = None,
    highlight: int | None = None,
    x_range: tuple[float, float] | None = None,
    certified: Sequence[bool] | np.ndarray | None = None,
    reasons: Sequence[str] | None = None,
    spread: Sequence[float] | np.ndarray | None = None,
) -> go.Figure:
    """Horizontal bars ``[birth, death)``, one per minimum, the global minimum on top.

    Essential bars run to the right edge and end in an arrow marked ``∞``. With ``level``, a
    vertical line marks it and bars not alive at that level are faded.

    Args:
        barcode: ``n`` bars.
        colors: ``n`` colours, one per bar (default :func:`bar_colors`; for a trained result
            pass ``minimum_colors(barcode.minima)``).
        labels: one name per bar for the hover and, up to 40 bars, the y axis (default: row
            numbers on the axis, ``"minimum m"`` in the hover).
        highlight: a minimum (vertex) index: its bar is outlined, the others faded.
        x_range: the loss axis range (default: fitted to this barcode).
        certified: ``n`` bools (see ``Result.bar_certificates``): an uncertified finite bar
            is hatched, and its hover says why (``reasons``, ``n`` strings) and that its
            death is an upper bound. None: no marking.
        spread: ``n`` values (NaN for none): how far apart the restarts of each bar's death
            ended, drawn as a whisker to the left of its death (``Result.bar_spread``).

    Trace 0 is the bars (``customdata[i] = [minimum, bar index]``, so a selected point names
    its minimum); bars too short to see (zero-length segments) get a marker at their birth in
    a ``"short bars"`` trace with the same ``customdata``; essential bars end in an ``∞``
    marker trace.
    """
    n = len(barcode)
    lo, hi = x_range if x_range is not None else _x_limits(barcode, level)
    essential = np.isinf(barcode.deaths)
    ends = np.where(essential, hi, barcode.deaths)
    names = list(labels) if labels is not None else [f"minimum {m}" for m in barcode.minima]
    lengths = barcode.lengths()
    sure = np.ones(n, dtype=bool) if certified is None else np.asarray(certified, dtype=bool)
    if sure.shape != (n,):
        raise ValueError(f"certified must have one entry per bar ({n}), got {sure.size}")
    unsure = ~sure & ~essential
    hover = [
        f"{names[i]}<br>birth {barcode.births[i]:.6g}<br>death "
        + (INFINITY_MARK if essential[i] else f"{barcode.deaths[i]:.6g}")
        + ("" if essential[i] else f"<br>length {lengths[i]:.6g}")
        + (f"<br>restarts' spread {spread[i]:.3g}" if spread is not None
           and np.isfinite(spread[i]) and spread[i] > 0 else "")
        + (f"<br><b>not certified</b>: {reasons[i] if reasons else 'unconverged path'}; the "
           "death is an upper bound" if unsure[i] else "")
        for i in range(n)
    ]
    bar_color = list(colors) if colors is not None else bar_colors(n)
    if len(bar_color) != n:
        raise ValueError(f"colors must have one entry per bar ({n}), got {len(bar_color)}")
    rows = np.arange(n)
    opacity = _opacity(barcode, level, highlight)
    outline = [2.5 if highlight is not None and m == highlight else 0 for m in barcode.minima]
    # Plain lists (not typed arrays) so that a selected point's customdata reads back as a list.
    customdata = np.column_stack([barcode.minima, rows]).astype(object) if n else np.empty(
        (0, 2), dtype=object)
    fig = go.Figure(
        go.Bar(
            y=rows,
            x=ends - barcode.births,
            base=barcode.births,
            orientation="h",
            marker={"color": bar_color, "opacity": opacity,
                    "line": {"color": NEUTRAL, "width": outline},
                    "pattern": {"shape": ["/" if u else "" for u in unsure],
                                "fgcolor": NEUTRAL, "solidity": 0.35}},
            customdata=customdata.tolist(),
            hovertext=hover,
            hoverinfo="text",
            width=0.7,
            showlegend=False,
            name="bars",
        )
    )
    short = ~essential & (ends - barcode.births < 0.006 * (hi - lo))
    if short.any():
        fig.add_trace(go.Scatter(
            x=barcode.births[short], y=rows[short], mode="markers", name="short bars",
            marker={"color": np.array(bar_color, dtype=object)[short], "size": 8,
                    "opacity": opacity[short], "symbol": "line-ns",
                    "line": {"color": np.array(bar_color, dtype=object)[short], "width": 3}},
            customdata=customdata[short].tolist(),
            hovertext=np.array(hover, dtype=object)[short],
            hoverinfo="text", showlegend=False,
        ))
    if spread is not None:
        whisker = ~essential & np.isfinite(np.asarray(spread, dtype=float)) & (
            np.asarray(spread, dtype=float) > 0)
        if whisker.any():
            fig.add_trace(go.Scatter(
                x=barcode.deaths[whisker], y=rows[whisker], mode="markers", name="spread",
                error_x={"type": "data", "symmetric": False, "array": np.zeros(whisker.sum()),
                         "arrayminus": np.asarray(spread, dtype=float)[whisker],
                         "color": NEUTRAL, "thickness": 1.5, "width": 4},
                marker={"size": 1, "color": NEUTRAL}, hoverinfo="skip", showlegend=False))
    if essential.any():
        fig.add_trace(go.Scatter(
            x=np.full(essential.sum(), hi), y=rows[essential], mode="markers+text",
            marker={"symbol": "arrow-right", "size": 12, "color": NEUTRAL},
            text=[INFINITY_MARK] * int(essential.sum()), textposition="middle left",
            hoverinfo="skip", showlegend=False, name="essential",
        ))
    if level is not None:
        fig.add_vline(x=level, line={"color": NEUTRAL, "dash": "dash", "width": 1.5},
                      annotation_text=f"c = {level:.4g}", annotation_position="top")
    fig.update_layout(
        title=title, xaxis={"title": xaxis_title, "range": [lo, hi]},
        yaxis={"title": "bar (by birth)", "autorange": "reversed",
               "showticklabels": n <= 40, "tickmode": "linear" if n <= 40 else "auto"}
        if labels is None or n > 40 else
        {"title": "", "autorange": "reversed", "tickmode": "array", "tickvals": rows,
         "ticktext": names},
        bargap=0.1, margin=MARGIN,
        height=max(260, min(700, 40 + 14 * n)),
    )
    return plain_numbers(fig)


def diagram_figure(
    barcode: Barcode,
    level: float | None = None,
    title: str = "Persistence diagram",
    colors: Sequence[str] | None = None,
    highlight: int | None = None,
    x_range: tuple[float, float] | None = None,
) -> go.Figure:
    """Birth vs death, one point per bar; essential bars sit on a dashed ``∞`` row above the
    finite range (a gap of :data:`INFINITY_GAP` of it, so no numeric tick meets the ``∞``).

    With ``level``, the region ``birth <= level < death`` (bars alive at that level) is shaded.
    ``colors`` / ``highlight`` / ``x_range`` as in :func:`barcode_figure`; the points are the
    last trace, ``customdata[i] = [minimum, length]``.
    """
    lo, hi = x_range if x_range is not None else _x_limits(barcode, level)
    infinity = hi + INFINITY_GAP * (hi - lo)
    essential = np.isinf(barcode.deaths)
    y = np.where(essential, infinity, barcode.deaths)
    colors = np.array(list(colors) if colors is not None else bar_colors(len(barcode)),
                      dtype=object)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", hoverinfo="skip",
                             line={"color": NEUTRAL, "width": 1}, showlegend=False))
    fig.add_hline(y=infinity, line={"color": NEUTRAL, "dash": "dash", "width": 1})
    if level is not None:
        fig.add_shape(type="rect", x0=lo, x1=level, y0=level, y1=infinity, line={"width": 0},
                      fillcolor="rgba(128,128,128,0.15)", layer="below")
    chosen = (barcode.minima == highlight) if highlight is not None else np.zeros(len(barcode),
                                                                                  bool)
    fig.add_trace(go.Scatter(
        x=barcode.births, y=y, mode="markers",
        marker={"color": colors, "size": np.where(chosen, 15, 9),
                "opacity": _opacity(barcode, None, highlight),
                "line": {"color": np.where(chosen, NEUTRAL, "white"),
                         "width": np.where(chosen, 2.5, 1)},
                "symbol": np.where(essential, "triangle-up", "circle")},
        customdata=[[int(m), float(length)] for m, length in zip(barcode.minima,
                                                                   barcode.lengths(),
                                                                   strict=True)],
        text=[INFINITY_MARK if e else f"{d:.6g}" for e, d in zip(essential, barcode.deaths,
                                                                  strict=True)],
        hovertemplate="minimum %{customdata[0]}<br>birth %{x:.6g}<br>death %{text}"
                      "<br>length %{customdata[1]:.6g}<extra></extra>",
        showlegend=False, name="bars",
    ))
    # The ∞ row needs explicit ticks on y; x gets the same ticks and text (one notation).
    ticks = nice_ticks(lo, hi)
    text = tick_text(ticks)
    fig.update_layout(
        title=title, xaxis={"title": "birth", "range": [lo, hi], "tickmode": "array",
                            "tickvals": ticks, "ticktext": text},
        yaxis={"title": "death", "range": [lo, infinity + 0.04 * (hi - lo)], "scaleanchor": "x",
               "tickmode": "array", "tickvals": [*ticks, infinity],
               "ticktext": [*text, INFINITY_MARK]},
        margin=MARGIN, height=420,
    )
    return plain_numbers(fig)


def _bar_of_vertex(barcode: Barcode, size: int) -> np.ndarray:
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[barcode.minima] = np.arange(len(barcode))
    return lookup


def landscape_figure(
    axes: Sequence[np.ndarray],
    values: np.ndarray,
    barcode: Barcode,
    kind: str = "heatmap",
    level: float | None = None,
    title: str = "Landscape",
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """A 1-D curve or a 2-D heatmap/surface with minima (dots, bar colours) and merge saddles (x).

    Args:
        axes: ``d`` coordinate vectors (``d`` = 1 or 2) of the grid ``values`` was computed on.
        values: shape ``(len(axes[0]), ...)``, indexed ``values[i_x, i_y]``.
        barcode: the grid barcode of ``values`` (flat indices).
        kind: ``"heatmap"`` or ``"surface"`` (2-D only).
        level: draw the threshold (a horizontal line in 1-D, a contour in 2-D).
        colors: one colour per bar for the minima (default :func:`bar_colors`).
    """
    if values.ndim not in (1, 2) or len(axes) != values.ndim:
        raise ValueError("landscape_figure draws 1-D or 2-D grids with one axis per dimension")
    if kind not in ("heatmap", "surface"):
        raise ValueError(f"kind must be 'heatmap' or 'surface', got {kind!r}")
    colors = list(colors) if colors is not None else bar_colors(len(barcode))
    finite = np.isfinite(barcode.deaths)
    minima = np.unravel_index(barcode.minima, values.shape)
    saddles = np.unravel_index(barcode.saddles[finite], values.shape)
    min_xy = [axes[d][minima[d]] for d in range(values.ndim)]
    sad_xy = [axes[d][saddles[d]] for d in range(values.ndim)]
    min_hover = [f"minimum {m}: f = {b:.6g}" for m, b in zip(barcode.minima, barcode.births,
                                                                strict=True)]
    sad_hover = [f"saddle where minimum {m} dies: f = {d:.6g}"
                 for m, d in zip(barcode.minima[finite], barcode.deaths[finite], strict=True)]
    fig = go.Figure()
    if values.ndim == 1:
        fig.add_trace(go.Scatter(x=axes[0], y=values, mode="lines", line={"color": NEUTRAL},
                                 name="f", hoverinfo="x+y"))
        fig.add_trace(go.Scatter(x=min_xy[0], y=barcode.births, mode="markers", name="minima",
                                 marker={"color": colors, "size": 11}, hovertext=min_hover,
                                 hoverinfo="text"))
        fig.add_trace(go.Scatter(x=sad_xy[0], y=barcode.deaths[finite], mode="markers",
                                 name="merge saddles", hovertext=sad_hover, hoverinfo="text",
                                 marker={"symbol": "x", "size": 11, "color": NEUTRAL}))
        if level is not None:
            fig.add_hline(y=level, line={"color": NEUTRAL, "dash": "dash", "width": 1.5})
        fig.update_layout(xaxis_title="x", yaxis_title="f(x)")
    elif kind == "heatmap":
        fig.add_trace(go.Heatmap(x=axes[0], y=axes[1], z=values.T, colorscale="Viridis",
                                 colorbar={"title": "f"}, hovertemplate="x %{x:.3f}<br>y %{y:.3f}"
                                 "<br>f %{z:.5g}<extra></extra>"))
        if level is not None:
            fig.add_trace(go.Contour(
                x=axes[0], y=axes[1], z=values.T, showscale=False, hoverinfo="skip",
                contours={"start": level, "end": level, "size": 1, "coloring": "none"},
                line={"color": LEVEL_COLOR, "width": 2, "dash": "dash"},
                name=f"f = {level:.4g}"))
        fig.add_trace(go.Scatter(x=min_xy[0], y=min_xy[1], mode="markers", name="minima",
                                 marker={"color": colors, "size": 11,
                                         "line": {"color": "white", "width": 1.5}},
                                 hovertext=min_hover, hoverinfo="text"))
        fig.add_trace(go.Scatter(x=sad_xy[0], y=sad_xy[1], mode="markers", name="merge saddles",
                                 marker={"symbol": "x", "size": 11, "color": "white",
                                         "line": {"color": "black", "width": 1}},
                                 hovertext=sad_hover, hoverinfo="text"))
        fig.update_layout(xaxis_title="x", yaxis={"title": "y", "scaleanchor": "x"})
    else:
        fig.add_trace(go.Surface(x=axes[0], y=axes[1], z=values.T, colorscale="Viridis",
                                 showscale=False, opacity=0.92, hoverinfo="skip"))
        fig.add_trace(go.Scatter3d(x=min_xy[0], y=min_xy[1], z=barcode.births, mode="markers",
                                   name="minima", marker={"color": colors, "size": 6},
                                   hovertext=min_hover, hoverinfo="text"))
        fig.add_trace(go.Scatter3d(x=sad_xy[0], y=sad_xy[1], z=barcode.deaths[finite],
                                   mode="markers", name="merge saddles", hovertext=sad_hover,
                                   hoverinfo="text",
                                   marker={"symbol": "x", "size": 5, "color": NEUTRAL}))
        fig.update_layout(scene={"xaxis_title": "x", "yaxis_title": "y", "zaxis_title": "f"})
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 80, "b": 10}, height=480,
                      legend={"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 0})
    return plain_numbers(fig)


# --------------------------------------------------------------------------- trained results


def path_colors(barcode: Barcode, pairs: np.ndarray) -> list[str]:
    """Colour of each path: the colour of the minimum that died on it, else :data:`NEUTRAL`."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    colors = [NEUTRAL] * len(pairs)
    for m in barcode.minima:
        p = death_pair(barcode, pairs, int(m))
        if p is not None:
            colors[p] = minimum_color(int(m))
    return colors


def profiles_figure(
    profiles: Sequence[tuple[np.ndarray, np.ndarray]],
    pairs: np.ndarray,
    barriers: Sequence[float] | np.ndarray | None = None,
    colors: Sequence[str] | None = None,
    highlight: int | None = None,
    title: str = "Training loss along each path",
) -> go.Figure:
    """The loss along every path between two minima, against the position ``t`` in [0, 1].

    Args:
        profiles: ``M`` pairs ``(t, loss)`` of 1-D arrays of equal length (NaN losses are drawn
            as gaps).
        pairs: ``(M, 2)`` minimum indices of each path's endpoints.
        barriers: ``(M,)`` barrier of each path (default: the highest finite loss on it).
        colors: ``M`` line colours (default :data:`NEUTRAL`; see :func:`path_colors`).
        highlight: index of a path to draw thick, the others faded.

    Traces: one line per path (named ``"i–j"``, ``customdata`` = ``[i, j, barrier]`` at every
    point, so the hover names the pair and its barrier), then one ``"barriers"`` marker trace
    at the highest point of each path with a finite loss.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = len(profiles)
    if pairs.shape[0] != m:
        raise ValueError(f"pairs must have shape ({m}, 2) to match the profiles, got "
                         f"{pairs.shape}")
    if highlight is not None and not 0 <= highlight < m:
        raise ValueError(f"highlight must index a path in [0, {m}), got {highlight}")
    colors = list(colors) if colors is not None else [NEUTRAL] * m
    tops_x, tops_y, tops_data, tops_color = [], [], [], []
    fig = go.Figure()
    for p, (t, loss) in enumerate(profiles):
        t = np.asarray(t, dtype=np.float64)
        loss = np.asarray(loss, dtype=np.float64)
        finite = np.isfinite(loss)
        top = float(np.max(loss[finite])) if finite.any() else np.nan
        barrier = float(barriers[p]) if barriers is not None else top
        i, j = (int(v) for v in pairs[p])
        chosen = highlight == p
        faded = highlight is not None and not chosen
        quiet = colors[p] == NEUTRAL  # a path that killed no bar stays in the background
        fig.add_trace(go.Scatter(
            x=t, y=np.where(finite, loss, np.nan), mode="lines", name=f"{i}–{j}",
            line={"color": colors[p], "width": 4 if chosen else 1.2 if quiet else 2},
            opacity=0.2 if faded else 0.95 if chosen or not quiet else 0.45,
            legendgroup=f"{i}–{j}",
            customdata=np.tile([i, j, barrier], (t.size, 1)),
            hovertemplate="path %{customdata[0]:.0f}–%{customdata[1]:.0f}<br>t %{x:.3f}"
                          "<br>loss %{y:.5g}<br>barrier %{customdata[2]:.5g}<extra></extra>",
            showlegend=m <= 12,
        ))
        if finite.any():
            at = int(np.flatnonzero(finite)[np.argmax(loss[finite])])
            tops_x.append(t[at])
            tops_y.append(loss[at])
            tops_data.append([i, j, barrier])
            tops_color.append(colors[p])
    fig.add_trace(go.Scatter(
        x=tops_x, y=tops_y, mode="markers", name="barriers", showlegend=False,
        marker={"color": tops_color, "size": 8, "symbol": "triangle-down",
                "line": {"color": NEUTRAL, "width": 1}},
        customdata=np.array(tops_data).reshape(-1, 3),
        hovertemplate="barrier of path %{customdata[0]:.0f}–%{customdata[1]:.0f}: "
                      "%{customdata[2]:.5g}<extra></extra>",
    ))
    fig.update_layout(title=title, xaxis_title="position along the path t",
                      yaxis_title="training loss", margin=MARGIN, height=420,
                      legend={"title": "pair"}, hovermode="closest")
    return plain_numbers(fig)


_SCALE_AXES = {"width": "depth", "depth": "width"}


def scaling_figure(
    summary: Sequence[dict],
    x: str = "width",
    log_x: bool = False,
    log_y: bool = False,
    score_variant: str | None = None,
    title: str | None = None,
    floor: float | None = None,
) -> go.Figure:
    """TO-score vs width (one line per depth) or vs depth (one line per width).

    Args:
        summary: rows of :func:`lossbarcode.sweep.summarize` (``arch``, ``width``, ``depth``,
            ``n_params``, ``to_score_mean``, ``to_score_std``, ``to_score_seeds``, ``seeds``).
        x: ``"width"`` or ``"depth"``; lines group the rows by ``arch`` and the other axis
            (groups with a single scale are left out when some group has several).
        log_x, log_y: logarithmic axes (see :func:`spans_decades` to choose ``log_y``).
        score_variant: named on the y axis (e.g. ``"l2"``).
        floor: the resolution floor (``to_score_floor``): drawn as a dashed line; on a log
            axis, scores below it (zeros included) are drawn on it as open down-triangles,
            "below what the paths resolve".

    Traces: per group, the mean with a ±1 std error bar (lines+markers, legend entry), then
    every seed's score as small open markers. Rows with ``to_score_low`` / ``to_score_high``
    (:func:`lossbarcode.sweep.summarize` with barcodes) draw that interval as a band before
    the mean, in place of the std bars. Rows whose mean is not finite are left out
    (on a log y axis also scores <= 0, which a log axis cannot show).
    """
    if x not in _SCALE_AXES:
        raise ValueError(f"x must be 'width' or 'depth', got {x!r}")
    other = _SCALE_AXES[x]
    groups: dict[tuple, list[dict]] = {}
    for row in summary:
        groups.setdefault((row["arch"], row[other]), []).append(row)
    # A cross-shaped sweep (widths at one depth, depths at one width) leaves single points
    # in the other curves; draw only the curves, unless no group has two scales.
    curves = {k: rows for k, rows in groups.items() if len({r[x] for r in rows}) > 1}
    groups = curves or groups
    keys = sorted(groups)
    archs = {k[0] for k in keys}
    colors = scale_colors(len(keys))
    fig = go.Figure()
    for key, color in zip(keys, colors, strict=True):
        rows = sorted(groups[key], key=lambda r: r[x])
        mean = np.array([r["to_score_mean"] for r in rows], dtype=np.float64)
        std = np.array([r.get("to_score_std") or 0.0 for r in rows], dtype=np.float64)
        if floor is not None and log_y:  # below the resolution: drawn on the floor
            mean = np.where(mean < floor, floor, mean)
        ok = np.isfinite(mean) & (mean > 0 if log_y else True)
        xs = np.array([r[x] for r in rows])[ok]
        label = (f"{key[0]} " if len(archs) > 1 else "") + f"{other} {key[1]}"
        info = [[r["width"], r["depth"], r.get("n_params") or 0, len(r.get("seeds") or [])]
                for r in rows]
        band = all(r.get("to_score_low") is not None for r in rows) and ok.any()
        if band:  # the confidence interval of the mean, in place of the ±1 std bars
            low = np.array([r["to_score_low"] for r in rows], dtype=np.float64)[ok]
            high = np.array([r["to_score_high"] for r in rows], dtype=np.float64)[ok]
            if floor is not None and log_y:
                low, high = np.maximum(low, floor), np.maximum(high, floor)
            fig.add_trace(go.Scatter(
                x=np.concatenate([xs, xs[::-1]]), y=np.concatenate([high, low[::-1]]),
                fill="toself", fillcolor=color, opacity=0.18, line={"width": 0},
                name=f"{label} {rows[0].get('interval', 'interval')}", legendgroup=label,
                showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=xs, y=mean[ok], mode="lines+markers", name=label, legendgroup=label,
            line={"color": color, "width": 2}, marker={"color": color, "size": 8},
            error_y={"type": "data", "array": std[ok], "visible": not band, "color": color,
                     "thickness": 1.2, "width": 5},
            customdata=np.column_stack([np.array(info, dtype=np.float64)[ok], std[ok]])
            if ok.any() else None,
            hovertemplate="width %{customdata[0]:.0f}, depth %{customdata[1]:.0f}"
                          "<br>TO-score %{y:.4g} ± %{customdata[4]:.2g} (%{customdata[3]:.0f}"
                          " seeds)<br>%{customdata[2]:,.0f} parameters<extra></extra>",
        ))
        px_, py_, pseed = [], [], []
        for r in rows:
            for seed, score in zip(r.get("seeds") or [], r.get("to_score_seeds") or [],
                                   strict=False):
                if floor is not None and log_y and score is not None and score < floor:
                    score = floor
                if score is not None and np.isfinite(score) and (score > 0 or not log_y):
                    px_.append(r[x])
                    py_.append(score)
                    pseed.append(seed)
        fig.add_trace(go.Scatter(
            x=px_, y=py_, mode="markers", name=f"{label} seeds", legendgroup=label,
            showlegend=False, customdata=pseed,
            marker={"color": color, "size": 6, "symbol": "circle-open", "opacity": 0.8},
            hovertemplate=f"{x} %{{x}}<br>seed %{{customdata}}<br>TO-score %{{y:.4g}}"
                          "<extra></extra>",
        ))
    if floor is not None and floor > 0:
        fig.add_hline(y=floor, line={"color": NEUTRAL, "dash": "dash", "width": 1.2})
        # Not add_hline's annotation: on a log axis plotly places an annotation at 10**y
        # (plotly.py#2580), so its note sat decades away from its line.
        fig.add_annotation(text="resolution floor: below it, not resolved from 0",
                           xref="x domain", x=1, xanchor="right", yref="y",
                           y=math.log10(floor) if log_y else floor, yanchor="top",
                           showarrow=False, font={"color": NEUTRAL, "size": 11})
    y_title = "TO-score" + (f" ({score_variant})" if score_variant else "")
    ticks = sorted({row[x] for row in summary})
    fig.update_layout(
        title=title or f"TO-score vs {x}",
        xaxis={"title": x, "type": "log" if log_x else "linear"}
        | ({"tickmode": "array", "tickvals": ticks} if 0 < len(ticks) <= 12 else {}),
        yaxis={"title": y_title, "type": "log" if log_y else "linear"},
        margin=MARGIN, height=420, legend={"orientation": "h", "y": -0.18},
    )
    return plain_numbers(fig)


def spans_decades(values: Sequence[float] | np.ndarray, floor: float | None = None,
                  decades: float = 1.5) -> bool:
    """Whether positive ``values`` (at least ``floor``) span more than ``decades`` powers of
    ten: then a log axis shows them and a linear one flattens the small ones."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if floor is not None and floor > 0:
        v = np.maximum(v, floor)
    v = v[v > 0]
    return bool(v.size >= 2 and np.log10(v.max() / v.min()) > decades)


def path_history_figure(
    histories: Sequence[np.ndarray],
    steps: Sequence[np.ndarray],
    pairs: np.ndarray,
    converged: Sequence[bool] | np.ndarray,
    floors: Sequence[float] | np.ndarray | None = None,
    colors: Sequence[str] | None = None,
    highlight: int | None = None,
    title: str = "Barrier against optimisation step",
) -> go.Figure:
    """How each path's barrier moved while it was optimised.

    Args:
        histories: ``M`` arrays, the barrier at each convergence check.
        steps: ``M`` int arrays of the same lengths, the steps used at those checks.
        pairs: ``(M, 2)`` endpoint minima.
        converged: ``(M,)``: unconverged paths are dashed and say so in the legend.
        floors: ``(M,)`` the higher endpoint loss of each path: with it the y axis is the
            *excess* (barrier - floor), on a log axis when positive values span decades.
        colors, highlight: as in :func:`profiles_figure`.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    m = len(histories)
    colors = list(colors) if colors is not None else [NEUTRAL] * m
    fig = go.Figure()
    ys = []
    for p in range(m):
        h = np.asarray(histories[p], dtype=np.float64)
        y = h - float(floors[p]) if floors is not None else h
        ys.append(y)
    positive = [v for y in ys for v in y if v > 0]
    log_y = floors is not None and spans_decades(positive)
    tiny = min(positive) / 2 if positive else 1e-12
    for p in range(m):
        i, j = (int(v) for v in pairs[p])
        ok = bool(converged[p])
        chosen = highlight == p
        y = np.where(ys[p] > 0, ys[p], tiny) if log_y else ys[p]
        fig.add_trace(go.Scatter(
            x=np.asarray(steps[p]), y=y, mode="lines+markers",
            name=f"{i}–{j}" + ("" if ok else " (unconverged)"),
            line={"color": colors[p], "width": 4 if chosen else 2,
                  "dash": "solid" if ok else "dash"},
            marker={"size": 4}, opacity=0.25 if highlight is not None and not chosen else 0.9,
            hovertemplate=f"path {i}–{j}" + ("" if ok else " (unconverged)")
                          + "<br>step %{x}<br>" + ("excess" if floors is not None else "barrier")
                          + " %{y:.4g}<extra></extra>",
            showlegend=m <= 12,
        ))
    fig.update_layout(
        title=title, xaxis_title="optimisation steps used",
        yaxis={"title": "barrier - higher endpoint loss" if floors is not None else "barrier",
               "type": "log" if log_y else "linear"},
        margin=MARGIN, height=380, legend={"title": "pair"}, hovermode="closest")
    return plain_numbers(fig)


def barcodes_overlay_figure(
    barcodes: dict[str, Barcode] | Sequence[tuple[str, Barcode]],
    colors: Sequence[str] | None = None,
    title: str = "Barcodes by scale",
    xaxis_title: str = "training loss",
    normalize: str | None = None,
) -> go.Figure:
    """Several barcodes in one plot, one block of rows per barcode, coloured by scale.

    Args:
        barcodes: ``label -> Barcode`` in display order (e.g. widths small to large).
        colors: one colour per barcode (default :func:`scale_colors`).
        normalize: ``None`` or ``"range"``: each barcode is drawn in units of its own loss
            range (:func:`lossbarcode.topology.range_normalized`: its lowest minimum at 0, its
            highest finite death at 1), so runs of different loss scales compare; the axis
            title says so.

    Traces: one bar trace per barcode (``name`` = its label, in the legend), then one ``∞``
    marker trace for all essential bars. Zero-length bars are widened to a thin sliver.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    items = list(barcodes.items()) if isinstance(barcodes, dict) else list(barcodes)
    if normalize == "range":
        items = [(label, range_normalized(b)) for label, b in items]
        xaxis_title = f"{xaxis_title}, normalised per run: (loss − lowest minimum) / range"
    colors = list(colors) if colors is not None else scale_colors(len(items))
    lo, hi = barcode_limits(*(b for _, b in items))
    sliver = 0.004 * (hi - lo)
    fig = go.Figure()
    ess_x, ess_y, ticks, tick_text = [], [], [], []
    row = 0
    for (label, barcode), color in zip(items, colors, strict=True):
        n = len(barcode)
        rows = row + np.arange(n)
        essential = np.isinf(barcode.deaths)
        ends = np.where(essential, hi, barcode.deaths)
        widths = np.maximum(ends - barcode.births, sliver)
        lengths = barcode.lengths()
        fig.add_trace(go.Bar(
            y=rows, x=widths, base=barcode.births, orientation="h", name=label,
            marker={"color": color}, width=0.8,
            customdata=np.column_stack([barcode.minima, np.where(essential, -1, lengths)])
            if n else None,
            hovertemplate=f"{label}<br>minimum %{{customdata[0]:.0f}}<br>birth %{{base:.5g}}"
                          "<br>length %{customdata[1]:.5g} (−1 = ∞)<extra></extra>",
        ))
        ess_x += [hi] * int(essential.sum())
        ess_y += rows[essential].tolist()
        ticks.append(row + (n - 1) / 2 if n else row)
        tick_text.append(label)
        row += n + 1
    fig.add_trace(go.Scatter(
        x=ess_x, y=ess_y, mode="markers+text", text=[INFINITY_MARK] * len(ess_x),
        textposition="middle left", marker={"symbol": "arrow-right", "size": 10,
                                            "color": NEUTRAL},
        hoverinfo="skip", showlegend=False, name="essential"))
    fig.update_layout(
        title=title, barmode="overlay", bargap=0.05,
        xaxis={"title": xaxis_title, "range": [lo, hi]},
        yaxis={"autorange": "reversed", "tickvals": ticks, "ticktext": tick_text,
               "title": ""},
        margin=MARGIN, height=max(280, min(900, 60 + 9 * row)),
        legend={"orientation": "h", "y": -0.15},
    )
    return plain_numbers(fig)


def projection_figure(
    minima: np.ndarray,
    values: np.ndarray | None = None,
    paths: Sequence[np.ndarray] = (),
    pairs: np.ndarray | None = None,
    color_label: str = "minimum",
    minima_ids: Sequence[int] | None = None,
    highlight: int | None = None,
    title: str = "Minima map",
    axis_titles: Sequence[str] | None = None,
    path_colors: Sequence[str] | None = None,
) -> go.Figure:
    """A 2-D or 3-D map of the minima (markers) and the paths between them (lines).

    Args:
        minima: ``(K, d)`` projected minima, ``d`` = 2 or 3.
        values: ``(K,)`` colour values (e.g. train loss, test error, segment length), or None to
            colour each minimum by :func:`minimum_color`. NaN / inf values (diverged, essential)
            are drawn as grey crosses in a separate ``"no value"`` trace.
        paths: ``M`` arrays ``(n_m, d)``: the projected images of each path, endpoints included.
        pairs: ``(M, 2)`` endpoints of each path (for the hover).
        minima_ids: the index of each row of ``minima`` (default ``0..K-1``).
        highlight: a minimum index drawn larger.
        path_colors: one colour per path (default :data:`NEUTRAL`; see :func:`path_colors`,
            which colours the path where each minimum died like that minimum).

    Traces: one line per path, then the minima trace (``customdata`` = minimum index, value),
    then the ``"no value"`` trace when some values are not finite.
    """
    minima = np.asarray(minima, dtype=np.float64)
    if minima.ndim != 2 or minima.shape[1] not in (2, 3):
        raise ValueError(f"minima must have shape (K, 2) or (K, 3), got {minima.shape}")
    k, d = minima.shape
    ids = np.arange(k) if minima_ids is None else np.asarray(minima_ids, dtype=np.int64)
    pairs = None if pairs is None else np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    scatter = go.Scatter3d if d == 3 else go.Scatter
    fig = go.Figure()
    for p, path in enumerate(paths):
        path = np.asarray(path, dtype=np.float64).reshape(-1, d)
        name = f"{pairs[p][0]}–{pairs[p][1]}" if pairs is not None else f"path {p}"
        coords = {"x": path[:, 0], "y": path[:, 1]} | ({"z": path[:, 2]} if d == 3 else {})
        color = path_colors[p] if path_colors is not None else NEUTRAL
        quiet = color == NEUTRAL
        fig.add_trace(scatter(
            **coords, mode="lines+markers", name=name, showlegend=False,
            line={"color": color, "width": (1.5 if quiet else 3) * (1 if d == 2 else 1.5)},
            marker={"color": color, "size": 3 if d == 2 else 2},
            opacity=0.45 if quiet else 0.85,
            hovertemplate=f"path {name}<extra></extra>",
        ))
    vals = None if values is None else np.asarray(values, dtype=np.float64).reshape(-1)
    if vals is not None and vals.shape[0] != k:
        raise ValueError(f"values must have shape ({k},), got {vals.shape}")
    ok = np.ones(k, dtype=bool) if vals is None else np.isfinite(vals)
    size = np.where(ids == highlight, 20, 12) if d == 2 else np.where(ids == highlight, 10, 6)
    base = {"x": minima[ok, 0], "y": minima[ok, 1]} | ({"z": minima[ok, 2]} if d == 3 else {})
    if vals is None:
        marker = {"color": minimum_colors(ids[ok]), "size": size[ok]}
    else:
        marker = {"color": vals[ok], "colorscale": "Viridis", "size": size[ok],
                  "colorbar": {"title": color_label}, "showscale": True}
    if d == 2:
        marker["line"] = {"color": minimum_colors(ids[ok]) if vals is not None else "white",
                          "width": 2}
    shown = np.nan_to_num(vals, nan=0.0) if vals is not None else np.zeros(k)
    fig.add_trace(scatter(
        **base, mode="markers+text", name="minima", showlegend=False, marker=marker,
        text=[str(i) for i in ids[ok]], textposition="top center", textfont={"size": 14},
        customdata=np.column_stack([ids[ok], shown[ok]]),
        hovertemplate="minimum %{customdata[0]:.0f}"
                      + ("" if vals is None else f"<br>{color_label} %{{customdata[1]:.5g}}")
                      + "<extra></extra>",
    ))
    if not ok.all():
        bad = ~ok
        coords = {"x": minima[bad, 0], "y": minima[bad, 1]} | (
            {"z": minima[bad, 2]} if d == 3 else {})
        fig.add_trace(scatter(
            **coords, mode="markers+text", name="no value", showlegend=False,
            text=[str(i) for i in ids[bad]], textposition="top center",
            marker={"color": NEUTRAL, "symbol": "x", "size": size[bad]},
            customdata=ids[bad],
            hovertemplate=f"minimum %{{customdata}}<br>{color_label}: none (essential or "
                          "diverged)<extra></extra>",
        ))
    names = list(axis_titles) if axis_titles is not None else [f"component {i + 1}"
                                                               for i in range(d)]
    if d == 3:
        fig.update_layout(scene={"xaxis_title": names[0], "yaxis_title": names[1],
                                 "zaxis_title": names[2]})
    else:
        fig.update_layout(xaxis_title=names[0], yaxis={"title": names[1], "scaleanchor": "x"})
    fig.update_layout(title=title, margin=MARGIN, height=560)
    return plain_numbers(fig)


def generalization_figure(
    groups: dict[str, tuple[np.ndarray, np.ndarray]] | Sequence[tuple[str, np.ndarray,
                                                                      np.ndarray]],
    tests: Mapping[str, SpearmanTest] | None = None,
    y_label: str = "test error",
    minima_ids: dict[str, np.ndarray] | None = None,
    title: str = "Segment length vs generalization",
) -> go.Figure:
    """Segment length (x) vs test error (y) of each minimum, one colour and symbol per run.

    Args:
        groups: ``label -> (lengths, errors)``, two ``(K,)`` arrays per run. Points where
            either is not finite (essential bars, diverged minima, regression without an
            error) are left out and counted in the title.
        tests: ``name -> test`` (e.g. ``{"pooled": ..., "within runs": ...}`` from
            :mod:`lossbarcode.stats`), written under the title, outside the plotting area, so
            no point is ever covered.
        minima_ids: ``label -> (K,)`` minimum index of each point (default ``0..K-1``).

    Traces: one per group, in order (possibly empty).
    """
    items = list(groups.items()) if isinstance(groups, dict) else [(g[0], (g[1], g[2]))
                                                                    for g in groups]
    fig = go.Figure()
    dropped = 0
    for i, (label, (lengths, errors)) in enumerate(items):
        lengths = np.asarray(lengths, dtype=np.float64).reshape(-1)
        errors = np.asarray(errors, dtype=np.float64).reshape(-1)
        if lengths.shape != errors.shape:
            raise ValueError(f"{label}: lengths and errors differ in shape "
                             f"({lengths.shape} vs {errors.shape})")
        ids = np.arange(lengths.size) if minima_ids is None else np.asarray(minima_ids[label])
        ok = np.isfinite(lengths) & np.isfinite(errors)
        dropped += int((~ok).sum())
        color, symbol = run_style(i)
        fig.add_trace(go.Scatter(
            x=lengths[ok], y=errors[ok], mode="markers", name=label,
            marker={"color": color, "symbol": symbol, "size": 10,
                    "line": {"color": "white", "width": 1}},
            customdata=ids[ok],
            hovertemplate=f"{label}<br>minimum %{{customdata}}<br>segment length %{{x:.5g}}"
                          f"<br>{y_label} %{{y:.4g}}<extra></extra>",
        ))
    lines = [title + (f" ({dropped} essential/diverged minima left out)" if dropped else "")]
    lines += [f"<sup>{name}: not enough varied finite points (n = {t.n})</sup>" if t.rho is None
              else f"<sup>{name}: Spearman ρ = {t.rho:.3f}, p {_p_relation(t)} ({t.method}), "
                   f"n = {t.n}</sup>" for name, t in (tests or {}).items()]
    # Lines hang from the top of the figure; the top margin grows with them.
    fig.update_layout(title={"text": "<br>".join(lines), "yref": "container", "y": 1,
                             "yanchor": "top", "pad": {"t": 12}},
                      yaxis_title=y_label, xaxis_title="segment length (death − birth)",
                      margin={**MARGIN, "t": MARGIN["t"] + 18 * (len(lines) - 1)}, height=460,
                      legend={"orientation": "h", "y": -0.18})
    return plain_numbers(fig)


def _p_relation(test: SpearmanTest) -> str:
    """``"= 0.333"``, or ``"≤ 0.0002"`` where a Monte Carlo test found nothing as extreme."""
    text = test.p_text()
    return text if text.startswith("≤") else f"= {text}"


def slice_bar_colors(
    x: np.ndarray, y: np.ndarray, barcode: Barcode, points: np.ndarray,
    minima: Sequence[int], radius: float = 0.12,
) -> list[str]:
    """Colours of a plane slice's grid bars: a grid minimum within ``radius`` (fraction of the
    plane's extent) of a trained minimum takes that minimum's colour, the others
    :data:`NEUTRAL`, so the slice obeys "same colour = same minimum"."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ix, iy = np.unravel_index(barcode.minima, (x.size, y.size))
    grid = np.column_stack([x[ix], y[iy]])
    extent = max(float(np.ptp(x)), float(np.ptp(y)), 1e-12)
    colors = []
    for g in grid:
        gaps = np.hypot(*(points - g).T) / extent
        near = int(np.argmin(gaps)) if gaps.size else -1
        colors.append(minimum_color(int(minima[near])) if near >= 0 and gaps[near] <= radius
                      else NEUTRAL)
    return colors


def slice_figure(
    x: np.ndarray,
    y: np.ndarray,
    loss: np.ndarray,
    barcode: Barcode,
    points: np.ndarray,
    minima: Sequence[int],
    kind: str = "heatmap",
    title: str = "Loss on the plane through three minima",
    point_loss: Sequence[float] | None = None,
    clip_quantile: float | None = 0.9,
    colors: Sequence[str] | None = None,
) -> go.Figure:
    """:func:`landscape_figure` of a plane slice plus the three trained minima it goes through.

    Args:
        x, y: ``(R,)`` plane coordinates; ``loss``: ``(R, R)`` indexed ``[i_x, i_y]``.
        barcode: the grid barcode of ``loss`` (flat indices; its minima/saddles are marked).
        points: ``(3, 2)`` plane coordinates of the trained minima; ``minima``: their indices.
        point_loss: ``(3,)`` the loss at those points (the surface view's heights; default:
            the nearest grid value).
        clip_quantile: the colour scale tops out at this quantile of the loss (None: the
            maximum), so the low-loss valleys keep their contrast next to a high corner.
        colors: one colour per grid bar (default :func:`slice_bar_colors`).

    The last trace is the trained minima (``"trained minima"``, :func:`minimum_color` each,
    diamond markers labelled with their index).
    """
    x, y, loss = np.asarray(x), np.asarray(y), np.asarray(loss)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if colors is None:
        colors = slice_bar_colors(x, y, barcode, points, minima)
    fig = landscape_figure((x, y), loss, barcode, kind=kind, title=title, colors=colors)
    finite = loss[np.isfinite(loss)]
    if clip_quantile is not None and finite.size:
        top = float(np.quantile(finite, clip_quantile))
        if top > finite.min():
            key = ("cmin", "cmax") if kind == "surface" else ("zmin", "zmax")
            fig.data[0].update({key[0]: float(finite.min()), key[1]: top})
            fig.data[0].colorbar = {"title": f"loss (≥ {top:.3g} clipped)"}
    ids = [int(m) for m in minima]
    marker_colors = minimum_colors(ids)
    labels = [f"minimum {m}" for m in ids]
    if kind == "surface":
        if point_loss is None:
            ix = np.abs(x[None, :] - points[:, :1]).argmin(axis=1)
            iy = np.abs(y[None, :] - points[:, 1:]).argmin(axis=1)
            point_loss = loss[ix, iy]
        fig.add_trace(go.Scatter3d(
            x=points[:, 0], y=points[:, 1], z=np.asarray(point_loss, dtype=np.float64),
            name="trained minima", mode="markers+text", text=labels, hovertext=labels,
            hoverinfo="text", marker={"color": marker_colors, "size": 7, "symbol": "diamond"}))
        fig.update_layout(scene={"xaxis_title": "u", "yaxis_title": "v", "zaxis_title": "loss"})
    else:
        fig.add_trace(go.Scatter(
            x=points[:, 0], y=points[:, 1], name="trained minima", mode="markers+text",
            text=labels, textposition="top center", hovertext=labels, hoverinfo="text",
            textfont={"color": "white", "size": 13},
            marker={"color": marker_colors, "size": 15, "symbol": "diamond",
                    "line": {"color": "white", "width": 2}}))
        fig.update_layout(xaxis_title="plane coordinate u", yaxis_title="plane coordinate v")
    fig.update_layout(legend={"orientation": "h", "y": 1.0, "x": 0, "yanchor": "bottom"},
                      margin={"l": 10, "r": 10, "t": 80, "b": 10}, height=500)
    return plain_numbers(fig)
