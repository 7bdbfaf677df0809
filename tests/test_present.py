"""Presentation mode on every chart: every page's columns go through the presentation-aware
helper, and the charts a page draws while presenting are in type for a projector."""

import ast
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from lossbarcode import plots

ROOT = Path(__file__).resolve().parents[1]


def test_no_page_makes_columns_itself():
    """Columns made with ``st.columns`` (or a container's ``.columns``) are not stacked when
    presenting: every page goes through ``pages._present.columns``."""
    sources = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]
    assert len(sources) > 10
    offenders = []
    for path in sources:
        if path.name == "_present.py":  # the helper itself
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "columns"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"columns made directly, not stacked when presenting: {offenders}"


def scaling(monkeypatch, tmp_path, present: bool) -> AppTest:
    """The Scaling page on the shipped demo sweep, presenting or not."""
    monkeypatch.setenv("LOSSBARCODE_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("LOSSBARCODE_DEMO_SWEEP", raising=False)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    if present:
        at.query_params["present"] = "1"
    at.run()
    at.switch_page("pages/scaling.py").run()
    assert not at.exception
    return at


def test_scaling_in_presentation_mode_stacks_its_charts_in_large_type(monkeypatch, tmp_path):
    at = scaling(monkeypatch, tmp_path, present=True)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert len(specs) >= 2  # TO-score vs width and vs depth, the overlay
    for spec in specs:
        layout = spec["layout"]
        title = layout["title"]["text"]
        assert layout["title"]["font"]["size"] >= 22, title
        axes = [v for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))]
        assert axes, title
        for axis in axes:  # set on each axis: the chart theme's 12 px would win otherwise
            # (a log axis writes its 2s and 5s at 3/4 of the tick font)
            assert axis["tickfont"]["size"] * (0.75 if axis.get("type") == "log" else 1) >= 18
            assert axis["title"]["font"]["size"] >= 18, title
        # the resolution floor's note
        assert all(note["font"]["size"] >= 18 for note in layout.get("annotations", [])), title
    assert not any(col.get("plotly_chart") for col in at.columns), "a chart in a column"
    assert not any(col.get("metric") for col in at.columns), "a metric in a column"


def test_scaling_outside_presentation_mode_keeps_its_columns_and_type(monkeypatch, tmp_path):
    at = scaling(monkeypatch, tmp_path, present=False)
    assert sum(len(col.get("plotly_chart")) for col in at.columns) == 2  # width | depth
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "tickfont" not in spec["layout"]["xaxis"]  # the theme's own size
    assert spec["layout"]["xaxis"]["exponentformat"] == plots.EXPONENT_FORMAT


@pytest.mark.parametrize("stack", [True, False])
def test_columns_stack_when_presenting_unless_told_not_to(stack, monkeypatch):
    """A row of controls (``stack=False``) stays a row on a projector; charts do not."""
    script = (
        "import streamlit as st\n"
        "from pages._present import columns\n"
        "st.session_state['_present'] = True\n"
        f"a, b = columns(2, stack={stack})\n"
        "a.button('yes')\n"
        "b.button('no')\n")
    monkeypatch.syspath_prepend(str(ROOT))
    at = AppTest.from_string(script).run()
    assert not at.exception
    assert len(at.button) == 2
    assert len(at.columns) == (0 if stack else 2)
