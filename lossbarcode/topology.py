"""Exact 0-dimensional sublevel persistent homology ("loss barcodes") and the TO-score.

Definitions follow ``shared/design.md`` §1 and arXiv:2012.15834. Every barcode here is the H0
barcode of a sublevel filtration of a graph: vertex ``v`` enters at ``values[v]``, an edge enters at
its own value (``max`` of its endpoints for a lower-star filtration, the path barrier for a graph of
minima). Components are merged with union-find and the *elder rule*: when two components meet, the
one whose minimum is higher dies; ties are broken by vertex index (lower index survives), so every
result is deterministic.

Public API: :class:`Barcode`, :func:`graph_barcode`, :func:`grid_barcode`, :func:`sample_barcode`,
:func:`minima_barcode` (with :func:`death_pair`, the path where a minimum's bar died),
:func:`sublevel_components`, :func:`sublevel_sweep`, :func:`to_score`, :func:`barcode_distance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

NORMS = ("l2", "sum", "max", "mean")
NORMALIZATIONS = (None, "range")
CONNECTIVITIES = ("axis", "full")
# grid_edges refuses grids above these (memory for the edge list, Python loop over offsets) and
# warns above a tenth of them.
MAX_GRID_EDGES = 200_000_000
MAX_GRID_OFFSETS = 100_000
RULES = ("union_find", "direct")
METRICS = ("bottleneck", "wasserstein")


def _readonly(array: Any, dtype: type, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    if out.size == 0:
        out = out.reshape((0, *shape_tail))
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Barcode:
    """A 0-dimensional barcode: one bar ``[birth, death)`` per local minimum.

    All arrays have shape ``(n,)`` (``saddle_edges``: ``(n, 2)``) and bar ``i`` is described by
    entry ``i`` of each. Bars are sorted by ``(birth, minimum vertex index)``.

    Attributes:
        births: value at the minimum where the bar was born.
        deaths: level at which the bar's component joined an older one; ``np.inf`` for an
            essential bar (the lowest minimum of a connected component).
        minima: vertex index where the bar was born.
        saddles: where the bar died, ``-1`` if essential. For graph, grid and sample barcodes the
            vertex index of the saddle (the higher end of the merging edge; flat index for grids);
            for :func:`minima_barcode` the flat index ``i * K + j`` (``i < j``) of the barrier
            matrix entry whose path killed it.
        merged_into: *bar index* (position in these arrays) of the bar that absorbed it, ``-1``
            if essential. Not a minimum id: :meth:`merged_into_minimum` gives the minimum
            (vertex) where that bar was born, the ``merged_into_minimum`` of exports and tables.
        saddle_edges: the two vertices of the edge where the bar died, ``(-1, -1)`` if essential.
    """

    births: np.ndarray
    deaths: np.ndarray
    minima: np.ndarray
    saddles: np.ndarray
    merged_into: np.ndarray
    saddle_edges: np.ndarray | None = None

    def __post_init__(self) -> None:
        births = _readonly(self.births, np.float64)
        n = births.shape[0] if births.ndim == 1 else -1
        fields = {
            "births": births,
            "deaths": _readonly(self.deaths, np.float64),
            "minima": _readonly(self.minima, np.int64),
            "saddles": _readonly(self.saddles, np.int64),
            "merged_into": _readonly(self.merged_into, np.int64),
        }
        for name, arr in fields.items():
            if arr.ndim != 1 or arr.shape[0] != n:
                raise ValueError(f"Barcode.{name} must have shape ({n},), got {arr.shape}")
        edges = (
            np.full((n, 2), -1, dtype=np.int64)
            if self.saddle_edges is None
            else self.saddle_edges
        )
        fields["saddle_edges"] = _readonly(edges, np.int64, (2,))
        if fields["saddle_edges"].shape != (n, 2):
            raise ValueError(
                f"Barcode.saddle_edges must have shape ({n}, 2), got {fields['saddle_edges'].shape}"
            )
        deaths = fields["deaths"]
        if not np.all(np.isfinite(births)):
            raise ValueError("Barcode births must be finite numbers")
        if np.any(np.isnan(deaths)) or np.any(deaths < births):
            raise ValueError("Barcode deaths must be >= births (np.inf for essential bars)")
        merged = fields["merged_into"]
        if np.any((merged < -1) | (merged >= n)):
            raise ValueError(f"Barcode.merged_into must index bars in [-1, {n})")
        if np.any(fields["minima"] < 0) or np.any(fields["saddles"] < -1) or np.any(
                fields["saddle_edges"] < -1):
            raise ValueError("Barcode minima must be >= 0, saddles and saddle_edges >= -1")
        if n:
            # Following merged_into from any bar must reach an essential bar (-1): pointer
            # jumping reaches it within log2(n) rounds unless there is a cycle.
            reach = merged.copy()  # after r rounds: the bar 2^r steps along, -1 past the end
            for _ in range(int(n).bit_length() + 1):
                reach = np.where(reach >= 0, reach[np.maximum(reach, 0)], -1)
            if np.any(reach >= 0):
                raise ValueError("Barcode.merged_into has a cycle: every bar must lead to an "
                                 "essential bar (-1)")
        if n > 1:
            key_prev = (births[:-1], fields["minima"][:-1])
            key_next = (births[1:], fields["minima"][1:])
            out_of_order = (key_prev[0] > key_next[0]) | (
                (key_prev[0] == key_next[0]) & (key_prev[1] > key_next[1])
            )
            if np.any(out_of_order):
                raise ValueError("Barcode bars must be sorted by (birth, minimum index)")
        for name, arr in fields.items():
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.births.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Barcode):
            return NotImplemented
        names = ("births", "deaths", "minima", "saddles", "merged_into", "saddle_edges")
        return all(np.array_equal(getattr(self, k), getattr(other, k)) for k in names)

    __hash__ = None  # type: ignore[assignment]  # arrays are not hashable by value

    def __repr__(self) -> str:
        n_ess = int(np.isinf(self.deaths).sum())
        lengths = self.lengths()[np.isfinite(self.deaths)]
        longest = f", longest finite {lengths.max():.4g}" if lengths.size else ""
        return f"Barcode({len(self)} bars: {n_ess} essential, {lengths.size} finite{longest})"

    def lengths(self) -> np.ndarray:
        """Segment lengths ``death - birth``, shape ``(n,)``; ``np.inf`` for essential bars."""
        return self.deaths - self.births

    def finite(self) -> np.ndarray:
        """The finite bars as a persistence diagram, shape ``(n_finite, 2)``: (birth, death)."""
        return self.diagram()[np.isfinite(self.deaths)]

    def essential(self) -> np.ndarray:
        """Births of the essential (infinite) bars, shape ``(n_essential,)``."""
        return self.births[np.isinf(self.deaths)].copy()

    def diagram(self) -> np.ndarray:
        """All bars as an ``(n, 2)`` array of (birth, death), ``np.inf`` deaths included."""
        return np.column_stack([self.births, self.deaths]).reshape(-1, 2)

    def merged_into_minimum(self) -> np.ndarray:
        """``(n,)`` the minimum (``minima`` entry) of the bar that absorbed each bar, ``-1``
        for an essential bar: ``minima[merged_into]``."""
        return np.where(self.merged_into >= 0, self.minima[np.maximum(self.merged_into, 0)], -1)

    def filter(self, min_length: float) -> Barcode:
        """Keep essential bars and finite bars of length ``>= min_length``.

        ``merged_into`` is re-indexed. A bar's absorber is never shorter than the bar itself
        (it was born earlier and dies no sooner), so absorbers of kept bars are kept.
        """
        if not np.isfinite(min_length) or min_length < 0:
            raise ValueError(f"min_length must be a finite number >= 0, got {min_length}")
        keep = np.isinf(self.deaths) | (self.lengths() >= min_length)
        new_index = np.cumsum(keep) - 1
        merged = self.merged_into[keep]
        valid = merged >= 0
        remapped = np.full_like(merged, -1)
        remapped[valid] = np.where(keep[merged[valid]], new_index[merged[valid]], -1)
        return Barcode(
            births=self.births[keep],
            deaths=self.deaths[keep],
            minima=self.minima[keep],
            saddles=self.saddles[keep],
            merged_into=remapped,
            saddle_edges=self.saddle_edges[keep],
        )

    def to_dict(self) -> dict[str, list]:
        """A JSON-safe dict; infinite deaths are written as the string ``"inf"``.

        ``merged_into`` holds bar indices (as the attribute); ``merged_into_minimum`` the
        absorbing bar's minimum (:meth:`merged_into_minimum`), for readers of the file."""
        return {
            "births": [float(b) for b in self.births],
            "deaths": ["inf" if np.isinf(d) else float(d) for d in self.deaths],
            "minima": self.minima.tolist(),
            "saddles": self.saddles.tolist(),
            "merged_into": self.merged_into.tolist(),
            "merged_into_minimum": self.merged_into_minimum().tolist(),
            "saddle_edges": self.saddle_edges.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Barcode:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed dict (wrong
        types, negative or non-integer indices, a ``merged_into`` cycle, a
        ``merged_into_minimum`` that disagrees with ``merged_into``, ...). Dicts written
        before ``merged_into_minimum`` existed (without it) load the same."""
        required = ("births", "deaths", "minima", "saddles", "merged_into")
        if not isinstance(data, dict) or any(k not in data for k in required):
            raise ValueError(f"a barcode dict needs the keys {required}")

        def numbers(key: str, allow_inf: bool = False) -> list[float]:
            out = []
            for v in _json_list(data[key], key):
                if allow_inf and v == "inf":
                    out.append(np.inf)
                elif isinstance(v, int | float) and not isinstance(v, bool):
                    out.append(float(v))
                else:
                    raise ValueError(f"barcode {key} must hold numbers"
                                     + (" or 'inf'" if allow_inf else "") + f", got {v!r}")
            return out

        def indices(values: Any, key: str) -> list[int]:
            out = []
            for v in _json_list(values, key):
                if isinstance(v, bool) or not isinstance(v, int) or not -1 <= v < 2**62:
                    raise ValueError(f"barcode {key} must hold integer indices >= -1, got {v!r}")
                out.append(v)
            return out

        edges = data.get("saddle_edges")
        if edges is not None:
            edges = [indices(e, "saddle_edges") for e in _json_list(edges, "saddle_edges")]
            if any(len(e) != 2 for e in edges):
                raise ValueError("barcode saddle_edges must be [i, j] pairs")
        try:
            barcode = cls(
                births=numbers("births"),
                deaths=numbers("deaths", allow_inf=True),
                minima=indices(data["minima"], "minima"),
                saddles=indices(data["saddles"], "saddles"),
                merged_into=indices(data["merged_into"], "merged_into"),
                saddle_edges=np.array(edges, dtype=np.int64).reshape(-1, 2)
                if edges is not None else None,
            )
        except (TypeError, OverflowError) as err:
            raise ValueError(f"malformed barcode dict: {err}") from None
        # Derived, so only checked: an edited file must not say two things.
        if "merged_into_minimum" in data and indices(
                data["merged_into_minimum"], "merged_into_minimum") != \
                barcode.merged_into_minimum().tolist():
            raise ValueError("barcode merged_into_minimum must be minima[merged_into] (-1 for "
                             "essential bars); the file was edited: fix or drop that key")
        return barcode


def _json_list(value: Any, key: str) -> list:
    if not isinstance(value, list | tuple):
        raise ValueError(f"barcode {key} must be a list, got {type(value).__name__}")
    return list(value)


# --------------------------------------------------------------------------- validation


def _real_array(values: Any, name: str) -> np.ndarray:
    """``values`` as float64, or ``ValueError`` naming ``name`` for None entries, complex
    numbers, strings or other non-numbers (which ``np.asarray(..., float64)`` would turn into
    NaN, a TypeError or a silently dropped imaginary part)."""
    if values is None:
        raise ValueError(f"{name} is None: pass real numbers")
    arr = np.asarray(values)
    if arr.dtype == object:
        if any(v is None for v in arr.reshape(-1)):
            raise ValueError(f"{name} contains None: pass real numbers")
        if any(isinstance(v, complex | np.complexfloating) for v in arr.reshape(-1)):
            raise ValueError(f"{name} contains complex numbers: pass real numbers")
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold real numbers") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name} are complex (dtype {arr.dtype}): pass real numbers")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_values(values: Any, name: str = "values") -> np.ndarray:
    arr = _real_array(values, name)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a barcode needs at least one vertex")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} NaN or infinite entries; remove or clip them")
    return arr


def _check_edges(edges: Any, n: int) -> np.ndarray:
    arr = np.asarray(edges)
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"edges must have shape (m, 2), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or np.any(arr != np.round(arr)):
            raise ValueError("edges must hold integer vertex indices")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(
            f"edges reference vertices outside [0, {n}): min {arr.min()}, max {arr.max()}"
        )
    return arr


# --------------------------------------------------------------------------- core


def _descent_basins(n: int, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """In rank space, the minimum each vertex reaches by stepping to its lowest lower
    neighbour, shape ``(n,)``; ``hi``/``lo`` are the higher and lower rank of each edge."""
    basin = np.arange(n, dtype=np.int64)
    if hi.size:
        np.minimum.at(basin, hi, lo)  # lowest lower neighbour (or self)
        while True:  # pointer jumping to the basin's minimum
            nxt = basin[basin]
            if np.array_equal(nxt, basin):
                break
            basin = nxt
    return basin


def _elder_rule_h0(
    values: np.ndarray, edges: np.ndarray, edge_values: np.ndarray, contract: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kruskal + elder rule on a graph whose edges enter at ``edge_values``.

    Works in *rank space*: vertices are ranked by (value, index), so "older" means "lower rank".
    Edges are processed by (edge value, higher rank, lower rank).

    ``contract=True`` is valid only for lower-star filtrations (edge value = max of its ends).
    Each non-minimum vertex then joins its lowest lower neighbour at its own level, which is a
    zero-length bar; contracting those edges first leaves a graph on the local minima only, and
    scipy's MST picks the edges Kruskal would accept. Both shrink the Python loop to the number of
    local minima.

    Returns (dying vertices, index of the edge that killed each, absorbing vertices,
    essential vertices), the last sorted by rank.
    """
    n = values.shape[0]
    order = np.argsort(values, kind="stable")  # rank -> vertex
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n, dtype=np.int64)
    ri, rj = rank[edges[:, 0]], rank[edges[:, 1]]
    hi, lo = np.maximum(ri, rj), np.minimum(ri, rj)

    basin = _descent_basins(n, hi, lo) if contract else np.arange(n, dtype=np.int64)
    roots = np.flatnonzero(basin == np.arange(n))  # candidate minima, in rank order

    bi, bj = basin[ri], basin[rj]
    crossing = np.flatnonzero(bi != bj)
    kruskal = crossing[np.lexsort((lo[crossing], hi[crossing], edge_values[crossing]))]
    a = np.minimum(bi[kruskal], bj[kruskal])
    b = np.maximum(bi[kruskal], bj[kruskal])
    # Keep the first (cheapest) edge between each pair of basins.
    _, first = np.unique(a * n + b, return_index=True)
    first.sort()
    kruskal, a, b = kruskal[first], a[first], b[first]
    if kruskal.size > len(roots):
        weight = np.arange(1, kruskal.size + 1, dtype=np.float64)  # distinct: a unique MST
        tree = minimum_spanning_tree(coo_matrix((weight, (a, b)), shape=(n, n))).tocoo()
        picked = np.sort(tree.data.astype(np.int64) - 1)
        kruskal, a, b = kruskal[picked], a[picked], b[picked]

    # Union-find on compact ids that preserve rank order (smaller id = older).
    ids = np.searchsorted(roots, np.stack([a, b]))
    parent = list(range(len(roots)))
    dying, killer, absorber = [], [], []
    for e, x, y in zip(range(kruskal.size), ids[0].tolist(), ids[1].tolist(), strict=True):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x == y:
            continue
        old, young = (x, y) if x < y else (y, x)
        parent[young] = old
        dying.append(young)
        killer.append(e)
        absorber.append(old)
    alive = np.ones(len(roots), dtype=bool)
    alive[dying] = False
    to_vertex = order[roots]
    return (
        to_vertex[np.asarray(dying, dtype=np.int64)],
        kruskal[np.asarray(killer, dtype=np.int64)],
        to_vertex[np.asarray(absorber, dtype=np.int64)],
        to_vertex[alive],
    )


