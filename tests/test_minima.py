"""Tests for lossbarcode.minima: K networks trained together."""

from __future__ import annotations

import warnings

import closed_forms
import numpy as np
import pytest
import torch

from lossbarcode import choices, data, models
from lossbarcode.landscape import Landscape
from lossbarcode.minima import (
    Minima,
    certify,
    escape_saddles,
    find_minima,
    lbfgs,
    lr_at,
    stuck_mask,
)
from lossbarcode.seeds import network_seeds


def _digits(dtype=torch.float32):
    ds = data.load("digits", n_train=256, n_test=128)
    model = models.build("fcn", 16, 1, ds.input_shape, ds.n_outputs, seed=0)
    return Landscape.from_dataset(model, ds, device="cpu", dtype=dtype)


@pytest.fixture(scope="module")
def land():
    return _digits()


# Tests of the minibatch phase keep the full-batch phase and the curvature check short.
QUICK = {"polish_steps": 5, "lanczos_iters": 4}


def test_find_minima_trains_all_networks(land):
    calls = []
    mins = find_minima(land, 4, steps=150, batch_size=32, lr=0.05,
                       progress=lambda s, t, loss: calls.append((s, t, loss)), **QUICK)
    assert mins.thetas.shape == (4, land.n_params) and mins.thetas.device.type == "cpu"
    for arr in (mins.train_loss, mins.test_loss, mins.test_error, mins.diverged, mins.seeds):
        assert arr.shape == (4,)
    assert not mins.diverged.any()
    init_loss = land.loss(land.init_from_seeds(mins.seeds)).numpy()
    assert np.all(mins.train_loss < 0.5 * init_loss)
    assert np.all((mins.test_error >= 0) & (mins.test_error <= 1))
    assert len(set(map(tuple, mins.thetas[:, :5].tolist()))) == 4  # distinct networks
    torch.testing.assert_close(torch.as_tensor(mins.train_loss, dtype=torch.float32),
                               land.loss(mins.thetas))
    assert calls and calls[-1][0] == 150 and calls[-1][1] == 150
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert mins.history_loss.shape == (len(mins.history_steps), 4)


def test_same_seed_identical_results(land):
    a = find_minima(land, 3, steps=40, batch_size=32, seed=7, **QUICK)
    b = find_minima(land, 3, steps=40, batch_size=32, seed=7, **QUICK)
    assert torch.equal(a.thetas, b.thetas)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.test_error, b.test_error)
    c = find_minima(land, 3, steps=40, batch_size=32, seed=8, **QUICK)
    assert not torch.equal(a.thetas, c.thetas)


def test_network_does_not_depend_on_k(land):
    a = find_minima(land, 2, steps=30, batch_size=32, seed=1, **QUICK)
    b = find_minima(land, 3, steps=30, batch_size=32, seed=1, **QUICK)
    torch.testing.assert_close(a.thetas, b.thetas[:2])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_batched_optimizer_matches_torch_optim(land, optimizer):
    """One network trained by find_minima equals nn.Module + torch.optim on the same data."""
    from lossbarcode.minima import _Sampler, train_minibatch

    steps, bs, lr = 25, 32, 0.05 if optimizer == "sgd" else 0.01
    seeds = network_seeds(3, 2)
    # The minibatch phase alone (find_minima then moves on to full-batch L-BFGS).
    thetas, active, _, _ = train_minibatch(land, land.init_from_seeds(seeds), seeds,
                                            optimizer, lr, "constant", steps, bs, 0.9,
                                            (0.9, 0.999), 1e-8, 1e-3, 1, None)
    assert active.all()
    for i in range(2):
        net = land.unflatten(land.init_from_seeds(seeds[i : i + 1])[0])
        opt = (torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
               if optimizer == "sgd"
               else torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-3))
        sampler = _Sampler(land.n_train, bs, seeds[i : i + 1], land.device)
        for _ in range(steps):
            idx, _ = sampler.next()
            opt.zero_grad()
            land.loss_fn(net(land.x_train[idx[0]]), land.y_train[idx[0]]).backward()
            opt.step()
        torch.testing.assert_close(thetas[i], land.flatten(net), rtol=1e-4, atol=1e-5)


