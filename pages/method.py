"""Method: what a loss barcode and the TO-score are, with a worked example and citation."""

import numpy as np
import streamlit as st

from lossbarcode import minima_barcode, plots, to_score
from lossbarcode.topology import NORMALIZATIONS, NORMS, RULES
from pages._present import chart, columns
from pages._streamlit_shim import use_navigation

use_navigation()

# The worked example of the design notes: three minima a, b, c joined by three paths.
NAMES = ["a", "b", "c"]
LOSSES = np.array([0.0, 2.0, 1.0])
BARRIERS = np.array([[np.inf, 3.5, 5.0], [3.5, np.inf, 3.0], [5.0, 3.0, np.inf]])
CITATION = """@article{barannikov2020lossbarcode,
  title   = {Loss Barcode: A Topological Measure of Escapability in Loss Landscapes},
  author  = {Barannikov, Serguei and others},
  journal = {arXiv preprint arXiv:2012.15834},
  year    = {2020},
  url     = {https://arxiv.org/abs/2012.15834}
}"""

st.title("Method")
st.markdown(
    """
**The question.** Gradient descent stops in a local minimum. How hard is it to get out? A
minimum is a trap only as deep as the *lowest pass* that leads from it to somewhere lower.

**Sublevel sets.** For a loss L and a level c, take all parameters with L(θ) ≤ c. As c rises,
a new piece (connected component) of that set is *born* at each local minimum, and pieces
*merge* at saddles.

**Segments and the barcode.** Each minimum m gets a segment [bₘ, dₘ]: bₘ = L(m), and dₘ is the
level at which m's piece joins a piece holding a strictly lower minimum (the *elder rule*: when
two pieces merge, the younger one — with the higher minimum — dies; ties go to the lower index).
Equivalently dₘ is the smallest possible maximum of L along any path from m to lower loss. The
global minimum never dies: its bar is [L_min, ∞). The multiset of segments is the **loss
barcode**; the *length* dₘ − bₘ is the barrier that traps gradient descent in m.

**From a network to a barcode.** We train K networks from K seeds (all at once, batched), join
pairs of minima with low-loss paths (straight lines, nudged elastic bands or Bezier curves) and
record each path's barrier — the highest training loss along it. The barcode of this graph of
minima is computed exactly (union-find with the elder rule), so a minimum may escape *through*
other minima.

**Paths run until they converge.** Any path is an upper bound on the true barrier, so a path
stopped early overstates its segment — by a similar amount at every width, which would make wide
networks look alike. Each path is therefore optimised in checked cycles until its barrier stops
falling (two cycles in a row lower it by at most `path_tol` × segment + `path_atol`), first on
minibatches and then on the whole training set with a *climbing image* that sits on the saddle;
the barrier is measured densely along the final path, at a point of the path. A path that hits
its step cap is reported **unconverged**, and the bar it ends is marked as not certified.
`path_atol` is the resolution: a TO-score on the Scaling page's dashed floor is "below what we
can resolve", not a measured zero.

**TO-score** (Topological Obstructions score): one number from the barcode, a norm of the
vector of finite segment lengths. The dashboard uses the **L2 norm of the raw lengths
(variant `l2`)** unless a run asks for another: `sum` (L1), `max` (L∞), `mean`, each optionally
divided by the loss range (`*_range`). Every page names the variant next to the score, and every
stored run keeps its raw barcode, so any variant can be recomputed. Scores are computed on the
*training* loss — the loss SGD sees; test loss and error are kept per minimum for the
generalization view.
"""
)

st.subheader("A worked example")
st.markdown(
    "Three minima with losses L(a) = 0, L(c) = 1, L(b) = 2, and the barrier of the best path "
    "found between each pair: c–a 5, c–b 3, b–a 3.5."
)
rule = st.radio(
    "Rule", RULES, horizontal=True,
    format_func={"union_find": "union-find (exact, default)",
                 "direct": "direct paths only (the paper's released code)"}.get,
    help="The direct rule lets a minimum die only on a path that leads straight to a lower "
         "minimum; union-find also follows paths through other minima.",
)
bars = minima_barcode(LOSSES, BARRIERS, rule=rule)
labels = [f"minimum {NAMES[m]}" for m in bars.minima]
colors = plots.minimum_colors(bars.minima)
rows = [{"minimum": NAMES[m], "birth": f"{b:g}", "death": "∞" if np.isinf(d) else f"{d:g}",
         "length": "∞" if np.isinf(d) else f"{d - b:g}",
         "killed on path": "—" if np.isinf(d) else "–".join(NAMES[v]
                                                            for v in bars.saddle_edges[i])}
        for i, (m, b, d) in enumerate(zip(bars.minima, bars.births, bars.deaths, strict=True))]