def _assemble(
    values: np.ndarray,
    edges: np.ndarray,
    edge_values: np.ndarray,
    dying: np.ndarray,
    killer: np.ndarray,
    absorber: np.ndarray,
    essential: np.ndarray,
    saddles: np.ndarray,
    keep_zero: bool,
) -> Barcode:
    """Build a sorted :class:`Barcode` from the union-find output (vertex-indexed)."""
    deaths = edge_values[killer]
    if not keep_zero:
        positive = deaths > values[dying]
        dying, killer, absorber, deaths, saddles = (
            dying[positive],
            killer[positive],
            absorber[positive],
            deaths[positive],
            saddles[positive],
        )
    minima = np.concatenate([dying, essential])
    births = values[minima]
    order = np.lexsort((minima, births))
    bar_of_vertex = {int(v): i for i, v in enumerate(minima[order])}
    n_dying = dying.shape[0]
    merged = np.concatenate([absorber, np.full(essential.shape[0], -1, dtype=np.int64)])
    # An absorber without a bar (a point that is not a birth, see minima_barcode) gives -1.
    merged = np.array([bar_of_vertex.get(int(v), -1) for v in merged[order]])
    saddle_edges = np.concatenate(
        [edges[killer].reshape(-1, 2), np.full((essential.shape[0], 2), -1, dtype=np.int64)]
    )
    return Barcode(
        births=births[order],
        deaths=np.concatenate([deaths, np.full(essential.shape[0], np.inf)])[order],
        minima=minima[order],
        saddles=np.concatenate([saddles, np.full(essential.shape[0], -1)])[order],
        merged_into=merged.astype(np.int64).reshape(-1),
        saddle_edges=saddle_edges[order] if n_dying + essential.shape[0] else saddle_edges,
    )


