"""Toy landscapes: the barcode of a classic test function, for teaching."""

import numpy as np
import streamlit as st

from lossbarcode import grid_barcode, plots, to_score, toys
from lossbarcode.animation import level_range, sublevel_animation
from pages._present import chart, columns
from pages._streamlit_shim import use_navigation

use_navigation()

RESOLUTIONS = [51, 101, 151, 201, 301, 401]
DEFAULT_TOY = "three_hump_camel"


@st.cache_data(show_spinner=False, max_entries=32)
def landscape(name: str, resolution: int, connectivity: str):
    """Grid values and their exact barcode; cached by the three small keys."""
    axes, values = toys.get(name).grid(resolution)
    return axes, values, grid_barcode(values, connectivity)


@st.cache_data(show_spinner=False, max_entries=32)
def animation(name: str, resolution: int, connectivity: str, min_length: float):
    """The animated sublevel-set figure: every level precomputed, scrubbed in the browser."""
    axes, values, full_barcode = landscape(name, resolution, connectivity)
    return sublevel_animation(axes, values, full_barcode.filter(min_length),
                              connectivity=connectivity)


st.title("Toy landscapes")
st.caption(
    "Press ▶ or drag the slider in the figure to raise the level c (it runs in your browser, "
    "also in fullscreen): components of the sublevel set {f ≤ c} are born at minima and merge "
    "at saddles. Each minimum's bar runs from its value to the level where it joins a deeper "
    "minimum's component — the barrier gradient descent would have to climb to escape it."
)

if "toy" not in st.session_state:  # the toy named in the URL (?toy=...) or chosen before
    wanted = st.query_params.get("toy") or st.session_state.get("current_toy", DEFAULT_TOY)
    st.session_state.toy = wanted if wanted in toys.TOYS else DEFAULT_TOY

with st.sidebar:
    name = st.selectbox("Function", list(toys.TOYS), key="toy",
                        format_func=lambda n: toys.TOYS[n].title)
    st.query_params["toy"] = st.session_state.current_toy = name
    toy = toys.get(name)
    st.caption(toy.description)
    resolution = st.select_slider("Grid points per axis", RESOLUTIONS, value=201)
    connectivity = st.radio(
        "Grid neighbours", ["full", "axis"],
        format_func=lambda c: {"full": "all (8 in 2-D)", "axis": "axis only (4 in 2-D)"}[c],
        help="Which grid points count as adjacent when components are joined.",
    )
    view = st.radio("Landscape view", ["heatmap", "surface"], horizontal=True,
                    disabled=toy.dim == 1)

axes, values, full_barcode = landscape(name, resolution, connectivity)

with st.sidebar:
    min_length = st.number_input(
        "Hide bars shorter than", min_value=0.0, value=0.0, step=0.01, format="%.4f",
        help="Grids add tiny bars from discretisation; this filters them from every view.",
    )
barcode = full_barcode.filter(min_length)
vmin, top = level_range(values, barcode)  # the animation's levels too

score, n_finite = to_score(barcode), int(np.isfinite(barcode.deaths).sum())
cols = columns(3)
cols[0].metric("Minima (bars)", len(barcode))
cols[1].metric("Longest finite bar", f"{barcode.lengths()[np.isfinite(barcode.deaths)].max():.4g}"
               if n_finite else "—")
cols[2].metric("TO-score (L2 of lengths)", f"{score:.4g}",
               help="Square root of the sum of squared finite bar lengths (arXiv:2012.15834).")

chart(animation(name, resolution, connectivity, min_length), key="animation",
      name=f"{name}_sublevel_sets")

st.subheader("The landscape at one level")
slider, count = columns([3, 1], stack=False)
level = slider.slider("Level c", min_value=vmin, max_value=top, value=vmin + 0.5 * (top - vmin),
                      step=(top - vmin) / 400, format="%.4f",
                      help="For these static views; the animation above has its own slider.")
count.metric("Components at c",
             int(((barcode.births <= level) & (barcode.deaths > level)).sum()))
left, right = columns(2)
chart(plots.landscape_figure(axes, values, barcode, kind=view, level=level, title=toy.title),
      key="landscape", name=f"{name}_landscape", container=left)
chart(plots.diagram_figure(barcode, level=level), key="diagram", name=f"{name}_diagram",
      container=right)
chart(plots.barcode_figure(barcode, level=level), key="barcode", name=f"{name}_barcode")

with st.expander("How to read this"):
    st.markdown(
        "- **Barcode**: one bar per local minimum, from its value (birth) to the level where its "
        "component merges into one with a lower minimum (death). The lowest minimum never dies "
        "(∞). Bars alive at the level c are drawn solid.\n"
        "- **Persistence diagram**: the same bars as points (birth, death); far from the diagonal "
        "means a deep trap.\n"
        "- **TO-score**: the L2 norm of the finite bar lengths; it shrinks when every minimum can "
        "escape to a lower one over a low barrier.\n"
        "- Bars come from the exact H0 of the grid graph (union-find with the elder rule); ties "
        "are broken by grid index, so equal minima (Himmelblau) still give one infinite bar."
    )
