"""Scaling: TO-score vs width and depth over seeds; launch sweeps; overlay barcodes by scale."""

import hashlib

import streamlit as st

from lossbarcode import plots
from lossbarcode.experiment import ExperimentConfig
from lossbarcode.sweep import summarize
from lossbarcode.topology import Barcode
from pages import _common as ui

ui.use_navigation()

DEMO = "demo"

st.title("Scaling: TO-score vs width and depth")
st.caption(
    "The paper's first finding: loss barcodes and TO-scores shrink as networks get wider and "
    "deeper — wide and deep networks have fewer, shallower traps. Lines are the mean over "
    "seeds with ±1 standard deviation; open circles are the individual seeds."
)


def family_id(family: str) -> str:
    return hashlib.sha1(family.encode()).hexdigest()[:10]


def ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"{name}: write a comma list of integers, e.g. 4,8,16") from None
    if not values:
        raise ValueError(f"{name}: give at least one value")
    return values


def plan_sweep(base: ExperimentConfig, axes: dict[str, list[int]]) -> dict:
    """Runs, finished runs, estimated seconds and the first memory refusal of a sweep
    (background worker: torch)."""
    from lossbarcode.sweep import sweep_configs

    configs = sweep_configs(base, **axes)
    costs = [ui.estimate(c) for c in configs]
    todo = [not ui.store().exists(c.run_id) for c in configs]
    refusals = [c["refusal"] for c, t in zip(costs, todo, strict=True) if t and c["refusal"]]
    return {"runs": len(configs), "done": len(configs) - sum(todo),
            "seconds": sum(c["seconds"] for c, t in zip(costs, todo, strict=True) if t),
            "n_params": max(c["n_params"] for c in costs),
            "refusal": refusals[0] if refusals else None}


def plan_demo(commands: tuple[str, ...]) -> dict:
    """Estimated seconds of recomputing the demo sweep's runs not stored yet."""
    plans = [plan_sweep(*ui.demo_sweep_plan(command)) for command in commands]
    return {"seconds": sum(p["seconds"] for p in plans),
            "refusal": next((p["refusal"] for p in plans if p["refusal"]), None)}


sources: dict[str, dict] = {}
demo = None
try:
    demo = ui.demo_sweep()
except ValueError as err:
    st.error(f"The demo sweep file is unreadable: {err}", icon=":material/error:")
if demo is not None:
    sources[DEMO] = {**demo, "label": "Demo sweep (shipped)"}
for family, data in ui.store_sweeps().items():
    sources[family_id(family)] = {**data, "family": family}

# A sweep launched from this page becomes the selected source once it has finished.
job_id = st.session_state.get("sweep_job")
if job_id is not None:
    status = ui.manager().status(job_id)
    if status is not None and status.finished:
        pending = st.session_state.pop("sweep_family", None)
        st.session_state.pop("sweep_job", None)
        ui.job_outcome(job_id)
        if pending is not None and status.state == "done" and family_id(pending) in sources:
            st.query_params["sweep"] = family_id(pending)
            st.session_state.pop("sweep_source", None)

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

if job_id is not None and st.session_state.get("sweep_job") == job_id:
    ui.job_progress(job_id, "Sweep running", cancel_key="cancel_sweep")

if not sources:
    st.info(
        f"No sweep to show yet: the demo sweep `{ui.demo_sweep_path()}` is missing and the "
        "results folder has no runs that differ only in width/depth/seed. Launch one below, or "
        "from the CLI: `lossbarcode sweep --widths 4,8,16,32 --depths 1,2 --seeds 0,1,2`.",
        icon=":material/info:")
    data = None
else:
    data = sources[source]