# --------------------------------------------------------------------------- public builders


def graph_barcode(values: Any, edges: Any, keep_zero: bool = False) -> Barcode:
    """Exact H0 barcode of the lower-star (sublevel) filtration of a graph.

    Args:
        values: shape ``(n,)``, finite value at each vertex.
        edges: shape ``(m, 2)``, integer vertex pairs; duplicates and self-loops are ignored.
        keep_zero: keep zero-length bars (one per non-minimum vertex, plus plateaus).

    Returns:
        A :class:`Barcode` with one essential bar per connected component. ``saddles`` holds the
        higher vertex of the edge where each bar died.
    """
    vals = _check_values(values).reshape(-1)
    e = _check_edges(edges, vals.shape[0])
    e = e[e[:, 0] != e[:, 1]]
    edge_values = np.maximum(vals[e[:, 0]], vals[e[:, 1]])
    dying, killer, absorber, essential = _elder_rule_h0(vals, e, edge_values, not keep_zero)
    ends = e[killer].reshape(-1, 2)
    # The saddle is the later of the two ends: the vertex whose arrival made the merge.
    later = (vals[ends[:, 1]] > vals[ends[:, 0]]) | (
        (vals[ends[:, 1]] == vals[ends[:, 0]]) & (ends[:, 1] > ends[:, 0])
    )
    saddles = np.where(later, ends[:, 1], ends[:, 0])
    return _assemble(vals, e, edge_values, dying, killer, absorber, essential, saddles, keep_zero)


