"""Reproduction: the paper's findings tested, one verdict per claim and setting.

Shows a report of ``lossbarcode reproduce``: the shipped one (``assets/reproduce_cpu``) and
the user's own (``reports/``).
"""

from pathlib import Path

import streamlit as st

from lossbarcode import reproduce
from pages._exports import downloads
from pages._present import chart
from pages._runs import ROOT
from pages._streamlit_shim import use_navigation

use_navigation()

SHIPPED = ROOT / "assets" / "reproduce_cpu"

st.title("Reproduction of the paper's findings")
st.caption("arXiv:2012.15834 claims that loss barcodes and TO-scores shrink as networks get "
           "wider and deeper, and that in some settings a minimum's segment length relates to "
           "its generalization error. Each report below tests both on certified runs and says, "
           "per claim and setting, reproduced, contradicted, not resolved or not testable at "
           "its scale.")

found = reproduce.find_reports(SHIPPED, reproduce.reports_folder())
if not found:
    st.info(f"No report in {reproduce.reports_folder()} yet. Make one with `lossbarcode "
            "reproduce --scale tiny` (minutes) or `--scale cpu` (hours on a laptop; the cost "
            "is printed first).",
            icon=":material/info:")
    st.stop()


def label(path: Path) -> str:
    return ("shipped: " if path.parent == SHIPPED else "") + str(path.parent.name)


labels = {label(p): p for p in found}
wanted = st.query_params.get("report")
chosen = st.selectbox("Report", list(labels),
                      index=list(labels).index(wanted) if wanted in labels else 0)
st.query_params["report"] = chosen
path = labels[chosen]
report = reproduce.read_report(path)
st.caption(f"Scale `{report['scale']}` · made {report['made']} by lossbarcode "
           f"{report['lossbarcode']} with `{report['command']}` · "
           f"{report['seconds'] / 60:.0f} min of computing · intervals "
           f"{report['level']:.0%} (hierarchical bootstrap over seeds and minima) · only runs "
           "not broken and with ≥ 90% of their minima certified count.")
st.dataframe(reproduce.verdict_table(report), hide_index=True, width="stretch")


@st.cache_data(show_spinner=False, max_entries=16)
def file_bytes(where: str, mtime: float) -> bytes:
    """A report file, read once per version (the HTML is several MB)."""
    return Path(where).read_bytes()


downloads([(f"Download {name.split('.')[-1].upper()}",
            file_bytes(str(path.parent / name), (path.parent / name).stat().st_mtime),
            name, mime) for name, mime in zip(
                reproduce.REPORT_FILES, ("application/json", "text/markdown", "text/html"),
                strict=True)])
for n, section in enumerate(report["settings"]):
    st.subheader(section["setting"])
    st.caption(reproduce.certification_text(section))
    for claim in section["claims"]:
        st.markdown(f"- **{claim['claim']}** ({claim['paper']}): **{claim['verdict']}** — "
                    f"{claim['reason']}")
    for m, fig in enumerate(reproduce.curve_figures(section)):
        chart(fig, key=f"rep_{n}_{m}", name=f"reproduction_{n}_{m}")
