"""Sweeps launched from the Scaling page: the grid typed into the launcher, the cost of a sweep
(or of recomputing the demo sweep), its job, and what the page shows once it has finished.

Session state: ``sweep_job`` (the job running), ``sweep_family`` (the family it makes, to
select once done), ``sweep_source`` (the Sweep selectbox).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from lossbarcode.cli import parse_sweep_command
from lossbarcode.config import ExperimentConfig
from lossbarcode.sweep import sweep_family
from pages._jobs import estimate, job_outcome, manager
from pages._runs import store
from pages._sweeps import family_id


def plan_sweep(base: ExperimentConfig, axes: dict[str, Any]) -> dict[str, Any]:
    """Runs, finished runs, estimated seconds and the first memory refusal of a sweep
    (background worker: torch)."""
    from lossbarcode.sweep import sweep_configs

    configs = sweep_configs(base, **axes)
    costs = [estimate(c) for c in configs]
    todo = [not store().exists(c.run_id) for c in configs]
    refusals = [c["refusal"] for c, t in zip(costs, todo, strict=True) if t and c["refusal"]]
    return {"runs": len(configs), "done": len(configs) - sum(todo),
            "seconds": sum(c["seconds"] for c, t in zip(costs, todo, strict=True) if t),
            "n_params": max(c["n_params"] for c in costs),
            "refusal": refusals[0] if refusals else None}


def plan_commands(commands: tuple[str, ...]) -> dict[str, Any]:
    """Estimated seconds of the runs of ``lossbarcode sweep`` command lines (e.g. the demo
    sweep's) not stored yet, and the first memory refusal."""
    plans = [plan_sweep(*parse_sweep_command(command)) for command in commands]
    return {"seconds": sum(p["seconds"] for p in plans),
            "refusal": next((p["refusal"] for p in plans if p["refusal"]), None)}


def launch(base: ExperimentConfig, axes: dict[str, Any]) -> None:
    """Queue the sweep as this session's sweep job (its family is selected once done)."""
    st.session_state.sweep_job = manager().submit_sweep(base, **axes)
    st.session_state.sweep_family = sweep_family(base)


def launch_commands(commands: list[str]) -> None:
    """Queue the sweeps of ``lossbarcode sweep`` command lines, in order; the session's job
    (and its progress) is the last one."""
    for command in commands:
        launch(*parse_sweep_command(command))


def finish_sweep_job(sources: dict[str, dict[str, Any]]) -> str | None:
    """This session's sweep job: once finished, say how it ended unless it succeeded, and
    select the family it made (the URL's ``sweep``). Returns the job id (None when there was
    none)."""
    job_id = st.session_state.get("sweep_job")
    if job_id is None:
        return None
    status = manager().status(job_id)
    if status is not None and status.finished:
        pending = st.session_state.pop("sweep_family", None)
        st.session_state.pop("sweep_job", None)
        job_outcome(job_id)
        if pending is not None and status.state == "done" and family_id(pending) in sources:
            st.query_params["sweep"] = family_id(pending)
            st.session_state.pop("sweep_source", None)
    return job_id