if data is not None:
    records = data["records"]
    broken = [r for r in records if r.get("broken")]
    include_broken = bool(broken) and st.sidebar.toggle(
        f"Include {len(broken)} broken runs", value=False,
        help="Runs with diverged minima or paths far below their minima measure the "
             "training, not the network; they are left out of the curves unless included.")
    summary = summarize(records, include_broken=include_broken)
    if broken:
        st.warning(f"{len(broken)} of {len(records)} runs are broken ("
                   + "; ".join(sorted({r['health'] for r in broken}))
                   + (") and included in the curves." if include_broken else
                      ") and left out of the curves; the sidebar can include them."),
                   icon=":material/report:")
    variant = data.get("score_variant") or (records[0].get("score_variant") if records else None)
    archs = sorted({row["arch"] for row in summary})
    if len(archs) > 1:
        chosen_archs = st.sidebar.multiselect("Architectures", archs, default=archs)
        summary = [row for row in summary if row["arch"] in chosen_archs]
        records = [r for r in records if r["arch"] in chosen_archs]
    about = data.get("description") or ""
    for command in ui.sweep_commands(data):
        about += f"  \nReproduce: `{command}`"
    st.caption(f"{about}  \nTO-score variant: **{variant}** · {len(records)} runs")
    floors = [row["to_score_floor"] for row in summary if row.get("to_score_floor")]
    floor = max(floors) if floors else None
    log_y = y_axis == "log" or (y_axis == "auto" and plots.spans_decades(
        [row["to_score_mean"] for row in summary], floor))
    certified = sum(row.get("bars_certified", 0) for row in summary)
    finite_bars = sum(row.get("bars_finite", 0) for row in summary)
    if floor is None:
        st.warning("This sweep was made before paths were optimised to convergence: its "
                   "TO-scores are upper bounds set partly by the path budget.",
                   icon=":material/history:")
    else:
        st.caption(f"{certified}/{finite_bars} finite bars certified (their paths converged). "
                   f"Dashed line: the resolution floor, the score of bars each as long as the "
                   f"path tolerance; a score on it reads as \"below what we can resolve\".")
    widths = sorted({row["width"] for row in summary})
    depths = sorted({row["depth"] for row in summary})
    for column, axis, values in zip(st.columns(2), ("width", "depth"), (widths, depths),
                                    strict=True):
        with column:
            if len(values) > 1:
                ui.chart(plots.scaling_figure(summary, x=axis, log_x=log_x, log_y=log_y,
                                              score_variant=variant, floor=floor),
                         key=f"vs_{axis}", name=f"to_score_vs_{axis}")
            else:
                st.info(f"This sweep has a single {axis} ({values[0]}).", icon=":material/info:")

    table = [{k: v for k, v in row.items() if k not in ("to_score_seeds",)} for row in summary]
    with st.expander("Summary table", expanded=False):
        st.dataframe(table, hide_index=True, width="stretch")
    ui.downloads([
        ("Summary (CSV)", ui.csv_text(summary), "sweep_summary.csv", "text/csv"),
        ("Runs (CSV)", ui.csv_text(records), "sweep_runs.csv", "text/csv"),
        ("Sweep (JSON)", ui.json_text({**{k: data.get(k) for k in
                                          ("command", "description", "score_variant",
                                           "records", "barcodes")}, "summary": summary}),
         "sweep.json", "application/json"),
    ])

    st.subheader("Barcodes across scales")
    barcodes = data.get("barcodes") or {}
    cols = st.columns(3)
    along = cols[0].radio("Vary", ["width", "depth"], horizontal=True,
                          index=0 if len(widths) > 1 or len(depths) == 1 else 1)
    fixed_axis = "depth" if along == "width" else "width"
    fixed_values = depths if along == "width" else widths
    # default: the value that has the most scales along the varied axis (the base of a cross)
    spread = {v: len({r[along] for r in records if r[fixed_axis] == v}) for v in fixed_values}
    fixed = cols[1].selectbox(f"at {fixed_axis}", fixed_values,
                              index=fixed_values.index(max(fixed_values, key=spread.get)))
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
        ui.chart(plots.barcodes_overlay_figure(overlay,
                                               title=f"Barcodes by {along} ({fixed_axis} "
                                                     f"{fixed}, seed {seed})",
                                               normalize="range" if per_run else None),
                 key="overlay", name=f"barcodes_by_{along}")
        if len(overlay) < len(chosen):
            st.caption(f"{len(chosen) - len(overlay)} runs have no stored barcode.")
    else:
        st.info("No barcodes stored for this selection.", icon=":material/info:")

