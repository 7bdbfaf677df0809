"""Run pickers: a selectbox of finished runs bound to a URL query parameter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from lossbarcode.experiment import Result
from pages._runs import finished_runs, is_demo, result, run_health_of, store


def run_label(run_id: str) -> str:
    """``"a1b2c3d4 · digits fcn 32×2 · K=8 · ... · TO l2 0.0123 · 8/8 minima, 7/7 bars
    certified"`` for pickers (``demo`` and ``broken`` marked)."""
    r = result(run_id)
    if r is None:
        return f"{run_id} (not finished)"
    c = r.config
    marks = (" · demo" if is_demo(run_id) else "") + (
        " · ⚠ broken" if run_health_of(r).broken else "")
    done, k = r.minima_count
    bars, finite = r.certified
    return (f"{run_id[:8]} · {c.dataset} {c.arch} {c.width}×{c.depth} · K={r.k} · "
            f"{c.schedule} lr · {c.path_method}{' · aligned' if c.align else ''} · "
            f"TO {c.score_variant} {r.score:.4g} · "
            f"{done}/{k} minima, {bars}/{finite} bars certified{marks}")


def remember_run(run_id: str, param: str = "run", chosen: bool = True) -> None:
    """Make ``run_id`` the current run of this session and of the URL (``chosen``: by the
    user or a finished job, which ends the report of a bad link)."""
    st.session_state[f"current_{param}"] = run_id
    st.query_params[param] = run_id
    if chosen:
        st.session_state.pop(f"_missing_{param}", None)


NO_RUNS = ("No finished runs yet. Start one on the **Explore** page (or from the CLI: "
           "`lossbarcode run`), then come back.")


def picked_result(label: str = "Run", param: str = "run") -> Result:
    """:func:`run_picker` plus the finished result; stops the page when there is none."""
    chosen = result(run_picker(label, param))
    if chosen is None:
        st.stop()
    return chosen


def run_picker(label: str = "Run", param: str = "run", pending: Sequence[str] = (),
               default_index: int = 0, container: Any = None,
               empty_message: str = NO_RUNS) -> str | None:
    """A selectbox of finished runs bound to the URL query parameter ``param``.

    The initial choice is this session's last run, else the URL's run (a shared link opened
    in a new session), else ``runs[default_index]`` (most recent first). A URL run that is
    neither finished nor in ``pending`` (runs being computed) gets a warning. Returns the
    chosen id, or None (with a hint) when there is no finished run.
    """
    where = container or st
    runs = finished_runs()
    key = f"picker_{param}"
    missing_key = f"_missing_{param}"  # a bad link stays reported until another run is picked
    from_url = st.query_params.get(param)
    if from_url and from_url not in runs and is_demo(from_url):
        runs = [*runs, from_url]  # a link to a demo run keeps working once there are others
    if from_url and from_url not in runs and from_url not in pending:
        st.session_state[missing_key] = from_url
    if not runs:
        if st.session_state.get(missing_key):
            missing_run_message(st.session_state[missing_key])
        if not pending:
            where.info(empty_message, icon=":material/info:")
        return None
    # Within a session the session's run is the truth and the URL its mirror: a fragment's
    # rerun carries the URL the browser had when it asked, which may predate the last change.
    # A link opened in a new session (no run remembered yet) names the run.
    remembered = st.session_state.get(f"current_{param}")
    wanted = from_url if from_url in runs and remembered not in runs else remembered
    if wanted not in runs:  # e.g. a run still being computed: keep what was shown
        shown = st.session_state.get(f"_shown_{param}")
        wanted = shown if shown in runs else runs[min(default_index, len(runs) - 1)]
    # The key names the run it opens on, so a selection the browser reports late (with a
    # fragment's rerun) belongs to an old widget and cannot switch the run back.
    choice = where.selectbox(label, runs, index=runs.index(wanted), key=f"{key}_{wanted}",
                             format_func=run_label)
    st.session_state[f"_shown_{param}"] = choice
    if choice != wanted:  # picked in the selectbox
        remember_run(choice, param)
    elif from_url not in pending:  # keep a shared link to a running job until it finishes
        remember_run(choice, param, chosen=False)
    if st.session_state.get(missing_key):
        missing_run_message(st.session_state[missing_key], instead=choice)
    return choice


def missing_run_message(run_id: str, instead: str | None = None) -> None:
    """Warn that a link's run ``run_id`` is not stored (and which run is shown ``instead``)."""
    shown = f" Showing `{instead}` instead." if instead else ""
    st.warning(f"Run `{run_id}` is not in the results folder `{store().root}`.{shown} Check the "
               "link, or copy the run's folder there (it is plain JSON + npz), or start it on "
               "the Explore page.", icon=":material/search_off:")
