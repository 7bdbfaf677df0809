"""Which pairs of minima to connect: the few that decide the barcode, found without all pairs.

The H0 barcode of a graph of minima depends on its edges only through their minimum spanning
forest (MSF): union-find merges on the MSF edges and on nothing else. So:

* an edge whose barrier cannot fall below the highest barrier on the route that already joins
  its two minima (the *minimax route*) cannot change the barcode. A path's barrier is never
  below its higher endpoint's loss, so ``max(L_i, L_j) >= route(i, j)`` rules a pair out
  before it is optimised: :func:`plan` optimises the spanning tree of cheap screened barriers
  first, then only the pairs whose lower bound undercuts their route, until none does. The
  result has the same MSF, hence the same barcode, as optimising all ``K(K-1)/2`` pairs.
* the deaths are decided by the MSF edges (:func:`deciding_pairs`, at most ``K-1``): those are
  the pairs worth re-solving from other starts (restarts), after which the MSF may change and
  new pairs decide, until it stops changing.

Everything here is pure (numpy only); :func:`lossbarcode.paths.connect` supplies the solver.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Solver = Callable[[np.ndarray], np.ndarray]
"""``solve(pairs (N, 2)) -> barriers (N,)``: optimise these pairs, return their barriers."""


def _key(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i < j else (j, i)


def spanning_forest(k: int, pairs: np.ndarray, barriers: np.ndarray) -> np.ndarray:
    """Indices into ``pairs`` ``(M, 2)`` of the minimum spanning forest's edges by ``barriers``
    ``(M,)`` (Kruskal; ties broken by position, so the result is deterministic; non-finite
    barriers never join)."""
    parent = list(range(k))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    chosen = []
    for e in np.argsort(barriers, kind="stable"):
        if not np.isfinite(barriers[e]):
            break
        ra, rb = find(int(pairs[e, 0])), find(int(pairs[e, 1]))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            chosen.append(int(e))
    return np.array(chosen, dtype=np.int64)


def minimax_routes(k: int, pairs: np.ndarray, barriers: np.ndarray) -> np.ndarray:
    """``(K, K)``: the highest barrier on the best route between every two minima through the
    edges ``pairs`` ``(M, 2)`` with ``barriers`` ``(M,)`` (the minimax path value; ``inf``
    where no route exists, ``-inf`` on the diagonal). The best route runs along the MSF."""
    forest = spanning_forest(k, pairs, barriers)
    adj: dict[int, list[tuple[int, float]]] = {}
    for e in forest:
        i, j, b = int(pairs[e, 0]), int(pairs[e, 1]), float(barriers[e])
        adj.setdefault(i, []).append((j, b))
        adj.setdefault(j, []).append((i, b))
    out = np.full((k, k), np.inf)
    np.fill_diagonal(out, -np.inf)
    for src in adj:  # the forest's route is unique: one walk from every vertex
        stack = [src]
        while stack:
            u = stack.pop()
            for v, b in adj[u]:
                if v != src and out[src, v] == np.inf:
                    out[src, v] = max(out[src, u], b)
                    stack.append(v)
    return out


def deciding_pairs(k: int, pairs: np.ndarray, barriers: np.ndarray) -> np.ndarray:
    """The pairs ``(D, 2)`` (``i < j``, ``D <= K-1``) that decide the barcode: the MSF edges,
    the lowest barrier of each pair counting (a pair may appear several times in ``pairs``)."""
    best = lowest_per_pair(pairs, barriers)
    if not best:
        return np.zeros((0, 2), dtype=np.int64)
    uniq = np.array(list(best), dtype=np.int64)
    vals = np.array(list(best.values()))
    return uniq[np.sort(spanning_forest(k, uniq, vals))]


def lowest_paths(pairs: np.ndarray, barriers: np.ndarray, finished: np.ndarray | None = None
                 ) -> dict[tuple[int, int], int]:
    """``{(i, j): row}``: the row of ``pairs`` ``(M, 2)`` with the lowest of ``barriers``
    ``(M,)`` for each pair, in first-seen order; of equally low rows, one whose ``finished``
    ``(M,)`` is True (a path that converged), else the first. The row a pair's death is read
    from."""
    done = np.ones(len(barriers), dtype=bool) if finished is None else np.asarray(finished)
    best: dict[tuple[int, int], int] = {}
    for row, (i, j) in enumerate(np.asarray(pairs).reshape(-1, 2).tolist()):
        key = _key(i, j)
        old = best.get(key)
        if old is None or (barriers[row], not done[row]) < (barriers[old], not done[old]):
            best[key] = row
    return best


def lowest_per_pair(pairs: np.ndarray, barriers: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(i, j): lowest barrier}`` over the rows of ``pairs`` ``(M, 2)``, in first-seen order."""
    return {key: float(barriers[row]) for key, row in lowest_paths(pairs, barriers).items()}


