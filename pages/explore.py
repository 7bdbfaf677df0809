"""Explore: run one experiment in the backend and read its barcode, paths and minima."""

import math
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from lossbarcode import plots
from lossbarcode.choices import (
    ARCHS,
    DATASETS,
    OPTIMIZERS,
    PAIRINGS,
    PATH_METHODS,
    PRESETS,
    SCHEDULES,
)
from lossbarcode.cli import reproduce_command
from lossbarcode.experiment import Result, rebasin_table, twin_run_id
from lossbarcode.provenance import describe_config
from lossbarcode.topology import NORMS, RULES, death_pair
from pages._explore_state import (
    CUSTOM,
    FAMILY_DEFAULT,
    NEEDS_ROOT,
    apply_preset,
    check_and_estimate,
    click_estimate,
    current_config,
    dataset_caption,
    dataset_label,
    estimate_failed,
    failure_notice,
    init_config,
    pick,
    problems_now,
    running_jobs,
    setting,
    settle_job,
    start_run,
    sync_highlight,
)
from pages._exports import csv_text, downloads, json_text
from pages._jobs import format_seconds, job_progress, start_button
from pages._notices import demo_notice, health_banner, start_here
from pages._pickers import run_picker
from pages._present import chart, columns
from pages._runs import is_demo, result, run_health_of, store
from pages._streamlit_shim import use_navigation
from pages._views import deferred_view

use_navigation()


def sidebar() -> tuple[Any, Any]:
    """The config widgets (keys ``cfg_<field>``); returns the boxes below them for the
    estimate and the Run button."""
    with st.sidebar:
        st.header("New experiment")
        st.selectbox("Preset", [*PRESETS, CUSTOM], key="preset", on_change=apply_preset,
                     format_func=lambda p: "Custom (edited)" if p == CUSTOM else PRESETS[p][0],
                     help="A starting point; editing any setting makes it a custom config.")
        with st.expander("Data and model", expanded=True, icon=":material/dataset:"):
            dataset = setting(st.selectbox, "Dataset", "dataset", DATASETS,
                              format_func=dataset_label)
            if (caption := dataset_caption(dataset)) is not None:
                st.caption(caption)
            if dataset in NEEDS_ROOT:
                setting(st.text_input, "Data folder / text file", "data_root",
                        placeholder="./data" if dataset != "text" else "path/to/text")
            arch = setting(st.selectbox, "Architecture", "arch", ARCHS)
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Width", "width", step=1)
            setting(c2.number_input, "Depth", "depth", step=1)
            if arch == "transformer":
                setting(st.number_input, "Heads", "heads", step=1)
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Train examples", "n_train", step=100, value=None,
                    placeholder="all")
            setting(c2.number_input, "Test examples", "n_test", step=100, value=None,
                    placeholder="all")
        with st.expander("Minima", icon=":material/south:"):
            setting(st.number_input, "Minima K", "k", step=1)
            c1, c2 = columns(2, stack=False)
            setting(c1.radio, "Optimizer", "optimizer", [FAMILY_DEFAULT, *OPTIMIZERS])
            setting(c2.radio, "Schedule", "schedule", SCHEDULES)
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Learning rate", "lr", value=None, format="%.4g",
                    placeholder="default")
            setting(c2.number_input, "Steps", "steps", step=50, value=None,
                    placeholder="the family's")
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Batch size", "batch_size", step=16)
            setting(c2.number_input, "Full-batch steps at most", "polish_steps", step=50,
                    value=None, placeholder="the family's")
            setting(st.number_input, "Minimum tolerance", "minima_tol", format="%.2g")
        with st.expander("Paths and score", icon=":material/route:"):
            setting(st.selectbox, "Path method", "path_method", PATH_METHODS)
            setting(st.radio, "Pairs", "pairs", PAIRINGS, horizontal=True)
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Images per path", "images", step=1)
            setting(c2.number_input, "Fixed path steps", "path_steps", step=25, value=None,
                    placeholder="until converged")
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Path tolerance", "path_tol", format="%.3g")
            setting(c2.number_input, "Resolution (loss)", "path_atol", format="%.2g")
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Path step cap", "path_max_steps", step=500)
            setting(c2.number_input, "Starts per deciding pair", "restarts", step=1)
            setting(st.checkbox, "Align minima first (re-basin)", "align")
            setting(st.radio, "Barcode rule", "rule", RULES, horizontal=True)
            c1, c2 = columns(2, stack=False)
            setting(c1.selectbox, "TO-score norm", "score_norm", NORMS)
            setting(c2.selectbox, "Normalize", "score_normalize", ["none", "range"])
        with st.expander("Run", icon=":material/settings:"):
            c1, c2 = columns(2, stack=False)
            setting(c1.number_input, "Seed", "seed", step=1)
            setting(c2.selectbox, "Device", "device", ["auto", "cpu", "cuda"])
        return st.container(), st.container()


