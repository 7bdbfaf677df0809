"""The health of a run: each check fires on the defect it names and only then."""

import dataclasses

import numpy as np
import pytest

from lossbarcode import health
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.store import ResultStore
from lossbarcode.sweep import summarize, sweep_records

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=4, steps=60, batch_size=32,
                        images=2, path_max_steps=200, eval_points=2, device="cpu")


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A tiny converged-paths run with every problem but the chosen one removed."""
    r = run_experiment(TINY, ResultStore(tmp_path_factory.mktemp("results")))
    profiles = tuple((t, np.maximum(loss, max(r.train_loss[i], r.train_loss[j])))
                     for (t, loss), (i, j) in zip(r.profiles, r.pairs, strict=True))
    return dataclasses.replace(r, profiles=profiles, grad_norm=np.zeros(r.k),
                               path_converged=np.ones(len(r.pairs), dtype=bool))


def kinds(found: health.RunHealth) -> list[str]:
    return [p.kind for p in found.problems]


def test_a_clean_run_is_healthy(clean):
    found = health.run_health(clean)
    assert found.healthy and not found.broken and found.summary() == "healthy"
    assert np.all(health.path_dips(clean) == 0)


def test_diverged_minima_make_a_run_broken(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[1] = True
    found = health.run_health(dataclasses.replace(clean, diverged=diverged))
    assert kinds(found) == ["diverged"] and found.broken
    assert found.problems[0].count == 1 and "Lower the learning rate" in found.problems[0].message


def test_a_path_below_its_minima_is_a_caution_then_broken_when_far(clean):
    atol = clean.config.path_atol
    i, j = clean.pairs[0]
    lower = min(clean.train_loss[i], clean.train_loss[j])
    for dip, severity in ((0.5 * atol, None), (3 * atol, health.CAUTION),
                          (2 * health.DIP_BROKEN * atol, health.BROKEN)):
        t, loss = clean.profiles[0]
        bent = loss.copy()
        bent[len(bent) // 2] = lower - dip
        r = dataclasses.replace(clean, profiles=((t, bent), *clean.profiles[1:]))
        assert health.path_dips(r)[0] == pytest.approx(dip)
        found = health.run_health(r)
        if severity is None:
            assert found.healthy
        else:
            assert kinds(found) == ["below_minima"] and found.problems[0].severity == severity
            assert found.problems[0].count == 1


def test_large_gradients_and_unconverged_paths_are_cautions(clean):
    grad = np.zeros(clean.k)
    grad[0] = 10 * health.GRAD_NORM_LARGE
    converged = np.ones(len(clean.pairs), dtype=bool)
    converged[:2] = False
    found = health.run_health(dataclasses.replace(clean, grad_norm=grad,
                                                  path_converged=converged))
    assert kinds(found) == ["gradient", "unconverged"] and not found.broken
    assert [p.count for p in found.problems] == [1, 2]
    assert found.summary().startswith("caution: 1 minima with a large gradient; 2 unconverged")


def test_old_fixed_budget_paths_are_a_caution(clean):
    found = health.run_health(dataclasses.replace(clean, paths_version=1))
    assert kinds(found) == ["old_paths"] and not found.broken


def test_broken_comes_first_and_is_serialisable(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[2] = True
    grad = np.full(clean.k, 2 * health.GRAD_NORM_LARGE)
    found = health.run_health(dataclasses.replace(clean, diverged=diverged, grad_norm=grad))
    assert kinds(found) == ["diverged", "gradient"]
    data = found.to_dict()
    assert data["broken"] and [p["kind"] for p in data["problems"]] == kinds(found)


def test_pooled_sweep_summaries_leave_broken_runs_out_unless_asked(clean):
    diverged = np.zeros(clean.k, dtype=bool)
    diverged[0] = True
    broken = dataclasses.replace(clean, diverged=diverged,
                                 scores={k: v + 10 for k, v in clean.scores.items()})
    records = sweep_records([clean, broken])
    assert [r["broken"] for r in records] == [False, True]
    kept = summarize(records)
    assert kept[0]["runs"] == 1 and kept[0]["runs_left_out"] == 1
    assert kept[0]["to_score_mean"] == pytest.approx(clean.score)
    both = summarize(records, include_broken=True)
    assert both[0]["runs"] == 2 and both[0]["runs_left_out"] == 0
    assert summarize(records[1:]) == []  # a scale with only broken runs has no row
