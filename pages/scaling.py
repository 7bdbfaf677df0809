"""Scaling: TO-score vs width and depth over seeds; launch sweeps; overlay barcodes by scale."""

from typing import Any

import streamlit as st

from lossbarcode import plots
from lossbarcode.choices import ARCHS, DATASETS
from lossbarcode.config import ExperimentConfig
from lossbarcode.sweep import (
    axis_values,
    curve_ready,
    fullest_value,
    summarize,
    sweep_barcodes,
    sweep_commands,
    sweep_resolution,
    sweep_trends,
)
from lossbarcode.topology import Barcode
from pages._exports import csv_text, downloads, json_text
from pages._jobs import config_key, format_seconds, job_progress, start_button
from pages._present import chart, columns
from pages._runs import finished_runs, store
from pages._streamlit_shim import use_navigation
from pages._sweep_jobs import (
    finish_sweep_job,
    launch,
    launch_commands,
    plan_commands,
    plan_sweep,
)
from pages._sweeps import demo_sweep_path, sweep_sources
from pages._views import deferred_view

use_navigation()


def sidebar(sources: dict[str, dict[str, Any]]) -> tuple[str | None, bool, str]:
    """The sweep to show (bound to the URL's ``sweep``) and the axes' scales."""
    source = None
    with st.sidebar:
        if sources:
            keys = list(sources)
            wanted = st.query_params.get("sweep")
            if wanted in keys:
                st.session_state.sweep_source = wanted
            elif st.session_state.get("sweep_source") not in keys:
                st.session_state.sweep_source = keys[0]
            source = st.selectbox("Sweep", keys, key="sweep_source",
                                  format_func=lambda k: sources[k]["label"])
            st.query_params["sweep"] = source
        log_x = st.toggle("Log-scale width/depth axis", value=True)
        y_axis = st.radio("TO-score axis", ["auto", "linear", "log"], horizontal=True,
                          help="auto: a log axis when the scores span more than 1.5 decades")
    return source, log_x, y_axis


def runs_shown(records: list[dict], barcodes: dict[str, Barcode]) -> list[dict]:
    """The summary rows of the records (with the intervals of their means where ``barcodes``,
    a sweep file's, has every run's), runs that are broken or have fewer than 90% of their
    minima certified left out unless the sidebar includes them (a warning says which and how
    many)."""
    left = [r for r in records if not curve_ready(r)]
    include_broken = bool(left) and st.sidebar.toggle(
        f"Include {len(left)} runs that are broken or under-certified", value=False,
        help="Runs with diverged minima, too few certified minima or paths far below their "
             "minima measure the training, not the network; runs with fewer than 90% of their "
             "minima certified are not what the curve claims. They are left out of the curves "
             "unless included.")
    summary = summarize(records, include_broken=include_broken, barcodes=barcodes)
    if left:
        st.warning(f"{len(left)} of {len(records)} runs are broken or have fewer than 90% of "
                   "their minima certified ("
                   + "; ".join(sorted({f"{r.get('minima_certified', '?')}/{r['k']} minima "
                                       f"certified, {r.get('health', 'health unknown')}"
                                       for r in left}))
                   + (") and included in the curves." if include_broken else
                      ") and left out of the curves; the sidebar can include them."),
                   icon=":material/report:")
    return summary


