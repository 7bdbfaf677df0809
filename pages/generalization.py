"""Generalization: does a minimum's segment length relate to its test error?"""

import numpy as np
import streamlit as st

from lossbarcode import plots
from lossbarcode.experiment import generalization_summary
from pages import _common as ui

ui.use_navigation()

MAX_DEFAULT_RUNS = 4
MEASURES = {"test error": "test_error", "test loss": "test_loss"}

st.title("Segment length vs generalization")
st.caption(
    "Each point is one trained minimum: x is the length of its segment in the barcode (the "
    "barrier gradient descent must climb to escape it), y its error on held-out data. The "
    "paper (arXiv:2012.15834) reports that in some settings longer segments go with worse "
    "test error. Pool the minima of several runs — e.g. the same network trained with a "
    "constant and an annealed learning rate — and read the rank correlation."
)

runs = ui.finished_runs()
if not runs:
    st.info("No finished runs yet. Start one on the **Explore** page, then come back.",
            icon=":material/info:")
    st.stop()

from_url = [r for r in st.query_params.get_all("runs") if r in runs]
if "gen_runs" not in st.session_state:
    remembered = [r for r in st.session_state.get("current_gen_runs", []) if r in runs]
    current = st.session_state.get("current_run")
    st.session_state.gen_runs = (from_url or remembered
                                 or ([current] if current in runs else [])
                                 or runs[:MAX_DEFAULT_RUNS])
with st.sidebar:
    chosen = st.multiselect("Runs to pool", runs, key="gen_runs", format_func=ui.run_label,
                            help="Their minima are pooled into one rank correlation.")
    measure = st.radio("Generalization measure", list(MEASURES), horizontal=True)
st.session_state.current_gen_runs = chosen
st.query_params["runs"] = chosen
if not chosen:
    st.info("Choose at least one run in the sidebar.", icon=":material/info:")
    st.stop()

groups, ids, rows, points = {}, {}, [], []
lengths_all, errors_all = [], []
for run_id in chosen:
    r = ui.result(run_id)
    lengths = r.segment_lengths()
    errors = getattr(r, MEASURES[measure])
    label = f"{run_id[:8]} · {r.config.arch} {r.config.width}×{r.config.depth} · " \
            f"{r.config.schedule} lr"
    groups[label], ids[label] = (lengths, errors), np.arange(r.k)
    lengths_all.append(lengths)
    errors_all.append(errors)
    stats = generalization_summary(lengths, errors)
    rows.append({"run": run_id, "setting": label, "minima": r.k, "n (finite)": stats["n"],
                 "spearman": stats["spearman"], "p_value": stats["p_value"]})
    points += [{"run": run_id, "minimum": i, "segment_length": float(lengths[i]),
                MEASURES[measure]: float(errors[i]), "schedule": r.config.schedule}
               for i in range(r.k)]

pooled = generalization_summary(np.concatenate(lengths_all), np.concatenate(errors_all))
if pooled["spearman"] is None:
    st.warning(
        f"Only {pooled['n']} minima have a finite segment and a {measure} with some spread: a "
        "rank correlation needs at least 3. Add runs with more minima (K) or a dataset with a "
        "test error (classification).", icon=":material/warning:")
cols = st.columns(3)
cols[0].metric("Spearman ρ (pooled)",
               "—" if pooled["spearman"] is None else f"{pooled['spearman']:.3f}")
cols[1].metric("p-value", "—" if pooled["p_value"] is None else f"{pooled['p_value']:.3g}")
cols[2].metric("n minima", pooled["n"], help="Essential (global) and diverged minima have no "
               "finite segment and are left out.")

ui.chart(plots.generalization_figure(groups, pooled, y_label=measure, minima_ids=ids),
         key="generalization", name="generalization")
st.dataframe(rows, hide_index=True, width="stretch",
             column_config={"spearman": st.column_config.NumberColumn(format="%.3f"),
                            "p_value": st.column_config.NumberColumn("p-value", format="%.3g")})
ui.downloads([
    ("Points (CSV)", ui.csv_text(points), "generalization_points.csv", "text/csv"),
    ("Statistics (JSON)", ui.json_text({"pooled": pooled, "runs": rows, "measure": measure}),
     "generalization_stats.json", "application/json"),
])
if all(ui.result(r).config.schedule == "constant" for r in chosen):
    st.caption("Tip: to contrast kinds of minima, run the same config with schedule "
               "**anneal** on the Explore page (CLI: `lossbarcode run --schedule anneal`) and "
               "pool both runs here.")
