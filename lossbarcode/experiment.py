"""One experiment, from a config to a stored, resumable result.

:class:`ExperimentConfig` holds every knob; :func:`run_experiment` goes

    data -> model -> landscape -> K minima -> paths -> barrier matrix -> barcode -> TO-scores

and saves each stage atomically in a :class:`~lossbarcode.store.ResultStore` as it finishes:
``minima`` (the K parameter vectors and their losses), ``paths`` (every chain and loss profile)
and ``result`` (the :class:`Result` as JSON). An interrupted run resumes from its last finished
stage; a finished run is loaded, never recomputed. Two processes (or browser sessions) asking for
the same run take the run's lock in turn: one computes, the other waits and loads.

On-disk format of a run, ``<results>/<run_id>/``:

* ``minima.json`` + ``minima.npz``: ``thetas`` (K, P) float32, ``train_loss`` / ``test_loss`` /
  ``test_error`` (K,), ``diverged`` (K,) bool, ``seeds`` (K,), training history.
* ``paths.json`` + ``paths.npz``: ``pairs`` (M, 2), ``barriers`` (M,), ``images`` (sum n_m, P)
  with ``image_offsets`` (M+1,), ``profile_t`` / ``profile_loss`` with ``profile_offsets``.
* ``result.json``: :meth:`Result.to_json` (keys ``run_id``, ``config``, ``minima``, ``pairs``,
  ``barriers`` (K x K, ``null`` = not connected), ``barcode``, ``to_score``, ``timings``, ...).

Every JSON file records the sha256 of its ``.npz``; nothing is ever pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossbarcode import choices, topology
from lossbarcode._checks import is_positive_number
from lossbarcode.store import ResultStore

DTYPES = ("float32", "float64")
Progress = Callable[[str, int, int, str], Any]
"""``progress(stage, done, total, message)``; raising :class:`Cancelled` in it stops the run."""


class Cancelled(Exception):
    """Raised (by a progress callback) to stop a run; finished stages stay saved."""


@dataclass(frozen=True)
class ExperimentConfig:
    """Every knob of one experiment. Same validated config -> same ``run_id`` anywhere.

    Data: ``dataset``, ``n_train`` / ``n_test`` (seeded subsets, None = all), ``data_root``.
    Model: ``arch`` in fcn|cnn|resnet|transformer, ``width``, ``depth``, ``heads``.
    Minima: ``k`` networks, ``optimizer`` sgd|adam, ``lr`` (None = optimizer default),
    ``schedule`` constant|anneal, ``steps``, ``batch_size``, ``polish_steps`` (full-batch
    steps after training, towards true critical points; 0 = none).
    Paths: ``path_method`` linear|neb|bezier, ``pairs`` all|mst, ``images``, ``path_steps``
    (None = optimise every path until converged; an integer = that fixed budget, the old
    algorithm), ``path_max_steps`` (the cap per path), ``path_tol`` / ``path_atol`` (the
    stopping rule: a cycle lowers the barrier by at most ``path_tol`` x segment +
    ``path_atol``), ``path_lr`` (initial step size), ``eval_points``, ``eval_subset``
    (barriers on a fixed training subset; None = the full training set).
    Barcode and score: ``rule`` union_find|direct, ``score_norm``, ``score_normalize``.
    Run: ``seed``, ``device`` (auto|cpu|cuda|cuda:N), ``dtype``.
    """

    dataset: str = "digits"
    n_train: int | None = None
    n_test: int | None = None
    data_root: str | None = None
    arch: str = "fcn"
    width: int = 32
    depth: int = 2
    heads: int = 4
    k: int = 8
    optimizer: str = "sgd"
    lr: float | None = None
    schedule: str = "constant"
    steps: int = 2000
    batch_size: int = 64
    polish_steps: int = 0
    path_method: str = "neb"
    pairs: str = "all"
    images: int = choices.PATH_IMAGES
    path_steps: int | None = None
    path_max_steps: int = choices.PATH_MAX_STEPS
    path_tol: float = choices.PATH_TOL
    path_atol: float = choices.PATH_ATOL
    path_lr: float | None = None
    eval_points: int = choices.PATH_EVAL_POINTS
    eval_subset: int | None = None
    rule: str = "union_find"
    score_norm: str = "l2"
    score_normalize: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    def validate(self) -> ExperimentConfig:
        """Return ``self`` if every value is possible, else raise ``ValueError`` listing all
        problems, each with what to do."""
        problems = []

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        def positive_int(name: str, minimum: int = 1, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            need(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                 f"{name} must be an integer >= {minimum}, got {value!r}")

        def choice(name: str, options: tuple) -> None:
            need(getattr(self, name) in options,
                 f"{name} must be one of {list(options)}, got {getattr(self, name)!r}")

        choice("dataset", choices.DATASETS)
        choice("arch", choices.ARCHS)
        choice("optimizer", choices.OPTIMIZERS)
        choice("schedule", choices.SCHEDULES)
        choice("path_method", choices.PATH_METHODS)
        choice("pairs", choices.PAIRINGS)
        choice("rule", topology.RULES)
        choice("score_norm", topology.NORMS)
        choice("score_normalize", topology.NORMALIZATIONS)
        choice("dtype", DTYPES)
        for name in ("width", "depth", "heads", "steps", "batch_size", "path_max_steps"):
            positive_int(name)
        positive_int("path_steps", optional=True)
        positive_int("polish_steps", minimum=0)
        positive_int("k", minimum=2)
        positive_int("images", minimum=1)
        positive_int("eval_points", minimum=0)
        positive_int("seed", minimum=0)
        for name in ("n_train", "n_test", "eval_subset"):
            positive_int(name, optional=True)
        for name in ("lr", "path_lr"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, int | float) and math.isfinite(value)
                                   and value > 0),
                 f"{name} must be a positive number (or None for the default), got {value!r}")
        for name, hint in (("path_tol", choices.PATH_TOL), ("path_atol", choices.PATH_ATOL)):
            value = getattr(self, name)
            need(is_positive_number(value),
                 f"{name} must be a positive finite number, got {value!r}; the default is "
                 f"{hint}")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.arch == "transformer":
            need(self.dataset in choices.SEQUENCE_DATASETS,
                 "arch 'transformer' needs a sequence dataset: use dataset 'modadd' or 'text'")
            need(self.width % max(self.heads, 1) == 0,
                 f"transformer width (d_model) {self.width} must be divisible by heads "
                 f"{self.heads}")
        elif self.dataset in choices.SEQUENCE_DATASETS:
            problems.append(f"dataset {self.dataset!r} is a token sequence task: use arch "
                            "'transformer'")
        if self.arch in ("cnn",):
            need(self.dataset not in choices.VECTOR_DATASETS,
                 f"arch 'cnn' needs image data; {self.dataset!r} has vector inputs (use fcn or "
                 "resnet)")
        if problems:
            raise ValueError("invalid experiment config: " + "; ".join(problems))
        return self

    @property
    def score_variant(self) -> str:
        """Name of the TO-score variant this config reports (``"l2"``, ``"max_range"``...)."""
        return score_variant(self.score_norm, self.score_normalize)

    @functools.cached_property
    def run_id(self) -> str:
        """A stable 16-hex-digit hash of the validated config (computed once per config;
        an invalid config raises every time)."""
        canonical = json.dumps(self.validate().identity(), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: every field, plus the path algorithm's version
        (:data:`~lossbarcode.choices.PATHS_VERSION`), so a result made by an older path
        algorithm is never returned for a config whose paths are now computed differently."""
        return {**self.to_dict(), "paths_version": choices.PATHS_VERSION}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ExperimentConfig:
        """Build from a dict (e.g. a JSON/TOML file); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)


def _json_float(x: float) -> float | None:
    """NaN (diverged, or no test error for regression) becomes null in JSON."""
    return None if math.isnan(x) else float(x)


@dataclass(frozen=True, eq=False)
class Result:
    """Everything one experiment produced (thetas and path images stay in the store).

    Arrays: ``train_loss`` / ``test_loss`` / ``test_error`` / ``diverged`` / ``grad_norm``
    are ``(K,)`` (NaN where diverged or not defined); ``pairs`` ``(M, 2)``; ``barriers``
    ``(K, K)`` with ``np.inf`` where no path was computed; ``profiles`` ``M`` pairs of ``(t,
    loss)`` arrays. Per path (``(M,)``, or ``M`` arrays): ``path_converged``,
    ``path_steps_used``, ``path_history`` (barrier after each check),
    ``path_perp_grad_norm``. ``paths_version``: the path algorithm that made the paths (1 = a
    fixed step budget, before convergence checks existed; see
    :data:`~lossbarcode.choices.PATHS_VERSION`).
    """

    run_id: str
    config: ExperimentConfig
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray
    pairs: np.ndarray
    barriers: np.ndarray
    path_barriers: np.ndarray
    linear_barriers: np.ndarray
    profiles: tuple[tuple[np.ndarray, np.ndarray], ...]
    barcode: topology.Barcode
    to_score: dict[str, float]
    generalization: dict[str, Any]
    timings: dict[str, float]
    n_params: int
    device: str
    versions: dict[str, str] = field(default_factory=dict)
    grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_converged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    path_steps_used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path_history: tuple[np.ndarray, ...] = ()
    path_perp_grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    paths_version: int = choices.PATHS_VERSION

    @property
    def k(self) -> int:
        return int(self.train_loss.shape[0])

    @property
    def score(self) -> float:
        """The TO-score in the config's variant."""
        return self.to_score[self.config.score_variant]

    def segment_lengths(self) -> np.ndarray:
        """``(K,)`` segment length of each minimum: NaN if diverged, inf for essential bars."""
        return segment_lengths(self.barcode, self.k)

    def bar_certified(self) -> np.ndarray:
        """``(n_bars,)`` bool per bar of :attr:`barcode`: True where the bar's death comes
        from a converged path (the lowest path between the two minima of its saddle edge);
        False for a death made by an unconverged path, and for the essential bar."""
        return bar_certified(self.barcode, self.pairs, self.path_barriers,
                             self.path_converged)

    @property
    def certified(self) -> tuple[int, int]:
        """``(certified, finite)``: how many of the finite bars the TO-score sums have a
        death from a converged path."""
        finite = np.isfinite(self.barcode.deaths)
        return int(self.bar_certified()[finite].sum()), int(finite.sum())

    def minima_table(self) -> list[dict[str, Any]]:
        """One row per minimum: losses, test error and its bar (None if diverged); NaN where
        undefined, ``merged_into`` as the absorbing minimum's index."""
        bar_of = {int(m): i for i, m in enumerate(self.barcode.minima)}
        rows = []
        lengths = self.barcode.lengths()
        for i in range(self.k):
            bar = bar_of.get(i)
            absorber = None if bar is None else int(self.barcode.merged_into[bar])
            rows.append({
                "minimum": i,
                "train_loss": float(self.train_loss[i]),
                "test_loss": float(self.test_loss[i]),
                "test_error": float(self.test_error[i]),
                "diverged": bool(self.diverged[i]),
                "birth": None if bar is None else float(self.barcode.births[bar]),
                "death": None if bar is None else float(self.barcode.deaths[bar]),
                "length": None if bar is None else float(lengths[bar]),
                "merged_into": None if absorber is None or absorber < 0
                else int(self.barcode.minima[absorber]),
                "grad_norm": float(self.grad_norm[i]) if len(self.grad_norm) else float("nan"),
            })
        return rows

    def path_table(self) -> list[dict[str, Any]]:
        """One row per path: its pair, barrier, the straight line's, and its convergence:
        converged, steps used, the barrier's change over the last check, the final
        perpendicular gradient norm."""
        rows = []
        for m, (i, j) in enumerate(self.pairs.tolist()):
            hist = self.path_history[m] if m < len(self.path_history) else np.zeros(0)
            rows.append({
                "pair": f"{i}-{j}",
                "barrier": float(self.path_barriers[m]),
                "linear": float(self.linear_barriers[m]),
                "converged": bool(self.path_converged[m]),
                "steps": int(self.path_steps_used[m]),
                "last_change": float(hist[-2] - hist[-1]) if len(hist) > 1 else float("nan"),
                "perp_grad": float(self.path_perp_grad_norm[m]),
            })
        return rows

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (``null`` for NaN and for unconnected barriers)."""
        k = self.k
        return {
            "run_id": self.run_id,
            "config": self.config.to_dict(),
            "minima": [
                {"train_loss": _json_float(self.train_loss[i]),
                 "test_loss": _json_float(self.test_loss[i]),
                 "test_error": _json_float(self.test_error[i]),
                 "diverged": bool(self.diverged[i]),
                 "grad_norm": _json_float(self.grad_norm[i]) if len(self.grad_norm) else None}
                for i in range(k)
            ],
            "paths_version": self.paths_version,
            "paths": [
                {"converged": bool(self.path_converged[m]),
                 "steps": int(self.path_steps_used[m]),
                 "barrier_history": [_json_float(b) for b in self.path_history[m]],
                 "perp_grad_norm": _json_float(self.path_perp_grad_norm[m])}
                for m in range(len(self.path_converged))
            ],
            "pairs": self.pairs.tolist(),
            "barriers": [[None if not np.isfinite(b) else float(b) for b in row]
                         for row in self.barriers],
            "path_barriers": self.path_barriers.tolist(),
            "linear_barriers": self.linear_barriers.tolist(),
            "profiles": [{"t": t.tolist(), "loss": loss.tolist()} for t, loss in self.profiles],
            "barcode": self.barcode.to_dict(),
            "to_score": dict(self.to_score),
            "generalization": dict(self.generalization),
            "timings": dict(self.timings),
            "n_params": self.n_params,
            "device": self.device,
            "versions": dict(self.versions),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        """Inverse of :meth:`to_json`; ``ValueError`` if a key is missing or malformed."""
        try:
            minima = data["minima"]
            pairs = np.array(data["pairs"], dtype=np.int64).reshape(-1, 2)
            paths = data.get("paths") or [
                {"converged": False, "steps": 0, "barrier_history": [], "perp_grad_norm": None}
                for _ in range(len(pairs))]

            def column(key: str) -> np.ndarray:
                return np.array([np.nan if m[key] is None else m[key] for m in minima],
                                dtype=np.float64)

            return cls(
                run_id=str(data["run_id"]),
                config=ExperimentConfig.from_dict(data["config"]),
                train_loss=column("train_loss"),
                test_loss=column("test_loss"),
                test_error=column("test_error"),
                diverged=np.array([bool(m["diverged"]) for m in minima], dtype=bool),
                pairs=pairs,
                barriers=np.array([[np.inf if b is None else b for b in row]
                                   for row in data["barriers"]], dtype=np.float64
                                  ).reshape(len(minima), len(minima)),
                path_barriers=np.array(data["path_barriers"], dtype=np.float64),
                linear_barriers=np.array(data["linear_barriers"], dtype=np.float64),
                profiles=tuple((np.array(p["t"], dtype=np.float64),
                                np.array(p["loss"], dtype=np.float64))
                               for p in data["profiles"]),
                barcode=topology.Barcode.from_dict(data["barcode"]),
                to_score={str(k): float(v) for k, v in data["to_score"].items()},
                generalization=dict(data["generalization"]),
                timings={str(k): float(v) for k, v in data["timings"].items()},
                n_params=int(data["n_params"]),
                device=str(data["device"]),
                versions={str(k): str(v) for k, v in data.get("versions", {}).items()},
                grad_norm=column("grad_norm") if minima and "grad_norm" in minima[0]
                else np.full(len(minima), np.nan),
                # Results from before convergence checks (version 1) have no "paths" list.
                path_converged=np.array([bool(p["converged"]) for p in paths], dtype=bool),
                path_steps_used=np.array([int(p["steps"]) for p in paths], dtype=np.int64),
                path_history=tuple(np.array([np.nan if b is None else b
                                             for b in p["barrier_history"]], dtype=np.float64)
                                   for p in paths),
                path_perp_grad_norm=np.array(
                    [np.nan if p["perp_grad_norm"] is None else p["perp_grad_norm"]
                     for p in paths], dtype=np.float64),
                paths_version=int(data.get("paths_version", 1)),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"malformed result JSON: {err!r}") from err


def score_variant(norm: str, normalize: str | None) -> str:
    """Name of a TO-score variant: ``"l2"``, ``"max_range"``, ..."""
    return f"{norm}_range" if normalize else norm


SCORE_VARIANTS = tuple(score_variant(norm, normalize)
                       for normalize in topology.NORMALIZATIONS for norm in topology.NORMS)


def all_scores(barcode: topology.Barcode) -> dict[str, float]:
    """The TO-score in every variant of :data:`SCORE_VARIANTS`."""
    return {
        score_variant(norm, normalize): topology.to_score(barcode, norm, normalize)
        for normalize in topology.NORMALIZATIONS for norm in topology.NORMS
    }


def segment_lengths(barcode: topology.Barcode, k: int) -> np.ndarray:
    """``(k,)`` bar length of each of ``k`` minima (NaN where a minimum has no bar)."""
    lengths = np.full(k, np.nan)
    lengths[barcode.minima] = barcode.lengths()
    return lengths


def bar_certified(barcode: topology.Barcode, pairs: np.ndarray, path_barriers: np.ndarray,
                  converged: np.ndarray) -> np.ndarray:
    """``(n_bars,)``: whether each bar's death edge ``(i, j)`` has its lowest path among
    ``pairs`` ``(M, 2)`` (barriers ``(M,)``) converged; False for the essential bar."""
    best: dict[tuple[int, int], tuple[float, bool]] = {}
    for (i, j), b, ok in zip(pairs.tolist(), path_barriers, converged, strict=True):
        key = (min(i, j), max(i, j))
        if key not in best or b < best[key][0]:
            best[key] = (float(b), bool(ok))
    out = np.zeros(len(barcode), dtype=bool)
    for n, (i, j) in enumerate(np.asarray(barcode.saddle_edges).reshape(-1, 2).tolist()):
        if i >= 0 and np.isfinite(barcode.deaths[n]):
            out[n] = best.get((min(i, j), max(i, j)), (0.0, False))[1]
    return out


def generalization_summary(lengths: np.ndarray, test_error: np.ndarray) -> dict[str, Any]:
    """Spearman rank correlation of segment length vs test error over the minima where both
    are finite (essential and diverged minima left out): ``{"spearman", "p_value", "n"}``."""
    from scipy.stats import spearmanr

    ok = np.isfinite(lengths) & np.isfinite(test_error)
    n = int(ok.sum())
    if n < 3 or np.ptp(lengths[ok]) == 0 or np.ptp(test_error[ok]) == 0:
        return {"spearman": None, "p_value": None, "n": n}
    rho, p = spearmanr(lengths[ok], test_error[ok])
    return {"spearman": float(rho), "p_value": float(p), "n": n}


# --------------------------------------------------------------------------- building blocks


def build_landscape(config: ExperimentConfig):
    """The :class:`~lossbarcode.landscape.Landscape` a config describes (data + model)."""
    import torch

    from lossbarcode import data, models
    from lossbarcode.landscape import Landscape, default_device

    device = default_device(None if config.device == "auto" else config.device)
    dataset = data.load(config.dataset, root=config.data_root, n_train=config.n_train,
                        n_test=config.n_test, seed=config.seed)
    model = models.build(config.arch, config.width, config.depth, dataset.input_shape,
                         dataset.n_outputs, heads=config.heads, seed=config.seed)
    return Landscape.from_dataset(model, dataset, device=device,
                                  dtype=getattr(torch, config.dtype),
                                  eval_subset=config.eval_subset)


def _versions() -> dict[str, str]:
    import scipy
    import torch

    from lossbarcode import __version__

    return {"lossbarcode": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def load_result(store: ResultStore, run_id: str) -> Result | None:
    """The finished :class:`Result` of ``run_id``, or None if it is not (validly) stored."""
    stored = store.load_or_drop(run_id, "result")
    if stored is None:
        return None
    try:
        return Result.from_json(stored[0])
    except ValueError as err:
        warnings.warn(f"result of run {run_id} is unreadable ({err}); recomputing",
                      RuntimeWarning, stacklevel=2)
        store.drop_stage(run_id, "result")
        return None


def load_minima(store: ResultStore, run_id: str):
    """The stored :class:`~lossbarcode.minima.Minima` of a run, or None."""
    from lossbarcode.minima import Minima

    stored = store.load_or_drop(run_id, "minima")
    return None if stored is None else Minima.from_arrays(stored[1])


def load_paths(store: ResultStore, run_id: str):
    """The stored :class:`~lossbarcode.paths.Paths` of a run, or None."""
    from lossbarcode.paths import Paths

    stored = store.load_or_drop(run_id, "paths")
    return None if stored is None else Paths.from_arrays(stored[1], stored[0].get("settings"))


def run_experiment(
    config: ExperimentConfig,
    store: ResultStore | None = None,
    progress: Progress | None = None,
    lock_timeout: float | None = None,
) -> Result:
    """Run (or resume, or load) one experiment and return its :class:`Result`.

    Args:
        config: the experiment; validated first (``ValueError`` lists every problem).
        store: where stages are saved (default: ``ResultStore()``, i.e. ``./results`` or
            ``$LOSSBARCODE_RESULTS``).
        progress: ``progress(stage, done, total, message)``; may raise :class:`Cancelled`.
        lock_timeout: seconds to wait for another process computing the same run.
    """
    config = config.validate()
    store = store or ResultStore()
    run_id = config.run_id
    report = progress or (lambda *args: None)

    with store.lock(run_id, timeout=lock_timeout):
        done = load_result(store, run_id)
        if done is not None:
            return done
        from lossbarcode import minima as minima_mod
        from lossbarcode import paths as paths_mod

        land = None
        timings: dict[str, float] = {}

        stored = store.load_or_drop(run_id, "minima")
        if stored is None:
            _drop_derived(store, run_id, "minima")
            start = time.perf_counter()
            land = build_landscape(config)
            found = minima_mod.find_minima(
                land, config.k, optimizer=config.optimizer, lr=config.lr,
                schedule=config.schedule, steps=config.steps, batch_size=config.batch_size,
                seed=config.seed, polish_steps=config.polish_steps,
                progress=lambda step, total, loss: report(
                    "minima", step, total, f"mean minibatch loss {loss:.4g}"),
            )
            timings["minima"] = time.perf_counter() - start
            device = str(land.device)
            store.save_stage(run_id, "minima", {"seconds": timings["minima"], "device": device},
                             found.to_arrays())
        else:
            found = minima_mod.Minima.from_arrays(stored[1])
            timings["minima"] = float(stored[0]["seconds"])
            device = str(stored[0]["device"])
        report("minima", 1, 1, "done")

        stored = store.load_or_drop(run_id, "paths")
        if stored is None:
            _drop_derived(store, run_id, "paths")
            start = time.perf_counter()
            land = land or build_landscape(config)
            connected = paths_mod.connect(
                land, found, pairs=config.pairs, method=config.path_method,
                images=config.images, steps=config.path_steps, lr=config.path_lr,
                eval_points=config.eval_points, seed=config.seed, tol=config.path_tol,
                atol=config.path_atol, max_steps=config.path_max_steps,
                progress=lambda step, total, info: report(
                    "paths", step, total, str(info.get("stage", ""))),
            )
            timings["paths"] = time.perf_counter() - start
            store.save_stage(run_id, "paths", {"seconds": timings["paths"],
                                               "settings": connected.settings},
                             connected.to_arrays())
        else:
            connected = paths_mod.Paths.from_arrays(stored[1], stored[0].get("settings"))
            timings["paths"] = float(stored[0]["seconds"])
        report("paths", 1, 1, "done")

        result = assemble_result(config, found, connected, timings, device)
        store.save_stage(run_id, "result", result.to_json())
        report("result", 1, 1, f"TO-score {result.score:.4g}")
        return result


# What each stage is computed from, by stage-name prefix: the dashboard caches maps (minima +
# paths) and plane slices (minima) as stages of the run too.
_DERIVED = {"minima": ("paths", "result", "map-", "slice-"), "paths": ("result", "map-")}


def _drop_derived(store: ResultStore, run_id: str, stage: str) -> None:
    """Before ``stage`` is (re)computed, drop every stage made from an earlier copy of it, so
    no stale path, map or slice is read back next to the new stage."""
    for name in store.stages(run_id):
        if name.startswith(_DERIVED[stage]):
            store.drop_stage(run_id, name)


def assemble_result(config: ExperimentConfig, found, connected, timings: dict[str, float],
                    device: str) -> Result:
    """Barcode, scores and summaries from finished minima and paths."""
    start = time.perf_counter()
    from lossbarcode.paths import barrier_matrix

    valid = found.valid
    barriers = barrier_matrix(connected, found.k)
    barcode = topology.minima_barcode(found.train_loss[valid],
                                      barriers[np.ix_(valid, valid)], rule=config.rule)
    # Bars index the valid minima; map them back to indices among all K.
    barcode = dataclasses.replace(
        barcode,
        minima=valid[barcode.minima],
        saddle_edges=np.where(barcode.saddle_edges >= 0,
                              valid[np.maximum(barcode.saddle_edges, 0)], -1),
        saddles=np.where(barcode.saddles >= 0,
                         valid[np.maximum(barcode.saddle_edges[:, 0], 0)] * found.k
                         + valid[np.maximum(barcode.saddle_edges[:, 1], 0)], -1),
    )
    timings = {**timings, "barcode": time.perf_counter() - start}
    return Result(
        run_id=config.run_id,
        config=config,
        train_loss=found.train_loss,
        test_loss=found.test_loss,
        test_error=found.test_error,
        diverged=found.diverged,
        pairs=connected.pairs,
        barriers=barriers,
        path_barriers=connected.barriers,
        linear_barriers=connected.linear_barriers,
        profiles=tuple(connected.profiles),
        barcode=barcode,
        to_score=all_scores(barcode),
        generalization=generalization_summary(segment_lengths(barcode, found.k),
                                              found.test_error),
        timings=timings,
        n_params=found.n_params,
        device=device,
        versions=_versions(),
        grad_norm=found.grad_norm,
        path_converged=connected.converged,
        path_steps_used=connected.steps_used,
        path_history=connected.barrier_history,
        path_perp_grad_norm=connected.perp_grad_norm,
        paths_version=connected.version,
    )