left, right = columns([3, 2])
with left:
    chart(plots.barcode_figure(bars, labels=labels, colors=colors,
                               title=f"Barcode ({rule.replace('_', '-')} rule)"),
          key="example_barcode", name=f"worked_example_barcode_{rule}")
with right:
    st.dataframe(rows, hide_index=True, width="stretch")
    st.metric("TO-score (l2)", f"{to_score(bars):.4g}",
              help="sqrt(sum of squared finite lengths)")
    st.caption("All variants: " + ", ".join(
        f"{n}{'/range' if z else ''} = {to_score(bars, n, z):.3g}"
        for z in NORMALIZATIONS for n in NORMS))
if rule == "union_find":
    st.markdown(
        "Raise the level c. At **c = 3** the path c–b opens: b (born at 2) is younger than c "
        "(born at 1), so **b dies at 3** (length 1). At **c = 3.5** the path b–a joins the "
        "merged piece {b, c} to a: **c dies at 3.5** (length 2.5), escaping *through* b. "
        "TO-score (L2) = √(1² + 2.5²) ≈ 2.69."
    )
else:
    st.markdown(
        "The direct rule only looks at paths from a minimum straight to a lower one: c's only "
        "direct path to lower loss is c–a, so **c dies at 5** (length 4) — it overestimates the "
        "trap, because c can escape over the lower pass through b. TO-score ≈ 4.12."
    )

st.subheader("Reading the views")
st.markdown(
    """
- **Barcode**: one bar per minimum from its loss (birth) to the level where it merges into a
  lower minimum (death); the arrow marked ∞ is the global minimum. Short bars = easy escape.
- **Persistence diagram**: the same bars as points (birth, death); far above the diagonal
  means a deep trap.
- **Colours**: minimum *m* has one colour everywhere — its bar, its diagram point, the path
  where it died, its dot on the minima map. Scales (widths/depths) use a purple→orange scale,
  runs a separate palette with distinct symbols.
- **Scaling**: the paper's first finding — barcodes and TO-scores shrink as networks get wider
  and deeper. **Generalization**: its second — in some settings segment length relates to test
  error.
"""
)

st.subheader("Reproduce any figure from the command line")
st.markdown("Every run is identified by a hash of its full config, so the same command gives "
            "the same run id anywhere. The Explore page shows the exact command of each run.")
st.code(
    """pip install -e .                       # in a clone of the repository
lossbarcode run --width 32 --depth 2 --minima 8     # prints the run id last
lossbarcode show <run_id>              # barcode table and TO-score (all variants)
lossbarcode export <run_id> --format csv --output minima.csv
lossbarcode sweep --widths 4,8,16,32 --depths 1,2 --seeds 0,1,2 --output sweep.json
lossbarcode app                        # this dashboard""",
    language="bash",
)
st.code(
    """from lossbarcode import plots
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.store import ResultStore

result = run_experiment(ExperimentConfig(width=32, depth=2, k=8), ResultStore())
colors = plots.minimum_colors(result.barcode.minima)
plots.barcode_figure(result.barcode, colors=colors).write_html("barcode.html")
plots.profiles_figure(result.profiles, result.pairs,
                      colors=plots.path_colors(result.barcode, result.pairs)).show()""",
    language="python",
)
st.caption("Every chart also has a camera button (PNG) in its toolbar, and every page offers "
           "the data behind its charts as CSV/JSON.")

st.subheader("Citation")
st.markdown(
    "S. Barannikov et al., *Loss Barcode: A Topological Measure of Escapability in Loss "
    "Landscapes*, [arXiv:2012.15834](https://arxiv.org/abs/2012.15834). This implementation "
    "computes the barcode of the sampled graph of minima exactly (union-find), which can give "
    "shorter segments than the direct-path rule of the paper's released code; choose "
    "`rule = direct` to compare with the paper's figures."
)
st.code(CITATION, language="bibtex")