def scaling_charts(summary: list[dict], variant: str | None, log_x: bool, y_axis: str) -> None:
    """TO-score against width and against depth, with the resolution floor."""
    if not summary:
        st.info("No run of this sweep can enter a curve (see the warning above); the sidebar "
                "can include them.", icon=":material/info:")
        return
    floor, certified, finite_bars = sweep_resolution(summary)
    log_y = y_axis == "log" or (y_axis == "auto" and plots.spans_decades(
        [row["to_score_mean"] for row in summary], floor))
    if floor is None:
        st.warning("This sweep was made before paths were optimised to convergence: its "
                   "TO-scores are upper bounds set partly by the path budget.",
                   icon=":material/history:")
    else:
        st.caption(f"{certified}/{finite_bars} finite bars certified (birth at a certified "
                   "minimum, death at a converged saddle or monotone path, restarts agreeing); "
                   "the TO-scores count bars born at certified minima. "
                   f"Dashed line: the resolution floor, the score of bars each as long as the "
                   f"path tolerance; a score on it reads as \"below what we can resolve\"."
                   + (f" Bands: {summary[0]['interval']} of the mean."
                      if all("interval" in row for row in summary) else
                      " Bars: ±1 std over seeds."))
    widths = sorted({row["width"] for row in summary})
    depths = sorted({row["depth"] for row in summary})
    for column, axis, values in zip(columns(2), ("width", "depth"), (widths, depths),
                                    strict=True):
        with column:
            if len(values) > 1:
                chart(plots.scaling_figure(summary, x=axis, log_x=log_x, log_y=log_y,
                                           score_variant=variant, floor=floor),
                      key=f"vs_{axis}", name=f"to_score_vs_{axis}")
            else:
                st.info(f"This sweep has a single {axis} ({values[0]}).", icon=":material/info:")


def barcodes_across_scales(data: dict, records: list[dict], widths: list[int],
                           depths: list[int]) -> None:
    """One seed's barcodes overlaid along width or depth, at a fixed other axis."""
    st.subheader("Barcodes across scales")
    barcodes = data.get("barcodes") or {}
    cols = columns(3, stack=False)
    along = cols[0].radio("Vary", ["width", "depth"], horizontal=True,
                          index=0 if len(widths) > 1 or len(depths) == 1 else 1)
    fixed_axis = "depth" if along == "width" else "width"
    fixed_values = depths if along == "width" else widths
    fixed = cols[1].selectbox(f"at {fixed_axis}", fixed_values, index=fixed_values.index(
        fullest_value(records, along, fixed_axis, fixed_values)))
    seeds = sorted({r["seed"] for r in records})
    seed = cols[2].selectbox("seed", seeds)
    per_run = st.toggle("Normalise each barcode by its loss range", key="overlay_normalized",
                        help="Draws (loss − lowest minimum) / (highest finite death − lowest "
                             "minimum) per run, so that the shapes of barcodes whose losses "
                             "differ in scale compare.")
    chosen = sorted((r for r in records if r[fixed_axis] == fixed and r["seed"] == seed),
                    key=lambda r: r[along])
    overlay = {f"{along} {r[along]}": Barcode.from_dict(barcodes[r["run_id"]])
               for r in chosen if r["run_id"] in barcodes}
    if overlay:
        chart(plots.barcodes_overlay_figure(overlay,
                                            title=f"Barcodes by {along} ({fixed_axis} "
                                                  f"{fixed}, seed {seed})",
                                            normalize="range" if per_run else None),
              key="overlay", name=f"barcodes_by_{along}")
        if len(overlay) < len(chosen):
            st.caption(f"{len(chosen) - len(overlay)} runs have no stored barcode.")
    else:
        st.info("No barcodes stored for this selection.", icon=":material/info:")


def measured_trends(records: list[dict], barcodes: dict[str, Barcode]) -> None:
    """What the sweep says about the paper's claim, read from its data (not written in
    advance): each axis's trend and its interval, or "not resolved"."""
    trends = sweep_trends(records, barcodes)
    lines = [f"**{arch}, along {axis}** ({' '.join(map(str, t.values)) or 'no scale'}): "
             f"**{t.verdict}** — {t.reason}"
             + (f"; left out, their deaths not certified (upper bounds): {axis} "
                + ", ".join(left) + " bars certified" if left else "")
             for (arch, axis), (t, left) in trends.items()
             if len(t.values) + len(left) > 1]  # a single scale: said next to its chart
    if not lines:
        return
    st.markdown("Measured here (runs in the curves only; scales whose deaths are certified; "
                "95% hierarchical bootstrap over seeds and minima; bars within the path "
                "tolerance count as 0):  \n" + "  \n".join(lines))


