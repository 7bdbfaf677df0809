"""Which bars of a run can be trusted, and why not: the one home of the certification rules.

A bar ``[b, d)`` is **certified** when both its ends are checked and its run is not broken:

* **birth** -- its minimum is certified (:func:`lossbarcode.minima.certify`): full-batch
  gradient norm at most the tolerance, no negative curvature, a loss clearly below the start;
* **death** -- the lowest path of the pair that killed it (:func:`death_certificates`):
  converged (neither capped nor stalled), its top a critical point (full-batch gradient norm at
  most the tolerance) or the path monotone (barrier within ``path_atol`` of its higher end),
  and the pair's restarts agreeing within ``path_tol * segment + path_atol``;
* the run's health is not *broken* (:func:`lossbarcode.health.run_health`).

An uncertified bar says which check failed. Torch-free: results are judged without the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lossbarcode.topology import Barcode


@dataclass(frozen=True)
class Death:
    """The certificate of one pair's barrier: ``barrier`` (the lowest of its paths),
    ``spread`` (highest minus lowest over its ``starts`` paths; 0 for one), ``certified`` and
    ``reason`` (empty when certified)."""

    barrier: float
    spread: float
    starts: int
    certified: bool
    reason: str


def death_certificates(pairs: np.ndarray, barriers: np.ndarray, converged: np.ndarray,
                       stalled: np.ndarray, top_grad_norm: np.ndarray, minima_loss: np.ndarray,
                       *, tol: float, atol: float, grad_tol: float
                       ) -> dict[tuple[int, int], Death]:
    """One :class:`Death` per pair ``(i, j)`` (``i < j``) among the paths ``pairs`` ``(M, 2)``
    with ``barriers``, ``converged``, ``stalled`` and ``top_grad_norm`` ``(M,)``;
    ``minima_loss`` ``(K,)``; ``tol``, ``atol``: the path stopping rule; ``grad_tol``: the
    gradient norm of a critical point."""
    rows: dict[tuple[int, int], list[int]] = {}
    for m, (i, j) in enumerate(np.asarray(pairs).reshape(-1, 2).tolist()):
        rows.setdefault((min(i, j), max(i, j)), []).append(m)
    out = {}
    for key, idx in rows.items():
        bars = np.asarray(barriers, dtype=float)[idx]
        best = idx[int(np.argmin(bars))]
        floor = float(max(minima_loss[key[0]], minima_loss[key[1]]))
        barrier = float(barriers[best])
        spread = float(bars.max() - bars.min()) if np.all(np.isfinite(bars)) else np.inf
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
        elif spread > tol * (barrier - floor) + atol:
            reason = f"restarts disagree by {spread:.3g}"
        else:
            reason = ""
        out[key] = Death(barrier, spread, len(idx), not reason, reason)
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
