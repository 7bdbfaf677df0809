"""Loss Barcode Explorer: ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(page_title="Loss Barcode Explorer", page_icon=":material/stacked_bar_chart:",
                   layout="wide")

pages = [
    st.Page("pages/toy_landscapes.py", title="Toy landscapes", icon=":material/landscape:",
            default=True),
]
st.navigation(pages).run()
