"""One experiment, from a config to a stored, resumable result.

:class:`~lossbarcode.config.ExperimentConfig` holds every knob; :func:`run_experiment` goes

    data -> model -> landscape -> K minima -> paths -> barrier matrix -> barcode -> TO-scores

and saves each stage atomically in a :class:`~lossbarcode.store.ResultStore` as it finishes:
``minima`` (the K parameter vectors and their losses), ``paths`` (every chain and loss profile)
and ``result`` (the :class:`Result` as JSON). An interrupted run resumes from its last finished
stage; a finished run is loaded, never recomputed. Two processes (or browser sessions) asking for
the same run take the run's lock in turn: one computes, the other waits and loads.

The files of a run, ``<results>/<run_id>/``, are described once, in the README's table under
"Results on disk" (``tests/test_docs.py`` checks that it names every stored key); the container
(JSON + ``.npz``, checksums, never pickle) is :mod:`lossbarcode.store`'s. Every stage records
the fingerprint of the data it was made from (``data``; the minima and paths also the hash of
the loaded tensors, ``tensors``), checked before a stage is reused.

The run id hashes :meth:`~lossbarcode.config.ExperimentConfig.identity` (it says what it holds).
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossbarcode import certificates, choices, topology
from lossbarcode._checks import check_int, int_problem

# The config's names, kept importable from here (their home is lossbarcode.config).
from lossbarcode.config import DTYPES as DTYPES
from lossbarcode.config import FIELD_HELP as FIELD_HELP
from lossbarcode.config import ExperimentConfig, identity_hash, score_variant
from lossbarcode.config import field_help as field_help
from lossbarcode.config import setting_differences as setting_differences
from lossbarcode.datafiles import data_source
from lossbarcode.store import CorruptResultError, ResultStore, UnsafeResultError
from lossbarcode.views import drop_views_of

Progress = Callable[[str, int, int, str], Any]
"""``progress(stage, done, total, message)``; raising :class:`Cancelled` in it stops the run."""


class Cancelled(Exception):
    """Raised (by a progress callback) to stop a run; finished stages stay saved."""


def _json_float(x: float) -> float | None:
    """NaN (diverged, or no test error for regression) and inf (an overflowing loss) become
    null in JSON."""
    return float(x) if math.isfinite(x) else None


def _json_floats(values: Any) -> list[float | None]:
    return [_json_float(float(v)) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


@dataclass(frozen=True, eq=False)
class Result:
    """Everything one experiment produced (thetas and path images stay in the store).

    Arrays: ``train_loss`` / ``test_loss`` / ``test_error`` / ``diverged`` / ``grad_norm``
    are ``(K,)`` (NaN where diverged or not defined); ``pairs`` ``(M, 2)``;
    ``barrier_matrix`` ``(K, K)`` with ``np.inf`` where no path was computed (``path_barriers``
    ``(M,)`` holds the same barriers per path; a restarted pair has several paths, the lowest
    counts); ``profiles`` ``M`` pairs of ``(t, loss)`` arrays.

    The birth certificates, ``(K,)``: ``minima_certified``, ``hessian_min_eig`` (smallest
    Hessian eigenvalue, NaN where not computed: ``curvature_skipped`` says why), ``stuck``
    (did not learn) and ``minima_reasons`` (why a minimum is not certified, ``""`` if it is).
    ``barcode`` is the headline barcode: bars born at the certified minima only, deaths through
    every point (:func:`~lossbarcode.topology.minima_barcode` with ``births``); ``scores`` its
    TO-score in every variant (:data:`SCORE_VARIANTS`), ``score`` the config's.
    ``barcode_all`` / ``scores_all``: the same with a bar at every minimum that did not
    diverge (the variant "all minima").

    Per path (``(M,)``, or ``M`` arrays): ``path_converged``, ``path_stalled``,
    ``path_steps_used``, ``path_history`` (barrier after each check) and
    ``path_history_steps`` (the steps used at each check), ``path_perp_grad_norm``,
    ``path_top_grad_norm`` (gradient norm at the path's top), ``path_role`` and
    ``path_start`` (how the pair was chosen, where the path started). ``paths_version``: the
    path algorithm that made the paths (see :data:`~lossbarcode.choices.PATHS_VERSION`).
    Certificates of bars: :meth:`bar_certificates` (:mod:`lossbarcode.certificates`).

    ``alignment``: for a run with ``align`` (re-basin), the ``reference`` minimum, each
    minimum's Euclidean ``distance_before`` / ``distance_after`` alignment to it (K,, None =
    NaN) and ``minima_from`` (the unaligned run whose stored minima were permuted, or
    "trained"); ``{}`` otherwise. ``identical_predictions``: the pairs of valid minima whose
    predicted test classes all agree, ``({"pair": [i, j], "max_output_difference": x},
    ...)``; None when not checked (regression, no test set, or an older result).
    """

    run_id: str
    config: ExperimentConfig
    train_loss: np.ndarray
    test_loss: np.ndarray
    test_error: np.ndarray
    diverged: np.ndarray
    pairs: np.ndarray
    barrier_matrix: np.ndarray
    path_barriers: np.ndarray
    linear_barriers: np.ndarray
    profiles: tuple[tuple[np.ndarray, np.ndarray], ...]
    barcode: topology.Barcode
    scores: dict[str, float]
    generalization: dict[str, Any]
    timings: dict[str, float]
    n_params: int
    device: str
    versions: dict[str, str] = field(default_factory=dict)
    grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_converged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    path_steps_used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    path_history: tuple[np.ndarray, ...] = ()
    path_history_steps: tuple[np.ndarray, ...] = ()
    path_perp_grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    paths_version: int = choices.PATHS_VERSION
    data_fingerprint: str | None = None  # the identity's "data": content of the data files
    data_source: str | None = None  # where the data was read from (datafiles.data_source)
    minima_certified: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    hessian_min_eig: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stuck: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    minima_reasons: tuple[str, ...] = ()
    curvature_skipped: str = ""
    barcode_all: topology.Barcode | None = None
    scores_all: dict[str, float] = field(default_factory=dict)
    path_stalled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    path_top_grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    path_role: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    path_start: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    alignment: dict[str, Any] = field(default_factory=dict)
    identical_predictions: tuple[dict[str, Any], ...] | None = None

    @property
    def k(self) -> int:
        return int(self.train_loss.shape[0])

    @property
    def score(self) -> float:
        """The TO-score in the config's variant."""
        return self.scores[self.config.score_variant]

    def segment_lengths(self) -> np.ndarray:
        """``(K,)`` segment length of each minimum: NaN if diverged, inf for essential bars."""
        return segment_lengths(self.barcode, self.k)

    def deaths(self) -> dict[tuple[int, int], Any]:
        """The death certificate of every connected pair (:class:`~lossbarcode.certificates.
        Death`: lowest barrier, spread over its restarts, certified, reason)."""
        c = self.config
        return certificates.death_certificates(
            self.pairs, self.path_barriers, self.path_converged, self.path_stalled,
            self.path_top_grad_norm, self.train_loss, tol=c.path_tol, atol=c.path_atol,
            grad_tol=c.minima_tol)

    def bar_certificates(self) -> tuple[np.ndarray, list[str]]:
        """``(certified (n_bars,), reasons)`` for each bar of :attr:`barcode`: birth and death
        checked, run not broken (:func:`~lossbarcode.certificates.bar_certificates`)."""
        from lossbarcode.health import run_health

        return certificates.bar_certificates(
            self.barcode, self.deaths(), self.minima_certified, list(self.minima_reasons),
            run_health(self).broken)

    def bar_certified(self) -> np.ndarray:
        """``(n_bars,)`` bool per bar of :attr:`barcode`: see :meth:`bar_certificates`."""
        return self.bar_certificates()[0]

    def bar_spread(self) -> np.ndarray:
        """``(n_bars,)`` how far apart the restarts of each bar's death pair ended (0 for a
        pair solved once; NaN for the essential bar): the uncertainty of its death."""
        deaths = self.deaths()
        out = np.full(len(self.barcode), np.nan)
        for b, (i, j) in enumerate(self.barcode.saddle_edges.tolist()):
            death = deaths.get((min(i, j), max(i, j)))
            if death is not None and np.isfinite(self.barcode.deaths[b]):
                out[b] = death.spread
        return out

    @property
    def certified(self) -> tuple[int, int]:
        """``(certified, finite)``: how many of the finite bars the TO-score sums are
        certified."""
        finite = np.isfinite(self.barcode.deaths)
        return int(self.bar_certified()[finite].sum()), int(finite.sum())

    @property
    def resolved(self) -> tuple[int, int]:
        """``(resolved, finite)``: how many of the finite bars the TO-score sums are longer
        than the barrier resolution ``path_atol``
        (:func:`~lossbarcode.topology.resolved_bars`)."""
        longer = topology.resolved_bars(self.barcode, self.config.path_atol)
        return int(longer.sum()), int(longer.size)

    def resolved_lengths(self) -> np.ndarray:
        """``(K,)`` :meth:`segment_lengths` with those within the barrier resolution
        ``path_atol`` as 0: what a rank test of the lengths may read."""
        return segment_lengths(self.barcode, self.k, self.config.path_atol)

    @property
    def unresolved(self) -> bool:
        """Whether the run has finite bars and none is resolved from 0: its TO-score is then
        not a property of the network."""
        resolved, finite = self.resolved
        return resolved == 0 < finite

    def resolution_note(self) -> str:
        """One line: how many bars are resolved from 0, and, when none is, that the TO-score
        is not a property of the network ("" without finite bars)."""
        resolved, finite = self.resolved
        atol = self.config.path_atol
        if finite == 0:
            return ""
        if self.unresolved:
            return (f"TO-score not resolved from 0: all {finite} finite bars are at most the "
                    f"barrier resolution {atol:g} (path_atol) long, so its value is the "
                    "optimiser's round-off, not a property of the network")
        return (f"{resolved}/{finite} finite bars longer than the barrier resolution {atol:g} "
                "(path_atol); shorter ones are 0 within it")

    @property
    def minima_count(self) -> tuple[int, int]:
        """``(certified, K)``: how many of the K minima are certified."""
        return int(np.sum(self.minima_certified)), self.k

    def certification_note(self) -> str:
        """One line: "k/K minima certified, c/b bars certified" and what the score covers."""
        done, k = self.minima_count
        bars, finite = self.certified
        skipped = (f" (gradient-certified only: {self.curvature_skipped})"
                   if self.curvature_skipped else "")
        return (f"{done}/{k} minima certified{skipped}, {bars}/{finite} finite bars certified;"
                " the TO-score counts bars born at certified minima")

    def minima_table(self) -> list[dict[str, Any]]:
        """One row per minimum: losses, test error, its certificate and its bar (None if it has
        none: diverged or not a certified minimum; ``death_spread``: how far apart the
        restarts of its death ended); NaN where undefined. ``merged_into_minimum``: the
        minimum whose bar absorbed this one's (None if essential, or absorbed by a point
        that has no bar), as in :meth:`Barcode.to_dict
        <lossbarcode.topology.Barcode.to_dict>`."""
        bar_of = {int(m): i for i, m in enumerate(self.barcode.minima)}
        rows = []
        lengths = self.barcode.lengths()
        absorbers = self.barcode.merged_into_minimum()
        spread = self.bar_spread()
        for i in range(self.k):
            bar = bar_of.get(i)
            absorber = None if bar is None else int(absorbers[bar])
            rows.append({
                "minimum": i,
                "train_loss": float(self.train_loss[i]),
                "test_loss": float(self.test_loss[i]),
                "test_error": float(self.test_error[i]),
                "diverged": bool(self.diverged[i]),
                "birth": None if bar is None else float(self.barcode.births[bar]),
                "death": None if bar is None else float(self.barcode.deaths[bar]),
                "length": None if bar is None else float(lengths[bar]),
                "death_spread": None if bar is None else float(spread[bar]),
                "merged_into_minimum": None if absorber is None or absorber < 0 else absorber,
                "grad_norm": float(self.grad_norm[i]) if len(self.grad_norm) else float("nan"),
                "hessian_min_eig": float(self.hessian_min_eig[i]),
                "certified": bool(self.minima_certified[i]),
                "why_not": self.minima_reasons[i],
            })
        return rows

    def paths_note(self) -> str:
        """One line: how the paths were made, how many converged, how many bars certified."""
        c = self.config
        if self.paths_version < 2:
            return (f"made by the old fixed-budget method (path algorithm {self.paths_version},"
                    f" {c.path_steps} steps): barriers not converged, upper bounds only")
        done, bars = self.certified
        stalled = int(self.path_stalled.sum())
        return (f"{int(self.path_converged.sum())}/{len(self.path_converged)} converged"
                + (f", {stalled} stalled" if stalled else "")
                + f", {c.path_rule}; {done}/{bars} finite bars certified")

    def path_table(self) -> list[dict[str, Any]]:
        """One row per path: its pair, how it was chosen and started, its barrier, the straight
        line's, and its convergence: converged or stalled, steps used, the barrier's change
        over the last check, the final perpendicular gradient norm and the gradient norm at
        its top."""
        rows = []
        for m, (i, j) in enumerate(self.pairs.tolist()):
            hist = self.path_history[m] if m < len(self.path_history) else np.zeros(0)
            rows.append({
                "pair": f"{i}-{j}",
                "role": str(self.path_role[m]),
                "start": str(self.path_start[m]),
                "barrier": float(self.path_barriers[m]),
                "linear": float(self.linear_barriers[m]),
                "converged": bool(self.path_converged[m]),
                "stalled": bool(self.path_stalled[m]),
                "steps": int(self.path_steps_used[m]),
                "last_change": float(hist[-2] - hist[-1]) if len(hist) > 1 else float("nan"),
                "perp_grad": float(self.path_perp_grad_norm[m]),
                "top_grad": float(self.path_top_grad_norm[m]),
            })
        return rows

    def bar_table(self) -> list[dict[str, Any]]:
        """One row per bar of the headline barcode: its minimum, birth, death, length, the
        restarts' spread of its death, whether it is certified and why not."""
        certified, reasons = self.bar_certificates()
        spread = self.bar_spread()
        return [{"minimum": int(m), "birth": float(b), "death": float(d),
                 "length": float(d - b), "spread": float(spread[n]),
                 "certified": bool(certified[n]), "why_not": reasons[n]}
                for n, (m, b, d) in enumerate(zip(self.barcode.minima, self.barcode.births,
                                                  self.barcode.deaths, strict=True))]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (``null`` for NaN and for unconnected barriers): the result stage's
        format (its keys keep the names they had when written: ``barriers`` is
        :attr:`barrier_matrix`, ``to_score`` :attr:`scores`)."""
        k = self.k
        return {
            "run_id": self.run_id,
            "config": self.config.to_dict(),
            "minima": [
                {"train_loss": _json_float(self.train_loss[i]),
                 "test_loss": _json_float(self.test_loss[i]),
                 "test_error": _json_float(self.test_error[i]),
                 "diverged": bool(self.diverged[i]),
                 "grad_norm": _json_float(self.grad_norm[i]),
                 "hessian_min_eig": _json_float(self.hessian_min_eig[i]),
                 "stuck": bool(self.stuck[i]),
                 "certified": bool(self.minima_certified[i]),
                 "why_not": self.minima_reasons[i]}
                for i in range(k)
            ],
            "curvature_skipped": self.curvature_skipped,
            "paths_version": self.paths_version,
            "paths": [
                {"converged": bool(self.path_converged[m]),
                 "stalled": bool(self.path_stalled[m]),
                 "steps": int(self.path_steps_used[m]),
                 "barrier_history": [_json_float(b) for b in self.path_history[m]],
                 "history_steps": [int(s) for s in self.path_history_steps[m]],
                 "perp_grad_norm": _json_float(self.path_perp_grad_norm[m]),
                 "top_grad_norm": _json_float(self.path_top_grad_norm[m]),
                 "role": str(self.path_role[m]), "start": str(self.path_start[m])}
                for m in range(len(self.path_converged))
            ],
            "pairs": self.pairs.tolist(),
            "barriers": [[None if not np.isfinite(b) else float(b) for b in row]
                         for row in self.barrier_matrix],
            "path_barriers": _json_floats(self.path_barriers),
            "linear_barriers": _json_floats(self.linear_barriers),
            "profiles": [{"t": _json_floats(t), "loss": _json_floats(loss)}
                         for t, loss in self.profiles],
            "barcode": self.barcode.to_dict(),
            "to_score": {k: _json_float(v) for k, v in self.scores.items()},
            "barcode_all": (self.barcode_all or self.barcode).to_dict(),
            "to_score_all": {k: _json_float(v) for k, v in self.scores_all.items()},
            "generalization": {k: _json_float(v) if isinstance(v, float) else v
                               for k, v in self.generalization.items()},
            "timings": dict(self.timings),
            "n_params": self.n_params,
            "device": self.device,
            "versions": dict(self.versions),
            "data_fingerprint": self.data_fingerprint,
            "data_source": self.data_source,
            "alignment": dict(self.alignment),
            "identical_predictions": (None if self.identical_predictions is None
                                      else [dict(p) for p in self.identical_predictions]),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming the first key that is missing or
        malformed (types, shapes, index ranges, the config itself)."""
        try:
            return _result_from_dict(cls, data)
        except (KeyError, TypeError, AttributeError, OverflowError, IndexError) as err:
            raise ValueError(f"malformed result JSON: {err!r}") from err

    # Kept for compatibility (deprecated): the old names.
    def to_json(self) -> dict[str, Any]:
        """Deprecated name of :meth:`to_dict`."""
        return self.to_dict()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        """Deprecated name of :meth:`from_dict`."""
        return cls.from_dict(data)

    @property
    def barriers(self) -> np.ndarray:
        """Deprecated name of :attr:`barrier_matrix` (``barriers`` is ``(M,)`` on Paths)."""
        return self.barrier_matrix

    @property
    def to_score(self) -> dict[str, float]:
        """Deprecated name of :attr:`scores` (``lossbarcode.to_score`` is the function)."""
        return self.scores


