"""Boxes at the top of a page about the run shown: its health, the demo run, where to start."""

from __future__ import annotations

import streamlit as st

from lossbarcode.experiment import Result
from lossbarcode.health import RunHealth
from pages._present import columns
from pages._runs import (
    DEMO_WIDTHS,
    demo_command,
    demo_views_command,
    is_demo,
    result,
    run_health_of,
)


def health_banner(r: Result) -> RunHealth:
    """The run's health at the top of a page: an error box for a broken run, a warning per
    caution, nothing for a healthy run. Returns the health."""
    found = run_health_of(r)
    for problem in found.problems:
        if problem.severity == "broken":
            st.error(f"**Broken run** · {problem.message} Its numbers are not a property of "
                     "the network: pooled statistics leave it out unless you include it.",
                     icon=":material/report:")
        else:
            st.warning(problem.message, icon=":material/warning:")
    return found


def demo_notice(run_id: str, views: bool = False) -> None:
    """Say that ``run_id`` is the shipped demo run, how it was made (with ``views``: its shipped
    default views too, on the pages that show them), and where to start."""
    if not is_demo(run_id):
        return
    c = result(run_id).config
    narrow, wide = DEMO_WIDTHS
    made = f"made by `{demo_command(c.width)}`"
    if views:
        made += f", its default views by `{demo_views_command(run_id)}`"
    st.info(f"You are looking at a **demo run** shipped with the app ({c.dataset}, {c.arch} "
            f"{c.width}×{c.depth}, K = {c.k}; {made}). Two ship: "
            f"width {narrow}, whose bars stand well above the resolution floor, and width "
            f"{wide} (the default), whose bars sit at it; Compare puts them side by side. Your "
            "own runs replace them as soon as you have one.", icon=":material/school:")


def start_here() -> None:
    """The teacher's path through the app: toy landscape → one network → the scaling curve."""
    with st.container(border=True):
        st.markdown("**Start here** · three steps for a lecture or a first look")
        cols = columns(3)
        cols[0].page_link("pages/toy_landscapes.py", label="1 · A toy landscape",
                          icon=":material/landscape:", query_params={"toy": "three_hump_camel"})
        cols[0].caption("Sublevel sets, minima and saddles on a 2-D function; press play.")
        cols[1].page_link("pages/explore.py", label="2 · One network's barcode",
                          icon=":material/science:")
        cols[1].caption("Eight trained minima, the paths between them, their barcode.")
        cols[2].page_link("pages/scaling.py", label="3 · The scaling curve",
                          icon=":material/trending_down:", query_params={"sweep": "demo"})
        cols[2].caption("TO-score vs width and depth: what the shipped sweep measured, and how "
                        "sure it is.")
