"""The health of a finished run: can its barcode be read as a property of the network?

:func:`run_health` checks a :class:`~lossbarcode.experiment.Result` for the ways a run can look
clean and still measure the tool:

* ``diverged``: minima whose training hit NaN/inf or ended above its starting loss (they are
  left out of the barcode, so a run with few survivors scores only those);
* ``below_minima``: paths whose loss dips below both their endpoints by more than the barrier
  resolution (``path_atol``): the endpoints are not minima of the loss to within that
  resolution, so each bar's birth is uncertain by the dip; a dip of more than
  :data:`DIP_BROKEN` resolutions means training was far from finished;
* ``gradient``: minima whose full-batch gradient norm is large (:data:`GRAD_NORM_LARGE`), so
  their birth is not the value of a critical point;
* ``unconverged``: paths that hit their step cap (their bars are upper bounds, hatched);
* ``old_paths``: paths made by the fixed-budget method of path algorithm 1.

Diverged minima and a far dip make a run **broken**: its score is not a property of the
network, so pooled statistics (the Scaling curves, the Generalization correlation) leave it out
unless asked to keep it. The others are **cautions**, shown with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from lossbarcode.experiment import Result

BROKEN, CAUTION = "broken", "caution"
# A minimum whose full-batch gradient norm is above this is not near a critical point: after
# the default training (2000 Adam steps on digits) the norms are about 1e-3 to 1e-2.
GRAD_NORM_LARGE = 0.1
DIP_BROKEN = 100  # a path this many resolutions (path_atol) below its minima: not trained


@dataclass(frozen=True)
class Problem:
    """One finding: ``kind`` (see the module doc), ``severity`` (``"broken"`` or
    ``"caution"``), ``count`` (minima or paths concerned) and a sentence that says what to do."""

    kind: str
    severity: str
    count: int
    message: str


@dataclass(frozen=True)
class RunHealth:
    """The problems of one run, most severe first; no problems means healthy."""

    problems: tuple[Problem, ...] = ()

    @property
    def broken(self) -> bool:
        """Whether the run's numbers are not a property of the network (leave it out of
        pooled statistics)."""
        return any(p.severity == BROKEN for p in self.problems)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: ``"healthy"``, or ``"broken: 3 diverged minima; 2 unconverged paths"``."""
        if self.healthy:
            return "healthy"
        state = BROKEN if self.broken else CAUTION
        return f"{state}: " + "; ".join(f"{p.count} {_NOUNS[p.kind]}" for p in self.problems)

    def to_dict(self) -> dict:
        return {"broken": self.broken, "summary": self.summary(),
                "problems": [vars(p) for p in self.problems]}


_NOUNS = {"diverged": "diverged minima", "below_minima": "paths below their minima",
          "gradient": "minima with a large gradient", "unconverged": "unconverged paths",
          "old_paths": "paths of the old fixed-budget method"}


def path_dips(result: Result) -> np.ndarray:
    """``(M,)`` how far each path's loss profile goes below the lower of its two endpoints'
    training losses (0 where it never does; NaN where an endpoint diverged)."""
    lower = np.minimum(result.train_loss[result.pairs[:, 0]],
                       result.train_loss[result.pairs[:, 1]]) if len(result.pairs) else \
        np.zeros(0)
    lowest = np.array([np.min(loss) if len(loss) else np.inf for _, loss in result.profiles])
    return np.maximum(lower - lowest, 0.0) if len(lowest) else np.zeros(0)


def run_health(result: Result) -> RunHealth:
    """Check ``result`` (see the module doc); the thresholds are the run's own barrier
    resolution (``config.path_atol``) and :data:`GRAD_NORM_LARGE`."""
    problems = []
    k = result.k
    diverged = int(np.sum(result.diverged))
    if diverged:
        problems.append(Problem(
            "diverged", BROKEN, diverged,
            f"{diverged} of {k} minima diverged (NaN/inf, or a final loss above the starting "
            f"one) and are left out of the barcode. Lower the learning rate."))
    atol = result.config.path_atol
    dips = path_dips(result)
    below = np.flatnonzero(np.nan_to_num(dips, nan=0.0) > atol)
    if below.size:
        worst = float(np.nanmax(dips))
        far = worst > DIP_BROKEN * atol
        problems.append(Problem(
            "below_minima", BROKEN if far else CAUTION, int(below.size),
            f"{below.size} of {len(dips)} paths go below both their endpoints, by up to "
            f"{worst:.3g} in loss ({worst / atol:.3g}× the resolution {atol:g}): the trained "
            "networks are " + ("far from minima. Lower the learning rate or train longer."
                               if far else "not minima to within the resolution, so each "
                               "bar's birth is uncertain by up to that much. Add polish "
                               "steps or train longer.")))
    grad = np.asarray(result.grad_norm, dtype=float)
    steep = int(np.sum(np.isfinite(grad) & (grad > GRAD_NORM_LARGE)))
    if steep:
        problems.append(Problem(
            "gradient", CAUTION, steep,
            f"{steep} of {k} minima have a full-batch gradient norm above {GRAD_NORM_LARGE:g} "
            f"(largest {np.nanmax(grad):.3g}): they are not at critical points, so their bars "
            "start above a true minimum. Add polish steps or train longer."))
    if result.paths_version < 2:
        problems.append(Problem(
            "old_paths", CAUTION, len(result.pairs),
            "The paths were made by the old fixed-budget method: their barriers are upper "
            "bounds. Run the config again to converge them."))
    else:
        unconverged = int(np.sum(~np.asarray(result.path_converged, dtype=bool)))
        if unconverged:
            problems.append(Problem(
                "unconverged", CAUTION, unconverged,
                f"{unconverged} of {len(result.path_converged)} paths hit their step cap "
                "before converging: the bars they end are upper bounds (hatched). Raise "
                "the path step cap."))
    return RunHealth(tuple(sorted(problems, key=lambda p: p.severity != BROKEN)))