def _history_steps(path: dict[str, Any]) -> np.ndarray:
    """A stored path's ``history_steps``, one int >= 0 per barrier_history entry."""
    steps = path.get("history_steps", [0] * len(path["barrier_history"]))
    if not isinstance(steps, list) or len(steps) != len(path["barrier_history"]) or any(
            int_problem(s, "step", 0) for s in steps):
        raise ValueError("result paths history_steps must be one step count per barrier")
    return np.array(steps, dtype=np.int64)


def _floats(value: Any, where: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A float64 array of JSON numbers (null = NaN), checked against ``shape``."""
    def number(v: Any) -> float:
        if v is None:
            return np.nan
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"result {where} must hold numbers, got {v!r}")
        return float(v)

    def walk(v: Any) -> Any:
        return [walk(x) for x in v] if isinstance(v, list) else number(v)

    if not isinstance(value, list):
        raise ValueError(f"result {where} must be a list, got {type(value).__name__}")
    array = np.array(walk(value), dtype=np.float64)
    if shape is not None and array.shape != shape and not (array.size == 0 and 0 in shape):
        raise ValueError(f"result {where} has shape {array.shape}, expected {shape}")
    return array.reshape(shape) if shape is not None else array


def _result_from_dict(cls: type[Result], data: dict[str, Any]) -> Result:
    if not isinstance(data, dict):
        raise ValueError("a result must be a JSON object")
    run_id = data["run_id"]
    if not isinstance(run_id, str):
        raise ValueError(f"result run_id must be a string, got {run_id!r}")
    config = ExperimentConfig.from_dict(data["config"])
    minima = data["minima"]
    if not isinstance(minima, list) or not all(isinstance(m, dict) for m in minima):
        raise ValueError("result minima must be a list of objects")
    k = len(minima)

    def column(key: str) -> np.ndarray:
        return _floats([m[key] for m in minima], f"minima {key}", (k,))

    diverged = [m["diverged"] for m in minima]
    if not all(isinstance(d, bool) for d in diverged):
        raise ValueError("result minima diverged flags must be true/false")
    pairs_list = data["pairs"]
    if not isinstance(pairs_list, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < k for i in p)
            for p in pairs_list):
        raise ValueError(f"result pairs must be [i, j] minima indices in [0, {k})")
    m = len(pairs_list)
    profiles = data["profiles"]
    if not isinstance(profiles, list) or len(profiles) != m:
        raise ValueError(f"result profiles must be a list of {m} (one per pair)")
    parsed_profiles = []
    for i, prof in enumerate(profiles):
        t = _floats(prof["t"], f"profiles[{i}].t")
        parsed_profiles.append((t, _floats(prof["loss"], f"profiles[{i}].loss", t.shape)))
    barcode = topology.Barcode.from_dict(data["barcode"])
    if len(barcode) and (barcode.minima.min() < 0 or barcode.minima.max() >= k):
        raise ValueError(f"result barcode minima must index the {k} minima")
    to_score = data["to_score"]
    if not isinstance(to_score, dict) or set(to_score) != set(SCORE_VARIANTS):
        raise ValueError(f"result to_score must hold the variants {list(SCORE_VARIANTS)}")
    generalization = data["generalization"]
    timings = data["timings"]
    versions = data.get("versions", {})
    fingerprint_ = data.get("data_fingerprint")
    source = data.get("data_source")
    if not (isinstance(generalization, dict) and isinstance(timings, dict)
            and isinstance(versions, dict)):
        raise ValueError("result generalization, timings and versions must be objects")
    n_params, device = data["n_params"], data["device"]
    check_int(n_params, "result n_params", 1)
    if not isinstance(device, str) or not all(v is None or isinstance(v, str)
                                              for v in (fingerprint_, source)):
        raise ValueError("result device, data_fingerprint and data_source must be strings")
    # Results from before convergence checks (path algorithm 1) have no "paths" list and no
    # gradient norms: unconverged, unknown.
    version = data.get("paths_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or not (
            1 <= version <= choices.PATHS_VERSION):
        raise ValueError(f"result paths_version must be an integer in [1, "
                         f"{choices.PATHS_VERSION}], got {version!r}")
    paths = data.get("paths", [{"converged": False, "steps": 0, "barrier_history": [],
                                "perp_grad_norm": None}] * m)
    if not isinstance(paths, list) or len(paths) != m or not all(
            isinstance(p, dict) and isinstance(p["converged"], bool)
            and isinstance(p["steps"], int) and not isinstance(p["steps"], bool)
            and p["steps"] >= 0 for p in paths):
        raise ValueError(f"result paths must be {m} objects with converged (bool) and steps "
                         "(int >= 0)")
    certs = _certificates_from_dict(data, minima, paths, column)
    alignment = data.get("alignment", {})
    if not isinstance(alignment, dict) or (alignment and not (
            set(alignment) == {"reference", "distance_before", "distance_after", "minima_from"}
            and all(len(alignment[key]) == k for key in ("distance_before", "distance_after")))):
        raise ValueError("result alignment must be {} or {reference, distance_before, "
                         "distance_after, minima_from} with K distances")
    identical = data.get("identical_predictions")
    if identical is not None and not (isinstance(identical, list) and all(
            isinstance(p, dict) and isinstance(p.get("pair"), list) and len(p["pair"]) == 2
            and all(isinstance(i, int) and 0 <= i < k for i in p["pair"]) for p in identical)):
        raise ValueError(f"result identical_predictions must be null or a list of "
                         f"{{pair: [i, j], max_output_difference}} with indices in [0, {k})")
    scores = {str(key): float(_floats([v], f"to_score {key}")[0]) for key, v in to_score.items()}
    scores_all = certs.pop("scores_all") or scores
    result = cls(
        **certs,
        scores_all=scores_all,
        run_id=run_id,
        config=config,
        train_loss=column("train_loss"),
        test_loss=column("test_loss"),
        test_error=column("test_error"),
        diverged=np.array(diverged, dtype=bool).reshape(k),
        pairs=np.array(pairs_list, dtype=np.int64).reshape(-1, 2),
        barrier_matrix=np.where(np.isnan(b := _floats(data["barriers"], "barriers", (k, k))),
                                np.inf, b),
        path_barriers=_floats(data["path_barriers"], "path_barriers", (m,)),
        linear_barriers=_floats(data["linear_barriers"], "linear_barriers", (m,)),
        profiles=tuple(parsed_profiles),
        barcode=barcode,
        scores=scores,
        generalization=_stored_generalization(generalization, barcode, k, config,
                                              column("test_error")),
        timings={str(key): float(_floats([v], f"timings {key}")[0]) for key, v in timings.items()},
        n_params=n_params,
        device=device,
        versions={str(key): str(v) for key, v in versions.items()},
        data_fingerprint=fingerprint_,
        data_source=source,
        grad_norm=column("grad_norm") if all("grad_norm" in m for m in minima)
        else np.full(k, np.nan),
        path_converged=np.array([p["converged"] for p in paths], dtype=bool).reshape(m),
        path_steps_used=np.array([p["steps"] for p in paths], dtype=np.int64).reshape(m),
        path_history=tuple(_floats(p["barrier_history"], f"paths[{i}].barrier_history")
                           for i, p in enumerate(paths)),
        path_history_steps=tuple(_history_steps(p) for p in paths),
        path_perp_grad_norm=_floats([p["perp_grad_norm"] for p in paths], "paths perp_grad_norm",
                                    (m,)),
        paths_version=version,
        alignment=dict(alignment),
        identical_predictions=None if identical is None else tuple(dict(p) for p in identical),
    )
    _check_content(result, derived="curvature_skipped" in data)
    return result


def _same(stored: np.ndarray, computed: np.ndarray) -> bool:
    """Whether two float arrays agree (NaN with NaN, inf with inf) up to round-off."""
    stored, computed = np.asarray(stored, dtype=np.float64), np.asarray(computed, np.float64)
    return stored.shape == computed.shape and bool(np.all(
        np.isclose(stored, computed, rtol=1e-9, atol=1e-12, equal_nan=True)))


def _same_barcode(stored: topology.Barcode, computed: topology.Barcode) -> bool:
    return (len(stored) == len(computed) and _same(stored.births, computed.births)
            and _same(stored.deaths, computed.deaths)
            and all(np.array_equal(getattr(stored, name), getattr(computed, name))
                    for name in ("minima", "saddles", "merged_into", "saddle_edges")))


def _check_content(r: Result, derived: bool) -> None:
    """``ValueError`` unless a stored result holds the invariants it was made with: finite
    losses where a minimum did not diverge, errors in [0, 1], norms and timings >= 0,
    barriers at or above their higher endpoint and finite for every path that converged or
    has a finite loss profile, no path both converged and stalled; and, for a result with
    certificates (``derived``), unless its derived values are what its data give: the
    certified flags from the gradient norms, eigenvalues and flags (:func:`~lossbarcode.
    certificates.certify`), the barrier matrix from the path barriers, both barcodes from the
    barrier matrix, the TO-scores from the barcodes. A mismatch is an edited result."""
    live = ~r.diverged
    if not np.all(np.isfinite(r.train_loss[live])):
        raise ValueError("result train_loss must be finite for every minimum that did not "
                         "diverge")
    with np.errstate(invalid="ignore"):
        if np.any((r.test_error < 0) | (r.test_error > 1)):
            raise ValueError("result test_error must lie in [0, 1]")
        for name in ("grad_norm", "path_perp_grad_norm", "path_top_grad_norm"):
            if np.any(getattr(r, name) < 0):
                raise ValueError(f"result {name} must be >= 0")
    if not all(math.isfinite(v) and v >= 0 for v in r.timings.values()):
        raise ValueError("result timings must be seconds >= 0")
    if np.any(r.path_converged & r.path_stalled):
        raise ValueError("result paths cannot be both converged and stalled")
    if len(r.pairs) and np.any(r.pairs[:, 0] >= r.pairs[:, 1]):
        raise ValueError("result pairs must be [i, j] with i < j")
    # A path's barrier is at least the highest loss of its profile: finite if that is.
    profiled = np.array([len(loss) > 0 and bool(np.all(np.isfinite(loss)))
                         for _, loss in r.profiles], dtype=bool).reshape(-1)
    if np.any(~np.isfinite(r.path_barriers) & (r.path_converged | profiled)):
        raise ValueError("result path_barriers must be numbers for paths that converged or "
                         "have a finite loss profile")
    barriers = np.where(np.isnan(r.path_barriers), np.inf, r.path_barriers)
    floor = r.train_loss[r.pairs].max(axis=1) if len(r.pairs) else np.zeros(0)
    if np.any(np.isfinite(barriers) & ~(barriers >= floor)):
        raise ValueError("result path_barriers must be at or above their higher endpoint's "
                         "loss (null: not connected)")
    if not derived:  # made before certificates: its barcode followed older rules
        if not all(_same([r.scores[v]], [s]) for v, s in all_scores(r.barcode).items()):
            raise ValueError("result to_score is not the TO-score of its barcode: edited")
        return
    c = r.config
    certified = certificates.certify(r.grad_norm, r.hessian_min_eig, r.stuck, r.diverged,
                                     c.minima_tol, curvature_skipped=r.curvature_skipped)[0]
    if not np.array_equal(certified, r.minima_certified):
        raise ValueError("result minima certified flags disagree with their gradient norms, "
                         "eigenvalues and flags: edited")
    matrix = topology.pair_barrier_matrix(r.pairs, barriers, r.train_loss, r.k)
    if not _same(r.barrier_matrix, matrix):
        raise ValueError("result barriers (the matrix) are not those of its path_barriers: "
                         "edited")
    for name, barcode, births, scores in (
            ("barcode", r.barcode, r.minima_certified[live], r.scores),
            ("barcode_all", r.barcode_all or r.barcode, None, r.scores_all)):
        if not _same_barcode(barcode, _valid_barcode(r.train_loss, r.diverged, matrix, c.rule,
                                                     births)):
            raise ValueError(f"result {name} is not the barcode of its barriers: edited")
        if set(scores) != set(SCORE_VARIANTS) or not all(
                _same([scores[v]], [s]) for v, s in all_scores(barcode).items()):
            raise ValueError(f"result {'to_score' if name == 'barcode' else 'to_score_all'} "
                             f"is not the TO-score of its {name}: edited")


OLDER_CERTIFICATES = "made by an older lossbarcode, before births and deaths were certified"


def _certificates_from_dict(data: dict[str, Any], minima: list[dict], paths: list[dict],
                            column: Callable[[str], np.ndarray]) -> dict[str, Any]:
    """The certificate fields of a stored result (Result keyword arguments, and "scores_all");
    a result made before certificates existed has none: nothing in it is certified."""
    k, m = len(minima), len(paths)
    if "curvature_skipped" not in data:
        return {"minima_certified": np.zeros(k, dtype=bool), "hessian_min_eig": np.full(k, np.nan),
                "stuck": np.zeros(k, dtype=bool), "minima_reasons": (OLDER_CERTIFICATES,) * k,
                "curvature_skipped": "", "barcode_all": None, "scores_all": {},
                "path_stalled": np.zeros(m, dtype=bool), "path_top_grad_norm": np.full(m, np.nan),
                "path_role": np.full(m, "all"), "path_start": np.full(m, "line")}
    flags = {key: [x[key] for x in minima] for key in ("certified", "stuck")}
    reasons = [x["why_not"] for x in minima]
    stalled = [p["stalled"] for p in paths]
    roles, starts = [p["role"] for p in paths], [p["start"] for p in paths]
    if not all(isinstance(v, bool) for v in [*flags["certified"], *flags["stuck"], *stalled]):
        raise ValueError("result certified, stuck and stalled flags must be true/false")
    if not all(isinstance(v, str) for v in [*reasons, *roles, *starts,
                                            data["curvature_skipped"]]):
        raise ValueError("result why_not, role, start and curvature_skipped must be strings")
    scores_all = data["to_score_all"]
    if not isinstance(scores_all, dict) or set(scores_all) != set(SCORE_VARIANTS):
        raise ValueError(f"result to_score_all must hold the variants {list(SCORE_VARIANTS)}")
    return {
        "minima_certified": np.array(flags["certified"], dtype=bool).reshape(k),
        "hessian_min_eig": column("hessian_min_eig"),
        "stuck": np.array(flags["stuck"], dtype=bool).reshape(k),
        "minima_reasons": tuple(reasons), "curvature_skipped": data["curvature_skipped"],
        "barcode_all": topology.Barcode.from_dict(data["barcode_all"]),
        "scores_all": {str(key): float(_floats([v], f"to_score_all {key}")[0])
                       for key, v in scores_all.items()},
        "path_stalled": np.array(stalled, dtype=bool).reshape(m),
        "path_top_grad_norm": _floats([p["top_grad_norm"] for p in paths],
                                      "paths top_grad_norm", (m,)),
        "path_role": np.array(roles, dtype=str).reshape(m),
        "path_start": np.array(starts, dtype=str).reshape(m),
    }


SCORE_VARIANTS = tuple(score_variant(norm, normalize)
                       for normalize in topology.NORMALIZATIONS for norm in topology.NORMS)


def all_scores(barcode: topology.Barcode) -> dict[str, float]:
    """The TO-score in every variant of :data:`SCORE_VARIANTS`."""
    return {
        score_variant(norm, normalize): topology.to_score(barcode, norm, normalize)
        for normalize in topology.NORMALIZATIONS for norm in topology.NORMS
    }


def segment_lengths(barcode: topology.Barcode, k: int, resolution: float = 0.0
                    ) -> np.ndarray:
    """``(k,)`` bar length of each of ``k`` minima (NaN where a minimum has no bar); those at
    most ``resolution`` long as 0 (:func:`~lossbarcode.topology.resolved_lengths`)."""
    lengths = np.full(k, np.nan)
    lengths[barcode.minima] = topology.resolved_lengths(barcode.lengths(), resolution)
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


def _stored_generalization(stored: dict, barcode: topology.Barcode, k: int,
                           config: ExperimentConfig, test_error: np.ndarray) -> dict[str, Any]:
    """A stored result's generalization summary, recomputed from its own data where it was
    made another way: before permutation p-values (no "method": spearmanr's asymptotic p,
    wrong for few minima), or before lengths within the resolution tied at 0 (no
    "resolution") when the run has such bars."""
    raw = segment_lengths(barcode, k)
    if "method" in stored and ("resolution" in stored or np.array_equal(
            raw, segment_lengths(barcode, k, config.path_atol), equal_nan=True)):
        return dict(stored)
    return generalization_summary(raw, test_error, config.path_atol)


def generalization_summary(lengths: np.ndarray, test_error: np.ndarray,
                           resolution: float = 0.0) -> dict[str, Any]:
    """Spearman rank correlation of segment length vs test error (both ``(K,)``) over the
    minima where both are finite (essential and diverged minima left out), lengths at most
    ``resolution`` tied at 0 (their order is the optimiser's), with its exact or Monte Carlo
    permutation p-value (:func:`lossbarcode.stats.spearman_test`): ``{"spearman", "p_value",
    "n", "method", "n_permutations", "resolution"}``, None where undefined."""
    from lossbarcode.stats import spearman_test  # scipy.stats: 0.4 s, only when needed

    test = spearman_test(topology.resolved_lengths(lengths, resolution), test_error)
    return {"spearman": test.rho, "p_value": test.p_value, "n": test.n, "method": test.method,
            "n_permutations": test.n_permutations, "resolution": float(resolution)}


# --------------------------------------------------------------------------- building blocks


def check_device(device: str):
    """The ``torch.device`` a config's ``device`` names, after checking that it exists here
    (``ValueError`` saying what to use instead) -- before any data is loaded."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but this machine has no usable CUDA "
                         "GPU (torch.cuda.is_available() is False); use --device cpu or auto")
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {device!r} does not exist: this machine has {count} CUDA "
                         f"GPU(s) (cuda:0 .. cuda:{count - 1})")
    return torch.device(device)