with st.expander("Run a new sweep", expanded=not sources, icon=":material/play_circle:"):
    st.caption("Every width × depth × seed becomes one run of the backend (finished runs are "
               "reused). You can keep using the dashboard while it runs.")
    base_values = st.session_state.get("explore_config") or {}
    try:
        base = ExperimentConfig.from_dict(base_values) if base_values else ExperimentConfig()
    except ValueError:
        base = ExperimentConfig()
    c1, c2, c3, c4 = st.columns(4)
    dataset = c1.selectbox("Dataset", ui.DATASETS, index=ui.DATASETS.index(base.dataset),
                           key="sw_dataset")
    arch = c2.selectbox("Architecture", ui.ARCHS, index=ui.ARCHS.index(base.arch),
                        key="sw_arch")
    k = c3.number_input("Minima K", min_value=2, max_value=64, value=base.k, key="sw_k")
    steps = c4.number_input("Training steps", min_value=1, value=base.steps, key="sw_steps")
    c1, c2, c3 = st.columns(3)
    widths_text = c1.text_input("Widths", "4,8,16,32", key="sw_widths")
    depths_text = c2.text_input("Depths", "1,2", key="sw_depths")
    seeds_text = c3.text_input("Seeds", "0,1,2", key="sw_seeds")
    plan = None
    try:
        sweep_base = base.replace(dataset=dataset, arch=arch, k=int(k), steps=int(steps))
        axes = {"widths": ints(widths_text, "widths"), "depths": ints(depths_text, "depths"),
                "seeds": ints(seeds_text, "seeds")}
        plan = ui.deferred_view(
            ("sweep-plan", str(ui.store().root), len(ui.finished_runs()),
             ui.config_key(sweep_base), *(tuple(v) for v in axes.values())),
            plan_sweep, sweep_base, axes, message="Estimating the cost…")
    except ValueError as err:
        st.error(str(err), icon=":material/error:")
    if plan is not None:
        st.caption(f"{plan['runs']} runs ({plan['done']} already finished) · estimated "
                   f"{ui.format_seconds(plan['seconds'])} · largest model "
                   f"{plan['n_params']:,} parameters")
        if plan["refusal"]:
            st.error(f"Cannot run this sweep: {plan['refusal']}.", icon=":material/memory:")
    running = st.session_state.get("sweep_job") is not None
    b1, b2 = st.columns(2)
    with b1:
        launch = ui.start_button(
            "Launch sweep", "launch_sweep", plan["seconds"] if plan else 0.0,
            (ui.config_key(sweep_base), str(axes)) if plan else None, type="primary",
            disabled=plan is None or running or bool(plan["refusal"]),
            icon=":material/play_arrow:", width="stretch")
    if launch:
        try:
            st.session_state.sweep_job = ui.manager().submit_sweep(sweep_base, **axes)
            st.session_state.sweep_family = ui.sweep_family(sweep_base)
            st.rerun()
        except (ValueError, FileNotFoundError) as err:
            st.error(str(err), icon=":material/error:")
    demo_commands = ui.sweep_commands(demo) if demo is not None else []
    if demo_commands:
        with b2:
            demo_plan = ui.deferred_view(("demo-plan", str(ui.store().root),
                                          len(ui.finished_runs()), *demo_commands),
                                         plan_demo, tuple(demo_commands),
                                         message="Estimating the demo sweep…")
            recompute = demo_plan is not None and ui.start_button(
                "Recompute the demo sweep", "recompute_demo", demo_plan["seconds"],
                tuple(demo_commands), disabled=running or bool(demo_plan["refusal"]),
                icon=":material/refresh:", width="stretch", help="Runs " + " and ".join(
                    f"`{c}`" for c in demo_commands) + " in the backend "
                    f"(estimated {ui.format_seconds(demo_plan['seconds'])}).")
        if recompute:
            try:
                for command in demo_commands:  # queued in order; progress follows the last
                    demo_base, demo_axes = ui.demo_sweep_plan(command)
                    st.session_state.sweep_job = ui.manager().submit_sweep(demo_base,
                                                                           **demo_axes)
                st.session_state.sweep_family = ui.sweep_family(demo_base)
                st.rerun()
            except (ValueError, FileNotFoundError, SystemExit) as err:
                st.error(f"Cannot rerun the demo command: {err}", icon=":material/error:")
