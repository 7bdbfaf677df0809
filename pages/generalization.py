"""Generalization: does a minimum's segment length relate to its test error?"""

import numpy as np
import streamlit as st

from lossbarcode import plots, stats
from lossbarcode.config import setting_differences
from pages._exports import csv_text, downloads, json_text
from pages._pickers import run_label
from pages._present import chart, columns
from pages._runs import finished_runs, result, run_health_of
from pages._streamlit_shim import use_navigation

use_navigation()

MAX_DEFAULT_RUNS = 4
MEASURES = {"test error": "test_error", "test loss": "test_loss"}

st.title("Segment length vs generalization")
st.caption(
    "Each point is one trained minimum: x is the length of its segment in the barcode (the "
    "barrier gradient descent must climb to escape it), y its error on held-out data. The "
    "paper (arXiv:2012.15834) reports that in some settings longer segments go with worse "
    "test error. Pool the minima of several runs — e.g. the same network trained with a "
    "constant and an annealed learning rate — and read the rank correlation, pooled and "
    "within each run (which differences between the runs cannot make)."
)

runs = finished_runs()
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
    chosen = st.multiselect("Runs to pool", runs, key="gen_runs", format_func=run_label,
                            help="Their minima are pooled into one rank correlation.")
    # Every control that changes a number on screen is in the URL, so a link reopens it.
    wanted = st.query_params.get("measure")
    measure = st.radio("Generalization measure", list(MEASURES), horizontal=True,
                       index=list(MEASURES).index(wanted) if wanted in MEASURES else 0)
    unusable = [r for r in chosen if result(r) is None]  # listed, but cannot be loaded
    broken = [r for r in chosen if r not in unusable and run_health_of(result(r)).broken]
    include_broken = bool(broken) and st.toggle(
        f"Include {len(broken)} broken runs", value=st.query_params.get("broken") == "1",
        help="Runs with diverged minima or paths far below their minima measure the "
             "training, not the network; they are left out of the statistics unless "
             "included.")
st.session_state.current_gen_runs = chosen
st.query_params["runs"] = chosen
st.query_params["measure"] = measure
if include_broken:
    st.query_params["broken"] = "1"
else:
    st.query_params.pop("broken", None)
if not chosen:
    st.info("Choose at least one run in the sidebar.", icon=":material/info:")
    st.stop()

# The runs whose minima are pooled: every statistic below reads this one list.
pooled_runs = [r for r in chosen if r not in unusable and (include_broken or r not in broken)]
if unusable:
    st.warning("Left out, unusable: " + ", ".join(f"`{r}`" for r in unusable)
               + " (see `lossbarcode list` for why).", icon=":material/warning:")
if broken:
    st.warning(f"{len(broken)} of the chosen runs are broken ("
               + "; ".join(f"`{r[:8]}`: {run_health_of(result(r)).summary()}"
                           for r in broken)
               + (") and pooled anyway." if include_broken else
                  ") and left out; the sidebar can include them."), icon=":material/report:")
if not pooled_runs:
    st.info("Every chosen run is broken: include them in the sidebar, or choose others.",
            icon=":material/info:")
    st.stop()
results = {run_id: result(run_id) for run_id in pooled_runs}
groups, ids, points = {}, {}, []
for run_id, r in results.items():
    label = f"{run_id[:8]} · {r.config.arch} {r.config.width}×{r.config.depth} · " \
            f"{r.config.schedule} lr"
    lengths, errors = r.resolved_lengths(), getattr(r, MEASURES[measure])
    groups[label], ids[label] = (lengths, errors), np.arange(r.k)
    points += [{"run": run_id, "minimum": i, "segment_length": float(lengths[i]),
                "measured_length": float(raw), "resolution": r.config.path_atol,
                MEASURES[measure]: float(errors[i]), "schedule": r.config.schedule}
               for i, raw in enumerate(r.segment_lengths())]

pooled = stats.spearman_test(np.concatenate([g[0] for g in groups.values()]),
                             np.concatenate([g[1] for g in groups.values()]))
within = stats.stratified_spearman(groups)
differences = setting_differences([r.config for r in results.values()])
if pooled.rho is None:
    st.warning(
        f"Only {pooled.n} minima have a finite segment and a {measure} with some spread: a "
        "rank correlation needs at least 3. Add runs with more minima (K) or a dataset with a "
        "test error (classification).", icon=":material/warning:")
if differences:
    named = "; ".join(f"{name} ({', '.join(map(str, seen))})" for name, seen in
                      differences.items())
    st.warning(f"The pooled runs differ in {named}: the pooled ρ mixes differences between "
               "runs (a setting such as width can drive both segment length and error) with "
               "the relation within a run. Read the within-run test.",
               icon=":material/warning:")
cols = columns(5)
cols[0].metric("Spearman ρ (pooled)", "—" if pooled.rho is None else f"{pooled.rho:.3f}",
               help="Rank correlation over all pooled minima.")
cols[1].metric("p (pooled)", pooled.p_text(), help=pooled.describe())
cols[2].metric("ρ within runs", "—" if within.combined.rho is None
               else f"{within.combined.rho:.3f}",
               help="Mean of each run's own ρ, weighted by its number of minima: differences "
                    "between runs cannot make it.")
cols[3].metric("p (within runs)", within.combined.p_text(),
               help="Minima permuted only within their own run: "
                    + within.combined.describe())
cols[4].metric("n minima", pooled.n, help="Essential (global) and diverged minima have no "
               "finite segment and are left out.")
st.caption(f"Pooled p: {pooled.describe()}. Within-run p: {within.combined.describe()}, over "
           f"the {len(within.used)} of {len(groups)} runs with ρ defined. Segments no longer "
           "than their run's barrier resolution (path_atol) count as 0 and tie: their order is "
           "the optimiser's round-off, not the network's (the CSV keeps the measured length).")

chart(plots.generalization_figure(groups, {"pooled": pooled, "within runs": within.combined},
                                  y_label=measure, minima_ids=ids),
      key="generalization", name="generalization")
rows = [{"run": run_id, "setting": label, "minima": results[run_id].k, "n (finite)": test.n,
         "spearman": test.rho, "p": test.p_text(), "method": test.method,
         "permutations": test.n_permutations}
        for run_id, (label, test) in zip(results, within.groups.items(), strict=True)]
st.dataframe(rows, hide_index=True, width="stretch",
             column_config={"spearman": st.column_config.NumberColumn(format="%.3f"),
                            "p": st.column_config.TextColumn(
                                "p-value", help="Exact permutation p (all n! orderings) up "
                                f"to n = 8, else {stats.N_PERMUTATIONS:,} random ones.")})
downloads([
    ("Points (CSV)", csv_text(points), "generalization_points.csv", "text/csv"),
    ("Statistics (JSON)", json_text({
        "measure": measure, "pooled": pooled.to_dict(), "within_runs": within.to_dict(),
        "runs": dict(zip(within.groups, pooled_runs, strict=True)),
        "setting_differences": differences}),
     "generalization_stats.json", "application/json"),
])
if all(r.config.schedule == "constant" for r in results.values()):
    st.caption("Tip: to contrast kinds of minima, run the same config with schedule "
               "**anneal** on the Explore page (CLI: `lossbarcode run --schedule anneal`) and "
               "pool both runs here.")