SLOW_RUN_S = 600.0


def check_size(config: ExperimentConfig, device) -> dict[str, Any]:
    """Refuse a run that cannot fit in the free memory of ``device`` (``ValueError`` with the
    estimate, see ``cost.check_memory``), before anything is allocated. Returns the cost
    estimate (see ``cost.estimate_cost``)."""
    from lossbarcode.cost import check_memory, estimate_cost
    from lossbarcode.landscape import available_memory

    check_memory(config, available_memory(device), str(device))
    return estimate_cost(config)


def _warn_if_slow(config: ExperimentConfig, cost: dict[str, Any]) -> None:
    """Say so before a run the cost model (an order-of-magnitude estimate) expects to take
    more than :data:`SLOW_RUN_S`."""
    if cost["seconds"] > SLOW_RUN_S:
        warnings.warn(f"run {config.run_id} is estimated to take about "
                      f"{cost['seconds'] / 60:,.0f} min ({config.k:,} minima of "
                      f"{cost['n_params']:,} parameters, {cost['n_pairs']:,} paths); it saves "
                      "each stage as it finishes", RuntimeWarning, stacklevel=4)


def _load_data(config: ExperimentConfig, warn_slow: bool = False):
    """``(landscape, tensor digest)``: device and size checked before the data is loaded;
    ``warn_slow``: warn when the whole run is expected to be slow (when it is about to run,
    not when a view of a finished run rebuilds its landscape)."""
    import torch

    from lossbarcode import data, models
    from lossbarcode.landscape import Landscape

    device = check_device(config.device)
    cost = check_size(config, device)
    dataset = data.load(config.dataset, root=config.data_root, n_train=config.n_train,
                        n_test=config.n_test, seed=config.seed)
    if warn_slow:
        _warn_if_slow(config, cost)
    model = models.build(config.arch, config.width, config.depth, dataset.input_shape,
                         dataset.n_outputs, heads=config.heads, seed=config.seed)
    land = Landscape.from_dataset(model, dataset, device=device,
                                  dtype=getattr(torch, config.dtype),
                                  eval_subset=config.eval_subset)
    return land, data.tensor_digest(dataset)


