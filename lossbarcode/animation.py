"""An animated sublevel-set figure: scrubbing the level runs in the browser, not on the server.

:func:`sublevel_animation` precomputes the components of ``{f <= c}`` at many levels c (one
:func:`lossbarcode.topology.sublevel_sweep`) and stores one plotly frame per level: the
component map next to the barcode with a moving level line. The slider and the play/pause
buttons are part of the figure (``layout.sliders``, ``layout.updatemenus``), so plotly.js
switches frames itself — no server round trip — and they stay visible in fullscreen.

Frames are kept light: the component map is a small-int grid of at most
:data:`ANIMATION_POINTS` points per axis with one shared discrete colour scale, and each frame
updates only the traces that move (the map, the bars' opacity, the level line).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lossbarcode.plots import (
    BELOW_FILTER,
    LEVEL_COLOR,
    MARGIN,
    _bar_of_vertex,
    bar_colors,
    plain_numbers,
)
from lossbarcode.topology import Barcode, grid_barcode, sublevel_sweep

ANIMATION_FRAMES = 60  # levels between the minimum and a bit above the top finite death
ANIMATION_POINTS = 101  # grid points per axis at most in the animated component map
FADED = 0.3  # opacity of bars not alive at the level
ABOVE = "rgba(0,0,0,0)"  # points above the level are not drawn


def level_range(values: np.ndarray, barcode: Barcode) -> tuple[float, float]:
    """The levels worth showing: from the lowest value to 15 % above the highest finite death
    (at most the highest value; the median value when no bar dies)."""
    vmin, vmax = float(np.min(values)), float(np.max(values))
    finite = barcode.deaths[np.isfinite(barcode.deaths)]
    top = float(finite.max()) if finite.size else float(np.median(values))
    return vmin, min(vmax, top + 0.15 * (top - vmin))


def sublevel_animation(
    axes: Sequence[np.ndarray],
    values: np.ndarray,
    barcode: Barcode,
    levels: int | Sequence[float] | np.ndarray = ANIMATION_FRAMES,
    connectivity: str = "full",
    colors: Sequence[str] | None = None,
    max_points: int = ANIMATION_POINTS,
    start: int | None = None,
    frame_ms: int = 80,
) -> go.Figure:
    """The sublevel set ``{f <= c}`` by component, and the barcode, one frame per level c.

    Args:
        axes, values: a 1-D or 2-D grid, as in :func:`lossbarcode.plots.landscape_figure`
            (``values`` of shape ``(len(axes[0]), ...)``).
        barcode: the grid barcode of ``values`` (possibly filtered): each component takes its
            bar's colour, :data:`~lossbarcode.plots.BELOW_FILTER` grey when its bar was
            filtered out.
        levels: ``(L,)`` levels, one frame each (sorted ascending here), or their number,
            evenly spaced over :func:`level_range`.
        connectivity: the grid neighbours the barcode was computed with.
        colors: one colour per bar (default :func:`lossbarcode.plots.bar_colors`).
        max_points: the component map keeps every k-th grid point so that it has at most this
            many per axis (its components are those of the full grid).
        start: index of the frame shown first (default: the middle one).
        frame_ms: milliseconds per frame when playing.

    Traces: 0 the component map (a heatmap of bar indices in 2-D, coloured markers on the
    curve in 1-D), 1 the bars, 2 the level line on the barcode, then (1-D) the level line on
    the curve and the curve, or (2-D) the minima. Frame ``i`` is named ``str(i)`` and updates
    traces 0-2 (and the curve's level line); ``frame.layout.meta`` holds its level.
    """
    if values.ndim not in (1, 2) or len(axes) != values.ndim:
        raise ValueError("sublevel_animation draws 1-D or 2-D grids with one axis per dimension")
    if isinstance(levels, int | np.integer):
        levels = np.linspace(*level_range(values, barcode), int(levels))
    levels = np.sort(np.asarray(levels, dtype=np.float64).reshape(-1))
    if levels.size == 0:
        raise ValueError("levels must hold at least one level")
    if int(max_points) != max_points or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2, got {max_points}")
    n = len(barcode)
    colors = list(colors) if colors is not None else bar_colors(n)
    if len(colors) != n:
        raise ValueError(f"colors must have one entry per bar ({n}), got {len(colors)}")
    start = levels.size // 2 if start is None else int(start)
    if not 0 <= start < levels.size:
        raise ValueError(f"start must index a frame in [0, {levels.size}), got {start}")

    stride = max(1, -(-(max(values.shape) - 1) // (int(max_points) - 1)))
    labels = sublevel_sweep(values, levels, connectivity, stride)  # (L, *reduced shape)
    bar = np.where(labels >= 0, _bar_of_vertex(barcode, values.size)[np.maximum(labels, 0)], -2)
    # Category per point: its bar, n for a filtered-out bar, n + 1 above the level.
    dtype = np.uint8 if n + 2 <= 256 else np.uint16
    category = np.where(bar >= 0, bar, np.where(bar == -1, n, n + 1)).astype(dtype)
    # Components of the full grid (the reduced map can miss small ones): one per bar alive.
    every = grid_barcode(values, connectivity)
    counts = [int(((every.births <= c) & (every.deaths > c)).sum()) for c in levels]
    palette = [*colors, BELOW_FILTER, ABOVE]
    m = len(palette)
    scale = [[(i + edge) / m, color] for i, color in enumerate(palette) for edge in (0, 1)]

    lo = float(min(barcode.births.min() if n else levels[0], levels[0]))
    hi = float(levels[-1])
    pad = 0.04 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    births = barcode.births
    ends = np.minimum(barcode.deaths, hi)
    rows = np.arange(n)

    def opacity(level: float) -> np.ndarray:
        return np.where((births <= level) & (barcode.deaths > level), 1.0, FADED)

    def level_line(level: float) -> dict:
        return {"x": [level, level], "y": [-0.5, max(n, 1) - 0.5]}

    reduced = [np.asarray(a)[::stride] for a in axes]
    curve = values[::stride] if values.ndim == 1 else None

    def component_map(i: int) -> go.BaseTraceType:
        if curve is None:
            return go.Heatmap(z=category[i].T)
        return go.Scatter(marker={"color": category[i]})

    def curve_line(level: float) -> dict:
        return {"x": [float(reduced[0][0]), float(reduced[0][-1])], "y": [level, level]}

    def title(i: int) -> str:
        return (f"Sublevel set f ≤ {levels[i]:.4g}: {counts[i]} "
                f"component{'s' * (counts[i] != 1)}")

    fig = make_subplots(rows=1, cols=2, column_widths=[0.56, 0.44], horizontal_spacing=0.1)
    if curve is None:
        # zsmooth="fast": one pixel per cell, scaled up, is the cheapest heatmap to redraw.
        fig.add_trace(go.Heatmap(x=reduced[0], y=reduced[1], z=category[start].T, zmin=-0.5,
                                 zmax=m - 0.5, colorscale=scale, showscale=False,
                                 zsmooth="fast", hoverinfo="skip", name="components"),
                      row=1, col=1)
    else:
        fig.add_trace(go.Scatter(x=reduced[0], y=curve, mode="markers", name="components",
                                 marker={"color": category[start], "colorscale": scale,
                                         "cmin": -0.5, "cmax": m - 0.5, "size": 5},
                                 hoverinfo="skip", showlegend=False), row=1, col=1)
    fig.add_trace(go.Bar(y=rows, x=ends - births, base=births, orientation="h", width=0.7,
                         marker={"color": colors, "opacity": opacity(levels[start])},
                         hovertext=[f"minimum {i}: birth {b:.4g}, death {d:.4g}"
                                    for i, b, d in zip(rows, births, barcode.deaths,
                                                       strict=True)],
                         hoverinfo="text", showlegend=False, name="bars"), row=1, col=2)
    fig.add_trace(go.Scatter(**level_line(levels[start]), mode="lines", hoverinfo="skip",
                             line={"color": LEVEL_COLOR, "dash": "dash", "width": 2},
                             showlegend=False, name="level"), row=1, col=2)
    animated = [0, 1, 2]
    if curve is None:
        minima = np.unravel_index(barcode.minima, values.shape)
        fig.add_trace(go.Scatter(
            x=np.asarray(axes[0])[minima[0]], y=np.asarray(axes[1])[minima[1]], mode="markers",
            marker={"color": colors, "size": 9, "line": {"color": "white", "width": 1.5}},
            hovertext=[f"minimum {i}: f = {b:.4g}" for i, b in zip(rows, births, strict=True)],
            hoverinfo="text", showlegend=False, name="minima"), row=1, col=1)
        fig.update_xaxes(title_text="x", range=[reduced[0][0], reduced[0][-1]],
                         constrain="domain", row=1, col=1)
        fig.update_yaxes(title_text="y", range=[reduced[1][0], reduced[1][-1]],
                         scaleanchor="x", constrain="domain", row=1, col=1)
    else:
        fig.add_trace(go.Scatter(**curve_line(levels[start]), mode="lines", hoverinfo="skip",
                                 line={"color": LEVEL_COLOR, "dash": "dash", "width": 2},
                                 showlegend=False, name="level on f"), row=1, col=1)
        fig.add_trace(go.Scatter(x=axes[0], y=values, mode="lines", hoverinfo="x+y",
                                 line={"color": "#bbb", "width": 1}, showlegend=False,
                                 name="f"), row=1, col=1)
        animated.append(3)
        fig.update_xaxes(title_text="x", row=1, col=1)
        fig.update_yaxes(title_text="f(x)", row=1, col=1)
    # The bars' order is named under them: a title beside them, in the gap between the plots,
    # ran into the map on a phone and in presentation mode.
    fig.update_xaxes(title_text="level c (bars by birth)", range=[lo, hi], row=1, col=2)
    fig.update_yaxes(autorange="reversed", showticklabels=n <= 40, dtick=1, row=1, col=2)

    frames = []
    for i, level in enumerate(levels):
        data = [component_map(i), go.Bar(marker={"opacity": opacity(level)}),
                go.Scatter(**level_line(level))]
        if curve is not None:
            data.append(go.Scatter(**curve_line(level)))
        frames.append(go.Frame(name=str(i), data=data, traces=animated,
                               layout={"title": {"text": title(i)}, "meta": float(level)}))
    fig.frames = frames

    def jump(name: str | None, duration: int, redraw: bool = True) -> list:
        return [[name], {"mode": "immediate", "frame": {"duration": duration, "redraw": redraw},
                         "transition": {"duration": 0}, "fromcurrent": True}]

    fig.update_layout(
        title=title(start), meta=float(levels[start]), height=620, plot_bgcolor="rgba(0,0,0,0)",
        margin={**MARGIN, "b": 120},
        # The buttons on a row of their own, the slider (and its "level c =" label) under
        # them across the width: beside each other the Pause button covered the label.
        updatemenus=[{
            "type": "buttons", "direction": "left", "showactive": False,
            "x": 0, "xanchor": "left", "y": -0.1, "yanchor": "top", "pad": {"t": 10, "r": 10},
            "buttons": [
                {"label": "▶ Play", "method": "animate",
                 "args": [None, jump(None, frame_ms)[1]]},
                {"label": "❚❚ Pause", "method": "animate", "args": jump(None, 0, False)},
            ],
        }],
        sliders=[{
            "active": start, "x": 0, "len": 1, "y": -0.2, "yanchor": "top",
            "pad": {"t": 10}, "ticklen": 0, "font": {"color": ABOVE},  # unlabelled ticks
            "currentvalue": {"prefix": "level c = ", "font": {"color": LEVEL_COLOR}},
            "steps": [{"label": f"{level:.4g}", "method": "animate",
                       "args": jump(str(i), 0)} for i, level in enumerate(levels)],
        }],
    )
    return plain_numbers(fig)
