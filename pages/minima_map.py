"""Minima map: the trained minima and the paths between them, projected to 2-D or 3-D."""

import numpy as np
import streamlit as st

from lossbarcode import choices, plots
from lossbarcode.provenance import describe_config
from lossbarcode.store import ResultStore
from pages._exports import csv_text, downloads
from pages._notices import demo_notice, health_banner
from pages._pickers import picked_result
from pages._present import chart
from pages._runs import run_store
from pages._streamlit_shim import use_navigation
from pages._views import await_view, await_with_interim, background, view_future

use_navigation()

COLOR_BY = ("minimum", "train loss", "test error", "segment length")
LABELS = {"auto": "auto", "umap": "UMAP", "pca": "PCA"}
METHODS = {m: LABELS.get(m, m) for m in choices.MAP_METHODS}  # the first is the default


def compute_map(root: str, run_id: str, dim: int, method: str, seed: int):
    """Runs in the background worker, once per (run, dim, method, seed)."""
    from lossbarcode.maps import minima_map

    return minima_map(ResultStore(root), run_id, dim=dim, method=method, seed=seed)


st.title("Minima map")
st.caption(
    "Every trained minimum is a point in parameter space with thousands of dimensions. The "
    "map projects the minima together with the images of every path between them to 2-D or "
    "3-D — UMAP when there are enough points (it needs about 20), PCA otherwise — so you can "
    "see which minima sit close together and how the paths bend. Distances in a projection "
    "are only a sketch; the barcode is computed in the full space."
)

r = picked_result("Run")
demo_notice(r.run_id, views=True)
health_banner(r)

with st.sidebar:
    dims = {"2": 2, "3": 3}
    dim_default = st.query_params.get("dim", str(choices.MAP_DIM))
    dim = dims[st.radio("Dimensions", list(dims), horizontal=True,
                        index=list(dims).index(dim_default) if dim_default in dims else 0,
                        format_func=lambda d: f"{d}-D")]
    st.query_params["dim"] = str(dim)
    method = st.selectbox("Projection", list(METHODS), format_func=METHODS.get,
                          help="auto: UMAP when there are enough points (about 20), else PCA. "
                               "UMAP is imported and compiled on first use (15–35 s on a cold "
                               "machine; PCA is shown meanwhile); the map is then kept for "
                               "this run.")
    color_by = st.selectbox("Colour minima by", COLOR_BY,
                            help="'minimum' uses each minimum's own colour, as on every page.")
    seed = st.number_input("Projection seed", min_value=0, value=choices.MAP_SEED)

root = str(run_store(r.run_id).root)
retry = st.sidebar.button("Recompute", icon=":material/refresh:",
                          help="Try again after an error (e.g. after installing umap-learn).")
key = ("map", root, r.run_id, dim, method, int(seed))
# The interim map (PCA: ready in a moment) is shown while another method is computed.
quick = ("map", root, r.run_id, dim, choices.MAP_INTERIM, choices.MAP_SEED)
interim = None
if method != choices.MAP_INTERIM and view_future(key) is None:
    interim = background(quick, compute_map, *quick[1:])
future = background(key, compute_map, root, r.run_id, dim, method, int(seed), retry=retry)
if interim is None and method != choices.MAP_INTERIM and not future.done():
    interim = view_future(quick)
message = (f"Projecting {r.k} minima and their path images ({METHODS[method]})… the page "
           "updates by itself.")
if interim is not None:
    projection, provisional = await_with_interim(
        future, interim, message + " UMAP is imported and compiled on first use (15–35 s on "
        f"a cold machine): {METHODS[choices.MAP_INTERIM]} is shown until it is ready.")
else:
    projection, provisional = await_view(future, message), False
if projection is None:
    st.stop()

values = {
    "minimum": None,
    "train loss": r.train_loss,
    "test error": r.test_error,
    "segment length": r.segment_lengths(),
}[color_by]
if color_by == "test error" and not np.isfinite(r.test_error).any():
    st.info("This dataset has no test error (regression): colouring by minimum instead.",
            icon=":material/info:")
    values, color_by = None, "minimum"
highlight = st.session_state.get("current_minimum") \
    if st.session_state.get("current_minimum_run") == r.run_id else None

explained = getattr(projection, "explained", None)
about = f"method: **{projection.method.upper()}**"
if explained is not None and np.size(explained):
    shares = np.atleast_1d(np.asarray(explained, dtype=float))
    about += " · variance explained " + ", ".join(f"{100 * v:.1f}%" for v in shares)
if provisional:
    about += " (shown while UMAP is computed)"
elif method == "umap" and projection.method != "umap":
    about += " (UMAP was not possible here, so PCA was used)"
st.caption(f"`{r.run_id}` · {describe_config(r.config)}  \n{about} · a path drawn in a "
           "minimum's colour is the one on which that minimum's bar died")

axis = "UMAP" if projection.method == "umap" else "PC"
fig = plots.projection_figure(
    projection.minima_coords, values, projection.path_coords, projection.pairs,
    color_label=color_by,
    highlight=highlight, title=f"Minima and paths ({projection.method.upper()}, {dim}-D)",
    path_colors=plots.path_colors(r.barcode, projection.pairs),
    axis_titles=[f"{axis} {i + 1}" for i in range(dim)])
chart(fig, key="map", name=f"minima_map_{r.run_id}_{dim}d")

rows = [{"kind": "minimum", "minimum": i, "pair": "",
         **{f"c{d + 1}": float(xy[d]) for d in range(dim)}}
        for i, xy in enumerate(projection.minima_coords)]
for (i, j), path in zip(projection.pairs, projection.path_coords, strict=True):
    rows += [{"kind": "path image", "minimum": "", "pair": f"{i}-{j}",
              **{f"c{d + 1}": float(p[d]) for d in range(dim)}} for p in np.asarray(path)]
downloads([("Coordinates (CSV)", csv_text(rows), f"minima_map_{r.run_id}_{dim}d.csv",
            "text/csv")])