def build_landscape(config: ExperimentConfig):
    """The :class:`~lossbarcode.landscape.Landscape` a config describes (data + model)."""
    return _load_data(config)[0]


def _versions() -> dict[str, str]:
    import scipy
    import torch

    from lossbarcode import __version__

    return {"lossbarcode": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__, "python": platform.python_version()}


def _parse_result(meta: dict[str, Any], run_id: str) -> Result:
    """The Result in a result stage's meta; ``ValueError`` if malformed or not this run's."""
    result = Result.from_dict(meta)
    if result.run_id != run_id:
        raise ValueError(f"it holds run {result.run_id!r}")
    if identity_hash(result.config.identity(result.data_fingerprint or "")) != run_id:
        raise ValueError("its config and data fingerprint do not hash to the run id: edited, "
                         "or made by another lossbarcode version")
    return result


def _parse_legacy_result(meta: dict[str, Any], run_id: str) -> Result:
    """A result written before results were checksummed and before paths converged (path
    algorithm 1): its stored config must hash to the run id the old way (the plain config
    dict), and it must not claim a newer path algorithm. Shown labelled as the old method."""
    if "paths_version" in meta or not isinstance(meta.get("config"), dict):
        raise ValueError("a result without a checksum must be an old (path algorithm 1) one")
    if identity_hash(meta["config"]) != run_id:
        raise ValueError("its config does not hash to the run id: edited")
    result = Result.from_dict(meta)
    if result.run_id != run_id:
        raise ValueError(f"it holds run {result.run_id!r}")
    return result


