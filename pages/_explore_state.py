"""The Explore page's session state: the config widgets and the config they mean, the run
job's lifecycle, and the highlighted minimum.

Session keys: ``cfg_<field>`` (one widget per config field), ``preset``, ``explore_config``
(the last config, also read by the Scaling page), ``explore_job`` (the run being computed),
``explore_before`` (the run shown when it started), ``explore_failure`` (how the last job
ended, when it did not succeed), ``highlight`` / ``highlight_run`` (the highlighted minimum and
the run it belongs to).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from lossbarcode.choices import EMBEDDED_DATASETS, PRESETS, TORCHVISION_DATASETS
from lossbarcode.config import ExperimentConfig, field_help
from lossbarcode.datafiles import data_source, missing_files
from pages._jobs import estimate, manager
from pages._pickers import remember_run
from pages._runs import result, store
from pages._views import view_future

# Widgets whose "no value" means None in the config (empty text, "none", the family's).
FAMILY_DEFAULT = "the family's"
BLANK = {"data_root": "", "score_normalize": "none", "optimizer": FAMILY_DEFAULT}
NEEDS_ROOT = ("text", *TORCHVISION_DATASETS)  # datasets read from the data folder
CUSTOM = "custom"  # the preset of an edited config

# --------------------------------------------------------------------------- config widgets


def help_for(name: str, empty: bool = False) -> str:
    """The help of config field ``name``'s widget: the config's own description
    (:func:`~lossbarcode.experiment.field_help`) as a sentence; ``empty`` for a box left empty
    to mean None."""
    text = field_help(name)
    if empty:
        text = text.replace("none: ", "empty: ", 1)
    return text[0].upper() + text[1:] + "."


def setting(widget: Callable[..., Any], label: str, name: str, *args: Any,
            **kwargs: Any) -> Any:
    """The widget of config field ``name`` (key ``cfg_<name>``, help :func:`help_for`): e.g.
    ``setting(st.number_input, "Width", "width", step=1)``. A number box that may stay empty
    (``value=None``) says what empty means."""
    return widget(label, *args, key=f"cfg_{name}",
                  help=help_for(name, empty="value" in kwargs and kwargs["value"] is None),
                  **kwargs)


def to_widgets(values: dict[str, Any]) -> dict[str, Any]:
    """Widget values (``cfg_<field>``) of config values."""
    return {f"cfg_{k}": (BLANK[k] if v is None and k in BLANK else v) for k, v in values.items()}


def from_widgets() -> dict[str, Any]:
    """The config values the widgets hold."""
    values = {}
    for name in ExperimentConfig().to_dict():
        value = st.session_state.get(f"cfg_{name}")
        if name in BLANK and value == BLANK[name]:
            value = None
        values[name] = value
    return values


def current_config() -> dict[str, Any]:
    """The widgets' config values, kept as the session's config (``explore_config``)."""
    values = from_widgets()
    st.session_state.explore_config = values
    return values


def preset_values(name: str) -> dict[str, Any]:
    """The full config of preset ``name``."""
    return ExperimentConfig(**PRESETS[name][1]).to_dict()


def apply_preset() -> None:
    """Preset selectbox callback: the widgets take the chosen preset's values."""
    if st.session_state.preset == CUSTOM:
        return
    values = preset_values(st.session_state.preset)
    st.session_state.explore_config = values
    st.session_state.update(to_widgets(values))


def init_config() -> None:
    """Fill the widgets before they are drawn: the URL's ``preset`` (or the default) in a new
    session, else the session's last config. An edited preset is no longer that preset: it
    says so instead of keeping its name."""
    if "preset" not in st.session_state:
        st.session_state.preset = st.query_params.get("preset", "default")
        if st.session_state.preset not in PRESETS:
            st.session_state.preset = "default"
    if "explore_config" not in st.session_state:
        st.session_state.explore_config = preset_values(st.session_state.preset)
    for key, value in to_widgets(st.session_state.explore_config).items():
        st.session_state.setdefault(key, value)
    if (st.session_state.preset != CUSTOM
            and from_widgets() != preset_values(st.session_state.preset)):
        st.session_state.preset = CUSTOM


def _data_root_now() -> str | None:
    return st.session_state.get("cfg_data_root") or None


def dataset_label(name: str) -> str:
    """The dataset picker's label of ``name``: marked when its data is not here (picking it
    says how to get it)."""
    if name == "text" or missing_files(name, _data_root_now()) is None:
        return name
    return f"{name} (not installed)"


def dataset_caption(name: str) -> str | None:
    """Where the picked dataset is read from (None for the embedded sets, made by code)."""
    if name in EMBEDDED_DATASETS:
        return None
    source = data_source(name, _data_root_now())
    return None if source is None else f"Read from {source}."


# --------------------------------------------------------------------------- checks and estimate


