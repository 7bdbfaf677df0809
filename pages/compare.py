"""Compare: two runs side by side, with the distances between their barcodes."""

import numpy as np
import streamlit as st

from lossbarcode import barcode_distance, plots
from lossbarcode.provenance import describe_config
from pages._exports import downloads, json_text
from pages._pickers import run_picker
from pages._present import chart, columns
from pages._runs import result, run_health_of, run_store
from pages._streamlit_shim import use_navigation

use_navigation()


@st.cache_data(show_spinner=False, max_entries=128)
def distances(root: str, run_a: str, run_b: str) -> dict[str, float]:
    """Bottleneck and Wasserstein distances between two stored barcodes (cached by run ids)."""
    a, b = result(run_a), result(run_b)
    return {metric: barcode_distance(a.barcode, b.barcode, metric)
            for metric in ("bottleneck", "wasserstein")}


st.title("Compare two runs")
st.caption("Two barcodes on the same loss axis, their persistence diagrams, and how far apart "
           "they are: bottleneck (the largest move needed to match the bars) and Wasserstein "
           "(the total move).")

left, right = columns(2, stack=False)  # the two pickers
with left:
    run_a = run_picker("Run A", param="run")
with right:
    run_b = run_picker("Run B", param="run2", default_index=1)
if run_a is None or run_b is None:
    st.stop()
a, b = result(run_a), result(run_b)
unusable = [run for run, r in ((run_a, a), (run_b, b)) if r is None]
if unusable:  # listed but unreadable (edited, damaged, a link): say so, never crash
    st.warning("Left out, unusable: " + ", ".join(f"`{run}`" for run in unusable)
               + " (see `lossbarcode list` for why); pick another run.",
               icon=":material/warning:")
    st.stop()
if run_a == run_b:
    st.info("Both sides show the same run: pick another Run B.", icon=":material/info:")

x_range = plots.barcode_limits(a.barcode, b.barcode)
d = distances(str(run_store(run_a).root), run_a, run_b)
cols = columns(4)
cols[0].metric(f"TO-score A ({a.config.score_variant})", f"{a.score:.4g}")
cols[1].metric(f"TO-score B ({b.config.score_variant})", f"{b.score:.4g}",
               delta=f"{b.score - a.score:+.3g} vs A", delta_color="off")
for col, metric in zip(cols[2:], ("bottleneck", "wasserstein"), strict=True):
    value = d[metric]
    col.metric(f"{metric.capitalize()} distance", "∞" if np.isinf(value) else f"{value:.4g}",
               help="∞ when the runs have different numbers of essential (never-dying) bars."
               if metric == "bottleneck" else "Order 1, Euclidean ground metric (persim).")
if a.config.score_variant != b.config.score_variant:
    st.warning("The two runs use different TO-score variants; compare the barcodes, not the "
               "scores.", icon=":material/warning:")

for side, (name, r) in zip(columns(2), (("A", a), ("B", b)), strict=True):
    with side:
        st.caption(f"**{name}** · `{r.run_id}` · {describe_config(r.config)}")
        found = run_health_of(r)
        if not found.healthy:
            (st.error if found.broken else st.warning)(
                f"Run {name}: {found.summary()}. Open it on Explore for details.",
                icon=":material/report:" if found.broken else ":material/warning:")
        colors = plots.minimum_colors(r.barcode.minima)
        chart(plots.barcode_figure(r.barcode, colors=colors, x_range=x_range,
                                   labels=[f"minimum {m}" for m in r.barcode.minima],
                                   title=f"Barcode {name}", xaxis_title="training loss"),
              key=f"barcode_{name}", name=f"barcode_{r.run_id}")
        chart(plots.diagram_figure(r.barcode, colors=colors, x_range=x_range,
                                   title=f"Persistence diagram {name}"),
              key=f"diagram_{name}", name=f"diagram_{r.run_id}")

differences = [
    {"setting": key, "A": str(value), "B": str(getattr(b.config, key))}
    for key, value in a.config.to_dict().items() if value != getattr(b.config, key)
]
with st.expander(f"Settings that differ ({len(differences)})", expanded=bool(differences)):
    if differences:
        st.dataframe(differences, hide_index=True, width="stretch")
    else:
        st.write("The two runs have the same settings.")

report = {
    "run_a": run_a, "run_b": run_b,
    "to_score_a": a.score, "to_score_b": b.score,
    "variant_a": a.config.score_variant, "variant_b": b.config.score_variant,
    **{f"{k}_distance": (None if np.isinf(v) else v) for k, v in d.items()},
    "barcode_a": a.barcode.to_dict(), "barcode_b": b.barcode.to_dict(),
}
downloads([("Comparison (JSON)", json_text(report), f"compare_{run_a}_{run_b}.json",
            "application/json")])
