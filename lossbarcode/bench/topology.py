"""``lossbarcode bench topology``: our H0 barcodes against ripser on the same input.

Each case runs :func:`~lossbarcode.topology.grid_barcode` or
:func:`~lossbarcode.topology.graph_barcode` and the reference (:func:`lower_star_ripser`) in one
process and prints the ratio, so that noise on a shared machine affects both sides alike. The
tests use :func:`lower_star_ripser` as their oracle too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from scipy.ndimage import gaussian_filter

from lossbarcode.topology import Barcode, graph_barcode, grid_barcode, grid_edges, knn_edges


def lower_star_ripser(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """ripser's H0 diagram of the lower-star filtration of a graph, shape ``(n, 2)``.

    ripser reads only the entries with row < col of a sparse matrix, so edges are canonicalised;
    duplicates are removed because scipy sums repeated sparse entries.
    """
    from ripser import ripser  # lazy: the reference only, not a dependency of the core
    from scipy.sparse import coo_matrix

    n = values.shape[0]
    lo, hi = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    keep = lo != hi
    lo, hi = np.unique(np.stack([lo[keep], hi[keep]], axis=1), axis=0).T
    rows = np.concatenate([np.arange(n), lo])
    cols = np.concatenate([np.arange(n), hi])
    data = np.concatenate([values, np.maximum(values[lo], values[hi])])
    matrix = coo_matrix((data, (rows, cols)), shape=(n, n)).tocsr()
    return ripser(matrix, maxdim=0, distance_matrix=True)["dgms"][0]


def _best_of(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _smooth_field(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A random smooth landscape with many minima (blurred white noise)."""
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.standard_normal(shape), sigma=4.0)


def topology_benchmark(
    grid_sizes: tuple[int, ...] = (101, 501, 1001),
    knn_points: int = 100_000,
    repeat: int = 3,
    noise_size: int = 1001,
) -> list[dict]:
    """Time :func:`grid_barcode` / :func:`graph_barcode` against ripser on the same input.

    Grids: ``grid_barcode`` on the 2-D array (building its edges included) vs ripser on the
    same 8-neighbour graph (building its sparse matrix included). kNN graph: both get the edge
    list. A white-noise grid of side ``noise_size`` (0 to skip) is the worst case: about one
    vertex in nine is a local minimum. Returns one dict per case.
    """
    cases = []
    for size in grid_sizes:
        field = _smooth_field((size, size), seed=size)
        cases.append((f"grid {size}x{size} (8-nbr)", field.reshape(-1),
                      grid_edges(field.shape), lambda f=field: grid_barcode(f)))
    rng = np.random.default_rng(0)
    if noise_size:
        noise = rng.random((noise_size, noise_size))
        cases.append((f"grid {noise_size}x{noise_size} white noise", noise.reshape(-1),
                      grid_edges(noise.shape), lambda f=noise: grid_barcode(f)))
    points = rng.random((knn_points, 3))
    values = np.sin(6 * points[:, 0]) * np.cos(5 * points[:, 1]) + points[:, 2] ** 2
    edges = knn_edges(points, 12)
    cases.append((f"kNN graph n={knn_points} (k=12, 3-D)", values, edges,
                  lambda: graph_barcode(values, edges)))

    import ripser  # noqa: F401  # import once up front so its cost is not timed

    rows = []
    for name, values, edges, ours_fn in cases:
        ours_s, ours = _best_of(ours_fn, repeat)
        ref_s, ref = _best_of(lambda v=values, e=edges: lower_star_ripser(v, e), repeat)
        assert isinstance(ours, Barcode)
        rows.append({
            "case": name,
            "vertices": int(values.shape[0]),
            "edges": int(edges.shape[0]),
            "bars": len(ours),
            "ripser_bars": int(len(ref)),
            "ours_s": ours_s,
            "ripser_s": ref_s,
            "ratio": ours_s / ref_s,
        })
    return rows