def show_sweep(data: dict, log_x: bool, y_axis: str) -> None:
    """A sweep's curves, table, downloads and barcodes."""
    records = data["records"]
    barcodes = sweep_barcodes(data)  # parsed once: the bands and the trends read them
    summary = runs_shown(records, barcodes)
    variant = data.get("score_variant") or (records[0].get("score_variant") if records else None)
    archs = sorted({row["arch"] for row in summary})
    if len(archs) > 1:
        chosen_archs = st.sidebar.multiselect("Architectures", archs, default=archs)
        summary = [row for row in summary if row["arch"] in chosen_archs]
        records = [r for r in records if r["arch"] in chosen_archs]
    about = data.get("description") or ""
    for command in sweep_commands(data):
        about += f"  \nReproduce: `{command}`"
    st.caption(f"{about}  \nTO-score variant: **{variant}** · {len(records)} runs")
    scaling_charts(summary, variant, log_x, y_axis)
    measured_trends(records, barcodes)
    table = [{k: v for k, v in row.items() if k not in ("to_score_seeds",)} for row in summary]
    with st.expander("Summary table", expanded=False):
        st.dataframe(table, hide_index=True, width="stretch")
    downloads([
        ("Summary (CSV)", csv_text(summary), "sweep_summary.csv", "text/csv"),
        ("Runs (CSV)", csv_text(records), "sweep_runs.csv", "text/csv"),
        ("Sweep (JSON)", json_text({**{k: data.get(k) for k in
                                       ("command", "description", "score_variant",
                                        "records", "barcodes")}, "summary": summary}),
         "sweep.json", "application/json"),
    ])
    # Every run's barcode can be looked at, including runs the curves leave out.
    if records:
        barcodes_across_scales(data, records, sorted({r["width"] for r in records}),
                               sorted({r["depth"] for r in records}))


def sweep_form() -> tuple[ExperimentConfig | None, dict[str, Any], dict[str, Any] | None]:
    """The new sweep's widgets (from the Explore page's config) and its estimated cost:
    ``(base, axes, plan)``, plan None while estimating or when the input is wrong."""
    base_values = st.session_state.get("explore_config") or {}
    try:
        base = ExperimentConfig.from_dict(base_values) if base_values else ExperimentConfig()
    except ValueError:
        base = ExperimentConfig()
    c1, c2, c3, c4 = columns(4, stack=False)
    dataset = c1.selectbox("Dataset", DATASETS, index=DATASETS.index(base.dataset),
                           key="sw_dataset")
    arch = c2.selectbox("Architecture", ARCHS, index=ARCHS.index(base.arch),
                        key="sw_arch")
    k = c3.number_input("Minima K", min_value=2, max_value=64, value=base.k, key="sw_k")
    steps = c4.number_input("Training steps", min_value=1, value=base.training()[2],
                            key="sw_steps")
    c1, c2, c3 = columns(3, stack=False)
    widths_text = c1.text_input("Widths", "4,8,16,32", key="sw_widths")
    depths_text = c2.text_input("Depths", "1,2", key="sw_depths")
    seeds_text = c3.text_input("Seeds", "0,1,2", key="sw_seeds")
    try:
        sweep_base = base.replace(dataset=dataset, arch=arch, k=int(k), steps=int(steps))
        axes = {"widths": axis_values(widths_text, "widths"),
                "depths": axis_values(depths_text, "depths"),
                "seeds": axis_values(seeds_text, "seeds")}
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
        return None, {}, None
    plan = deferred_view(
        ("sweep-plan", str(store().root), len(finished_runs()),
         config_key(sweep_base), *(tuple(v) for v in axes.values())),
        plan_sweep, sweep_base, axes, message="Estimating the cost…")
    if plan is not None:
        st.caption(f"{plan['runs']} runs ({plan['done']} already finished) · estimated "
                   f"{format_seconds(plan['seconds'])} · largest model "
                   f"{plan['n_params']:,} parameters")
        if plan["refusal"]:
            st.error(f"Cannot run this sweep: {plan['refusal']}.", icon=":material/memory:")
    return sweep_base, axes, plan


