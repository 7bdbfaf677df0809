"""The health of a run: each check fires on the defect it names and only then."""

import dataclasses

import numpy as np
import pytest

from lossbarcode import health
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import summarize, sweep_records

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=4, steps=60, batch_size=32,
                        polish_steps=50, images=2, path_max_steps=200, eval_points=2,
                        device="cpu")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A tiny converged-paths run with every problem but the chosen one removed."""
    r = run_experiment(TINY, ResultStore(tmp_path_factory.mktemp("results")))
    profiles = tuple((t, np.maximum(loss, max(r.train_loss[i], r.train_loss[j])))
                     for (t, loss), (i, j) in zip(r.profiles, r.pairs, strict=True))
    m = len(r.pairs)
    return dataclasses.replace(r, profiles=profiles, grad_norm=np.zeros(r.k),
                               minima_certified=np.ones(r.k, dtype=bool),
                               stuck=np.zeros(r.k, dtype=bool), minima_reasons=("",) * r.k,
                               path_converged=np.ones(m, dtype=bool),
                               path_stalled=np.zeros(m, dtype=bool),
                               path_top_grad_norm=np.zeros(m))


def kinds(found: health.RunHealth) -> list[str]:
    return [p.kind for p in found.problems]


def test_a_clean_run_is_healthy(clean):
    found = health.run_health(clean)
    assert found.healthy and not found.broken and found.summary() == found.state == "healthy"
    assert np.all(health.path_dips(clean) == 0)


def test_diverged_minima_make_a_run_broken(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[1] = True
    found = health.run_health(dataclasses.replace(clean, diverged=diverged))
    assert kinds(found) == ["diverged"] and found.broken
    assert found.problems[0].count == 1 and "Lower the learning rate" in found.problems[0].message


def test_a_path_below_its_minima_is_a_caution_then_broken_when_far_below_uncertified_ones(
        clean):
    atol = clean.config.path_atol
    i, j = clean.pairs[0]
    lower = min(clean.train_loss[i], clean.train_loss[j])
    uncertified = clean.minima_certified.copy()
    uncertified[[i, j]] = False
    for dip, certified, severity in (
            (0.5 * atol, clean.minima_certified, None),
            (3 * atol, clean.minima_certified, health.CAUTION),
            # Far below certified minima: a lower basin the path crosses, a finding.
            (2 * health.DIP_BROKEN * atol, clean.minima_certified, health.CAUTION),
            # Far below uncertified ones: the networks were not trained to minima.
            (2 * health.DIP_BROKEN * atol, uncertified, health.BROKEN)):
        t, loss = clean.profiles[0]
        bent = loss.copy()
        bent[len(bent) // 2] = lower - dip
        r = dataclasses.replace(clean, profiles=((t, bent), *clean.profiles[1:]),
                                minima_certified=certified)
        assert health.path_dips(r)[0] == pytest.approx(dip)
        found = {p.kind: p for p in health.run_health(r).problems}
        if severity is None:
            assert not found
        else:
            assert found["below_minima"].severity == severity
            assert found["below_minima"].count == 1


def test_uncertified_minima_are_a_caution_then_broken_when_most_are(clean):
    few = clean.minima_certified.copy()
    few[0] = False
    reasons = ("gradient 0.3 > tol 0.001",) + clean.minima_reasons[1:]
    found = health.run_health(dataclasses.replace(clean, minima_certified=few,
                                                  minima_reasons=reasons))
    assert kinds(found) == ["uncertified"] and not found.broken
    assert "gradient" in found.problems[0].message
    most = np.zeros(clean.k, dtype=bool)
    most[0] = True
    found = health.run_health(dataclasses.replace(clean, minima_certified=most))
    assert found.broken and kinds(found) == ["uncertified"]


def test_a_broken_run_certifies_no_bar(clean):
    assert clean.bar_certified()[np.isfinite(clean.barcode.deaths)].all()
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[1] = True
    broken = dataclasses.replace(clean, diverged=diverged)
    assert health.run_health(broken).broken
    certified, reasons = broken.bar_certificates()
    assert not certified.any() and all("broken" in why for why in reasons)
    assert broken.certified[0] == 0


def test_unconverged_stalled_and_stuck_are_cautions(clean):
    m = len(clean.pairs)
    converged, stalled = np.ones(m, dtype=bool), np.zeros(m, dtype=bool)
    finite = np.isfinite(clean.barcode.deaths)
    ends = [clean.deaths()[tuple(sorted(int(v) for v in e))].path
            for e in clean.barcode.saddle_edges[finite]]
    assert len(ends) >= 2  # the premise: two paths that end bars
    converged[ends[:2]] = False
    stalled[ends[1]] = True
    stuck = np.zeros(clean.k, dtype=bool)
    stuck[0] = True
    found = health.run_health(dataclasses.replace(clean, path_converged=converged,
                                                  path_stalled=stalled, stuck=stuck))
    assert not found.broken
    assert {p.kind: p.count for p in found.problems}.items() >= {
        "stuck": 1, "unconverged": 1, "stalled": 1}.items()


def test_a_capped_start_beaten_by_a_lower_path_of_its_pair_is_no_caution(clean):
    # One more start of a bar's pair that ended higher and capped: it ends no bar.
    finite = np.flatnonzero(np.isfinite(clean.barcode.deaths))
    i, j = sorted(int(v) for v in clean.barcode.saddle_edges[finite[0]])
    row = clean.deaths()[(i, j)].path
    beaten = dataclasses.replace(
        clean, pairs=np.vstack([clean.pairs, [[i, j]]]),
        path_barriers=np.append(clean.path_barriers, clean.path_barriers[row] + 1.0),
        linear_barriers=np.append(clean.linear_barriers, clean.linear_barriers[row]),
        path_converged=np.append(clean.path_converged, False),
        path_stalled=np.append(clean.path_stalled, False),
        path_top_grad_norm=np.append(clean.path_top_grad_norm, 0.5),
        profiles=(*clean.profiles, clean.profiles[row]))
    assert "unconverged" not in kinds(health.run_health(beaten))
    assert beaten.deaths()[(i, j)].spread == pytest.approx(1.0)  # still shown as spread
    # Capping the path that does end the bar is a caution again.
    capped = dataclasses.replace(beaten, path_converged=np.append(
        np.where(np.arange(len(clean.pairs)) == row, False, clean.path_converged), False))
    assert {p.kind: p.count for p in health.run_health(capped).problems}["unconverged"] == 1


def test_old_paths_are_a_caution(clean):
    found = health.run_health(dataclasses.replace(clean, paths_version=2))
    assert "old_paths" in kinds(found) and not found.broken


def test_broken_comes_first_and_is_serialisable(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[2] = True
    stuck = np.zeros(clean.k, dtype=bool)
    stuck[0] = True
    found = health.run_health(dataclasses.replace(clean, diverged=diverged, stuck=stuck))
    assert kinds(found)[0] == "diverged" and "stuck" in kinds(found)
    data = found.to_dict()
    assert data["broken"] and [p["kind"] for p in data["problems"]] == kinds(found)


def test_pooled_sweep_summaries_leave_out_broken_and_under_certified_runs(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[0] = True
    broken = dataclasses.replace(clean, diverged=diverged,
                                 scores={k: v + 10 for k, v in clean.scores.items()})
    # Not broken (3 of 4 certified is over half), but under the curves' 90%.
    short = clean.minima_certified.copy()
    short[1] = False
    under = dataclasses.replace(clean, minima_certified=short,
                                scores={k: v + 20 for k, v in clean.scores.items()})
    records = sweep_records([clean, broken, under])
    assert [r["broken"] for r in records] == [False, True, False]
    assert [r["minima_certified"] for r in records] == [clean.k, clean.k, clean.k - 1]
    kept = summarize(records)
    assert kept[0]["runs"] == 1 and kept[0]["runs_left_out"] == 2
    assert kept[0]["to_score_mean"] == pytest.approx(clean.score)
    both = summarize(records, include_broken=True)
    assert both[0]["runs"] == 3 and both[0]["runs_left_out"] == 0
    assert summarize(records[1:]) == []  # a scale with no usable run has no row