def load_result(store: ResultStore, run_id: str, warn: bool = True,
                strict: bool = False) -> Result | None:
    """The finished :class:`Result` of ``run_id``, or None if it has none. Never changes the
    store: ``run_experiment`` recomputes an unusable result.

    A stored result that is unusable reads as None, with a ``RuntimeWarning`` saying why when
    ``warn``; with ``strict`` it raises why instead (a
    :class:`~lossbarcode.store.CorruptResultError`). A result made by a newer lossbarcode
    raises ``NewerFormatError`` either way.
    """
    try:
        return _load_result_strictly(store, run_id)
    except CorruptResultError as err:
        if strict:
            raise
        if warn:
            warnings.warn(str(err) if isinstance(err, UnsafeResultError) else
                          f"{err.path} is unusable ({err.reason}); 'lossbarcode run' "
                          "recomputes it", RuntimeWarning, stacklevel=2)
        return None


def read_result(store: ResultStore, run_id: str) -> Result | None:
    """Deprecated name of ``load_result(store, run_id, strict=True)`` (kept for
    compatibility)."""
    return load_result(store, run_id, strict=True)


def _load_result_strictly(store: ResultStore, run_id: str) -> Result | None:
    try:
        stored = store.load_stage(run_id, "result")
    except CorruptResultError as err:
        legacy = store.load_legacy_meta(run_id, "result")
        if legacy is not None:
            try:
                return _parse_legacy_result(legacy, run_id)
            except ValueError as why:
                raise CorruptResultError(err.path, str(why)) from None
        # Maybe caught mid-replacement: read() waits for the writer, then re-reads.
        stored = store.read(run_id, "result", warn=False)
        if stored is None:
            store.load_stage(run_id, "result")  # still unusable: raise why
    if stored is None:
        return None
    try:
        return _parse_result(stored[0], run_id)
    except ValueError as err:
        raise CorruptResultError(store.root / run_id / "result.json", str(err)) from None