def problems_now(values: dict[str, Any]) -> str | None:
    """What is wrong with the sidebar's config, checked at once (no torch): the config's own
    checks, then the data files it needs."""
    try:
        config = ExperimentConfig.from_dict(values)
    except (ValueError, TypeError) as err:
        return str(err)
    return missing_files(config.dataset, config.data_root)


def check_and_estimate(items: tuple) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Validate and estimate the cost, in the background worker."""
    config = ExperimentConfig.from_dict(dict(items))
    return config, estimate(config)


def estimate_failed(key: tuple) -> bool:
    """Whether the background check ``key`` finished with an error."""
    future = view_future(key)
    return future is not None and future.done() and future.exception() is not None


def click_estimate(values: dict[str, Any]) -> float:
    """Seconds of a run clicked before its background estimate finished (0 when invalid: the
    submit then says why)."""
    try:
        config = ExperimentConfig.from_dict(values)
        return 0.0 if store().exists(config.run_id) else estimate(config)["seconds"]
    except (ValueError, TypeError):
        return 0.0


# --------------------------------------------------------------------------- the run job


def start_run(values: dict[str, Any], shown: str | None) -> None:
    """Submit the config as this session's run job and show it (``shown``: the run open
    before, shown again if the job does not succeed); an invalid config shows why."""
    try:
        job = manager().submit_run(ExperimentConfig.from_dict(values))
    except (ValueError, FileNotFoundError, TypeError) as err:
        st.error(str(err), icon=":material/error:")
        return
    st.session_state.explore_job = job
    st.session_state.explore_before = shown
    st.session_state.pop("explore_failure", None)
    remember_run(job)
    st.rerun()


def settle_job() -> None:
    """Once this session's run job has finished: show its result when it succeeded, else go
    back to the run open before (so that the URL names what is shown) and keep how it ended
    (``explore_failure``)."""
    job = st.session_state.get("explore_job")
    if job is None:
        return
    status = manager().status(job)
    if status is not None and not status.finished:
        return
    del st.session_state["explore_job"]
    if status is not None and status.state == "done":
        remember_run(job)
        return
    before = st.session_state.pop("explore_before", None)
    if before and result(before) is not None:
        remember_run(before)
    else:
        st.query_params.pop("run", None)
        st.session_state.pop("current_run", None)
    if status is not None:
        st.session_state.explore_failure = (job, status.state, status.error or status.message)


def failure_notice() -> None:
    """How the session's last run job ended, when it failed or was cancelled."""
    failure = st.session_state.get("explore_failure")
    if failure is None:
        return
    job, state, reason = failure
    shown = st.session_state.get("current_run")
    after = f" Showing `{shown}`, the run you had open." if shown else ""
    if state == "failed":
        st.error(f"Run `{job}` failed: {reason}.{after}", icon=":material/error:")
    else:
        st.info(f"Run `{job}` was cancelled. Finished stages are kept: running it again "
                f"resumes from there.{after}", icon=":material/cancel:")


def running_jobs() -> list[str]:
    """The unfinished jobs the page follows: the session's, and the URL's run (a shared link
    to a run being computed)."""
    running = []
    for job_id in dict.fromkeys([st.session_state.get("explore_job"),
                                 st.query_params.get("run")]):
        status = manager().status(job_id) if job_id else None
        if status is not None and not status.finished:
            running.append(job_id)
    return running


# --------------------------------------------------------------------------- highlighted minimum


def selected_minimum(key: str, state: Any) -> int | None:
    """The minimum a chart or table selection event names (a table row, or the first point
    whose ``customdata`` starts with a minimum's index)."""
    if key == "minima_table":
        rows = state.selection.rows if state else []
        return int(rows[0]) if rows else None
    for point in (state.selection.points if state else []):
        data = point.get("customdata")
        if isinstance(data, dict):  # a row of a typed array: {"0": m, "1": ...}
            data = [data[k] for k in sorted(data, key=str)]
        if isinstance(data, list | tuple) and data:
            data = data[0]
        if isinstance(data, int | float) and data >= 0:
            return int(data)
    return None


def pick(key: str) -> None:
    """Chart/table selection callback: the clicked minimum becomes the highlighted one."""
    st.session_state.highlight = selected_minimum(key, st.session_state.get(key))


def sync_highlight(run_id: str, k: int) -> int | None:
    """The highlighted minimum of run ``run_id`` (``k`` minima): the URL's ``minimum`` when the
    run is new to the session, then the session's; the URL mirrors it."""
    if st.session_state.get("highlight_run") != run_id:  # a new run: read ?minimum=
        st.session_state.highlight_run = run_id
        wanted = st.query_params.get("minimum")
        st.session_state.highlight = (int(wanted) if wanted is not None and wanted.isdigit()
                                      and int(wanted) < k else None)
    highlight = st.session_state.get("highlight")
    if highlight is not None and not 0 <= highlight < k:
        highlight = st.session_state.highlight = None
    if highlight is None:
        st.query_params.pop("minimum", None)
    else:
        st.query_params["minimum"] = str(highlight)
    return highlight
