"""The health of a finished run: can its barcode be read as a property of the network?

:func:`run_health` checks a :class:`~lossbarcode.experiment.Result` for the ways a run can look
clean and still measure the tool. It reads the certificates of :mod:`lossbarcode.certificates`
(the one home of those rules), so health, ``lossbarcode show`` and every page agree:

* ``diverged``: minima whose training hit NaN/inf or ended above its starting loss (they are
  left out, so a run with few survivors scores only those);
* ``uncertified``: minima that are not certified minima (gradient above the tolerance,
  negative curvature, or stuck: see ``Result.minima_reasons``); their bars are left out of the
  headline barcode. Fewer than :data:`CERTIFIED_BROKEN` of the minima certified makes the run
  broken: its barcode says more about the training than about the network;
* ``stuck``: minima that did not learn (their loss is not clearly below the starting one);
* ``below_minima``: paths whose loss dips below both their endpoints by more than the barrier
  resolution (``path_atol``): between certified minima that is a lower basin the path passes
  through (a caution); below uncertified ones by more than :data:`DIP_BROKEN` resolutions it
  means training was far from finished (broken);
* ``unconverged`` / ``stalled``: paths that end a bar (the lowest path of a bar's pair) and
  hit their step cap or whose step size collapsed (those bars' lengths are upper bounds; a
  capped start that a lower path of its pair beat ends nothing and is not counted);
* ``uncertified_deaths``: finite bars whose death is not certified (see the bar table);
* ``fixed_budget`` / ``old_paths``: paths of a fixed step budget (``path_steps``) or made by
  an older path algorithm: upper bounds, no death certified.

Diverged minima, too few certified minima and far dips below uncertified minima make a run
**broken**: its score is not a property of the network, so pooled statistics (the Scaling
curves, the Generalization correlation) leave it out unless asked to keep it, and none of its
bars is certified. The others are **cautions**, shown with the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lossbarcode import choices

if TYPE_CHECKING:
    from lossbarcode.experiment import Result

BROKEN, CAUTION = "broken", "caution"
CERTIFIED_BROKEN = 0.5  # a run with fewer certified minima than this share is broken
CERTIFIED_CURVES = 0.9  # the share a run needs to enter the Scaling curves (sweep.summarize)


def deaths_resolved(certified: int, finite: int) -> bool:
    """Whether a scale's bars may make a trend: at least :data:`CERTIFIED_CURVES` of its
    ``finite`` bars have certified deaths (the others are upper bounds: a trend of upper
    bounds measures the path optimiser)."""
    return certified >= CERTIFIED_CURVES * finite
DIP_BROKEN = 100  # a path this many resolutions (path_atol) below uncertified minima: broken


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

    @property
    def state(self) -> str:
        """One word: ``"healthy"``, :data:`CAUTION` or :data:`BROKEN` (a badge's text)."""
        return "healthy" if self.healthy else BROKEN if self.broken else CAUTION

    def summary(self) -> str:
        """One line: ``"healthy"``, or ``"broken: 3 diverged minima; 2 unconverged paths"``."""
        if self.healthy:
            return self.state
        return f"{self.state}: " + "; ".join(f"{p.count} {_NOUNS[p.kind]}"
                                             for p in self.problems)

    def to_dict(self) -> dict:
        return {"broken": self.broken, "summary": self.summary(),
                "problems": [vars(p) for p in self.problems]}


_NOUNS = {"diverged": "diverged minima", "uncertified": "uncertified minima",
          "stuck": "stuck minima", "below_minima": "paths below their minima",
          "unconverged": "unconverged paths", "stalled": "stalled paths",
          "uncertified_deaths": "bars with uncertified deaths",
          "fixed_budget": "paths of a fixed step budget",
          "old_paths": "paths of an older path algorithm"}


def path_dips(result: Result) -> np.ndarray:
    """``(M,)`` how far each path's loss profile goes below the lower of its two endpoints'
    training losses (0 where it never does; NaN where an endpoint diverged)."""
    lower = np.minimum(result.train_loss[result.pairs[:, 0]],
                       result.train_loss[result.pairs[:, 1]]) if len(result.pairs) else \
        np.zeros(0)
    lowest = np.array([np.min(loss) if len(loss) else np.inf for _, loss in result.profiles])
    return np.maximum(lower - lowest, 0.0) if len(lowest) else np.zeros(0)


def run_health(result: Result) -> RunHealth:
    """Check ``result`` (see the module doc); the thresholds are the run's own tolerances
    (``config.path_atol``, ``config.minima_tol``) and the constants above."""
    problems = []
    k = result.k
    diverged = int(np.sum(result.diverged))
    if diverged:
        problems.append(Problem(
            "diverged", BROKEN, diverged,
            f"{diverged} of {k} minima diverged (NaN/inf, or a final loss above the starting "
            f"one) and are left out of the barcode. Lower the learning rate."))
    certified = np.asarray(result.minima_certified, dtype=bool)
    uncertified = int(np.sum(~certified & ~result.diverged))
    if uncertified:
        few = certified.sum() < CERTIFIED_BROKEN * k
        reasons = sorted({r.split(" ")[0] for r in result.minima_reasons if r})
        problems.append(Problem(
            "uncertified", BROKEN if few else CAUTION, uncertified,
            f"{uncertified} of {k} minima are not certified minima ({', '.join(reasons)}; see "
            "the minima table): their bars are left out of the TO-score. "
            + ("Too few are certified for the barcode to describe the network. "
               if few else "") + "Train longer (--steps, --polish-steps) or change the "
            "optimizer or learning rate."))
    stuck = int(np.sum(result.stuck))
    if stuck:
        problems.append(Problem(
            "stuck", CAUTION, stuck,
            f"{stuck} of {k} minima did not learn (their loss stayed near the starting one). "
            "Raise the learning rate or use another optimizer."))
    _dip_problem(result, certified, problems)
    if result.config.path_steps is not None:
        problems.append(Problem(
            "fixed_budget", CAUTION, len(result.pairs),
            f"The paths ran a fixed budget of {result.config.path_steps} steps (path_steps): "
            "their barriers are upper bounds and no death is certified. Leave path_steps "
            "empty to optimise them until they converge."))
    elif result.paths_version < choices.PATHS_VERSION:
        problems.append(Problem(
            "old_paths", CAUTION, len(result.pairs),
            f"The paths were made by an older path algorithm ({result.paths_version}): "
            "no death in this run is certified. Run the config again."))
    else:
        deaths = result.deaths()
        finite = np.isfinite(result.barcode.deaths)
        keys = [tuple(sorted(int(v) for v in edge))
                for edge in result.barcode.saddle_edges[finite]]
        # Only a path that ends a bar (the lowest of its pair, on a bar's saddle edge) can make
        # a length an upper bound; a capped start beaten by a lower path of its pair cannot.
        ends_bar = np.zeros(len(result.pairs), dtype=bool)
        ends_bar[[deaths[key].path for key in keys if key in deaths]] = True
        for kind, mask, what in (
                ("unconverged", ~result.path_converged & ~result.path_stalled,
                 "hit their step cap before converging. Raise the path step cap."),
                ("stalled", result.path_stalled,
                 "stalled: their step size collapsed before they converged.")):
            count = int(np.sum(mask & ends_bar))
            if count:
                problems.append(Problem(
                    kind, CAUTION, count,
                    f"{count} of the {int(ends_bar.sum())} paths that end a bar {what} Those "
                    f"bars' lengths are upper bounds ({int(np.sum(mask))} of all "
                    f"{len(mask)} paths)."))
        weak = sum(1 for key in keys if not (key in deaths and deaths[key].certified))
        if weak:
            problems.append(Problem(
                "uncertified_deaths", CAUTION, weak,
                f"{weak} of {int(finite.sum())} finite bars have an uncertified death (see "
                "the bar table for why): their lengths are upper bounds."))
    return RunHealth(tuple(sorted(problems, key=lambda p: p.severity != BROKEN)))


def _dip_problem(result: Result, certified: np.ndarray, problems: list[Problem]) -> None:
    """Paths below both their minima: a lower basin between certified minima (caution), a
    sign of unfinished training below uncertified ones (broken when far)."""
    atol = result.config.path_atol
    dips = np.nan_to_num(path_dips(result), nan=0.0)
    below = np.flatnonzero(dips > atol)
    if not below.size:
        return
    worst = float(dips.max())
    ends_certified = certified[result.pairs[below]].all(axis=1) if len(certified) else \
        np.zeros(below.size, dtype=bool)
    far = bool(np.any(~ends_certified & (dips[below] > DIP_BROKEN * atol)))
    problems.append(Problem(
        "below_minima", BROKEN if far else CAUTION, int(below.size),
        f"{below.size} of {len(dips)} paths go below both their endpoints, by up to "
        f"{worst:.3g} in loss ({worst / atol:.3g}× the resolution {atol:g}): "
        + ("the trained networks are far from minima. Train longer." if far else
           "they pass through a lower basin between the two minima (a lower point a bar can "
           "die into through another path).")))