def load_minima(store: ResultStore, run_id: str):
    """The stored :class:`~lossbarcode.minima.Minima` of a run, or None (never deletes)."""
    from lossbarcode.minima import Minima

    stored = store.read(run_id, "minima")
    try:
        return None if stored is None else Minima.from_arrays(stored[1])
    except ValueError as err:
        warnings.warn(f"stored minima of run {run_id} are unusable ({err})", RuntimeWarning,
                      stacklevel=2)
        return None


def load_paths(store: ResultStore, run_id: str):
    """The stored :class:`~lossbarcode.paths.Paths` of a run, or None (never deletes)."""
    from lossbarcode.paths import Paths

    stored = store.read(run_id, "paths")
    try:
        return None if stored is None else Paths.from_arrays(stored[1], stored[0].get("settings"))
    except ValueError as err:
        warnings.warn(f"stored paths of run {run_id} are unusable ({err})", RuntimeWarning,
                      stacklevel=2)
        return None


def save_result(store: ResultStore, result: Result) -> None:
    """Store a finished result as its run's "result" stage (holding the run's lock)."""
    if not store.holds_lock(result.run_id):
        raise RuntimeError(f"save_result({result.run_id!r}) needs the run's lock")
    store.save_stage(result.run_id, "result", {**result.to_dict(), "data": result.data_fingerprint})


def _warn_wait(message: str) -> None:
    warnings.warn(message + "; it computes the run, this process then loads it",
                  RuntimeWarning, stacklevel=4)


def _usable_stage(store: ResultStore, run_id: str, stage: str, data: str,
                  parse: Callable[[dict[str, Any], dict[str, np.ndarray]], Any]):
    """``(meta, parsed)`` of a stored stage, or None after dropping it (with a warning) when it
    is corrupt, inconsistent or made from other data. Holding the run's lock."""
    stored = store.load_or_drop(run_id, stage)
    if stored is None:
        return None
    meta, arrays = stored
    try:
        if meta.get("data") != data:
            raise ValueError(f"it was made from other data ({meta.get('data')!r}, now {data!r})")
        return meta, parse(meta, arrays)
    except (ValueError, KeyError, TypeError) as err:
        warnings.warn(f"stored {stage} of run {run_id} are unusable ({err}); recomputing them",
                      RuntimeWarning, stacklevel=3)
        store.drop_stage(run_id, stage)
        return None


