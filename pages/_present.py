"""Presentation mode (``?present=1``): large fonts and stacked charts for a projector; the
columns and charts every page draws follow it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from lossbarcode import plots

PLOTLY_CONFIG = {"displaylogo": False,
                 "toImageButtonOptions": {"format": "png", "scale": 2}}

PRESENT_PARAM = "present"  # chart font sizes on a projector: plots.PRESENT_*_FONT
PRESENT_CSS = """<style>
html, body, [data-testid="stAppViewContainer"] { font-size: 22px; }
[data-testid="stSidebarUserContent"] { display: none; }
h1 { font-size: 2.6rem !important; }
[data-testid="stMetricValue"] { font-size: 2.1rem; }
[data-testid="stCaptionContainer"] { font-size: 1rem; }
</style>"""


def presenting() -> bool:
    """Whether the app is in presentation mode (``?present=1``): large fonts, charts stacked
    one per row, a sidebar with the page list only. The URL sets it when a session starts;
    then the session holds it (a page switch drops the URL's parameters, and a fragment's rerun
    may carry an old URL) and the URL mirrors it."""
    if "_present" not in st.session_state:  # a new session: the link says (see run_picker)
        st.session_state["_present"] = st.query_params.get(PRESENT_PARAM) == "1"
    return bool(st.session_state["_present"])


def presentation_controls() -> None:
    """The presentation-mode switch (sidebar, or a button at the top while presenting); the URL
    mirrors it, so that a shared link opens in the same mode. Called by ``app.py``."""
    if not presenting():
        st.query_params.pop(PRESENT_PARAM, None)
        if st.sidebar.button("Presentation mode", icon=":material/slideshow:",
                             key="enter_present", width="stretch",
                             help="Large fonts, charts stacked for a projector, the sidebar "
                                  "reduced to the page list."):
            st.session_state["_present"] = True
            st.rerun()
        return
    st.query_params[PRESENT_PARAM] = "1"
    st.html(PRESENT_CSS)
    if st.button("Exit presentation mode", icon=":material/close_fullscreen:",
                 key="exit_present"):
        st.session_state["_present"] = False
        st.rerun()


def columns(spec: int | Sequence[float], *, stack: bool = True, container: Any = None,
            **kwargs: Any) -> list[Any]:
    """``st.columns(spec)`` (in ``container`` if given): the one way pages make columns.

    When presenting, the columns become the same number of full-width containers stacked one
    per row, so that charts and metrics are wide and legible on a projector. ``stack=False``
    keeps a row of controls that belong together (inputs, buttons such as Confirm/Back) side
    by side even then: they are legible at any width, and stacked they would read as
    separate."""
    where = container or st
    n = spec if isinstance(spec, int) else len(spec)
    if stack and presenting():
        return [where.container() for _ in range(n)]
    return where.columns(spec, **kwargs)


def chart(fig: Any, key: str, name: str, container: Any = None, **kwargs: Any) -> Any:
    """``st.plotly_chart`` with a PNG download (toolbar camera) named after the view, and
    the title clear of the toolbar (:func:`lossbarcode.plots.clear_of_toolbar`); when
    presenting, in large type (:func:`lossbarcode.plots.presentation_fonts`)."""
    where = container or st
    if presenting():
        fig = plots.presentation_fonts(fig)
    config = {**PLOTLY_CONFIG,
              "toImageButtonOptions": {**PLOTLY_CONFIG["toImageButtonOptions"],
                                       "filename": name}}
    return where.plotly_chart(plots.clear_of_toolbar(fig), key=key, config=config, **kwargs)