def metrics(r: Result) -> None:
    """The run's numbers, how it was made, and its health."""
    c, variant = r.config, r.config.score_variant
    lengths = r.segment_lengths()
    finite = np.isfinite(lengths)
    cols = columns(5)
    certified, finite_bars = r.certified
    minima_done, k = r.minima_count
    health = run_health_of(r)
    note = r.resolution_note()
    # Badges short enough for a fifth of the page (a longer one is cut: "3/3 bars certif…"),
    # with no arrow (they are counts, not changes); the help and the boxes say the rest.
    cols[0].metric(f"TO-score ({variant})", f"{r.score:.4g}",
                   delta=f"{certified}/{finite_bars} certified", delta_color="off",
                   delta_arrow="off",
                   help=f"Bars certified: {certified} of the {finite_bars} finite bars. "
                        "Norm of the finite segment lengths (arXiv:2012.15834) of the bars "
                        "born at certified minima. A bar is certified when its minimum is "
                        "(gradient, curvature, learned) and its death is (converged path, top "
                        "a saddle or the path monotone, restarts agree), in a run that is not "
                        "broken. Other variants: "
                        + ", ".join(f"{k} {v:.3g}" for k, v in r.scores.items())
                        + "; with a bar at every minimum: "
                        + ", ".join(f"{k} {v:.3g}" for k, v in r.scores_all.items())
                        + (f". {note}." if note else ""))
    cols[1].metric("Certified minima", f"{minima_done} / {k}",
                   delta=health.state, delta_color="off", delta_arrow="off",
                   help=f"Run health: {health.summary()}. "
                        "Minima with a full-batch gradient norm of at most "
                        f"{c.minima_tol:g}, no negative curvature, and a loss clearly below "
                        "the start; only they have bars in the TO-score"
                        + (f" ({r.curvature_skipped}: gradient-certified only)"
                           if r.curvature_skipped else "")
                        + ". Below: the run's health (see the boxes above).")
    cols[2].metric("Longest segment", f"{lengths[finite].max():.4g}" if finite.any() else "—")
    cols[3].metric("Parameters", f"{r.n_params:,}")
    cols[4].metric("Compute time", format_seconds(sum(r.timings.values())),
                   help=", ".join(f"{k} {v:.1f} s" for k, v in r.timings.items())
                   + f" on {r.device}")
    st.caption(f"`{r.run_id}` · {describe_config(c)}  \n"
               f"Reproduce: `{reproduce_command(c)}`")
    st.caption(f"Paths: {r.paths_note()}  \n{r.certification_note()}"
               + (f"  \n{note}" if note else ""))
    health_banner(r)


def highlight_note(r: Result, highlight: int, pair: int | None) -> None:
    """Where the highlighted minimum's segment ends."""
    row = r.minima_table()[highlight]
    if row["birth"] is None:
        st.info(f"Minimum {highlight} diverged: it has no segment.", icon=":material/info:")
    elif math.isinf(row["death"]):
        st.info(f"Minimum {highlight} is the lowest minimum: its segment never ends (∞).",
                icon=":material/info:")
    else:
        i, j = r.pairs[pair] if pair is not None else ("?", "?")
        st.info(f"Minimum {highlight} (loss {row['birth']:.4g}) dies at {row['death']:.4g} "
                f"on the path {i}–{j}, merging into minimum "
                f"{row['merged_into_minimum']}: segment length {row['length']:.4g}.",
                icon=":material/info:")


