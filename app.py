"""Loss Barcode Explorer: ``streamlit run app.py``.

Pages live in ``pages/``; each is a thin script of widgets and library calls. The files there
whose names start with ``_`` are the pages' helper modules, not pages. Nothing heavy is
imported here (no torch, no umap), so the app starts fast.
"""

import streamlit as st

from pages._present import presentation_controls
from pages._warmup import first_run_alone

st.set_page_config(page_title="Loss Barcode Explorer", page_icon=":material/stacked_bar_chart:",
                   layout="wide")

PAGES = {
    "Experiments": [
        st.Page("pages/explore.py", title="Explore", icon=":material/science:", default=True),
        st.Page("pages/scaling.py", title="Scaling", icon=":material/trending_down:",
                url_path="scaling"),
        st.Page("pages/minima_map.py", title="Minima map", icon=":material/scatter_plot:",
                url_path="minima_map"),
        st.Page("pages/landscape_slice.py", title="Landscape slice", icon=":material/layers:",
                url_path="landscape_slice"),
        st.Page("pages/generalization.py", title="Generalization", icon=":material/insights:",
                url_path="generalization"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:",
                url_path="compare"),
        st.Page("pages/reproduction.py", title="Reproduction", icon=":material/fact_check:",
                url_path="reproduction"),
    ],
    "Learn": [
        st.Page("pages/toy_landscapes.py", title="Toy landscapes", icon=":material/landscape:",
                url_path="toy_landscapes"),
        st.Page("pages/method.py", title="Method", icon=":material/menu_book:",
                url_path="method"),
    ],
}
page = st.navigation(PAGES)
with first_run_alone(page.url_path):
    presentation_controls()
    page.run()