def launch_button(box: Any, base: ExperimentConfig | None, axes: dict[str, Any],
                  plan: dict[str, Any] | None, running: bool) -> None:
    """Launch the sweep of the form (asking first when it is long)."""
    with box:
        launched = start_button(
            "Launch sweep", "launch_sweep", plan["seconds"] if plan else 0.0,
            (config_key(base), str(axes)) if plan else None, type="primary",
            disabled=plan is None or running or bool(plan["refusal"]),
            icon=":material/play_arrow:", width="stretch")
    if launched:
        try:
            launch(base, axes)
            st.rerun()
        except (ValueError, FileNotFoundError) as err:
            st.error(str(err), icon=":material/error:")


def recompute_demo_button(box: Any, demo: dict[str, Any] | None, running: bool) -> None:
    """Rerun the commands the demo sweep file records (asking first when it is long)."""
    demo_commands = sweep_commands(demo) if demo is not None else []
    if not demo_commands:
        return
    with box:
        demo_plan = deferred_view(("demo-plan", str(store().root),
                                   len(finished_runs()), *demo_commands),
                                  plan_commands, tuple(demo_commands),
                                  message="Estimating the demo sweep…")
        recompute = demo_plan is not None and start_button(
            "Recompute the demo sweep", "recompute_demo", demo_plan["seconds"],
            tuple(demo_commands), disabled=running or bool(demo_plan["refusal"]),
            icon=":material/refresh:", width="stretch", help="Runs " + " and ".join(
                f"`{c}`" for c in demo_commands) + " in the backend "
                f"(estimated {format_seconds(demo_plan['seconds'])}).")
    if recompute:
        try:
            launch_commands(demo_commands)  # queued in order; progress follows the last
            st.rerun()
        except (ValueError, FileNotFoundError, SystemExit) as err:
            st.error(f"Cannot rerun the demo command: {err}", icon=":material/error:")


def launcher(sources: dict[str, dict[str, Any]], demo: dict[str, Any] | None) -> None:
    """Run a new sweep, or recompute the demo sweep."""
    with st.expander("Run a new sweep", expanded=not sources, icon=":material/play_circle:"):
        st.caption("Every width × depth × seed becomes one run of the backend (finished runs are "
                   "reused). You can keep using the dashboard while it runs.")
        base, axes, plan = sweep_form()
        running = st.session_state.get("sweep_job") is not None
        b1, b2 = columns(2, stack=False)
        launch_button(b1, base, axes, plan, running)
        recompute_demo_button(b2, demo, running)


st.title("Scaling: TO-score vs width and depth")
st.caption(
    "The paper's first finding is that loss barcodes and TO-scores shrink as networks get wider "
    "and deeper. Below the charts: what this sweep measured, a trend only where its 95% "
    "interval says so. Lines are the mean over seeds; open circles are the individual seeds."
)
sources, demo = sweep_sources()
job_id = finish_sweep_job(sources)  # a sweep launched here is selected once it has finished
source, log_x, y_axis = sidebar(sources)
if job_id is not None and st.session_state.get("sweep_job") == job_id:
    job_progress(job_id, "Sweep running", cancel_key="cancel_sweep")
if not sources:
    st.info(
        f"No sweep to show yet: the demo sweep `{demo_sweep_path()}` is missing and the "
        "results folder has no runs that differ only in width/depth/seed. Launch one below, or "
        "from the CLI: `lossbarcode sweep --widths 4,8,16,32 --depths 1,2 --seeds 0,1,2`.",
        icon=":material/info:")
else:
    show_sweep(sources[source], log_x, y_axis)
launcher(sources, demo)
