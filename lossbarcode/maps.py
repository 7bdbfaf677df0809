"""2-D / 3-D maps of a run's minima and of the path images between them (UMAP or PCA).

:func:`project` embeds points of parameter space; :func:`minima_map` projects a stored run's
minima together with the interior images of all its paths -- K minima alone are too few for
UMAP, which needs about 20 points -- and caches the map in the store as a stage
``map-<method>-<dim>`` (``-s<seed>`` appended for a UMAP seed other than 0).

UMAP (umap-learn, optional) is imported only when used: its first import and fit compile with
numba for 15-35 s on a cold machine. PCA is exact and linear, so a path's straight segments
stay straight on the map; UMAP keeps neighbourhoods instead, at the cost of distances.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbarcode import choices
from lossbarcode._checks import check_int
from lossbarcode.experiment import load_minima, load_paths
from lossbarcode.store import ResultStore
from lossbarcode.views import cached_view

__all__ = ["METHODS", "UMAP_MIN_POINTS", "MinimaMap", "Projection", "minima_map", "project"]

METHODS = choices.MAP_METHODS  # the first is the default
INPUTS = ("minima", "paths")  # the stages a map is computed from
UMAP_MIN_POINTS = 20  # "auto" uses UMAP from this many points on (fewer: it degenerates)
_UMAP_INPUT_DIMS = 50  # UMAP runs on this many PCA components (exact when n <= 51)
_SPECTRAL_MIN_POINTS = 50  # UMAP's spectral initialisation breaks on smaller graphs
_GRAM_BLOCK = 8192  # parameter columns per block when forming the Gram matrix


@dataclass(frozen=True, eq=False)
class Projection:
    """Points embedded in ``dim`` dimensions.

    Attributes:
        coords: ``(n, dim)`` float64 coordinates.
        method: ``"umap"`` or ``"pca"`` (what was actually used).
        explained: ``(dim,)`` explained-variance ratio of each PCA component (descending, sum
            <= 1); None for UMAP.
    """

    coords: np.ndarray
    method: str
    explained: np.ndarray | None


@dataclass(frozen=True, eq=False)
class MinimaMap:
    """A stored run's minima and paths on a 2-D or 3-D map.

    Attributes:
        minima_coords: ``(K, dim)`` coordinates of the minima; NaN rows for diverged minima.
        path_coords: ``M`` arrays ``(n_m, dim)``, one chain per pair, endpoints included (the
            endpoints are exactly the two minima's rows of ``minima_coords``).
        pairs: ``(M, 2)`` int64 minima indices of each path.
        method: ``"umap"`` or ``"pca"``.
        explained: ``(dim,)`` PCA explained-variance ratios, None for UMAP.
        minima_loss: ``(K,)`` training loss of each minimum (NaN where diverged).
        path_loss: ``M`` arrays ``(n_m,)``, training loss at each path image (read off the
            stored loss profile; NaN where the profile does not line up with the images).
    """

    minima_coords: np.ndarray
    path_coords: tuple[np.ndarray, ...]
    pairs: np.ndarray
    method: str
    explained: np.ndarray | None
    minima_loss: np.ndarray
    path_loss: tuple[np.ndarray, ...]

    @property
    def dim(self) -> int:
        return int(self.minima_coords.shape[1])

    # Kept for compatibility (deprecated): the old names, which said less about what they are.
    @property
    def minima(self) -> np.ndarray:
        """Deprecated name of :attr:`minima_coords`."""
        return self.minima_coords

    @property
    def paths(self) -> tuple[np.ndarray, ...]:
        """Deprecated name of :attr:`path_coords`."""
        return self.path_coords


# --------------------------------------------------------------------------- projection


def umap_available() -> bool:
    """Whether umap-learn is installed (checked without importing it, which is slow)."""
    return importlib.util.find_spec("umap") is not None


def project(points: Any, dim: int = choices.MAP_DIM, method: str = choices.MAP_METHOD,
            seed: int = choices.MAP_SEED) -> Projection:
    """Embed ``points`` ``(n, P)`` (finite; P may be far larger than n) in ``dim`` (2 or 3)
    dimensions.

    ``method``: ``"pca"`` (centred SVD, deterministic signs), ``"umap"`` (falls back to PCA
    with a warning when it cannot work: too few points or a failed fit) or ``"auto"`` (UMAP
    from :data:`UMAP_MIN_POINTS` points on when umap-learn is installed, else PCA). ``seed``
    fixes UMAP's randomness. Raises ``ValueError`` for bad input, or for ``"umap"`` without
    umap-learn installed.
    """
    x = _check_points(points)
    dim, seed = _check_dim(dim), check_int(seed, "seed", 0)
    method = _resolve(_check_method(method), len(x))
    if method == "umap":
        return _umap(x, dim, seed)
    coords, explained = _pca(x, dim)
    return Projection(coords=coords, method="pca", explained=explained)


def _resolve(method: str, n_points: int) -> str:
    """``"auto"`` as the method it stands for with ``n_points`` points; others unchanged."""
    if method != "auto":
        return method
    return "umap" if n_points >= UMAP_MIN_POINTS and umap_available() else "pca"


def _pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``dim`` principal-component scores ``(n, dim)`` and explained-variance ratios
    ``(dim,)`` (zero-padded when the points span fewer dimensions)."""
    n, p = x.shape
    mean = x.mean(axis=0, dtype=np.float64)
    if p > n:
        # n x n Gram matrix of the centred points: BLAS-3 work, memory O(n^2), for P >> n.
        gram = np.zeros((n, n))
        for s in range(0, p, _GRAM_BLOCK):
            block = x[:, s : s + _GRAM_BLOCK].astype(np.float64) - mean[s : s + _GRAM_BLOCK]
            gram += block @ block.T
        var, vecs = np.linalg.eigh(gram)
        order = np.argsort(var)[::-1]
        var, vecs = np.clip(var[order], 0.0, None), vecs[:, order]
        scores = vecs * np.sqrt(var)
    else:
        u, s, _ = np.linalg.svd(x.astype(np.float64) - mean, full_matrices=False)
        var, scores = s**2, u * s
    r = min(dim, scores.shape[1])
    coords = np.zeros((n, dim))
    coords[:, :r] = scores[:, :r]
    # Fix each component's sign (its largest-magnitude score positive): SVD/eigh signs are
    # arbitrary and would flip maps between machines.
    big = np.abs(coords).argmax(axis=0)
    coords *= np.where(coords[big, np.arange(dim)] < 0, -1.0, 1.0)
    explained = np.zeros(dim)
    total = float(var.sum())
    if total > 0:
        explained[:r] = var[:r] / total
    return coords, explained


def _umap(x: np.ndarray, dim: int, seed: int) -> Projection:
    n = len(x)
    if n <= dim + 2:
        return _pca_fallback(x, dim, f"UMAP needs more than {dim + 2} points, got {n}")
    try:
        import umap
    except ImportError as err:
        raise ValueError("method 'umap' needs umap-learn (pip install umap-learn); or use "
                         "method 'pca' or 'auto'") from err
    # PCA first: UMAP's neighbour search on 10^5-dimensional points is slow, and with few
    # points the leading components keep every distance.
    reduced, _ = _pca(x, min(_UMAP_INPUT_DIMS, n))
    reducer = umap.UMAP(
        n_components=dim, n_neighbors=max(2, min(15, n - 1)), random_state=seed, n_jobs=1,
        init="spectral" if n >= _SPECTRAL_MIN_POINTS else "random",
    )
    try:
        coords = np.asarray(reducer.fit_transform(reduced), dtype=np.float64)
    except Exception as err:  # numba/scipy failures on degenerate inputs
        return _pca_fallback(x, dim, f"UMAP failed ({type(err).__name__}: {err})")
    if coords.shape != (n, dim) or not np.isfinite(coords).all():
        return _pca_fallback(x, dim, "UMAP gave non-finite coordinates")
    return Projection(coords=coords, method="umap", explained=None)


def _pca_fallback(x: np.ndarray, dim: int, reason: str) -> Projection:
    warnings.warn(f"{reason}; using PCA instead", RuntimeWarning, stacklevel=3)
    coords, explained = _pca(x, dim)
    return Projection(coords=coords, method="pca", explained=explained)


# --------------------------------------------------------------------------- minima map


def minima_map(
    store: ResultStore, run_id: str, dim: int = choices.MAP_DIM,
    method: str = choices.MAP_METHOD, seed: int = choices.MAP_SEED,
) -> MinimaMap:
    """The map of a stored run's minima and paths, computed once and cached in the store.

    Projects the non-diverged minima together with the interior images of every path (the
    stored ``minima`` and ``paths`` stages); each path's endpoints are then set to its minima's
    coordinates. ``method``/``seed`` as in :func:`project` (``"auto"`` picks UMAP when there
    are at least :data:`UMAP_MIN_POINTS` points). Raises ``ValueError`` if the run has no
    minima or paths stage yet, or for bad arguments.
    """
    dim, seed, method = _check_dim(dim), check_int(seed, "seed", 0), _check_method(method)

    def compute() -> MinimaMap:
        found = load_minima(store, run_id)
        connected = load_paths(store, run_id)
        if found is None or connected is None:  # present above but corrupt (now dropped)
            _require_stages(store, run_id)
            raise ValueError(f"the stored minima/paths of run {run_id} are unreadable; "
                             "run the experiment again to recompute them")
        valid = found.valid
        thetas = found.thetas.numpy()
        images = [img.numpy() for img in connected.images]
        interior = [img[1:-1] for img in images]
        points = np.concatenate([thetas[valid], *interior]).reshape(-1, thetas.shape[1])
        attempt = _resolve(method, len(points))
        proj = project(points, dim, attempt, seed)

        minima = np.full((found.k, dim), np.nan)
        minima[valid] = proj.coords[: len(valid)]
        paths, start = [], len(valid)
        for (i, j), inner in zip(connected.pairs, interior, strict=True):
            paths.append(np.concatenate([minima[i : i + 1], proj.coords[start : start + len(
                inner)], minima[j : j + 1]]))
            start += len(inner)
        result = MinimaMap(
            minima_coords=minima, path_coords=tuple(paths),
            pairs=np.asarray(connected.pairs, np.int64),
            method=proj.method, explained=proj.explained,
            minima_loss=np.asarray(found.train_loss, dtype=np.float64),
            path_loss=tuple(connected.image_losses()),
        )
        _save_map(store, run_id, _stage_name(attempt, dim, seed), result, len(points), method)
        return result

    return cached_view(store, run_id, lambda: _cached_map(store, run_id, dim, method, seed),
                       compute, check=lambda: _require_stages(store, run_id))


def _require_stages(store: ResultStore, run_id: str) -> None:
    for stage in ("minima", "paths"):
        if not store.has_stage(run_id, stage):
            raise ValueError(f"run {run_id} has no stored {stage} stage yet; run the "
                             "experiment (at least up to its paths) before mapping it")


def _stage_name(method: str, dim: int, seed: int) -> str:
    # PCA does not depend on the seed, so one stage serves every seed.
    return f"map-{method}-{dim}" + (f"-s{seed}" if method == "umap" and seed else "")


def _cached_map(store: ResultStore, run_id: str, dim: int, method: str,
                seed: int) -> MinimaMap | None:
    if method != "auto":
        return _load_map(store, run_id, _stage_name(method, dim, seed))[0]
    # "auto" resolves by point count; a PCA map made for few points is what "auto" would make.
    if umap_available():
        found, _ = _load_map(store, run_id, _stage_name("umap", dim, seed))
        if found is not None:
            return found
        found, n_points = _load_map(store, run_id, _stage_name("pca", dim, seed))
        return found if found is not None and n_points < UMAP_MIN_POINTS else None
    return _load_map(store, run_id, _stage_name("pca", dim, seed))[0]


def _save_map(store: ResultStore, run_id: str, stage: str, m: MinimaMap, n_points: int,
              requested: str) -> None:
    offsets = np.cumsum([0] + [len(p) for p in m.path_coords]).astype(np.int64)
    arrays = {
        "minima": m.minima_coords, "minima_loss": m.minima_loss, "pairs": m.pairs,
        "path_coords": np.concatenate(m.path_coords) if m.path_coords else np.zeros((0, m.dim)),
        "path_loss": np.concatenate(m.path_loss) if m.path_loss else np.zeros(0),
        "path_offsets": offsets,
    }
    meta = {"method": m.method, "requested": requested, "dim": m.dim, "n_points": n_points,
            "explained": None if m.explained is None else [float(v) for v in m.explained]}
    store.save_stage(run_id, stage, meta, arrays, inputs=INPUTS)


def _load_map(store: ResultStore, run_id: str, stage: str) -> tuple[MinimaMap | None, int]:
    """A cached map and the number of points it was made from; ``(None, 0)`` if absent or
    unreadable (an unreadable one is recomputed, and the new one replaces it)."""
    stored = store.read(run_id, stage, warn=False)
    if stored is None:
        return None, 0
    meta, a = stored
    try:
        off = a["path_offsets"]
        coords, losses = a["path_coords"], a["path_loss"]
        explained = meta["explained"]
        m = MinimaMap(
            minima_coords=a["minima"], pairs=a["pairs"].reshape(-1, 2),
            method=str(meta["method"]),
            path_coords=tuple(coords[off[i] : off[i + 1]] for i in range(len(off) - 1)),
            explained=None if explained is None else np.asarray(explained, dtype=np.float64),
            minima_loss=a["minima_loss"],
            path_loss=tuple(losses[off[i] : off[i + 1]] for i in range(len(off) - 1)),
        )
        return m, int(meta["n_points"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None, 0


# --------------------------------------------------------------------------- validation


def _check_points(points: Any) -> np.ndarray:
    x = np.asarray(points)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"points must be a non-empty (n, P) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"points must be real numbers, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise ValueError("points must be finite (drop diverged minima first)")
    return x


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    return int(dim)


def _check_method(method: Any) -> str:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return str(method)

