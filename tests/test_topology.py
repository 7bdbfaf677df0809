"""The topology core against ripser, closed-form ground truth and invariants."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import lossbarcode as lb
from lossbarcode import toys
from lossbarcode.bench.topology import lower_star_ripser
from lossbarcode.topology import grid_edges

# Integers and halves are exact in float32, so ripser's single precision compares exactly.
vertex_values = st.integers(-40, 40).map(lambda v: v / 2)


@st.composite
def graphs(draw, max_n=25):
    n = draw(st.integers(1, max_n))
    values = np.array(draw(st.lists(vertex_values, min_size=n, max_size=n)))
    m = draw(st.integers(0, 3 * n))
    ends = st.integers(0, n - 1)
    edges = np.array(draw(st.lists(st.tuples(ends, ends), min_size=m, max_size=m)),
                     dtype=np.int64).reshape(-1, 2)
    return values, edges


def n_components(n, edges):
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[0]


def sorted_pairs(diagram):
    finite = diagram[np.isfinite(diagram[:, 1])]
    return finite[np.lexsort((finite[:, 1], finite[:, 0]))]


def assert_matches_ripser(values, edges, barcode):
    ref = lower_star_ripser(values, edges)
    np.testing.assert_allclose(sorted_pairs(barcode.diagram()), sorted_pairs(ref), atol=1e-5)
    assert len(barcode.essential()) == np.isinf(ref[:, 1]).sum()


@settings(max_examples=150, deadline=None)
@given(graphs())
def test_graph_barcode_equals_ripser_lower_star(graph):
    values, edges = graph
    barcode = lb.graph_barcode(values, edges)
    assert_matches_ripser(values, edges, barcode)
    assert len(barcode.essential()) == n_components(len(values), edges)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
               elements=vertex_values),
    st.sampled_from(lb.topology.CONNECTIVITIES),
)
def test_grid_barcode_equals_ripser_on_grid_graph(values, connectivity):
    barcode = lb.grid_barcode(values, connectivity)
    assert_matches_ripser(values.reshape(-1), grid_edges(values.shape, connectivity), barcode)
    assert len(barcode.essential()) == 1


@settings(max_examples=80, deadline=None)
@given(graphs())
def test_bar_structure_is_consistent(graph):
    values, edges = graph
    barcode = lb.graph_barcode(values, edges)
    finite = np.isfinite(barcode.deaths)
    # bars sorted by (birth, minimum); each born at its minimum and killed at its saddle
    assert np.all(np.diff(barcode.births) >= 0)
    np.testing.assert_array_equal(barcode.births, values[barcode.minima])
    np.testing.assert_array_equal(barcode.deaths[finite], values[barcode.saddles[finite]])
    assert np.all(barcode.saddles[~finite] == -1) and np.all(barcode.merged_into[~finite] == -1)
    # the absorber is older and outlives the merge
    absorber = barcode.merged_into[finite]
    assert np.all(absorber >= 0)
    assert np.all(barcode.births[absorber] <= barcode.births[finite])
    assert np.all(barcode.deaths[absorber] >= barcode.deaths[finite])
    # the killing edge touches the saddle and is present at the death level
    ends = barcode.saddle_edges[finite]
    assert np.all((ends[:, 0] == barcode.saddles[finite]) | (ends[:, 1] == barcode.saddles[finite]))
    np.testing.assert_array_equal(values[ends].max(axis=1), barcode.deaths[finite])


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_keep_zero_gives_every_vertex_a_bar(graph):
    values, edges = graph
    full = lb.graph_barcode(values, edges, keep_zero=True)
    assert len(full) == len(values)
    assert sorted(full.minima.tolist()) == list(range(len(values)))
    assert full.filter(1e-12) == lb.graph_barcode(values, edges).filter(1e-12)


@settings(max_examples=80, deadline=None)
@given(graphs(), st.randoms(use_true_random=False))
def test_relabelling_vertices_changes_nothing(graph, rnd):
    values, edges = graph
    perm = np.array(rnd.sample(range(len(values)), len(values)))  # new label of vertex v
    relabelled_values = np.empty_like(values)
    relabelled_values[perm] = values
    a = lb.graph_barcode(values, edges)
    b = lb.graph_barcode(relabelled_values, perm[edges])
    np.testing.assert_array_equal(sorted_pairs(a.diagram()), sorted_pairs(b.diagram()))
    np.testing.assert_array_equal(np.sort(a.essential()), np.sort(b.essential()))
    if len(np.unique(values)) == len(values):  # without ties the minima are the same points
        assert sorted(perm[a.minima].tolist()) == sorted(b.minima.tolist())


@settings(max_examples=80, deadline=None)
@given(graphs())
def test_increasing_transform_maps_every_bar(graph):
    values, edges = graph

    def g(x):
        return np.exp(x / 10) + x**3

    a = lb.graph_barcode(values, edges)
    b = lb.graph_barcode(g(values), edges)
    np.testing.assert_array_equal(a.minima, b.minima)
    np.testing.assert_array_equal(a.saddles, b.saddles)
    np.testing.assert_allclose(b.births, g(a.births))
    finite = np.isfinite(a.deaths)
    np.testing.assert_allclose(b.deaths[finite], g(a.deaths[finite]))
    assert np.all(np.isinf(b.deaths[~finite]))


def test_grid_edges_have_the_right_degree():
    for shape, connectivity, degree in [((5, 6), "axis", 4), ((5, 6), "full", 8),
                                        ((4, 4, 4), "axis", 6), ((4, 4, 4), "full", 26)]:
        edges = grid_edges(shape, connectivity)
        counts = np.bincount(edges.reshape(-1), minlength=int(np.prod(shape)))
        assert counts.max() == degree  # interior vertices
        assert len(np.unique(np.sort(edges, axis=1), axis=0)) == len(edges)


# --------------------------------------------------------------------------- ground truth

GROUND_TOLERANCE = 1e-3


def test_quartic_ground_truth_on_a_grid():
    axes, values = toys.get("quartic").grid(4801)
    barcode = lb.grid_barcode(values).filter(1e-3)  # discretisation bars are shorter than this
    np.testing.assert_allclose(barcode.births, [-0.321919, -0.180587], atol=GROUND_TOLERANCE)
    assert np.isinf(barcode.deaths[0])
    assert barcode.deaths[1] == pytest.approx(0.002506, abs=GROUND_TOLERANCE)
    x = axes[0]
    assert x[barcode.minima[0]] == pytest.approx(-0.730893, abs=1e-3)
    assert x[barcode.minima[1]] == pytest.approx(0.680639, abs=1e-3)
    assert x[barcode.saddles[1]] == pytest.approx(0.050254, abs=1e-3)


def test_quartic_ground_truth_by_sampling():
    toy = toys.get("quartic")
    barcode = lb.sample_barcode(toy.f, toy.bounds, 5000, seed=1).filter(0.01)
    np.testing.assert_allclose(barcode.diagram()[:, 0], [-0.321919, -0.180587], atol=1e-3)
    assert barcode.deaths[1] == pytest.approx(0.002506, abs=1e-3)


def assert_camel_barcode(barcode):
    assert len(barcode) == 3
    np.testing.assert_allclose(barcode.births, [0, 0.298638, 0.298638], atol=GROUND_TOLERANCE)
    assert np.isinf(barcode.deaths[0])
    np.testing.assert_allclose(barcode.deaths[1:], [0.877362] * 2, atol=GROUND_TOLERANCE)


def test_three_hump_camel_ground_truth_on_a_grid():
    toy = toys.get("three_hump_camel")
    axes, values = toy.grid(601)
    barcode = lb.grid_barcode(values).filter(0.01)
    assert_camel_barcode(barcode)
    coords = np.column_stack([axes[0][np.unravel_index(barcode.minima, values.shape)[0]],
                              axes[1][np.unravel_index(barcode.minima, values.shape)[1]]])
    np.testing.assert_allclose(np.abs(coords[1:]), [[1.747552, 0.873776]] * 2, atol=0.01)


def test_three_hump_camel_ground_truth_by_sampling():
    toy = toys.get("three_hump_camel")
    # 10^5 samples leave spurious sampling bars up to ~0.05 long: filter at 0.1.
    barcode, points = lb.sample_barcode(toy.f, toy.bounds, 100_000, seed=0, return_points=True)
    assert points.shape == (100_000, 2)
    assert_camel_barcode(barcode.filter(0.1))


def test_toys_are_vectorised_and_have_their_minima_inside():
    for toy in toys.TOYS.values():
        _, values = toy.grid(41)
        assert values.shape == (41,) * toy.dim and np.all(np.isfinite(values))
        assert len(lb.grid_barcode(values)) >= 1
    with pytest.raises(ValueError, match="unknown toy"):
        toys.get("banana")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        toys.himmelblau(np.zeros((3, 3)))


# --------------------------------------------------------------------------- minima barcodes

def counter_example():
    losses = np.array([0.0, 2.0, 1.0])  # a, b, c
    barriers = np.full((3, 3), np.inf)
    for (i, j), c in {(2, 0): 5.0, (2, 1): 3.0, (1, 0): 3.5}.items():
        barriers[i, j] = barriers[j, i] = c
    return losses, barriers


def test_minima_barcode_counter_example_both_rules():
    losses, barriers = counter_example()
    uf = lb.minima_barcode(losses, barriers)
    direct = lb.minima_barcode(losses, barriers, rule="direct")
    death = {r: dict(zip(b.minima.tolist(), b.deaths.tolist(), strict=True))
             for r, b in (("uf", uf), ("direct", direct))}
    assert death["uf"] == {0: np.inf, 1: 3.0, 2: 3.5}  # c escapes through b
    assert death["direct"] == {0: np.inf, 1: 3.0, 2: 5.0}
    c_bar = int(np.flatnonzero(uf.minima == 2)[0])
    assert tuple(uf.saddle_edges[c_bar]) == (0, 1)  # c died on the b–a path
    assert np.unravel_index(uf.saddles[c_bar], (3, 3)) == (0, 1)


@st.composite
def barrier_graphs(draw):
    k = draw(st.integers(1, 9))
    losses = np.array(draw(st.lists(vertex_values, min_size=k, max_size=k)))
    barriers = np.full((k, k), np.inf)
    for i in range(k):
        for j in range(i + 1, k):
            if draw(st.booleans()):
                barriers[i, j] = barriers[j, i] = max(losses[i], losses[j]) + draw(
                    st.integers(0, 20)) / 2
    return losses, barriers


@settings(max_examples=120, deadline=None)
@given(barrier_graphs())
def test_minima_barcode_is_h0_of_the_subdivided_graph(graph):
    losses, barriers = graph
    k = len(losses)
    # Oracle: a saddle vertex valued at the barrier in the middle of every path.
    i, j = np.nonzero(np.triu(np.isfinite(barriers), 1))
    values = np.concatenate([losses, barriers[i, j]])
    mid = k + np.arange(len(i))
    edges = np.concatenate([np.stack([i, mid], 1), np.stack([mid, j], 1)]).astype(np.int64)
    barcode = lb.minima_barcode(losses, barriers, keep_zero=False)
    assert_matches_ripser(values, edges, barcode)


@settings(max_examples=120, deadline=None)
@given(barrier_graphs())
def test_union_find_never_dies_later_than_direct(graph):
    losses, barriers = graph
    uf = lb.minima_barcode(losses, barriers)
    direct = lb.minima_barcode(losses, barriers, rule="direct")
    assert len(uf) == len(direct) == len(losses)
    death_uf = dict(zip(uf.minima.tolist(), uf.deaths.tolist(), strict=True))
    death_direct = dict(zip(direct.minima.tolist(), direct.deaths.tolist(), strict=True))
    assert all(death_uf[m] <= death_direct[m] for m in range(len(losses)))
    assert len(uf.essential()) <= len(direct.essential())


def test_minima_barcode_raises_barriers_to_the_endpoints():
    barcode = lb.minima_barcode([0.0, 1.0], [[0.0, 0.5], [0.5, 0.0]])
    assert barcode.deaths.tolist() == [np.inf, 1.0]  # a path contains its endpoints


# --------------------------------------------------------------------------- Barcode object

def test_barcode_round_trips_through_json():
    barcode = lb.grid_barcode(toys.get("rastrigin").grid(60)[1])
    text = json.dumps(barcode.to_dict(), allow_nan=False)
    again = lb.Barcode.from_dict(json.loads(text))
    assert again == barcode
    assert len(again) == len(barcode) > 10
    assert again.diagram().shape == (len(barcode), 2)
    assert again.finite().shape[0] + again.essential().shape[0] == len(barcode)


def test_merged_into_minimum_names_the_absorbing_bars_minimum():
    barcode = lb.grid_barcode(toys.get("rastrigin").grid(40)[1])
    absorbers = barcode.merged_into_minimum()
    essential = np.isinf(barcode.deaths)
    assert np.all(absorbers[essential] == -1)
    bars = barcode.merged_into[~essential]
    np.testing.assert_array_equal(absorbers[~essential], barcode.minima[bars])
    data = barcode.to_dict()
    assert data["merged_into_minimum"] == absorbers.tolist()
    # Dicts stored before merged_into_minimum existed load the same; an edited one is refused.
    old = {k: v for k, v in data.items() if k != "merged_into_minimum"}
    assert lb.Barcode.from_dict(old) == barcode
    edited = dict(data, merged_into_minimum=data["merged_into"])
    with pytest.raises(ValueError, match="merged_into_minimum"):
        lb.Barcode.from_dict(edited)


def test_filter_keeps_essential_bars_and_reindexes_absorbers():
    barcode = lb.grid_barcode(toys.get("rastrigin").grid(80)[1])
    threshold = float(np.median(barcode.finite()[:, 1] - barcode.finite()[:, 0]))
    kept = barcode.filter(threshold)
    assert 0 < len(kept) < len(barcode)
    assert len(kept.essential()) == len(barcode.essential())
    finite = np.isfinite(kept.deaths)
    assert np.all(kept.lengths()[finite] >= threshold)
    absorbers = kept.merged_into[finite]
    # the re-indexed absorber is the same minimum as before filtering
    original = {int(m): i for i, m in enumerate(barcode.minima)}
    for bar, absorber in zip(np.flatnonzero(finite), absorbers, strict=True):
        before = barcode.merged_into[original[int(kept.minima[bar])]]
        assert kept.minima[absorber] == barcode.minima[before]


def test_barcode_rejects_malformed_input():
    with pytest.raises(ValueError, match="sorted"):
        lb.Barcode([1.0, 0.0], [np.inf, 2.0], [0, 1], [-1, 3], [-1, 0])
    with pytest.raises(ValueError, match="deaths"):
        lb.Barcode([1.0], [0.0], [0], [1], [-1])
    with pytest.raises(ValueError, match="shape"):
        lb.Barcode([1.0, 2.0], [np.inf], [0], [-1], [-1])
    with pytest.raises(ValueError, match="keys"):
        lb.Barcode.from_dict({"births": []})
    with pytest.raises(ValueError, match="'inf'"):
        lb.Barcode.from_dict({"births": [0.0], "deaths": ["infinity"], "minima": [0],
                              "saddles": [-1], "merged_into": [-1]})
    barcode = lb.grid_barcode(np.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError):
        barcode.births[0] = 3.0  # arrays are read-only: a Barcode is immutable
    with pytest.raises(ValueError, match="min_length"):
        barcode.filter(-1)


# --------------------------------------------------------------------------- scores

def simple_barcode():
    # three minima at 0, 1, 2 dying at -, 4, 3: lengths inf, 3, 1
    return lb.minima_barcode([0.0, 1.0, 2.0], [[0, 4, 9], [4, 0, 3], [9, 3, 0]])


def test_to_score_variants():
    barcode = simple_barcode()
    assert sorted(barcode.lengths()[np.isfinite(barcode.deaths)].tolist()) == [1.0, 3.0]
    assert lb.to_score(barcode) == pytest.approx(np.sqrt(10))
    assert lb.to_score(barcode, "sum") == pytest.approx(4)
    assert lb.to_score(barcode, "max") == pytest.approx(3)
    assert lb.to_score(barcode, "mean") == pytest.approx(2)
    assert lb.to_score(barcode, "max", normalize="range") == pytest.approx(3 / 4)
    single = lb.graph_barcode([0.0, 1.0], np.empty((0, 2)))
    assert lb.to_score(single) == 0.0 and len(single.essential()) == 2
    with pytest.raises(ValueError, match="norm"):
        lb.to_score(barcode, "l3")
    with pytest.raises(ValueError, match="normalize"):
        lb.to_score(barcode, normalize="max")


@settings(max_examples=60, deadline=None)
@given(graphs(), graphs())
def test_to_score_is_monotone_and_scale_equivariant(g1, g2):
    barcode = lb.graph_barcode(*g1)
    scaled = lb.graph_barcode(3 * g1[0], g1[1])
    for norm in lb.topology.NORMS:
        assert lb.to_score(scaled, norm) == pytest.approx(3 * lb.to_score(barcode, norm))
        assert lb.to_score(scaled, norm, "range") == pytest.approx(
            lb.to_score(barcode, norm, "range"))
    assert lb.to_score(barcode, "max") <= lb.to_score(barcode, "l2") + 1e-12
    assert lb.to_score(barcode, "l2") <= lb.to_score(barcode, "sum") + 1e-12


def test_barcode_distance_handles_essential_bars():
    a = simple_barcode()
    assert lb.barcode_distance(a, a) == 0.0
    assert lb.barcode_distance(a, a, "wasserstein") == 0.0
    shifted = lb.minima_barcode([0.5, 1.0, 2.0], [[0, 4, 9], [4, 0, 3], [9, 3, 0]])
    # only the essential bar moved (by 0.5); persim alone would report 0
    assert lb.barcode_distance(a, shifted) == pytest.approx(0.5)
    assert lb.barcode_distance(a, shifted, "wasserstein") == pytest.approx(0.5)
    two_components = lb.graph_barcode([0.0, 1.0], np.empty((0, 2)))
    assert lb.barcode_distance(a, two_components) == np.inf
    with pytest.raises(ValueError, match="metric"):
        lb.barcode_distance(a, a, "hausdorff")


@settings(max_examples=40, deadline=None)
@given(graphs(max_n=12), graphs(max_n=12))
def test_barcode_distance_is_symmetric_and_bounded(g1, g2):
    a, b = lb.graph_barcode(*g1), lb.graph_barcode(*g2)
    for metric in lb.topology.METRICS:
        d = lb.barcode_distance(a, b, metric)
        assert d == pytest.approx(lb.barcode_distance(b, a, metric))
        assert d >= 0
    assert lb.barcode_distance(a, b) <= lb.barcode_distance(a, b, "wasserstein") * 1.0000001 + (
        0 if np.isfinite(lb.barcode_distance(a, b)) else np.inf)


# --------------------------------------------------------------------------- sublevel sets

@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=9),
               elements=vertex_values),
    st.sampled_from(lb.topology.CONNECTIVITIES),
    vertex_values,
)
def test_sublevel_components_match_the_bars_alive_at_that_level(values, connectivity, level):
    barcode = lb.grid_barcode(values, connectivity)
    labels = lb.sublevel_components(values, level, connectivity)
    alive = barcode.minima[(barcode.births <= level) & (barcode.deaths > level)]
    assert set(np.unique(labels[labels >= 0]).tolist()) == set(alive.tolist())
    assert np.array_equal(labels >= 0, values <= level)


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7),
               elements=vertex_values),
    st.sampled_from(lb.topology.CONNECTIVITIES),
    st.lists(vertex_values, min_size=1, max_size=6),
    st.integers(1, 3),
)
def test_sublevel_sweep_equals_sublevel_components_at_every_level(values, connectivity, levels,
                                                                   stride):
    sweep = lb.sublevel_sweep(values, levels, connectivity, stride=stride)
    assert sweep.shape[0] == len(levels)
    for labels, level in zip(sweep, levels, strict=True):
        every = lb.sublevel_components(values, level, connectivity)
        assert np.array_equal(labels, every[(slice(None, None, stride),) * values.ndim])


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lb.graph_barcode([0.0, np.nan], [[0, 1]]), "NaN"),
        (lambda: lb.graph_barcode([0.0, np.inf], [[0, 1]]), "infinite"),
        (lambda: lb.graph_barcode([], []), "empty"),
        (lambda: lb.graph_barcode([0.0, 1.0], [[0, 2]]), "outside"),
        (lambda: lb.graph_barcode([0.0, 1.0], [[0, -1]]), "outside"),
        (lambda: lb.graph_barcode([0.0, 1.0], [0, 1, 1]), "shape"),
        (lambda: lb.graph_barcode([0.0, 1.0], [[0.5, 1]]), "integer"),
        (lambda: lb.grid_barcode(np.ones((2, 2)), "diagonal"), "connectivity"),
        (lambda: lb.grid_barcode(np.empty((0, 3))), "empty"),
        (lambda: lb.minima_barcode([0.0, 1.0], np.zeros((2, 3))), "square"),
        (lambda: lb.minima_barcode([0.0, 1.0], [[0, 1], [2, 0]]), "symmetric"),
        (lambda: lb.minima_barcode([0.0, 1.0], [[0, np.nan], [np.nan, 0]]), "NaN"),
        (lambda: lb.minima_barcode([0.0, np.nan], np.zeros((2, 2))), "NaN"),
        (lambda: lb.minima_barcode([], np.zeros((0, 0))), "empty"),
        (lambda: lb.minima_barcode([0.0, 1.0], np.ones((2, 2)), rule="paper"), "rule"),
        (lambda: lb.sample_barcode(toys.himmelblau, [[-5, 5], [-5, 5]], 100, k=-1), "k must"),
        (lambda: lb.sample_barcode(toys.himmelblau, [[-5, 5], [-5, 5]], 1), "n must"),
        (lambda: lb.sample_barcode(toys.himmelblau, [[5, -5], [-5, 5]], 100), "low < high"),
        (lambda: lb.sample_barcode(lambda p: p[:, 0] * np.nan, [[0, 1]], 10), "NaN"),
        (lambda: lb.sample_barcode(lambda p: p, [[0, 1], [0, 1]], 10), r"\(n,\) values"),
        (lambda: lb.sublevel_components(np.ones(3), 0.5, "knight"), "connectivity"),
        (lambda: lb.sublevel_sweep(np.ones(3), [0.5], "knight"), "connectivity"),
        (lambda: lb.sublevel_sweep(np.ones(3), [], "full"), "levels"),
        (lambda: lb.sublevel_sweep(np.ones(3), [np.nan], "full"), "levels"),
        (lambda: lb.sublevel_sweep(np.ones(3), [0.5], stride=0), "stride"),
        (lambda: toys.get("quartic").grid(1), "resolution"),
    ],
)
def test_bad_input_raises_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("losses, barriers, says", [
    ([0.0, 1.0 + 2.0j], [[0, 3], [3, 0]], "losses are complex"),
    ([0.0, None], [[0, 3], [3, 0]], "losses contains None"),
    (None, [[0, 3], [3, 0]], "losses is None"),
    (["a", "b"], [[0, 3], [3, 0]], "losses must hold real numbers"),
    ([0.0, 1.0], [[0, 3 + 1j], [3 + 1j, 0]], "barriers are complex"),
    ([0.0, 1.0], [[0, None], [None, 0]], "barriers contains None"),
])
def test_minima_barcode_refuses_complex_and_none(losses, barriers, says):
    with pytest.raises(ValueError, match=says):
        lb.minima_barcode(losses, barriers)


def test_to_score_of_huge_and_tiny_bars_does_not_overflow():
    """The L2 TO-score scales before squaring: bars of 1e200 (squares beyond float64) give
    their norm, not inf; bars of 1e-200 not 0; ordinary bars are the plain formula exactly."""
    from lossbarcode.topology import length_norm

    for scale in (1e200, 1e-200, 1.0):
        bars = lb.minima_barcode([0.0, 1.0 * scale, 2.0 * scale],
                                 [[0, 4 * scale, 9 * scale], [4 * scale, 0, 9 * scale],
                                  [9 * scale, 9 * scale, 0]])
        score = lb.to_score(bars)  # finite bars 3 and 7 (times scale): sqrt(58) x scale
        assert np.isfinite(score) and score == pytest.approx(np.sqrt(58.0) * scale, rel=1e-12)
    rows = length_norm(np.array([[3e200, 4e200], [3.0, 4.0], [0.0, 0.0]]), "l2")
    np.testing.assert_allclose(rows, [5e200, 5.0, 0.0], rtol=1e-12)
    x = np.array([0.3, 0.7, 1.1])
    assert length_norm(x, "l2") == float(np.sqrt(np.sum(x**2)))  # bit for bit


def test_lengths_within_the_resolution_are_zero_and_nan_and_inf_kept():
    from lossbarcode.topology import resolved_lengths

    out = resolved_lengths(np.array([0.0, 5e-5, 1e-4, 2e-4, np.inf, np.nan]), 1e-4)
    np.testing.assert_array_equal(out[:5], [0.0, 0.0, 0.0, 2e-4, np.inf])
    assert np.isnan(out[5])