def grid_edges(shape: Sequence[int], connectivity: str = "full") -> np.ndarray:
    """Edges of an n-dimensional grid graph over flat (C-order) indices, shape ``(m, 2)``.

    ``connectivity="axis"`` joins the 2n axis neighbours, ``"full"`` all 3ⁿ−1 neighbours.
    """
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    full_shape = tuple(int(s) for s in shape)
    index = np.arange(int(np.prod(full_shape)), dtype=np.int64)
    # Axes of length 1 have no neighbours: dropping them keeps 3^d offsets to the axes that count.
    shape = tuple(s for s in full_shape if s != 1)
    index = index.reshape(shape)
    dim = len(shape)
    _check_grid_cost(shape, connectivity)
    if connectivity == "axis":
        offsets = [tuple(int(k == d) for k in range(dim)) for d in range(dim)]
    else:  # one offset of each +/- pair: the first non-zero step is +1
        offsets = [o for o in product((-1, 0, 1), repeat=dim) if any(o) and o[next(
            k for k, s in enumerate(o) if s)] == 1]
    blocks = []
    for off in offsets:
        src = tuple(slice(0, -1) if s == 1 else slice(1, None) if s == -1 else slice(None)
                    for s in off)
        dst = tuple(slice(1, None) if s == 1 else slice(0, -1) if s == -1 else slice(None)
                    for s in off)
        blocks.append(np.stack([index[src].reshape(-1), index[dst].reshape(-1)], axis=1))
    return np.concatenate(blocks) if blocks else np.empty((0, 2), dtype=np.int64)


