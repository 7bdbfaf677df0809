"""Tests for lossbarcode.planning: the planned pairs give the all-pairs barcode."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lossbarcode import planning
from lossbarcode.topology import minima_barcode


def _all_pairs(k: int) -> np.ndarray:
    return np.array([(i, j) for i in range(k) for j in range(i + 1, k)], dtype=np.int64)


def _matrix(k: int, done: dict[tuple[int, int], float], values: np.ndarray) -> np.ndarray:
    out = np.full((k, k), np.inf)
    for (i, j), b in done.items():
        out[i, j] = out[j, i] = b
    np.fill_diagonal(out, values)
    return out


@st.composite
def landscapes(draw):
    """K minimum values and a symmetric matrix of barriers, each at or above its pair's higher
    endpoint (as every path's barrier is), some of them exactly at it (vanishing barriers)."""
    k = draw(st.integers(2, 9))
    values = np.array(draw(st.lists(st.floats(0, 1), min_size=k, max_size=k)))
    excess = draw(st.lists(st.one_of(st.just(0.0), st.floats(0, 2)), min_size=k * k,
                           max_size=k * k))
    b = np.maximum.outer(values, values) + np.array(excess).reshape(k, k)
    b = np.minimum(b, b.T)
    return values, b


@settings(max_examples=200, deadline=None)
@given(landscapes(), st.integers(1, 4))
def test_the_planned_barcode_equals_the_all_pairs_barcode(land, batch):
    values, truth = land
    k = len(values)
    pairs = _all_pairs(k)
    screen = truth[pairs[:, 0], pairs[:, 1]] + np.linspace(0, 0.5, len(pairs))[::-1]
    first = pairs[np.sort(planning.spanning_forest(k, pairs, screen))]
    solved = []

    def solve(prs):
        solved.extend(map(tuple, prs.tolist()))
        return truth[prs[:, 0], prs[:, 1]]

    done = planning.plan(values, pairs, first, solve, batch=batch)
    assert len(set(solved)) == len(solved)  # no pair is optimised twice
    full = minima_barcode(values, truth)
    planned = minima_barcode(values, _matrix(k, done, values))
    np.testing.assert_array_equal(planned.births, full.births)
    np.testing.assert_allclose(planned.deaths, full.deaths)
    # Skipped pairs could not undercut their route: every one lies at or above it.
    route = planning.minimax_routes(k, np.array(list(done)), np.array(list(done.values())))
    for i, j in pairs.tolist():
        if (i, j) not in done:
            assert max(values[i], values[j]) >= route[i, j]


def test_vanishing_barriers_need_only_the_tree():
    # Every barrier at its higher endpoint: the tree's routes cannot be undercut.
    values = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    truth = np.maximum.outer(values, values)
    pairs = _all_pairs(5)
    first = pairs[np.sort(planning.spanning_forest(5, pairs, truth[pairs[:, 0], pairs[:, 1]]))]
    done = planning.plan(values, pairs, first, lambda prs: truth[prs[:, 0], prs[:, 1]])
    assert len(done) == 4  # K - 1 paths instead of K(K-1)/2 = 10


def test_a_tolerance_skips_pairs_that_could_gain_at_most_it():
    values = np.zeros(4)
    truth = np.full((4, 4), 1e-5)
    pairs = _all_pairs(4)
    first = pairs[:3]  # a star around 0: routes 1-2, 1-3, 2-3 at 1e-5 above their ends
    exact = planning.plan(values, pairs, first, lambda prs: truth[prs[:, 0], prs[:, 1]])
    loose = planning.plan(values, pairs, first, lambda prs: truth[prs[:, 0], prs[:, 1]],
                          atol=1e-4)
    assert len(exact) == 6 and len(loose) == 3


def test_restarts_re_solve_the_deciding_pairs_until_they_stop_changing():
    values = np.array([0.0, 0.5, 0.2])
    truth = np.array([[0, 3.0, 2.0], [3.0, 0, 1.0], [2.0, 1.0, 0]])
    better = {(0, 2): 0.9, (0, 1): 0.8}  # restarts find lower paths on these pairs
    pairs = _all_pairs(3)
    restarted = []

    def restart(prs):
        restarted.extend(map(tuple, prs.tolist()))
        return np.array([better.get(tuple(p), truth[p[0], p[1]]) for p in prs.tolist()])

    done = planning.plan(values, pairs, pairs, lambda prs: truth[prs[:, 0], prs[:, 1]],
                         restart=restart)
    # The forest {1-2, 0-2} decides and is restarted (0-2 falls to 0.9); 0-1 (3.0) never
    # decides, so it is never restarted: the loop ends with the final forest restarted once.
    assert (0, 1) not in restarted
    forest = planning.deciding_pairs(3, np.array(list(done)), np.array(list(done.values())))
    assert {tuple(p) for p in forest.tolist()} <= set(restarted)
    assert len(restarted) == len(set(restarted))
    assert done[(0, 2)] == 0.9


def test_best_route_avoids_the_direct_pair():
    pairs = np.array([[0, 1], [1, 2], [0, 2]])
    bars = np.array([1.0, 1.0, 0.5])
    assert planning.best_route(3, pairs, bars, 0, 2) == [0, 1, 2]
    assert planning.best_route(3, pairs[[2]], bars[[2]], 0, 2) is None