def run_charts(r: Result, highlight: int | None, pair: int | None) -> None:
    """Barcode, persistence diagram (both select a minimum) and the loss along the paths."""
    c, variant, barcode = r.config, r.config.score_variant, r.barcode
    certified, reasons = r.bar_certificates()
    colors = plots.minimum_colors(barcode.minima)
    labels = [f"minimum {m}" for m in barcode.minima]
    left, right = columns([3, 2])
    with left:
        chart(plots.barcode_figure(barcode, colors=colors, labels=labels, highlight=highlight,
                                   title=f"Loss barcode · TO-score ({variant}) "
                                         f"{r.score:.4g}"
                                         + (" (not resolved from 0)"
                                            if r.unresolved else ""),
                                   xaxis_title="training loss",
                                   certified=certified, reasons=reasons,
                                   spread=r.bar_spread()),
              key="pick_barcode", name=f"barcode_{r.run_id}",
              on_select=lambda: pick("pick_barcode"), selection_mode="points")
    with right:
        chart(plots.diagram_figure(barcode, colors=colors, highlight=highlight),
              key="pick_diagram", name=f"diagram_{r.run_id}",
              on_select=lambda: pick("pick_diagram"), selection_mode="points")
    chart(plots.profiles_figure(r.profiles, r.pairs, r.path_barriers,
                                colors=plots.path_colors(barcode, r.pairs), highlight=pair,
                                title=f"Training loss along each {c.path_method} path "
                                      f"({len(r.pairs)} paths, {c.pairs} pairs"
                                      + (f"; {crossed} by the string method"
                                         if (crossed := int(np.sum(r.path_start == "string")))
                                         else "") + ")"),
          key="profiles", name=f"profiles_{r.run_id}")


def path_history(r: Result, pair: int | None) -> None:
    """The paths' convergence, drawn only when open: open at first when a path that ends a bar
    did not converge (the run's health says so), closed when only beaten starts did."""
    c, barcode = r.config, r.barcode
    weak = any(p.kind in ("unconverged", "stalled") for p in run_health_of(r).problems)
    history = st.expander("Convergence of the paths: barrier against optimisation step",
                          icon=":material/monitoring:", expanded=weak,
                          key="explore_history", on_change="rerun")
    if history.open:
        with history:
            path_names = [f"{i}–{j}" for i, j in r.pairs.tolist()]
            shown = st.selectbox("Path", [None, *range(len(path_names))], index=0,
                                 format_func=lambda p: "all" if p is None else path_names[p],
                                 help="Highlight one path's history.")
            floors = np.maximum(r.train_loss[r.pairs[:, 0]], r.train_loss[r.pairs[:, 1]])
            chart(plots.path_history_figure(
                r.path_history, r.path_history_steps, r.pairs, r.path_converged, floors=floors,
                colors=plots.path_colors(barcode, r.pairs),
                highlight=shown if shown is not None else pair), key="path_history",
                name=f"path_history_{r.run_id}")
            st.dataframe(r.path_table(), hide_index=True, width="stretch")
            st.caption(f"Paths {c.path_rule}: a path stops after two cycles in a row within "
                       "that tolerance, first on minibatches, then on the whole evaluation set "
                       "with a climbing image; `perp_grad` is the largest loss gradient "
                       "perpendicular to the final chain.")


def minima_table(r: Result, highlight: int | None) -> None:
    """The table of minima, coloured like the charts; a row selects a minimum."""
    table = pd.DataFrame(r.minima_table())
    table["length"] = table["length"].astype(float)
    table.insert(0, "colour", "")
    table = table[["colour", "minimum", "certified", "train_loss", "test_loss", "test_error",
                   "length", "birth", "death", "merged_into_minimum", "grad_norm",
                   "hessian_min_eig", "why_not", "diverged"]]

    def shade(row: pd.Series) -> list[str]:
        color = plots.minimum_color(int(row["minimum"]))
        strong = highlight is not None and int(row["minimum"]) == highlight
        fill = f"background-color: {color}40; font-weight: bold" if strong else ""
        return [f"background-color: {color}" if name == "colour" else fill
                for name in row.index]

    st.dataframe(
        table.style.apply(shade, axis=1), hide_index=True, width="stretch", key="minima_table",
        on_select=lambda: pick("minima_table"), selection_mode="single-row",
        column_config={
            "colour": st.column_config.TextColumn("", width=28),
            "minimum": st.column_config.NumberColumn("minimum", format="%d"),
            "train_loss": st.column_config.NumberColumn("train loss", format="%.5g"),
            "test_loss": st.column_config.NumberColumn("test loss", format="%.5g"),
            "test_error": st.column_config.NumberColumn("test error", format="%.4g"),
            "length": st.column_config.NumberColumn("segment length", format="%.5g",
                                                    help="inf: the lowest minimum"),
            "birth": st.column_config.NumberColumn(format="%.5g"),
            "death": st.column_config.NumberColumn(format="%.5g"),
            "merged_into_minimum": st.column_config.NumberColumn(
                "merged into minimum", format="%d"),
            "grad_norm": st.column_config.NumberColumn(
                "gradient norm", format="%.2e", help="full-batch, at the minimum"),
            "hessian_min_eig": st.column_config.NumberColumn(
                "smallest curvature", format="%.2e",
                help="smallest Hessian eigenvalue (Lanczos); below minus the tolerance: a "
                     "saddle, not a minimum"),
            "why_not": st.column_config.TextColumn("why not certified"),
        },
    )
    bars = pd.DataFrame(r.bar_table())
    with st.expander(f"Bars: {r.certification_note()}", icon=":material/verified:"):
        st.dataframe(bars, hide_index=True, width="stretch", column_config={
            "spread": st.column_config.NumberColumn(
                "restarts' spread", format="%.3g",
                help="how far apart the restarts of the pair that killed the bar ended"),
            "why_not": st.column_config.TextColumn("why not certified")})