def _check_grid_cost(shape: tuple[int, ...], connectivity: str) -> None:
    """Refuse (``ValueError``) or warn (``RuntimeWarning``) with the size of the edge list
    before building it: "full" connectivity has 3^d - 1 neighbours per vertex."""
    sizes = np.array(shape, dtype=np.float64)
    if connectivity == "axis":
        n_edges, n_offsets = float(sum(np.prod(sizes) / s * (s - 1) for s in sizes)), len(shape)
    else:
        n_edges = float((np.prod(3 * sizes - 2) - np.prod(sizes)) / 2)
        n_offsets = (3 ** len(shape) - 1) // 2
    message = (f"grid of shape {shape} with {connectivity!r} connectivity has {n_edges:,.0f} "
               f"edges ({n_edges * 16 / 2**30:,.1f} GiB) from {n_offsets:,} neighbour offsets")
    if n_edges > MAX_GRID_EDGES or n_offsets > MAX_GRID_OFFSETS:
        raise ValueError(message + ": too large; use connectivity='axis', fewer dimensions or "
                         "a coarser grid")
    if n_edges > MAX_GRID_EDGES / 10 or n_offsets > MAX_GRID_OFFSETS / 10:
        import warnings

        warnings.warn(message + "; this takes a while", RuntimeWarning, stacklevel=4)


def grid_barcode(values: Any, connectivity: str = "full", keep_zero: bool = False) -> Barcode:
    """Exact H0 sublevel barcode of an n-dimensional array of function values.

    Args:
        values: array of any shape ``(d1, ..., dn)``, finite.
        connectivity: ``"axis"`` (2n neighbours) or ``"full"`` (3ⁿ−1 neighbours).
        keep_zero: keep zero-length bars.

    Returns:
        A :class:`Barcode` whose ``minima`` and ``saddles`` are flat (C-order) indices; use
        ``np.unravel_index(barcode.minima, values.shape)`` for grid coordinates.
    """
    vals = _check_values(values)
    return graph_barcode(vals.reshape(-1), grid_edges(vals.shape, connectivity), keep_zero)


