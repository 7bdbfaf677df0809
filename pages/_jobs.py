"""Jobs of the backend from the dashboard: the shared job manager, live progress, cost
estimates and the start button that asks before a long run.

The job manager and the cost model import torch: they are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from lossbarcode.config import ExperimentConfig
from lossbarcode.store import ResultStore
from pages._present import columns
from pages._runs import store


@st.cache_resource(show_spinner=False)
def _manager(root: str):
    from lossbarcode.jobs import JobManager

    return JobManager(ResultStore(root))


def manager() -> Any:
    """The process-wide :class:`~lossbarcode.jobs.JobManager` of the results folder, shared by
    every browser session (so two sessions asking for one run compute it once)."""
    return _manager(str(store().root))


def format_seconds(seconds: float | None) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``; ``"estimating…"`` for None."""
    if seconds is None:
        return "estimating…"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"


def job_progress(job_id: str, label: str, cancel_key: str) -> None:
    """Live progress of a job (stage, step, ETA) with a cancel button; reruns the page when
    the job finishes. Only this block reruns while the job runs, so the page stays usable."""
    jm = manager()

    @st.fragment(run_every=0.5)
    def block() -> None:
        status = jm.status(job_id)
        if status is None or status.finished:
            st.rerun()
        with st.container(border=True):
            st.markdown(f"**{label}** · `{job_id}` · {status.state}")
            text = f"{status.stage}: {status.done}/{status.total}"
            if status.message:
                text += f" — {status.message}"
            st.progress(min(max(float(status.fraction), 0.0), 1.0), text=text)
            cols = columns([3, 1], stack=False)
            cols[0].caption(f"elapsed {format_seconds(status.elapsed_s)} · "
                            f"ETA {format_seconds(status.eta_s)}")
            if cols[1].button("Cancel", key=cancel_key, icon=":material/cancel:",
                              width="stretch"):
                jm.cancel(job_id)
                st.rerun()

    block()


def job_outcome(job_id: str) -> Any:
    """Show how a finished job ended when it did not succeed; returns its status."""
    try:
        status = manager().status(job_id)
    except Exception:  # noqa: BLE001 - the manager is optional for reading results
        return None
    if status is None:
        return None
    if status.state == "failed":
        st.error(f"The job failed: {status.error or status.message}", icon=":material/error:")
    elif status.state == "cancelled":
        st.info("The job was cancelled. Finished stages are kept: running it again resumes "
                "from there.", icon=":material/cancel:")
    return status


def estimate(config: ExperimentConfig) -> dict[str, Any]:
    """The job manager's cost estimate (calibrated on the stored runs) plus ``"refusal"``: why
    the run cannot fit in memory, or None. Validates; imports torch: call it from
    :func:`background`, not in a page render."""
    from lossbarcode.cost import check_fits

    try:
        check_fits(config)
    except ValueError as err:
        refusal: str | None = str(err)
    else:
        refusal = None
    return {**manager().estimate(config), "refusal": refusal}


def start_button(label: str, key: str, seconds: float | Callable[[], float], identity: Any,
                 **kwargs: Any) -> bool:
    """A button that starts work, asking first when it is estimated above
    :data:`~lossbarcode.cost.CONFIRM_ABOVE_S`: the first click then shows the estimate and a
    "Confirm: start (est. X)" button instead. True on the click that should start the work.
    ``seconds`` may be a function, called on a click (an estimate not computed yet);
    ``identity`` names what would start (e.g. the config): a change drops the question."""
    from lossbarcode.cost import CONFIRM_ABOVE_S

    asked = f"_confirm_{key}"
    if asked in st.session_state and st.session_state[asked] == identity:
        seconds = st.session_state[f"{asked}_s"]
        st.warning(f"This is estimated to take **{format_seconds(seconds)}** on this machine. "
                   "Start it?", icon=":material/schedule:")
        yes, back = columns(2, stack=False)
        if yes.button(f"Confirm: start (est. {format_seconds(seconds)})", key=f"{key}_yes",
                      type="primary", width="stretch"):
            del st.session_state[asked]
            return True
        if back.button("Back", key=f"{key}_back", width="stretch"):
            del st.session_state[asked]
            st.rerun()
        return False
    if not st.button(label, key=key, **kwargs):
        return False
    if callable(seconds):
        seconds = seconds()
    if seconds > CONFIRM_ABOVE_S:
        st.session_state[asked] = identity
        st.session_state[f"{asked}_s"] = seconds
        st.rerun()
    return True


def config_key(config: ExperimentConfig) -> tuple:
    """A hashable key of ``config`` (for background views and start buttons)."""
    return tuple(sorted(config.to_dict().items()))