def rebasin_view(r: Result) -> None:
    """Before and after re-basin, side by side, when the run's twin (align flipped) exists."""
    twin = result(twin_run_id(r))
    if twin is None:
        return
    unaligned, aligned = (twin, r) if r.config.align else (r, twin)
    with st.expander("Before and after re-basin (the same minima, permuted onto minimum "
                     f"{aligned.alignment.get('reference')})", icon=":material/swap_horiz:",
                     expanded=True):
        st.dataframe(pd.DataFrame(rebasin_table(unaligned, aligned)).astype(str),
                     hide_index=True, width="stretch")
        shared = plots.barcode_limits(unaligned.barcode, aligned.barcode)  # one scale
        for col, run, label in zip(columns([1, 1]), (unaligned, aligned),
                                   ("Unaligned", "Aligned (re-basin)"), strict=True):
            with col:
                chart(plots.barcode_figure(
                    run.barcode, colors=plots.minimum_colors(run.barcode.minima),
                    labels=[f"minimum {m}" for m in run.barcode.minima],
                    title=f"{label} · TO-score ({run.config.score_variant}) {run.score:.4g}",
                    xaxis_title="training loss", certified=run.bar_certificates()[0],
                    x_range=shared),
                    key=f"rebasin_{label}", name=f"barcode_{run.run_id}")
        st.caption("Aligning permutes each minimum's hidden units onto the reference by weight "
                   "matching (Git Re-Basin): the same functions and losses, so what the aligned "
                   "run still has to climb is not permutation symmetry.")


def run_downloads(r: Result) -> None:
    """Minima, barcode, paths and the whole result as files."""
    variant, barcode = r.config.score_variant, r.barcode
    profile_rows = [{"i": int(i), "j": int(j), "t": float(t), "loss": float(v)}
                    for (i, j), (ts, vs) in zip(r.pairs, r.profiles, strict=True)
                    for t, v in zip(ts, vs, strict=True)]
    downloads([
        ("Minima (CSV)", csv_text(r.minima_table()), f"minima_{r.run_id}.csv", "text/csv"),
        ("Barcode (JSON)", json_text({"run_id": r.run_id, "score_variant": variant,
                                      "to_score": r.scores,
                                      "barcode": barcode.to_dict()}),
         f"barcode_{r.run_id}.json", "application/json"),
        ("Paths (CSV)", csv_text(profile_rows), f"paths_{r.run_id}.csv", "text/csv"),
        ("Whole result (JSON)", json_text(r.to_dict()), f"result_{r.run_id}.json",
         "application/json"),
    ])


def run_links(r: Result) -> None:
    """The other pages of this run, and how to read this one."""
    variant = r.config.score_variant
    links = columns(4)
    for col, (page, label) in zip(links, [
            ("pages/minima_map.py", "Minima map"), ("pages/landscape_slice.py", "Landscape slice"),
            ("pages/generalization.py", "Generalization"), ("pages/compare.py", "Compare")],
            strict=True):
        col.page_link(page, label=f"{label} of this run", icon=":material/arrow_forward:",
                      query_params={"runs" if "general" in page else "run": r.run_id})
    with st.expander("How to read this"):
        st.markdown(
            "- **Barcode**: one bar per minimum, from its training loss (birth) to the lowest "
            "level at which a path leads from it to a lower minimum (death). The arrow (∞) is "
            "the lowest minimum. Zero-length segments show as a tick.\n"
            "- **Same colour = same minimum** everywhere: its bar, its diagram point, the path "
            "on which it died, its table row and its dot on the minima map. Grey paths killed "
            "no bar.\n"
            "- **Loss along each path**: the triangle marks each path's barrier (its highest "
            "loss). A minimum dies on the cheapest route out — possibly through other minima.\n"
            f"- **TO-score ({variant})**: the {variant} norm of the finite segment lengths of "
            "the bars born at certified minima (the table of minima says which are, and why "
            "not). A hatched bar is not certified: its death is an upper bound; a whisker "
            "shows how far its restarts disagreed.")


