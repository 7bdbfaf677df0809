"""Plotly figures of barcodes, persistence diagrams and landscapes.

Colours are tied to bars: bar ``i`` of a barcode is drawn in ``bar_colors(n)[i]`` everywhere —
its segment, its point in the diagram, its minimum on the landscape and its sublevel component —
so the same colour always means the same minimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from lossbarcode.topology import Barcode

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#393b79", "#ad494a", "#637939", "#7b4173", "#3182bd", "#e6550d", "#31a354",
)
BELOW_FILTER = "#9e9e9e"  # components whose bar was filtered out as too short
INFINITY_MARK = "∞"


def bar_colors(n: int) -> list[str]:
    """Colour of each of ``n`` bars (cycled palette, bar 0 = the global minimum)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _x_limits(barcode: Barcode, level: float | None) -> tuple[float, float]:
    finite = barcode.deaths[np.isfinite(barcode.deaths)]
    points = [barcode.births.min(), *(finite if finite.size else [barcode.births.max()])]
    if level is not None:
        points.append(level)
    lo, hi = float(min(points)), float(max(points))
    pad = 0.08 * (hi - lo) if hi > lo else 1.0
    return lo - pad, hi + pad


def _alive(barcode: Barcode, level: float | None) -> np.ndarray:
    if level is None:
        return np.ones(len(barcode), dtype=bool)
    return (barcode.births <= level) & (barcode.deaths > level)


def barcode_figure(
    barcode: Barcode,
    level: float | None = None,
    title: str = "Loss barcode",
    labels: Sequence[str] | None = None,
    xaxis_title: str = "loss",
) -> go.Figure:
    """Horizontal bars ``[birth, death)``, one per minimum, the global minimum on top.

    Essential bars run to the right edge and end in an arrow marked ``∞``. With ``level``, a
    vertical line marks it and bars not alive at that level are faded.
    """
    n = len(barcode)
    lo, hi = _x_limits(barcode, level)
    essential = np.isinf(barcode.deaths)
    ends = np.where(essential, hi, barcode.deaths)
    names = list(labels) if labels is not None else [f"minimum {m}" for m in barcode.minima]
    lengths = barcode.lengths()
    hover = [
        f"{names[i]}<br>birth {barcode.births[i]:.6g}<br>death "
        + (INFINITY_MARK if essential[i] else f"{barcode.deaths[i]:.6g}")
        + ("" if essential[i] else f"<br>length {lengths[i]:.6g}")
        for i in range(n)
    ]
    rows = np.arange(n)
    fig = go.Figure(
        go.Bar(
            y=rows,
            x=ends - barcode.births,
            base=barcode.births,
            orientation="h",
            marker={"color": bar_colors(n), "opacity": np.where(_alive(barcode, level), 1, 0.3)},
            hovertext=hover,
            hoverinfo="text",
            width=0.7,
            showlegend=False,
        )
    )
    if essential.any():
        fig.add_trace(go.Scatter(
            x=np.full(essential.sum(), hi), y=rows[essential], mode="markers+text",
            marker={"symbol": "arrow-right", "size": 12, "color": "#444"},
            text=[INFINITY_MARK] * int(essential.sum()), textposition="middle left",
            hoverinfo="skip", showlegend=False,
        ))
    if level is not None:
        fig.add_vline(x=level, line={"color": "#222", "dash": "dash", "width": 1.5},
                      annotation_text=f"c = {level:.4g}", annotation_position="top")
    fig.update_layout(
        title=title, xaxis={"title": xaxis_title, "range": [lo, hi]},
        yaxis={"title": "bar (by birth)", "autorange": "reversed",
               "showticklabels": n <= 40, "tickmode": "linear" if n <= 40 else "auto"},
        bargap=0.1, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        height=max(260, min(700, 40 + 14 * n)),
    )
    return fig