def undercutting(values: np.ndarray, candidates: np.ndarray, pairs: np.ndarray,
                 barriers: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """Bool mask over ``candidates`` ``(N, 2)``: the pairs whose lower bound, their higher
    endpoint value ``max(values[i], values[j])``, lies more than ``atol`` below the highest
    barrier on their current best route through ``pairs`` / ``barriers`` (no route: always).
    Only these can change the barcode by more than ``atol``."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=bool)
    route = minimax_routes(len(values), pairs, barriers)
    i, j = candidates[:, 0], candidates[:, 1]
    return np.maximum(values[i], values[j]) < route[i, j] - atol


def plan(values: np.ndarray, candidates: np.ndarray, first: np.ndarray, solve: Solver,
         restart: Solver | None = None, atol: float = 0.0, batch: int | None = None,
         max_restart_rounds: int | None = None) -> dict[tuple[int, int], float]:
    """Connect enough pairs to fix the barcode, and re-solve the pairs that decide it.

    Args:
        values: ``(K,)`` the minima's losses (a pair's barrier is never below its higher one).
        candidates: ``(N, 2)`` every pair that may be connected (``i < j``).
        first: ``(F, 2)`` the pairs to optimise first (e.g. the spanning tree of screened
            straight-line barriers, or every candidate).
        solve: optimises new pairs, returns their barriers.
        restart: re-solves deciding pairs from other starts, returns the lowest barrier each
            of them reached (``None``: no restarts). A deciding pair whose barrier is within
            ``atol`` of its lower bound is monotone already: it is not restarted.
        atol: the resolution: a pair that could lower its route by at most this much is left
            out (0: exact).
        batch: new pairs optimised per round, lowest lower bound first (default ``K - 1``);
            each round's barriers can rule out the next round's candidates.
        max_restart_rounds: rounds of restarts at most (default ``K``).

    Returns:
        ``{(i, j): lowest barrier found}`` for every pair optimised. Its barcode equals that
        of all candidates solved, to ``atol`` per death: a pair left out could not undercut its
        route by more.
    """
    k = len(values)
    batch = max(k - 1, 1) if batch is None else batch
    done: dict[tuple[int, int], float] = {}

    def update(prs: np.ndarray, bars: np.ndarray) -> None:
        for (i, j), b in zip(prs.tolist(), np.asarray(bars, dtype=float), strict=True):
            key = _key(i, j)
            done[key] = min(done.get(key, np.inf), float(b))

    if len(first):
        update(first, solve(first))
    restarted: set[tuple[int, int]] = set()
    restart_rounds = 0
    while True:
        prs = np.array(list(done), dtype=np.int64).reshape(-1, 2)
        bars = np.array(list(done.values()), dtype=float)
        todo = np.array([p for p in candidates.tolist() if _key(*p) not in done],
                        dtype=np.int64).reshape(-1, 2)
        todo = todo[undercutting(values, todo, prs, bars, atol)]
        if len(todo):
            # Route maxima only fall as pairs are added, so a pair ruled out stays ruled out;
            # small rounds, most promising first, let each round rule out more of the rest.
            lower = np.maximum(values[todo[:, 0]], values[todo[:, 1]])
            todo = todo[np.argsort(lower, kind="stable")[:batch]]
            update(todo, solve(todo))
            continue
        if restart is None or restart_rounds >= (k if max_restart_rounds is None
                                                 else max_restart_rounds):
            break
        dec = np.array([p for p in deciding_pairs(k, prs, bars).tolist()
                        if _key(*p) not in restarted
                        and done[_key(*p)] > max(values[p[0]], values[p[1]]) + atol],
                       dtype=np.int64).reshape(-1, 2)
        if not len(dec):
            break
        restart_rounds += 1
        restarted.update(_key(*p) for p in dec.tolist())
        update(dec, restart(dec))
    return done


def best_route(k: int, pairs: np.ndarray, barriers: np.ndarray, i: int, j: int
               ) -> list[int] | None:
    """The minimax route from ``i`` to ``j`` through other minima, as a list of minima
    ``[i, ..., j]``, avoiding the direct pair ``(i, j)``; None when no such route exists."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    keep = ~(((pairs[:, 0] == i) & (pairs[:, 1] == j)) | ((pairs[:, 0] == j) & (pairs[:, 1] == i)))
    prs, bars = pairs[keep], np.asarray(barriers, dtype=float)[keep]
    adj: dict[int, list[int]] = {}
    for e in spanning_forest(k, prs, bars):
        a, b = int(prs[e, 0]), int(prs[e, 1])
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    parent = {i: i}
    stack = [i]
    while stack:
        u = stack.pop()
        for v in adj.get(u, []):
            if v not in parent:
                parent[v] = u
                stack.append(v)
    if j not in parent:
        return None
    route = [j]
    while route[-1] != i:
        route.append(parent[route[-1]])
    return route[::-1]