def run_experiment(
    config: ExperimentConfig,
    store: ResultStore | None = None,
    progress: Progress | None = None,
    lock_timeout: float | None = None,
    on_wait: Callable[[str], Any] | None = None,
) -> Result:
    """Run (or resume, or load) one experiment and return its :class:`Result`.

    Args:
        config: the experiment (valid by construction).
        store: where stages are saved (default: ``ResultStore()``, i.e. ``./results`` or
            ``$LOSSBARCODE_RESULTS``).
        progress: ``progress(stage, done, total, message)``; may raise :class:`Cancelled`.
        lock_timeout: seconds to wait for another process computing the same run
            (``TimeoutError`` after that, naming the lock's holder).
        on_wait: ``on_wait(message)`` when the run is locked by another process (who and since
            when); default: a ``RuntimeWarning``.
    """
    store = store or ResultStore()
    run_id = config.run_id
    data_fp = config.identity()["data"]
    source = data_source(config.dataset, config.data_root)
    report = progress or (lambda *args: None)

    # A verified finished result is final: read without the lock (a read-only folder works),
    # unless a crash left temp files, which the locked path below cleans up.
    done = load_result(store, run_id, warn=False)
    if done is not None and not store.has_temp(run_id):
        return done
    with store.lock(run_id, timeout=lock_timeout, on_wait=on_wait or _warn_wait):
        store.clean_temp(run_id)
        finished = _usable_stage(store, run_id, "result", data_fp,
                                 lambda meta, _: _parse_result(meta, run_id))
        if finished is not None:
            return finished[1]
        from lossbarcode import minima as minima_mod
        from lossbarcode import paths as paths_mod

        land, tensors = None, None
        timings: dict[str, float] = {}

        def landscape():
            nonlocal land, tensors
            if land is None:
                land, tensors = _load_data(config, warn_slow=True)
                # The run id named the files' content when it was computed: still the same?
                if config.identity()["data"] != data_fp:
                    raise ValueError(f"the data files of run {run_id} changed while it started "
                                     f"({config.data_root}); run it again")
            return land

        def compute_minima():
            _drop_derived(store, run_id, "minima")
            start = time.perf_counter()
            landscape()
            # An aligned run permutes the minima of its unaligned twin (the same training):
            # its stored ones when there are, so before and after compare the same minima.
            twin = _unaligned_minima(store, config, data_fp, tensors) if config.align else None
            found = twin[1] if twin is not None else minima_mod.find_minima(
                land, config.k, **config.minima_settings(),
                progress=lambda step, total, loss: report(
                    "minima", step, total, f"mean minibatch loss {loss:.4g}"),
            )
            extra: dict[str, Any] = {}
            if config.align:
                from lossbarcode import rebasin

                report("minima", 0, 1, "aligning the minima (re-basin)")
                found, alignment = rebasin.align_found(land, found)
                extra["alignment"] = {**alignment.to_dict(),
                                      "minima_from": twin[0] if twin is not None else "trained"}
            timings["minima"] = time.perf_counter() - start
            meta = {"seconds": timings["minima"], "device": str(land.device), "data": data_fp,
                    "tensors": tensors, **extra}
            store.save_stage(run_id, "minima", meta, found.to_arrays())
            return meta, found

        def parse_minima(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
            found = minima_mod.Minima.from_arrays(arrays)
            if found.k != config.k:
                raise ValueError(f"they hold {found.k} minima, the config asks for {config.k}")
            return found

        stored = _usable_stage(store, run_id, "minima", data_fp, parse_minima)
        minima_meta, found = stored if stored is not None else compute_minima()
        timings["minima"] = float(minima_meta["seconds"])
        device = str(minima_meta["device"])
        report("minima", 1, 1, "done")

        def parse_paths(meta: dict[str, Any], arrays: dict[str, np.ndarray]):
            connected = paths_mod.Paths.from_arrays(arrays, meta.get("settings"))
            if connected.k != found.k or any(img.shape[1] != found.n_params
                                             for img in connected.images):
                raise ValueError(f"they join {connected.k} minima of other shapes than the "
                                 f"{found.k} stored minima")
            if not np.array_equal(connected.minima_loss, found.train_loss, equal_nan=True):
                raise ValueError("their minima losses are not those of the stored minima")
            return connected

        stored = _usable_stage(store, run_id, "paths", data_fp, parse_paths)
        if stored is None:
            landscape()
            if minima_meta.get("tensors") != tensors or found.n_params != land.n_params:
                warnings.warn(f"stored minima of run {run_id} are unusable (trained on other "
                              "data tensors or another model); recomputing them",
                              RuntimeWarning, stacklevel=2)
                minima_meta, found = compute_minima()
                device = str(minima_meta["device"])
            _drop_derived(store, run_id, "paths")
            start = time.perf_counter()
            connected = paths_mod.connect(
                land, found, **config.path_settings(),
                progress=lambda step, total, info: report(
                    "paths", step, total, str(info.get("stage", ""))),
            )
            timings["paths"] = time.perf_counter() - start
            store.save_stage(run_id, "paths", {"seconds": timings["paths"],
                                               "settings": connected.settings,
                                               "data": data_fp, "tensors": tensors},
                             connected.to_arrays())
        else:
            connected = stored[1]
            timings["paths"] = float(stored[0]["seconds"])
        report("paths", 1, 1, "done")

        from lossbarcode.rebasin import identical_predictions

        identical = identical_predictions(landscape(), found)
        result = dataclasses.replace(
            assemble_result(config, found, connected, timings, device),
            data_fingerprint=data_fp, data_source=source,
            alignment=_alignment_summary(minima_meta),
            identical_predictions=None if identical is None else tuple(identical))
        save_result(store, result)
        report("result", 1, 1, f"TO-score {result.score:.4g}")
        return result


def _unaligned_minima(store: ResultStore, config: ExperimentConfig, data: str,
                      tensors: str) -> tuple[str, Any] | None:
    """``(run id, Minima)`` of the stored minima of the unaligned twin of ``config`` when they
    were trained on the same data tensors; None otherwise (then they are trained here, the
    same way)."""
    from lossbarcode.minima import Minima

    twin = identity_hash(config.replace(align=False).identity(data))
    stored = store.read(twin, "minima", warn=False)
    if stored is None or stored[0].get("data") != data or stored[0].get("tensors") != tensors:
        return None
    try:
        found = Minima.from_arrays(stored[1])
    except ValueError:
        return None
    return (twin, found) if found.k == config.k else None


def _alignment_summary(minima_meta: dict[str, Any]) -> dict[str, Any]:
    """What a result keeps of its minima's alignment (no permutations): the reference, the
    distances to it before and after, where the minima came from; ``{}`` when not aligned."""
    alignment = minima_meta.get("alignment")
    if not alignment:
        return {}
    return {key: alignment[key] for key in ("reference", "distance_before", "distance_after",
                                            "minima_from")}


def twin_run_id(result: Result) -> str:
    """The run id of ``result``'s re-basin twin: the same config with ``align`` flipped (the
    aligned run of an unaligned one, and back)."""
    twin = result.config.replace(align=not result.config.align)
    return identity_hash(twin.identity(result.data_fingerprint))


def rebasin_pair(store: ResultStore, result: Result) -> tuple[Result | None, Result | None]:
    """``(unaligned, aligned)``: ``result`` and its finished twin (:func:`twin_run_id`) in
    ``store``, in that order, None for a twin not computed (nothing is computed here)."""
    twin = load_result(store, twin_run_id(result), warn=False)
    return (twin, result) if result.config.align else (result, twin)


def _barrier_excess(result: Result, barriers: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """``barriers`` ``(M,)`` of ``pairs`` ``(M, 2)`` minus the higher endpoint's training loss,
    one value per pair of valid minima (the lowest of its restarts)."""
    best: dict[tuple[int, int], float] = {}
    for (i, j), b in zip(pairs.tolist(), barriers, strict=True):
        if result.diverged[i] or result.diverged[j] or not np.isfinite(b):
            continue
        key = (min(i, j), max(i, j))
        best[key] = min(best.get(key, np.inf), float(b))
    return np.array([b - max(result.train_loss[i], result.train_loss[j])
                     for (i, j), b in best.items()])


def rebasin_summary(result: Result) -> dict[str, Any]:
    """One run's side of the before/after re-basin comparison: its TO-scores, certified
    bars, the barrier excess (barrier minus the higher endpoint) of its deciding paths and of
    the straight lines between the same pairs (mean and max), how many pairs, and how many
    pairs of minima make identical test predictions."""
    paths = _barrier_excess(result, result.path_barriers, result.pairs)
    lines = _barrier_excess(result, result.linear_barriers, result.pairs)
    certified, finite = result.certified
    identical = result.identical_predictions
    return {
        "run_id": result.run_id,
        f"TO-score ({result.config.score_variant})": result.score,
        "TO-score, all minima": result.scores_all[result.config.score_variant],
        "certified bars": f"{certified}/{finite}",
        "path barrier excess, mean": float(paths.mean()) if paths.size else None,
        "path barrier excess, max": float(paths.max()) if paths.size else None,
        "straight-line barrier excess, mean": float(lines.mean()) if lines.size else None,
        "straight-line barrier excess, max": float(lines.max()) if lines.size else None,
        "pairs": int(paths.size),
        "identical-prediction pairs": None if identical is None else len(identical),
    }


def rebasin_table(unaligned: Result, aligned: Result) -> list[dict[str, Any]]:
    """The before/after re-basin comparison of twin runs (:func:`rebasin_pair`), one row per
    measure: ``{"measure", "unaligned", "aligned"}`` (see :func:`rebasin_summary`), plus the
    mean Euclidean distance of the minima to the reference minimum before and after."""
    if unaligned.config.align or not aligned.config.align:
        raise ValueError("rebasin_table takes the unaligned run first, then the aligned one")
    before, after = rebasin_summary(unaligned), rebasin_summary(aligned)
    rows = [{"measure": key, "unaligned": before[key], "aligned": after[key]} for key in before]
    reference = aligned.alignment.get("reference")
    distance = {key: [d for i, d in enumerate(aligned.alignment.get(key, []))
                      if d is not None and i != reference]
                for key in ("distance_before", "distance_after")}
    if distance["distance_before"]:
        rows.append({"measure": f"distance to the reference (minimum {reference}), mean",
                     "unaligned": float(np.mean(distance["distance_before"])),
                     "aligned": float(np.mean(distance["distance_after"]))})
    return rows


# What each stage of the pipeline is computed from; views of a run (maps, slices) record
# their own inputs when they are saved (lossbarcode.views).
PIPELINE = {"minima": (), "paths": ("minima",), "result": ("minima", "paths")}


def _drop_derived(store: ResultStore, run_id: str, stage: str) -> None:
    """Before ``stage`` is (re)computed, drop every stage made from an earlier copy of it, so
    no stale path, map or slice is read back next to the new stage."""
    drop_views_of(store, run_id, stage, PIPELINE)


def assemble_result(config: ExperimentConfig, found, connected, timings: dict[str, float],
                    device: str) -> Result:
    """Barcode, scores and summaries from finished minima and paths."""
    start = time.perf_counter()
    from lossbarcode.paths import barrier_matrix

    valid = found.valid
    if valid.size == 0:
        raise ValueError(f"all {found.k} training runs diverged, so there is no barcode; lower "
                         "the learning rate (--lr) or use --schedule anneal")
    barriers = barrier_matrix(connected, found.k)
    barcode = _valid_barcode(found.train_loss, found.diverged, barriers, config.rule,
                             found.certified[valid])
    barcode_all = _valid_barcode(found.train_loss, found.diverged, barriers, config.rule, None)
    timings = {**timings, "barcode": time.perf_counter() - start}
    return Result(
        run_id=config.run_id,
        config=config,
        train_loss=found.train_loss,
        test_loss=found.test_loss,
        test_error=found.test_error,
        diverged=found.diverged,
        pairs=connected.pairs,
        barrier_matrix=barriers,
        path_barriers=connected.barriers,
        linear_barriers=connected.linear_barriers,
        profiles=tuple(connected.profiles),
        barcode=barcode,
        scores=all_scores(barcode),
        barcode_all=barcode_all,
        scores_all=all_scores(barcode_all),
        # Bars at certified minima only: an uncertified point has no segment to correlate.
        generalization=generalization_summary(segment_lengths(barcode, found.k),
                                              found.test_error, config.path_atol),
        timings=timings,
        n_params=found.n_params,
        device=device,
        versions=_versions(),
        grad_norm=found.grad_norm,
        path_converged=connected.converged,
        path_steps_used=connected.steps_used,
        path_history=connected.barrier_history,
        path_history_steps=connected.history_steps,
        path_perp_grad_norm=connected.perp_grad_norm,
        paths_version=connected.version,
        minima_certified=found.certified,
        hessian_min_eig=found.hessian_min_eig,
        stuck=found.stuck,
        minima_reasons=tuple(found.certificate_reasons()),
        curvature_skipped=found.curvature_skipped,
        path_stalled=connected.stalled,
        path_top_grad_norm=connected.top_grad_norm,
        path_role=connected.role,
        path_start=connected.start,
    )


def _valid_barcode(train_loss: np.ndarray, diverged: np.ndarray, barriers: np.ndarray,
                   rule: str, births: np.ndarray | None) -> topology.Barcode:
    """The barcode of the minima that did not diverge (``diverged`` ``(K,)``; bars at
    ``births`` among them, every one when None), with bar and edge indices among all K."""
    valid = np.flatnonzero(~np.asarray(diverged, dtype=bool))
    barcode = topology.minima_barcode(train_loss[valid], barriers[np.ix_(valid, valid)],
                                      rule=rule, births=births)
    k = len(train_loss)
    return dataclasses.replace(
        barcode,
        minima=valid[barcode.minima],
        saddle_edges=np.where(barcode.saddle_edges >= 0,
                              valid[np.maximum(barcode.saddle_edges, 0)], -1),
        saddles=np.where(barcode.saddles >= 0,
                         valid[np.maximum(barcode.saddle_edges[:, 0], 0)] * k
                         + valid[np.maximum(barcode.saddle_edges[:, 1], 0)], -1),
    )