def test_schedules(land):
    assert lr_at(0, 100, 0.1, "constant") == lr_at(99, 100, 0.1, "constant") == 0.1
    assert lr_at(0, 100, 0.1, "anneal") == pytest.approx(0.1)
    assert lr_at(50, 100, 0.1, "anneal") == pytest.approx(0.05)
    assert lr_at(100, 100, 0.1, "anneal") == pytest.approx(0.0)
    a = find_minima(land, 2, steps=30, batch_size=32, schedule="anneal", **QUICK)
    c = find_minima(land, 2, steps=30, batch_size=32, schedule="constant", **QUICK)
    assert not torch.equal(a.thetas, c.thetas)
    assert a.config()["schedule"] == "anneal"


def test_full_batch_training(land):
    mins = find_minima(land, 2, steps=20, batch_size=10_000, optimizer="adam", lr=0.01,
                       **QUICK)
    assert mins.batch_size == land.n_train
    assert np.all(np.isfinite(mins.train_loss))


def test_divergence_is_masked_not_raised(land):
    with pytest.warns(RuntimeWarning, match="diverged"):
        mins = find_minima(land, 3, steps=40, batch_size=32, lr=1e12, **QUICK)
    assert mins.diverged.any()
    assert np.all(np.isnan(mins.train_loss[mins.diverged]))
    assert np.all(np.isnan(mins.test_error[mins.diverged]))
    assert torch.isfinite(mins.thetas).all()  # frozen at the last finite parameters
    assert set(mins.valid) == set(np.flatnonzero(~mins.diverged))


def test_no_warning_without_divergence(land):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        find_minima(land, 2, steps=10, batch_size=32, **QUICK)


def test_regression_task_has_nan_test_error():
    ds = data.load("teacher", n_train=64, n_test=32)
    model = models.build("fcn", 8, 1, ds.input_shape, ds.n_outputs, seed=0)
    land = Landscape.from_dataset(model, ds, device="cpu")
    mins = find_minima(land, 2, steps=20, batch_size=16, lr=0.01, **QUICK)
    assert np.all(np.isnan(mins.test_error))
    assert np.all(np.isfinite(mins.test_loss))


