"""The one place the dashboard touches a Streamlit internal: a page link as a server's first
request.

Streamlit treats an app with a ``pages/`` folder next to its entry point as a legacy (v1)
multipage app until the first ``st.navigation`` call of the process. Until then a link straight
to a page (e.g. ``/scaling?sweep=demo`` as the first request after the server starts) runs that
script alone, without ``app.py``'s navigation, layout and page names. No option turns this off
(checked for Streamlit 1.67: ``PagesManager.uses_pages_directory`` is set from the folder's
existence and cleared only by ``st.navigation``; ``client.showSidebarNavigation`` only hides the
legacy menu), and the folder keeps its name. So each page clears that flag itself and reruns.
``tests/test_app_streamlit_shim.py`` fails when the internal changes.
"""

from __future__ import annotations

import streamlit as st
from streamlit import config

CARRIED = "_carried_query"  # session key: the link's query parameters across the rerun


def use_navigation() -> None:
    """Make sure this page runs inside ``app.py``'s ``st.navigation``; every page calls it
    first.

    On a legacy run it switches the process to ``st.navigation`` and reruns, which lands on the
    same page (the url paths equal the file names), and then restores the link's query
    parameters, which that rerun drops. Otherwise it does nothing.
    """
    try:  # without the internal there is no legacy mode to leave
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        if config.get_option("global.appTest"):  # AppTest resets the flag before every run
            return
        st.session_state[CARRIED] = {k: st.query_params.get_all(k) for k in st.query_params}
        st.rerun()
    carried = st.session_state.pop(CARRIED, None)
    if carried:
        st.query_params.update(carried)