def show_run(r: Result) -> None:
    """Everything the page shows of a finished run."""
    highlight = sync_highlight(r.run_id, r.k)
    metrics(r)
    options = [None, *range(r.k)]
    st.selectbox("Highlighted minimum", options, key="highlight",
                 placeholder="none — click a bar, a diagram point or a table row",
                 format_func=lambda m: "none" if m is None else f"minimum {m}")
    st.session_state.current_minimum, st.session_state.current_minimum_run = highlight, r.run_id
    pair = death_pair(r.barcode, r.pairs, highlight) if highlight is not None else None
    if highlight is not None:
        highlight_note(r, highlight, pair)
    run_charts(r, highlight, pair)
    rebasin_view(r)
    path_history(r, pair)
    minima_table(r, highlight)
    run_downloads(r)
    run_links(r)


def estimate_and_run(values: dict, shown: str | None, estimate_box: Any, run_box: Any) -> None:
    """The config's problems or cost estimate, and the Run button. The estimate runs in the
    background worker, so that the page (and a finished result) shows at once, before torch
    is imported (the estimate times a matmul)."""
    items = tuple(sorted(values.items()))
    problem = problems_now(values)
    if problem is not None:
        estimate_box.error(problem, icon=":material/error:")
    with estimate_box:
        checked = None if problem is not None else deferred_view(
            ("estimate", *items), check_and_estimate, items, message="Estimating the cost…")
    refusal, seconds = None, lambda: click_estimate(values)
    if checked is not None:
        config, cost = checked
        with estimate_box:
            done = store().exists(config.run_id)
            refusal = None if done else cost["refusal"]
            seconds = 0.0 if done else cost["seconds"]
            basis = (f"calibrated on {cost['calibrated_runs']} finished runs"
                     if cost["calibrated_runs"] else "raw model: no finished run to calibrate on")
            st.caption(
                ("Already computed: opens instantly.  \n" if done else "")
                + f"Estimated **{format_seconds(cost['seconds'])}** on this machine ({basis}) · "
                f"{cost['n_params']:,} parameters × K = {config.k} · {cost['n_pairs']} paths · "
                f"{cost['flops'] / 1e9:,.1f} GFLOP · peak memory "
                f"{cost['memory'] / 2**30:,.2f} GiB")
            if refusal:
                st.error(f"Cannot run: {refusal}.", icon=":material/memory:")
    with run_box:
        invalid = problem is not None or refusal is not None or (
            checked is None and estimate_failed(("estimate", *items)))
        if start_button("Run experiment", "run_experiment", seconds, items, type="primary",
                        icon=":material/play_arrow:", disabled=invalid, width="stretch"):
            start_run(values, shown)


st.title("Explore a run")
st.caption("Train K minima, join them with low-loss paths, and read how deep each minimum's "
           "trap is. Set up a run in the sidebar; it runs in the background while you read.")
init_config()
estimate_box, run_box = sidebar()
values = current_config()
settle_job()
failure_notice()
running = running_jobs()
for job_id in running:
    job_progress(job_id, "Running experiment", cancel_key=f"cancel_{job_id}")
run_id = run_picker(
    "Show run", pending=running,
    empty_message="No finished runs yet: pick a preset in the sidebar (or set your own network "
                  "and minima) and press **Run experiment**. The default preset finishes in well "
                  "under a minute on a laptop CPU, the *tiny* one in seconds. The barcode, the "
                  "persistence diagram, the loss along every path and the table of minima "
                  "appear here.")
r = result(run_id)
if r is not None:
    if is_demo(r.run_id):
        start_here()
        demo_notice(r.run_id)
    show_run(r)
estimate_and_run(values, run_id, estimate_box, run_box)