def test_to_arrays_roundtrip(land, tmp_path):
    mins = find_minima(land, 2, steps=10, batch_size=32, **QUICK)
    path = tmp_path / "m.npz"
    np.savez(path, **mins.to_arrays())
    with np.load(path) as f:
        back = Minima.from_arrays(f)
    assert torch.equal(back.thetas, mins.thetas)
    np.testing.assert_array_equal(back.train_loss, mins.train_loss)
    assert back.config() == mins.config()
    with pytest.raises(ValueError, match="lack field"):
        Minima.from_arrays({"thetas": np.zeros((2, 3))})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 1}, "k must"),
        ({"k": 2, "optimizer": "rmsprop"}, "optimizer"),
        ({"k": 2, "schedule": "cyclic"}, "schedule"),
        ({"k": 2, "lr": 0.0}, "lr"),
        ({"k": 2, "lr": float("nan")}, "lr"),
        ({"k": 2, "steps": 0}, "steps"),
        ({"k": 2, "batch_size": 0}, "batch_size"),
        ({"k": 2, "momentum": 1.0}, "momentum"),
        ({"k": 2.5}, "k must"),
        ({"k": 2, "tol": 0.0}, "tol"),
        ({"k": 2, "tol": -1e-3}, "tol"),
        ({"k": 2, "tol": float("nan")}, "tol"),
        ({"k": 2, "tol": float("inf")}, "tol"),
        ({"k": 2, "tol": 2 * choices.MINIMA_TOL_MAX}, "tol"),
        ({"k": 2, "tol": True}, "tol"),
        ({"k": 2, "polish_steps": 0}, "polish_steps"),
        ({"k": 2, "polish_steps": -1}, "polish_steps"),
        ({"k": 2, "polish_steps": 1.5}, "polish_steps"),
        ({"k": 2, "lanczos_iters": 0}, "lanczos_iters"),
        ({"k": 2, "saddle_rounds": -1}, "saddle_rounds"),
    ],
)
def test_bad_input(land, kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_minima(land, **kwargs)


def test_full_batch_phase_reaches_tol_and_certifies(land):
    calls = []
    mins = find_minima(land, 3, steps=150, batch_size=32, lr=0.05,
                       progress=lambda s, t, loss: calls.append((s, t, loss)))
    # Every network leaves at a critical point: full-batch gradient norm <= tol, recomputed.
    full = land.grad(mins.thetas).double().norm(dim=1).numpy()
    np.testing.assert_allclose(mins.grad_norm, full, rtol=1e-4)
    assert np.all(mins.grad_norm <= mins.tol) and mins.tol == choices.MINIMA_TOL
    assert np.all(mins.hessian_min_eig >= -mins.tol) and mins.curvature_skipped == ""
    assert not mins.stuck.any() and mins.certified.all()
    assert mins.certificate_reasons() == ["", "", ""]
    assert np.all(mins.polish_steps_used >= 1) and np.all(
        mins.polish_steps_used <= mins.polish_steps)
    np.testing.assert_allclose(mins.initial_loss,
                               land.loss(land.init_from_seeds(mins.seeds)).double().numpy())
    # The progress callback also runs during the full-batch phase, at (steps, steps, loss).
    full_batch = [c for c in calls if c[0] == 150]
    assert len(full_batch) > 1 and all(c[1] == 150 for c in full_batch)


def test_a_capped_full_batch_phase_is_not_certified(land):
    mins = find_minima(land, 2, steps=30, batch_size=32, lr=0.05, polish_steps=1)
    assert np.all(mins.polish_steps_used == 1) and mins.polish_steps == 1
    assert np.all(mins.grad_norm > mins.tol) and not mins.certified.any()
    for reason, g in zip(mins.certificate_reasons(), mins.grad_norm, strict=True):
        assert reason.startswith(f"gradient {g:.2g} > tol 0.001")


def test_stuck_network_is_flagged_not_certified():
    """An fcn started at all-zero weights only moves its output bias (every ReLU is off, so no
    other gradient): it ends at the label prior, a critical point with no negative curvature,
    at the loss it started from. Stuck, not diverged, not certified."""
    ds = data.load("digits", n_train=256, n_test=64)

    def zeros(seed):
        net = models.build("fcn", 8, 2, ds.input_shape, ds.n_outputs, seed=seed)
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        return net

    land = Landscape.from_dataset(zeros(0), ds, device="cpu", init_fn=zeros)
    mins = find_minima(land, 2, steps=50, batch_size=32, lr=0.05)
    assert mins.stuck.all() and not mins.diverged.any() and not mins.certified.any()
    assert np.all(mins.grad_norm <= mins.tol)
    assert np.all(mins.train_loss > choices.STUCK_RATIO * mins.initial_loss)
    for reason in mins.certificate_reasons():
        assert "stuck: loss" in reason and "at the start" in reason


def _closed_form(fn, starts):
    """A landscape whose loss is the closed form ``fn``, and whose network ``i`` starts at
    ``starts[i]``."""
    return closed_forms.landscape(fn, len(starts[0]), starts)


_camel, _quartic = closed_forms.camel, closed_forms.quartic


CAMEL_MINIMA = np.array([[0.0, 0.0], [1.747552, -0.873776], [-1.747552, 0.873776]])
CAMEL_SADDLES = np.array([[1.070542, -0.535271], [-1.070542, 0.535271]])


def _still(land, k, **kwargs):
    """find_minima with a minibatch phase that does not move: only the full-batch phase and
    the certificate act."""
    return find_minima(land, k, steps=1, lr=1e-12, batch_size=1, **kwargs)


def test_camel_minima_certify():
    # Started near each minimum, well above it (a loss clearly below the start's).
    land = _closed_form(_camel, [[0.4, 0.4], [1.95, -0.6], [-1.95, 0.6]])
    mins = _still(land, 3)
    np.testing.assert_allclose(mins.thetas.numpy(), CAMEL_MINIMA, atol=1e-3)
    np.testing.assert_allclose(mins.train_loss, [0.0, 0.298638, 0.298638], atol=1e-6)
    assert mins.certified.all() and np.all(mins.hessian_min_eig > 0.5)


@pytest.mark.parametrize("rounds", [0, 2])
def test_camel_saddles_are_never_certified(rounds):
    """Started at the saddles (to float32 rounding: gradient ~1e-7, far below tol), training
    must not end there certified: without escape rounds the saddle is caught by its negative
    curvature; with them, the networks descend to certified minima."""
    land = _closed_form(_camel, CAMEL_SADDLES.tolist())
    mins = _still(land, 2, saddle_rounds=rounds)
    at_saddle = np.linalg.norm(mins.thetas.numpy() - CAMEL_SADDLES, axis=1) < 1e-3
    assert not (mins.certified & at_saddle).any()
    if rounds == 0:
        assert at_saddle.all() and np.all(mins.hessian_min_eig < -3)
        assert all(r.startswith("negative curvature -4") for r in mins.certificate_reasons())
    else:
        assert mins.certified.all() and not at_saddle.any()
        dist = np.linalg.norm(mins.thetas.numpy()[:, None] - CAMEL_MINIMA[None], axis=2)
        assert np.all(dist.min(axis=1) < 1e-3)
        assert np.all(mins.train_loss < 0.877362 - 0.5)


def test_quartic_maximum_is_never_a_certified_maximum():
    land = _closed_form(_quartic, [[0.050254], [0.050254]])
    mins = _still(land, 2)
    x = mins.thetas.numpy()[:, 0]
    assert not (mins.certified & (np.abs(x - 0.050254) < 1e-2)).any()
    # The escape leaves the maximum for one of the two minima.
    assert np.all(np.minimum(np.abs(x + 0.730893), np.abs(x - 0.680639)) < 1e-3)
    assert mins.certified.all()


def test_escape_saddles_takes_a_sufficient_decrease_step():
    land = _closed_form(_camel, CAMEL_SADDLES.tolist())
    thetas = torch.tensor(CAMEL_SADDLES)
    loss = land.loss(thetas)
    lam = torch.full((2,), -4.0387, dtype=torch.float64)
    h = np.array([[4 - 12.6 * 1.070542**2 + 5 * 1.070542**4, 1], [1, 2]])
    v = torch.as_tensor(np.linalg.eigh(h)[1][:, 0]).expand(2, 2)
    new, moved = escape_saddles(land, thetas, loss, v, lam)
    assert moved.all()
    step = (new - thetas).norm(dim=1)
    assert torch.all(land.loss(new) <= loss + 0.25 * lam * step**2)
    # A direction of positive curvature gives no qualifying step: nothing moves.
    flat, moved = escape_saddles(land, torch.zeros(2, 2, dtype=torch.float64),
                                 torch.zeros(2, dtype=torch.float64),
                                 torch.eye(2, dtype=torch.float64), lam)
    assert not moved.any() and torch.equal(flat, torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lbfgs_converges_freezes_rows_and_isolates_nan(land, dtype):
    land = _digits(dtype)
    start = find_minima(land, 3, steps=60, batch_size=32, polish_steps=1,
                        lanczos_iters=1).thetas.to(dtype)
    out = lbfgs(land, start, 1e-3, 300)
    assert out.converged.all() and torch.all(out.grad_norm <= 1e-3)
    assert torch.all(out.loss <= land.loss(start))
    torch.testing.assert_close(out.grad_norm, land.grad(out.thetas).double().norm(dim=1),
                               rtol=1e-3, atol=1e-7)
    # A row already at tol takes no step; an inactive row stays where it is.
    again = lbfgs(land, out.thetas, 1e-3, 300, active=torch.tensor([True, False, True]))
    assert torch.equal(again.thetas, out.thetas) and torch.all(again.steps == 0)
    # A NaN row never runs and never changes the others.
    bad = start.clone()
    bad[1] = float("nan")
    mixed = lbfgs(land, bad, 1e-3, 300)
    assert mixed.steps[1] == 0 and not mixed.converged[1]
    torch.testing.assert_close(mixed.thetas[[0, 2]], out.thetas[[0, 2]])


def test_certify_rule_and_reasons():
    nan = float("nan")
    cert, reasons = certify(
        grad_norm=[1e-4, 0.31, 1e-4, 1e-4, nan, 1e-4],
        hessian_min_eig=[0.5, 0.5, -0.05, -5e-4, nan, nan],
        stuck=[False, False, False, True, False, False],
        diverged=[False, False, False, False, True, False], tol=1e-3,
        train_loss=[0.1, 0.1, 0.1, 2.30, nan, 0.1], initial_loss=[2.3, 2.3, 2.3, 2.31, 2.3, 2.3],
        curvature_skipped="too large")
    # The last: a model too large for the curvature check is gradient-certified only.
    assert cert.tolist() == [True, False, False, False, False, True]
    assert reasons == ["", "gradient 0.31 > tol 0.001", "negative curvature -0.05",
                       "stuck: loss 2.3, 2.31 at the start", "diverged", ""]
    # Without a stated reason an unknown curvature certifies nothing.
    cert, reasons = certify([1e-4], [nan], [False], [False], 1e-3)
    assert not cert[0] and reasons == ["curvature not checked"]
    with pytest.raises(ValueError, match="shape"):
        certify([0.0], [0.0, 1.0], [False], [False], 1e-3)
    np.testing.assert_array_equal(
        stuck_mask([0.5, 2.0, 0.0, -0.4, nan], [2.3, 2.1, 0.0, -0.3, nan],
                   [False, False, False, False, True]),
        [False, True, True, False, False])


def test_training_defaults_per_family(land):
    for arch in ("fcn", "cnn", "resnet", "transformer"):
        opt, lr, steps, cap = choices.training(arch)
        assert opt in choices.OPTIMIZERS and lr > 0 and steps >= 1 and cap >= 1
    assert choices.training(None)[0] == choices.OPTIMIZER
    mins = find_minima(land, 2, steps=20, batch_size=32, polish_steps=1, lanczos_iters=1)
    assert (mins.optimizer, mins.lr) == choices.training("fcn")[:2]


def test_minima_without_certificate_are_not_certified():
    k = 2
    mins = Minima(thetas=torch.zeros(k, 3), train_loss=np.zeros(k), test_loss=np.zeros(k),
                  test_error=np.zeros(k), diverged=np.zeros(k, dtype=bool), seeds=np.arange(k),
                  history_steps=np.zeros(0, dtype=np.int64), history_loss=np.zeros((0, k)),
                  optimizer="sgd", lr=0.05, schedule="constant", steps=0, batch_size=1,
                  momentum=0.9, weight_decay=0.0, seed=0, grad_norm=np.zeros(k))
    assert not mins.certified.any() and np.isnan(mins.hessian_min_eig).all()
    assert mins.certificate_reasons() == ["curvature not checked (not computed)"] * k
    back = Minima.from_arrays(mins.to_arrays())
    assert back.curvature_skipped == mins.curvature_skipped and not back.certified.any()


def test_certificate_round_trip_and_refusals(land, tmp_path):
    mins = find_minima(land, 2, steps=30, batch_size=32, polish_steps=300)
    path = tmp_path / "m.npz"
    np.savez(path, **mins.to_arrays())
    with np.load(path) as f:
        back = Minima.from_arrays(f)
    for name in ("grad_norm", "hessian_min_eig", "stuck", "initial_loss",
                 "polish_steps_used", "certified"):
        np.testing.assert_array_equal(getattr(back, name), getattr(mins, name))
        assert getattr(back, name).dtype == getattr(mins, name).dtype
    assert (back.tol, back.curvature_skipped, back.polish_steps) == (
        mins.tol, mins.curvature_skipped, 300)
    assert back.certificate_reasons() == mins.certificate_reasons()
    arrays = mins.to_arrays()
    old = {key: v for key, v in arrays.items() if key not in ("certified", "tol")}
    with pytest.raises(ValueError, match="lack field"):
        Minima.from_arrays(old)  # stored before certificates: recomputed, not guessed
    edits = [("certified", ~arrays["certified"], "certified disagrees"),
             ("hessian_min_eig", np.array([-1.0, -1.0]), "certified disagrees"),
             ("stuck", np.array([1, 0]), "stuck must be a bool"),
             ("grad_norm", np.zeros(3), "grad_norm must have shape"),
             ("polish_steps_used", np.array([-1, 2]), "polish_steps_used"),
             ("tol", np.asarray(5.0), "tol must lie"),
             ("curvature_skipped", np.asarray(3), "curvature_skipped")]
    for key, value, match in edits:
        with pytest.raises(ValueError, match=match):
            Minima.from_arrays({**arrays, key: value})


def test_bench_minima_tables(capsys):
    from lossbarcode.bench.minima import Case, method_benchmark, training_benchmark
    from lossbarcode.cli import _print_rows

    case = Case("fcn", 8, 1)
    training = training_benchmark((case,), k=2)
    assert [r["training"] for r in training] == ["new", "old"]
    new, old = training
    assert new["certified"] == "2/2" and new["max_grad_norm"] <= choices.MINIMA_TOL
    assert old["steps"] == 2000 and old["max_grad_norm"] > new["max_grad_norm"]
    methods = method_benchmark((case,), k=2, cap=40)
    assert [r["method"] for r in methods] == ["batched L-BFGS", "backtracking GD",
                                              "torch LBFGS per network"]
    assert all(1 <= r["iterations"] <= 40 and r["evaluations"] >= 1 for r in methods)
    _print_rows(training, "training")
    _print_rows(methods, "methods")
    out = capsys.readouterr().out
    assert "fcn 8x1 digits" in out and "torch LBFGS per network" in out
