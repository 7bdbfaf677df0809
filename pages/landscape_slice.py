"""Landscape slice: the loss on the plane through three trained minima, and its barcode."""

import numpy as np
import streamlit as st

from lossbarcode import choices, plots, to_score
from lossbarcode.provenance import describe_config
from lossbarcode.slices import default_minima
from lossbarcode.store import ResultStore
from pages._exports import csv_text, downloads, json_text
from pages._notices import demo_notice, health_banner
from pages._pickers import picked_result
from pages._present import chart, columns
from pages._runs import run_store
from pages._streamlit_shim import use_navigation
from pages._views import await_view, background

use_navigation()


def compute_slice(root: str, run_id: str, minima: tuple[int, int, int], resolution: int,
                  margin: float):
    """Runs in the background worker, once per (run, minima, resolution, margin)."""
    from lossbarcode.slices import result_slice

    return result_slice(ResultStore(root), run_id, minima=minima, resolution=resolution,
                        margin=margin)


st.title("Landscape slice")
st.caption(
    "The training loss on the plane through three trained minima, evaluated on a grid in one "
    "batch. The grid's own barcode (exact H0 of the grid) shows the traps *within this plane*; "
    "paths that leave the plane can only do better, so its bars are upper bounds on the run's."
)

r = picked_result("Run")
demo_notice(r.run_id, views=True)
health_banner(r)
valid = [i for i in range(r.k) if not r.diverged[i]]
if len(valid) < 3:
    st.warning(f"This run has {len(valid)} converged minima; a plane needs three. Run it with "
               "K ≥ 3 on the Explore page.", icon=":material/warning:")
    st.stop()

wanted = []
for part in st.query_params.get("minima", "").split(","):
    if part.strip().isdigit() and int(part) in valid and int(part) not in wanted:
        wanted.append(int(part))
key = f"slice_minima_{r.run_id}"
if key not in st.session_state:
    st.session_state[key] = wanted[:3] if len(wanted) == 3 else list(default_minima(r.diverged))
with st.sidebar:
    chosen = st.multiselect("Three minima", valid, key=key, max_selections=3,
                            format_func=lambda m: f"minimum {m}")
    resolution = st.select_slider("Grid points per axis", choices.SLICE_RESOLUTIONS,
                                  value=choices.SLICE_RESOLUTION)
    margin = st.slider("Margin around the minima", 0.0, 1.0, choices.SLICE_MARGIN, 0.05,
                       help="How far the grid extends beyond the triangle of the minima, as a "
                            "fraction of its size.")
    view = st.radio("View", ["heatmap", "surface"], horizontal=True)
    clip = st.toggle("Clip colours at the 90th percentile", value=True,
                     help="Keeps the contrast of the low-loss valleys when a corner of the "
                          "plane has a much higher loss.")
if len(chosen) != 3:
    st.info("Choose exactly three minima in the sidebar.", icon=":material/info:")
    st.stop()
minima = tuple(sorted(int(m) for m in chosen))
st.query_params["minima"] = ",".join(map(str, minima))

root = str(run_store(r.run_id).root)
future = background(("slice", root, r.run_id, minima, resolution, float(margin)),
                    compute_slice, root, r.run_id, minima, resolution, float(margin))
grid = await_view(future, f"Evaluating the loss on a {resolution}×{resolution} grid through "
                          f"minima {minima}… the page updates by itself.")
if grid is None:
    st.stop()

loss_range = float(np.nanmax(grid.loss) - np.nanmin(grid.loss))
with st.sidebar:
    min_length = st.number_input(
        "Hide grid bars shorter than", min_value=0.0, value=0.0, step=max(loss_range / 1000,
                                                                          1e-6),
        format="%.5f", help="Grids add tiny bars from discretisation; this filters them.")
bars = grid.barcode.filter(min_length)
colors = plots.slice_bar_colors(grid.x, grid.y, bars, grid.points, grid.minima)
st.caption(f"`{r.run_id}` · {describe_config(r.config)}  \nGrid minima near a trained "
           "minimum take its colour; grey ones exist only in this plane.")
cols = columns(3)
cols[0].metric("Grid minima (bars)", len(bars))
cols[1].metric("Grid TO-score (l2)", f"{to_score(bars):.4g}",
               help="L2 norm of the grid's finite bar lengths, for this plane only.")
cols[2].metric("Loss range on the plane", f"{loss_range:.4g}")
left, right = columns([3, 2])
with left:
    chart(plots.slice_figure(grid.x, grid.y, grid.loss, bars, grid.points, grid.minima,
                             kind=view, point_loss=grid.point_loss, colors=colors,
                             clip_quantile=0.9 if clip else None,
                             title=f"Training loss on the plane through minima {minima}"),
          key="slice", name=f"slice_{r.run_id}_{'_'.join(map(str, minima))}")
with right:
    chart(plots.barcode_figure(bars, title="Grid barcode of the slice",
                               xaxis_title="training loss", colors=colors),
          key="slice_barcode", name=f"slice_barcode_{r.run_id}")
rows = [{"u": float(u), "v": float(v), "loss": float(grid.loss[i, j])}
        for i, u in enumerate(grid.x) for j, v in enumerate(grid.y)]
downloads([
    ("Grid (CSV)", csv_text(rows), f"slice_{r.run_id}.csv", "text/csv"),
    ("Grid barcode (JSON)", json_text({"run_id": r.run_id, "minima": list(minima),
                                       "points": np.asarray(grid.points).tolist(),
                                       "barcode": bars.to_dict()}),
     f"slice_barcode_{r.run_id}.json", "application/json"),
])