def diagram_figure(
    barcode: Barcode, level: float | None = None, title: str = "Persistence diagram"
) -> go.Figure:
    """Birth vs death, one point per bar; essential bars sit on a dashed ``∞`` line on top.

    With ``level``, the region ``birth <= level < death`` (bars alive at that level) is shaded.
    """
    lo, hi = _x_limits(barcode, level)
    essential = np.isinf(barcode.deaths)
    y = np.where(essential, hi, barcode.deaths)
    colors = np.array(bar_colors(len(barcode)), dtype=object)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", hoverinfo="skip",
                             line={"color": "#888", "width": 1}, showlegend=False))
    fig.add_hline(y=hi, line={"color": "#888", "dash": "dash", "width": 1},
                  annotation_text=INFINITY_MARK, annotation_position="left")
    if level is not None:
        fig.add_shape(type="rect", x0=lo, x1=level, y0=level, y1=hi, line={"width": 0},
                      fillcolor="rgba(100,100,100,0.12)", layer="below")
    fig.add_trace(go.Scatter(
        x=barcode.births, y=y, mode="markers",
        marker={"color": colors, "size": 9, "line": {"color": "white", "width": 1},
                "symbol": np.where(essential, "triangle-up", "circle")},
        customdata=np.column_stack([barcode.minima, barcode.lengths()]),
        hovertemplate="minimum %{customdata[0]}<br>birth %{x:.6g}<br>death %{y:.6g}"
                      "<br>length %{customdata[1]:.6g}<extra></extra>",
        showlegend=False,
    ))
    fig.update_layout(
        title=title, xaxis={"title": "birth", "range": [lo, hi]},
        yaxis={"title": "death", "range": [lo, hi + 0.04 * (hi - lo)], "scaleanchor": "x"},
        margin={"l": 10, "r": 10, "t": 50, "b": 10}, height=420,
    )
    return fig


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
) -> go.Figure:
    """A 1-D curve or a 2-D heatmap/surface with minima (dots, bar colours) and merge saddles (x).

    Args:
        axes: ``d`` coordinate vectors (``d`` = 1 or 2) of the grid ``values`` was computed on.
        values: shape ``(len(axes[0]), ...)``, indexed ``values[i_x, i_y]``.
        barcode: the grid barcode of ``values`` (flat indices).
        kind: ``"heatmap"`` or ``"surface"`` (2-D only).
        level: draw the threshold (a horizontal line in 1-D, a contour in 2-D).
    """
    if values.ndim not in (1, 2) or len(axes) != values.ndim:
        raise ValueError("landscape_figure draws 1-D or 2-D grids with one axis per dimension")
    if kind not in ("heatmap", "surface"):
        raise ValueError(f"kind must be 'heatmap' or 'surface', got {kind!r}")
    colors = bar_colors(len(barcode))
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
        fig.add_trace(go.Scatter(x=axes[0], y=values, mode="lines", line={"color": "#555"},
                                 name="f", hoverinfo="x+y"))
        fig.add_trace(go.Scatter(x=min_xy[0], y=barcode.births, mode="markers", name="minima",
                                 marker={"color": colors, "size": 11}, hovertext=min_hover,
                                 hoverinfo="text"))
        fig.add_trace(go.Scatter(x=sad_xy[0], y=barcode.deaths[finite], mode="markers",
                                 name="merge saddles", hovertext=sad_hover, hoverinfo="text",
                                 marker={"symbol": "x", "size": 11, "color": "#222"}))
        if level is not None:
            fig.add_hline(y=level, line={"color": "#222", "dash": "dash", "width": 1.5})
        fig.update_layout(xaxis_title="x", yaxis_title="f(x)")
    elif kind == "heatmap":
        fig.add_trace(go.Heatmap(x=axes[0], y=axes[1], z=values.T, colorscale="Viridis",
                                 colorbar={"title": "f"}, hovertemplate="x %{x:.3f}<br>y %{y:.3f}"
                                 "<br>f %{z:.5g}<extra></extra>"))
        if level is not None:
            fig.add_trace(go.Contour(
                x=axes[0], y=axes[1], z=values.T, showscale=False, hoverinfo="skip",
                contours={"start": level, "end": level, "size": 1, "coloring": "none"},
                line={"color": "white", "width": 2, "dash": "dash"}, name=f"f = {level:.4g}"))
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
                                   marker={"symbol": "x", "size": 5, "color": "#222"}))
        fig.update_layout(scene={"xaxis_title": "x", "yaxis_title": "y", "zaxis_title": "f"})
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 50, "b": 10}, height=460,
                      legend={"orientation": "h", "y": -0.12})
    return fig


def components_figure(
    axes: Sequence[np.ndarray],
    values: np.ndarray,
    components: np.ndarray,
    barcode: Barcode,
    level: float,
    title: str | None = None,
) -> go.Figure:
    """The sublevel set ``{f <= level}`` coloured by connected component.

    Args:
        axes, values: the grid, as in :func:`landscape_figure`.
        components: output of :func:`lossbarcode.sublevel_components` at ``level`` (same shape
            as ``values``; -1 above the level, else the flat index of the component's minimum).
        barcode: the grid barcode (possibly filtered); each component takes its bar's colour,
            grey when its bar was filtered out.
    """
    bar = np.where(components >= 0, _bar_of_vertex(barcode, values.size)[components], -2)
    n = len(barcode)
    count = len(np.unique(components[components >= 0]))
    title = title or f"Sublevel set f ≤ {level:.4g}: {count} component{'s' * (count != 1)}"
    palette = [*bar_colors(n), BELOW_FILTER]
    category = np.where(bar == -1, n, bar).astype(float)  # -1: bar filtered out -> grey
    category[bar == -2] = np.nan  # above the level: not drawn
    fig = go.Figure()
    if values.ndim == 1:
        fig.add_trace(go.Scatter(x=axes[0], y=values, mode="lines", line={"color": "#bbb"},
                                 hoverinfo="skip", showlegend=False))
        below = ~np.isnan(category)
        fig.add_trace(go.Scatter(
            x=axes[0][below], y=values[below], mode="markers", showlegend=False,
            marker={"color": [palette[int(c)] for c in category[below]], "size": 4},
            hoverinfo="skip"))
        fig.add_hline(y=level, line={"color": "#222", "dash": "dash", "width": 1.5})
        fig.update_layout(xaxis_title="x", yaxis_title="f(x)")
    else:
        # Discrete colours: category i occupies [i, i + 1) of the colour scale.
        m = n + 1
        scale = []
        for i, color in enumerate(palette):
            scale += [[i / m, color], [(i + 1) / m, color]]
        fig.add_trace(go.Heatmap(x=axes[0], y=axes[1], z=(category + 0.5).T, zmin=0, zmax=m,
                                 colorscale=scale, showscale=False, hoverinfo="skip"))
        fig.update_layout(xaxis={"title": "x", "range": [axes[0][0], axes[0][-1]]},
                          yaxis={"title": "y", "scaleanchor": "x",
                                 "range": [axes[1][0], axes[1][-1]]},
                          plot_bgcolor="rgba(0,0,0,0)")
    fig.update_layout(title=title, margin={"l": 10, "r": 10, "t": 50, "b": 10}, height=460)
    return fig
