"""Which bars of a run can be trusted, and why not: the one home of the certification rules.

A bar ``[b, d)`` is **certified** when both its ends are checked and its run is not broken:

* **birth** -- its minimum is certified (:func:`certify`): full-batch
  gradient norm at most the tolerance, no negative curvature, a loss clearly below the start;
* **death** -- the lowest path of the pair that killed it (:func:`death_certificates`):
  converged (neither capped nor stalled), its top a critical point (full-batch gradient norm at
  most the tolerance) or the path monotone (barrier within ``path_atol`` of its higher end),
  and the pair's converged restarts agreeing within ``path_tol * segment + path_atol`` (a
  capped or stalled restart is an unfinished upper bound: it widens the spread shown, not the
  test);
* the run's health is not *broken* (:func:`lossbarcode.health.run_health`).

An uncertified bar says which check failed. Torch-free: results are judged without the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbarcode.planning import lowest_paths
from lossbarcode.topology import Barcode

NOT_COMPUTED = "not computed"  # Minima.curvature_skipped of minima built without a certificate


@dataclass(frozen=True)
class Death:
    """The certificate of one pair's barrier: ``barrier`` (the lowest of its paths, the one at
    index ``path``), ``spread`` (highest minus lowest over its ``starts`` paths; 0 for one),
    ``certified`` and ``reason`` (empty when certified)."""

    barrier: float
    spread: float
    starts: int
    certified: bool
    reason: str
    path: int


def death_certificates(pairs: np.ndarray, barriers: np.ndarray, converged: np.ndarray,
                       stalled: np.ndarray, top_grad_norm: np.ndarray, minima_loss: np.ndarray,
                       *, tol: float, atol: float, grad_tol: float
                       ) -> dict[tuple[int, int], Death]:
    """One :class:`Death` per pair ``(i, j)`` (``i < j``) among the paths ``pairs`` ``(M, 2)``
    with ``barriers``, ``converged``, ``stalled`` and ``top_grad_norm`` ``(M,)``;
    ``minima_loss`` ``(K,)``; ``tol``, ``atol``: the path stopping rule; ``grad_tol``: the
    gradient norm of a critical point."""
    pairs = np.sort(np.asarray(pairs).reshape(-1, 2), axis=1)
    done = np.asarray(converged, dtype=bool) & ~np.asarray(stalled, dtype=bool)
    out = {}
    # The lowest path decides; of equally low ones, one that finished.
    for key, best in lowest_paths(pairs, np.asarray(barriers, dtype=float), done).items():
        idx = np.flatnonzero((pairs == key).all(axis=1))
        bars = np.asarray(barriers, dtype=float)[idx]
        finished = done[idx]
        floor = float(max(minima_loss[key[0]], minima_loss[key[1]]))
        barrier = float(barriers[best])
        spread = float(bars.max() - bars.min()) if np.all(np.isfinite(bars)) else np.inf
        # Only starts that finished can disagree: a capped or stalled path is an upper bound
        # still on its way down, no evidence of another saddle (its value stays in `spread`).
        ended = bars[finished]
        disagree = float(ended.max() - ended.min()) if len(ended) else 0.0
        monotone = barrier <= floor + atol
        if not np.isfinite(barrier):
            reason = "not connected (the loss is NaN or infinite on the path)"
        elif stalled[best]:
            reason = "stalled (its step size collapsed before it converged)"
        elif not converged[best]:
            reason = "capped (it reached its step limit before it converged)"
        elif not monotone and not top_grad_norm[best] <= grad_tol:
            reason = (f"top not a saddle (gradient {top_grad_norm[best]:.2g} > "
                      f"{grad_tol:g})")
        elif disagree > tol * (barrier - floor) + atol:
            reason = f"restarts disagree by {disagree:.3g}"
        else:
            reason = ""
        out[key] = Death(barrier, spread, len(idx), not reason, reason, int(best))
    return out


def bar_certificates(barcode: Barcode, deaths: dict[tuple[int, int], Death],
                     minima_certified: np.ndarray, minima_reasons: list[str], broken: bool
                     ) -> tuple[np.ndarray, list[str]]:
    """``(certified (n_bars,), reasons)`` of each bar of ``barcode``: its minimum's certificate
    (``minima_certified`` ``(K,)``, ``minima_reasons``), its death pair's (``deaths``, from
    :func:`death_certificates`) and the run's (``broken``). The essential bar has no death to
    certify: it is certified with its birth. A reason says the first check that failed."""
    n = len(barcode)
    certified = np.zeros(n, dtype=bool)
    reasons = []
    for b in range(n):
        minimum = int(barcode.minima[b])
        i, j = (int(v) for v in barcode.saddle_edges[b])
        death = deaths.get((min(i, j), max(i, j))) if np.isfinite(barcode.deaths[b]) else None
        if broken:
            reason = "its run is broken (see its health)"
        elif not minima_certified[minimum]:
            reason = f"birth: {minima_reasons[minimum] or 'not certified'}"
        elif np.isfinite(barcode.deaths[b]) and death is None:
            reason = "death: no path of its pair"
        elif death is not None and not death.certified:
            reason = f"death: {death.reason}"
        else:
            reason = ""
        certified[b] = not reason
        reasons.append(reason)
    return certified, reasons


def certify(grad_norm: Any, hessian_min_eig: Any, stuck: Any, diverged: Any, tol: float, *,
            train_loss: Any = None, initial_loss: Any = None,
            curvature_skipped: str = "") -> tuple[np.ndarray, list[str]]:
    """Which of K points are certified minima, and why the others are not.

    A point is certified when it did not diverge, is not stuck, its gradient norm is at most
    ``tol`` and its smallest Hessian eigenvalue is at least ``-tol`` (no direction of descent
    to second order). A NaN gradient norm does not certify; a NaN eigenvalue does not either,
    unless ``curvature_skipped`` says why the check could not run (then the point is
    *gradient-certified only*).

    Args:
        grad_norm, hessian_min_eig: ``(K,)`` floats.
        stuck, diverged: ``(K,)`` bools.
        tol: the tolerance (> 0).
        train_loss, initial_loss: optional ``(K,)`` losses, quoted in the "stuck" reasons.
        curvature_skipped: why the eigenvalues were not computed (the model is too large for
            the check): the points are then certified on their gradient alone.

    Returns:
        ``certified`` ``(K,)`` bool and one reason per point: ``""`` when certified, else the
        failed conditions joined by ``"; "``, e.g. ``"gradient 0.31 > tol 0.001"``,
        ``"negative curvature -0.05"``, ``"stuck: loss 2.3, 2.31 at the start"``,
        ``"diverged"``.
    """
    g = np.asarray(grad_norm, dtype=np.float64).reshape(-1)
    eig = np.asarray(hessian_min_eig, dtype=np.float64).reshape(-1)
    st = np.asarray(stuck, dtype=bool).reshape(-1)
    dv = np.asarray(diverged, dtype=bool).reshape(-1)
    k = g.shape[0]
    if not eig.shape == st.shape == dv.shape == (k,):
        raise ValueError("grad_norm, hessian_min_eig, stuck and diverged must all have shape "
                         f"(K,), got {g.shape}, {eig.shape}, {st.shape}, {dv.shape}")
    tol = float(tol)
    # A model too large for the curvature check (curvature_skipped says why) is certified on
    # its gradient only ("gradient-certified only", said wherever it is shown).
    unchecked = np.isnan(eig) & bool(curvature_skipped) & (curvature_skipped != NOT_COMPUTED)
    with np.errstate(invalid="ignore"):
        certified = ~dv & ~st & (g <= tol) & ((eig >= -tol) | unchecked)
    reasons = []
    for i in range(k):
        if dv[i]:
            reasons.append("diverged")
            continue
        parts = []
        if not g[i] <= tol:
            parts.append(f"gradient {g[i]:.2g} > tol {tol:g}" if np.isfinite(g[i])
                         else "gradient unknown")
        if np.isnan(eig[i]) and not unchecked[i]:
            parts.append("curvature not checked"
                         + (f" ({curvature_skipped})" if curvature_skipped else ""))
        elif eig[i] < -tol:
            parts.append(f"negative curvature {eig[i]:.2g}")
        if st[i]:
            if train_loss is not None and initial_loss is not None:
                parts.append(f"stuck: loss {float(np.asarray(train_loss)[i]):.3g}, "
                             f"{float(np.asarray(initial_loss)[i]):.3g} at the start")
            else:
                parts.append("stuck")
        reasons.append("; ".join(parts))
    return certified, reasons