def _n_components(n: int, edges: np.ndarray) -> int:
    graph = coo_matrix((np.ones(edges.shape[0]), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return int(connected_components(graph, directed=False)[0])


def knn_edges(points: np.ndarray, k: int) -> np.ndarray:
    """Edges of the symmetric k-nearest-neighbour graph of ``points`` (shape ``(n, d)``)."""
    n = points.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return np.empty((0, 2), dtype=np.int64)
    from scipy.spatial import cKDTree  # imported here: it slows every dashboard start

    _, nbrs = cKDTree(points).query(points, k=k + 1)
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    return np.stack([src, nbrs[:, 1:].reshape(-1).astype(np.int64)], axis=1)


def sample_barcode(
    f: Callable[[np.ndarray], np.ndarray],
    bounds: Any,
    n: int,
    k: int | None = None,
    seed: int = 0,
    return_points: bool = False,
) -> Barcode | tuple[Barcode, np.ndarray]:
    """Estimate the barcode of a low-dimensional function from random samples.

    The point-cloud algorithm of arXiv:1912.00043: ``n`` uniform random points in the box,
    their k-nearest-neighbour graph, and its exact lower-star H0 barcode. It converges to the
    function's barcode as ``n`` grows (plus tiny spurious bars from sampling); use it for
    functions of a few variables, where a grid would be too large.

    Args:
        f: vectorised function, ``(n, d)`` points -> ``(n,)`` values.
        bounds: shape ``(d, 2)``, ``[low, high]`` per dimension.
        n: number of sample points (>= 2).
        k: neighbours per point; defaults to ``4 * d``. It is doubled until the kNN graph is
            connected, since a disconnected sample would report spurious essential bars.
        seed: seed of the sampler.
        return_points: also return the ``(n, d)`` sample, which ``minima`` index into.
    """
    box = np.asarray(bounds, dtype=np.float64)
    if box.ndim == 1 and box.shape == (2,):
        box = box[None, :]
    if box.ndim != 2 or box.shape[1] != 2 or box.shape[0] < 1:
        raise ValueError(f"bounds must have shape (d, 2) as [low, high] rows, got {box.shape}")
    if not np.all(np.isfinite(box)) or np.any(box[:, 0] >= box[:, 1]):
        raise ValueError("bounds must be finite with low < high in every dimension")
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n}")
    dim = box.shape[0]
    k = 4 * dim if k is None else k
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    rng = np.random.default_rng(seed)
    points = box[:, 0] + rng.random((int(n), dim)) * (box[:, 1] - box[:, 0])
    values = np.asarray(f(points), dtype=np.float64)
    if values.shape != (int(n),):
        raise ValueError(f"f must map (n, d) points to (n,) values, got shape {values.shape}")
    values = _check_values(values, "f(points)")
    k = int(k)
    edges = knn_edges(points, k)
    # A kNN graph can fall apart (gaps in a 1-D sample); its pieces would show up as spurious
    # essential bars, so k grows until the sample is one component.
    while k < n - 1 and _n_components(int(n), edges) > 1:
        k = min(2 * k, int(n) - 1)
        edges = knn_edges(points, k)
    barcode = graph_barcode(values, edges)
    return (barcode, points) if return_points else barcode


def pair_barrier_matrix(pairs: np.ndarray, barriers: np.ndarray, minima_loss: np.ndarray,
                        k: int) -> np.ndarray:
    """``(k, k)`` symmetric matrix of the barriers ``(M,)`` of the pairs ``(M, 2)``: the lowest
    barrier of each pair (a pair may have several paths), ``np.inf`` where none was computed
    (or a barrier is NaN/inf); the diagonal holds each minimum's own loss ``minima_loss``
    ``(K0,)`` (the lowest level at which it is in the sublevel set; ``np.inf`` where not
    finite, e.g. diverged)."""
    out = np.full((k, k), np.inf)
    for (i, j), b in zip(np.asarray(pairs).reshape(-1, 2).tolist(),
                         np.asarray(barriers, dtype=np.float64).tolist(), strict=True):
        if b < out[i, j]:  # False for NaN: not connected
            out[i, j] = out[j, i] = b
    own = np.full(k, np.inf)
    loss = np.asarray(minima_loss, dtype=np.float64)
    own[: loss.shape[0]] = np.where(np.isfinite(loss), loss, np.inf)
    np.fill_diagonal(out, own)
    return out


def minima_barcode(
    losses: Any, barriers: Any, rule: str = "union_find", keep_zero: bool = True,
    births: Any = None,
) -> Barcode:
    """Barcode of K minima joined by paths: one segment per minimum.

    Args:
        losses: shape ``(K,)``, the loss at each minimum.
        barriers: shape ``(K, K)``, symmetric; ``barriers[i, j]`` is the highest loss on the best
            path found between minima i and j, ``np.inf`` where no path was computed. The
            diagonal is ignored; entries are raised to ``max(losses[i], losses[j])``, since a path
            contains its endpoints.
        rule: ``"union_find"`` (default, exact H0 of the barrier graph: a minimum may escape
            through other minima) or ``"direct"`` (the released paper code's rule: death = the
            smallest direct barrier to a strictly lower minimum).
        keep_zero: keep zero-length segments (default True: every minimum gets a segment).
        births: optional ``(K,)`` bools: only these points are born (certified minima); the
            others are still points of the landscape that paths pass through, and a lower
            one is a point of lower loss that a bar can die into (d_m is the lowest level
            joining m to *any* lower point). A bar absorbed by a component whose lowest point
            has no bar has ``merged_into`` -1. Default: every point is born.

    Returns:
        A :class:`Barcode`; ``saddles`` is the flat index ``i * K + j`` (``i < j``) of the
        barrier whose path killed each bar, ``saddle_edges`` the pair ``(i, j)``.
    """
    vals = _check_values(losses, "losses")
    if vals.ndim != 1:
        raise ValueError(f"losses must have shape (K,), got {vals.shape}")
    k = vals.shape[0]
    c = _real_array(barriers, "barriers")
    if c.shape != (k, k):
        raise ValueError(f"barriers must be a square (K, K) = ({k}, {k}) matrix, got {c.shape}")
    off = ~np.eye(k, dtype=bool)
    if np.any(np.isnan(c[off])) or np.any(c[off] == -np.inf):
        raise ValueError("barriers contain NaN or -inf; use np.inf for pairs with no path")
    finite = np.isfinite(c)
    if not (np.array_equal(finite, finite.T) and np.allclose(c[finite], c.T[finite])):
        raise ValueError("barriers must be symmetric (barriers[i, j] == barriers[j, i])")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    i, j = np.triu_indices(k, 1)
    connected = np.isfinite(c[i, j])
    i, j = i[connected], j[connected]
    edges = np.stack([i, j], axis=1).astype(np.int64)
    edge_values = np.maximum(c[i, j], np.maximum(vals[i], vals[j]))

    if rule == "union_find":
        dying, killer, absorber, essential = _elder_rule_h0(vals, edges, edge_values, False)
    else:
        dying, killer, absorber, essential = _direct_rule(vals, edges, edge_values)
    if births is not None:
        born = np.asarray(births, dtype=bool).reshape(-1)
        if born.shape != (k,):
            raise ValueError(f"births must be {k} bools, got shape {born.shape}")
        # The elder rule kills the lowest point of the younger component: a bar only where
        # that point is born.
        dying, killer, absorber = dying[born[dying]], killer[born[dying]], absorber[born[dying]]
        essential = essential[born[essential]]
    saddles = edges[killer, 0] * k + edges[killer, 1]
    return _assemble(vals, edges, edge_values, dying, killer, absorber, essential, saddles,
                     keep_zero)


def _direct_rule(
    values: np.ndarray, edges: np.ndarray, edge_values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The released paper code's rule: each minimum dies at its cheapest direct edge to an
    older (lower, ties by index) minimum; same outputs as :func:`_elder_rule_h0`.

    One sort of the edges by dying end, O(E log E) (E <= K^2), instead of a scan of every edge
    per minimum (O(K^3))."""
    k = values.shape[0]
    order = np.argsort(values, kind="stable")
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    ri, rj = rank[edges[:, 0]], rank[edges[:, 1]]
    usable = np.flatnonzero(ri != rj)
    young_rank = np.maximum(ri, rj)[usable]  # the endpoint that can die
    old_rank = np.minimum(ri, rj)[usable]
    by_young = np.argsort(young_rank, kind="stable")
    usable, young_rank, old_rank = usable[by_young], young_rank[by_young], old_rank[by_young]
    value = edge_values[usable]
    new_group = np.r_[True, young_rank[1:] != young_rank[:-1]][: usable.size]
    starts, group = np.flatnonzero(new_group), np.cumsum(new_group) - 1
    # The cheapest edge per dying vertex; among equally cheap ones, the oldest other end.
    pick = np.zeros(0, dtype=np.int64)
    if usable.size:
        tied = value == np.minimum.reduceat(value, starts)[group]
        oldest = np.minimum.reduceat(np.where(tied, old_rank, k), starts)[group]
        pick = np.flatnonzero(tied & (old_rank == oldest))
        pick = pick[np.unique(group[pick], return_index=True)[1]]  # one edge per vertex
    killer = usable[pick]
    dying = order[young_rank[pick]]
    absorber = order[old_rank[pick]]
    alive = np.ones(k, dtype=bool)
    alive[dying] = False
    return (dying.astype(np.int64), killer.astype(np.int64), absorber.astype(np.int64),
            order[alive[order]].astype(np.int64))


def death_pair(barcode: Barcode, pairs: np.ndarray, minimum: int) -> int | None:
    """Index into ``pairs`` of the path where ``minimum``'s bar died, None if it never died
    (essential, diverged or not in the barcode) or that pair has no path."""
    bar = np.flatnonzero(barcode.minima == minimum)
    if bar.size == 0 or not np.isfinite(barcode.deaths[bar[0]]):
        return None
    edge = sorted(int(v) for v in barcode.saddle_edges[bar[0]])
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    hit = np.flatnonzero((pairs[:, 0] == edge[0]) & (pairs[:, 1] == edge[1]))
    return int(hit[0]) if hit.size else None


# --------------------------------------------------------------------------- views of a level


def sublevel_components(values: Any, level: float, connectivity: str = "full") -> np.ndarray:
    """Connected components of the sublevel set ``{values <= level}`` of a grid.

    Args:
        values: array of shape ``(d1, ..., dn)``.
        level: the threshold.
        connectivity: ``"axis"`` or ``"full"``, as in :func:`grid_barcode`.

    Returns:
        An int64 array of the same shape: ``-1`` above the level, otherwise the flat index of
        the lowest vertex (by value, then index) of the point's component — the same vertex that
        :func:`grid_barcode` reports as the minimum of the component's bar.
    """
    vals = _check_values(values)
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity must be one of {CONNECTIVITIES}, got {connectivity!r}")
    from scipy import ndimage  # imported here: it slows every dashboard start

    mask = vals <= level
    structure = ndimage.generate_binary_structure(vals.ndim, 1 if connectivity == "axis"
                                                  else vals.ndim)
    labels, _ = ndimage.label(mask, structure=structure)
    flat_labels = labels.reshape(-1)
    order = np.argsort(vals.reshape(-1), kind="stable")
    order = order[flat_labels[order] > 0]
    found, first = np.unique(flat_labels[order], return_index=True)
    lowest = np.full(flat_labels.max() + 1, -1, dtype=np.int64)
    lowest[found] = order[first]
    return lowest[flat_labels].reshape(vals.shape)


def sublevel_sweep(values: Any, levels: Any, connectivity: str = "full",
                   stride: int = 1) -> np.ndarray:
    """:func:`sublevel_components` at many levels from one union-find pass over the grid.

    The elder-rule merges of :func:`grid_barcode` say, for every basin minimum, the level at
    which it joins an older component and which one; a point's component at level ``c`` is
    found by following those merges up to ``c`` from its basin. That is one barcode plus a
    pointer jump per level, instead of labelling the grid again at each level.

    Args:
        values: array of shape ``(d1, ..., dn)``.
        levels: shape ``(L,)``, the thresholds (any order).
        connectivity: ``"axis"`` or ``"full"``, as in :func:`grid_barcode`.
        stride: keep every ``stride``-th grid point along each axis (the components are still
            those of the full grid), to make the output smaller.

    Returns:
        int64 array of shape ``(L, ceil(d1 / stride), ..., ceil(dn / stride))`` equal to
        ``sublevel_components(values, levels[l], connectivity)[::stride, ..., ::stride]``.
    """
    vals = _check_values(values)
    lv = np.asarray(levels, dtype=np.float64).reshape(-1)
    if lv.size == 0 or not np.all(np.isfinite(lv)):
        raise ValueError("levels must be a non-empty list of finite numbers")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be an integer >= 1, got {stride}")
    flat = vals.reshape(-1)
    edges = grid_edges(vals.shape, connectivity)
    edge_values = np.maximum(flat[edges[:, 0]], flat[edges[:, 1]])
    dying, killer, absorber, essential = _elder_rule_h0(flat, edges, edge_values, True)

    # Compact ids of the basin minima: their death level and the minimum they merge into.
    minima = np.concatenate([dying, essential])
    compact = np.full(flat.size, -1, dtype=np.int64)
    compact[minima] = np.arange(minima.size)
    death = np.concatenate([edge_values[killer], np.full(essential.size, np.inf)])
    into = np.concatenate([compact[absorber], compact[essential]])  # essential: itself

    order = np.argsort(flat, kind="stable")
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    hi = np.maximum(rank[edges[:, 0]], rank[edges[:, 1]])
    lo = np.minimum(rank[edges[:, 0]], rank[edges[:, 1]])
    basin = order[_descent_basins(flat.size, hi, lo)[rank]]  # vertex -> its basin minimum

    kept = np.arange(flat.size).reshape(vals.shape)[(slice(None, None, int(stride)),) * vals.ndim]
    kept = kept.reshape(-1)
    # After enough rounds of pointer jumping every minimum points at its component's root.
    parent = np.where(death[None, :] <= lv[:, None], into[None, :], np.arange(minima.size))
    for _ in range(int(minima.size).bit_length() + 1):
        parent = np.take_along_axis(parent, parent, axis=1)
    labels = minima[parent[:, compact[basin[kept]]]]
    labels[flat[kept][None, :] > lv[:, None]] = -1
    return labels.reshape(lv.size, *((np.array(vals.shape) + stride - 1) // stride))


# --------------------------------------------------------------------------- scores


def length_norm(lengths: np.ndarray, norm: str) -> Any:
    """The TO-score norm (:data:`NORMS`) of segment lengths ``(n,)`` with ``n >= 1`` (a
    float), or of each row of ``(..., n)`` (an array of shape ``(...)``, e.g. bootstrap draws)."""
    x = np.asarray(lengths, dtype=np.float64)
    value = {
        "l2": lambda: _l2(x),
        "sum": lambda: np.sum(x, axis=-1),
        "max": lambda: np.max(x, axis=-1),
        "mean": lambda: np.mean(x, axis=-1),
    }[norm]()
    return float(value) if x.ndim == 1 else value


def _l2(x: np.ndarray) -> np.ndarray:
    """The L2 norm of the last axis of ``x`` ``(..., n)``, ``n >= 1``: plainly where the
    squares stay finite and normal, else scaled by the largest entry before squaring, so
    that bars beyond about 1e154 (or below 1e-154) give their norm, not inf (or 0)."""
    with np.errstate(over="ignore", under="ignore"):
        plain = np.sqrt(np.sum(x**2, axis=-1))
    top = np.max(np.abs(x), axis=-1)
    bad = (~np.isfinite(plain) & np.isfinite(top)) | ((plain == 0) & (top > 0))
    if not np.any(bad):
        return plain  # the usual case, bit for bit the plain formula
    scale = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    with np.errstate(over="ignore", under="ignore"):
        scaled = np.sqrt(np.sum((x / scale[..., None]) ** 2, axis=-1)) * scale
    return np.where(bad, scaled, plain)


def resolved_lengths(lengths: np.ndarray, resolution: float) -> np.ndarray:
    """``lengths`` (any shape) with those at most ``resolution`` set to 0, NaN and inf kept. A
    barrier is resolved to about ``path_atol``: a bar no longer than that is not resolved from
    0, its length is the optimiser's round-off, and ranking such lengths ranks the tool."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return np.where(lengths <= resolution, 0.0, lengths)


def resolved_bars(barcode: Barcode, resolution: float) -> np.ndarray:
    """``(n_finite,)`` bool, for each finite bar in order: resolved from 0
    (:func:`resolved_lengths`)."""
    return resolved_lengths(barcode.lengths()[np.isfinite(barcode.deaths)], resolution) > 0


def to_score_floor(resolution: float, n_bars: int, norm: str = "l2") -> float:
    """The TO-score of ``n_bars`` finite segments each as long as ``resolution`` (a path's
    barrier is resolved to about that much, e.g. ``path_atol``): a score below it is not
    resolved from zero. ``0.0`` without finite bars."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return length_norm(np.full(n_bars, float(resolution)), norm) if n_bars > 0 else 0.0


def to_score(barcode: Barcode, norm: str = "l2", normalize: str | None = None) -> float:
    """TO-score: a norm of the finite segment lengths of a barcode (arXiv:2012.15834).

    Args:
        barcode: the barcode (essential bars are ignored).
        norm: ``"l2"`` (default), ``"sum"`` (L1), ``"max"`` (L∞) or ``"mean"``.
        normalize: ``None`` or ``"range"``: divide by the loss range, the highest finite death
            minus the lowest birth, so that landscapes of different scales compare.

    Returns:
        The score, ``0.0`` for a barcode without finite bars.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    finite = np.isfinite(barcode.deaths)
    lengths = barcode.lengths()[finite]
    if lengths.size == 0:
        return 0.0
    score = length_norm(lengths, norm)
    if normalize == "range":
        span = loss_range(barcode)
        return score / span if span > 0 else 0.0
    return score


def range_normalized(barcode: Barcode) -> Barcode:
    """The barcode with every level ``x`` mapped to ``(x - lowest birth) / loss_range``: the
    lowest minimum at 0, the highest finite death at 1 (only shifted when no bar dies)."""
    if len(barcode) == 0:
        return barcode
    low, span = float(barcode.births.min()), loss_range(barcode)
    span = span if span > 0 else 1.0
    return Barcode(births=(barcode.births - low) / span, deaths=(barcode.deaths - low) / span,
                   minima=barcode.minima, saddles=barcode.saddles,
                   merged_into=barcode.merged_into, saddle_edges=barcode.saddle_edges)


def loss_range(barcode: Barcode) -> float:
    """The highest finite death minus the lowest birth (``normalize="range"``'s unit);
    ``0.0`` without finite bars."""
    finite = np.isfinite(barcode.deaths)
    if not finite.any():
        return 0.0
    return float(barcode.deaths[finite].max() - barcode.births.min())


def barcode_distance(a: Barcode, b: Barcode, metric: str = "bottleneck") -> float:
    """Bottleneck or Wasserstein distance between two barcodes.

    Finite bars are compared with persim: bottleneck with the L∞ ground metric, Wasserstein of
    order 1 with the Euclidean ground metric (persim's conventions). persim drops points at
    infinity, so essential bars are matched here explicitly: by sorted birth (optimal in one
    dimension), and the distance is ``inf`` when the two barcodes have different numbers of
    essential bars.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    ea, eb = np.sort(a.essential()), np.sort(b.essential())
    if ea.shape != eb.shape:
        return float("inf")
    gaps = np.abs(ea - eb)
    import persim  # lazy: persim pulls in matplotlib

    distance = persim.bottleneck if metric == "bottleneck" else persim.wasserstein
    finite_part = float(distance(a.finite(), b.finite()))
    if metric == "bottleneck":
        return max(finite_part, float(gaps.max()) if gaps.size else 0.0)
    return finite_part + float(gaps.sum())
