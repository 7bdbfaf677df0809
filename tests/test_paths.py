"""Tests for lossbarcode.paths: linear, NEB and Bezier paths, barriers, plane slices."""

from __future__ import annotations

import dataclasses

import closed_forms
import numpy as np
import pytest
import torch

from lossbarcode import choices, data, models
from lossbarcode import paths as paths_mod
from lossbarcode.certificates import death_certificates
from lossbarcode.landscape import Landscape
from lossbarcode.minima import Minima, find_minima
from lossbarcode.paths import Paths, barrier_matrix, connect
from lossbarcode.planes import plane_slice
from lossbarcode.seeds import derive_seed
from lossbarcode.topology import minima_barcode

FAST = {"images": 4, "steps": 60, "batch_size": 64, "eval_points": 2}


@pytest.fixture(scope="module")
def land():
    ds = data.load("digits", n_train=256, n_test=64)
    model = models.build("fcn", 16, 1, ds.input_shape, ds.n_outputs, seed=0)
    return Landscape.from_dataset(model, ds, device="cpu")


@pytest.fixture(scope="module")
def mins(land):
    return find_minima(land, 4, steps=200, batch_size=32, lr=0.05, schedule="anneal")


@pytest.fixture(scope="module")
def linear(land, mins):
    return connect(land, mins, "all", "linear", **FAST)


def _check_barriers(paths: Paths, mins) -> None:
    ends = np.maximum(mins.train_loss[paths.pairs[:, 0]], mins.train_loss[paths.pairs[:, 1]])
    assert np.all(paths.barriers >= ends)
    for (t, loss), b in zip(paths.profiles, paths.barriers, strict=True):
        assert t[0] == 0 and t[-1] == pytest.approx(1) and np.all(np.diff(t) >= 0)
        assert b == pytest.approx(max(loss.max(), b), rel=1e-6)


def test_linear_paths(land, mins, linear):
    assert linear.m == 6 and linear.method == "linear"
    assert linear.pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    _check_barriers(linear, mins)
    np.testing.assert_allclose(linear.barriers, linear.linear_barriers)
    # Endpoints of every chain are the minima, and their profile values are their losses.
    for (i, j), chain, loss in zip(linear.pairs, linear.images, linear.profile_loss,
                                   strict=True):
        assert chain.shape == (FAST["images"] + 2, land.n_params)
        torch.testing.assert_close(chain[0], mins.thetas[i])
        torch.testing.assert_close(chain[-1], mins.thetas[j])
        np.testing.assert_allclose(loss[[0, -1]], mins.train_loss[[i, j]], rtol=1e-5)
    assert len(linear.profile_t[0]) == (FAST["images"] + 1) * (FAST["eval_points"] + 1) + 1 + (
        choices.PATH_GOLDEN_PEAKS * (2 + choices.PATH_GOLDEN_STEPS))
    # Straight segments between trained minima cross a real barrier on digits.
    assert np.all(linear.barriers > np.maximum(mins.train_loss[linear.pairs[:, 0]],
                                               mins.train_loss[linear.pairs[:, 1]]) + 0.05)


@pytest.mark.parametrize("method", ["neb", "bezier"])
def test_optimised_paths_beat_linear(land, mins, linear, method):
    calls = []
    paths = connect(land, mins, "all", method, seed=0,
                    progress=lambda s, t, info: calls.append(info), **FAST)
    _check_barriers(paths, mins)
    assert np.all(paths.barriers <= linear.barriers + 1e-6)
    np.testing.assert_allclose(paths.linear_barriers, linear.barriers, rtol=1e-5)
    # Not just the fallback: optimisation lowers the barriers substantially.
    assert not paths.fallback.any()
    assert paths.barriers.mean() < linear.barriers.mean() - 0.5 * (
        linear.barriers.mean() - mins.train_loss.mean())
    assert {c["stage"] for c in calls} >= {"all", "profile"}
    if method == "neb":  # AutoNEB inserted images: 4 interior + 2 cycles x 2
        assert all(c.shape[0] == FAST["images"] + 2 + 4 for c in paths.images)


def test_same_seed_identical_paths(land, mins):
    a = connect(land, mins, [(0, 1), (2, 3)], "neb", seed=3, **FAST)
    b = connect(land, mins, [(0, 1), (2, 3)], "neb", seed=3, **FAST)
    np.testing.assert_array_equal(a.barriers, b.barriers)
    for x, y in zip(a.images, b.images, strict=True):
        assert torch.equal(x, y)
    c = connect(land, mins, [(0, 1), (2, 3)], "bezier", seed=3, **FAST)
    d = connect(land, mins, [(0, 1), (2, 3)], "bezier", seed=3, **FAST)
    np.testing.assert_array_equal(c.barriers, d.barriers)


def test_pair_lists_are_validated_and_canonical(land, mins):
    paths = connect(land, mins, [(3, 1), (1, 3), (0, 2)], "linear", **FAST)
    assert paths.pairs.tolist() == [[1, 3], [0, 2]]
    assert list(paths.role) == ["list", "list"]
    for bad in ([(0, 4)], [(1, 1)], [(0, 1, 2)], [], [(-1, 0)], "some", [("a", "b")]):
        with pytest.raises(ValueError):
            connect(land, mins, bad, "linear", **FAST)


def test_mst_pairs_give_the_all_pairs_barcode(land):
    mins5 = find_minima(land, 5, steps=60, batch_size=32, lr=0.05)
    every = connect(land, mins5, "all", "linear", **FAST)
    planned = connect(land, mins5, "mst", "linear", **FAST)
    # The tree first (touching every minimum), then only pairs that could undercut it.
    tree = planned.pairs[planned.role == "tree"]
    assert len(tree) == 4 and set(tree.ravel()) == set(range(5))
    assert set(planned.role) <= {"tree", "shortcut"}
    assert len({tuple(p) for p in planned.pairs}) == planned.m <= every.m
    losses = mins5.train_loss
    full = minima_barcode(losses, barrier_matrix(every))
    mine = minima_barcode(losses, barrier_matrix(planned))
    np.testing.assert_allclose(mine.deaths, full.deaths)
    mat = barrier_matrix(planned)
    assert np.isfinite(mat).sum() == 5 + 2 * planned.m  # the diagonal and both triangles


def test_barrier_matrix(mins, linear):
    mat = barrier_matrix(linear)
    assert mat.shape == (4, 4)
    np.testing.assert_array_equal(mat, mat.T)
    np.testing.assert_allclose(np.diag(mat), mins.train_loss)
    assert mat[0, 1] == linear.barriers[0]
    partial = dataclasses.replace(linear, pairs=linear.pairs[:2], barriers=linear.barriers[:2])
    assert np.isinf(barrier_matrix(partial)[2, 3])
    assert barrier_matrix(linear, k=6).shape == (6, 6)
    with pytest.raises(ValueError):
        barrier_matrix(linear, k=2)


def test_diverged_minima_are_never_paired(land, mins):
    bad = dataclasses.replace(mins, diverged=np.array([False, True, False, False]),
                              train_loss=np.where([False, True, False, False], np.nan,
                                                  mins.train_loss))
    paths = connect(land, bad, "all", "linear", **FAST)
    assert 1 not in paths.pairs
    assert paths.m == 3
    mat = barrier_matrix(paths)
    assert np.isinf(mat[1]).all() and np.isinf(mat[:, 1]).all()
    with pytest.raises(ValueError, match="diverged"):
        connect(land, bad, [(0, 1)], "linear", **FAST)
    worse = dataclasses.replace(mins, diverged=np.array([True, True, True, False]))
    with pytest.raises(ValueError, match="at least 2"):
        connect(land, worse, "all", "linear", **FAST)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "string"}, "method"),
        ({"pairs": "tree"}, "pairs"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"images": 0, "method": "neb"}, "images"),
        ({"eval_points": -1}, "eval_points"),
        ({"lr": -1.0}, "lr"),
        ({"spring": 2.0}, "spring"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_input(land, mins, kwargs, match):
    with pytest.raises(ValueError, match=match):
        connect(land, mins, **{**FAST, **kwargs})


def test_paths_to_arrays_roundtrip(land, mins, linear, tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, **linear.to_arrays())
    with np.load(path) as f:
        back = Paths.from_arrays(f, linear.settings)
    np.testing.assert_array_equal(back.pairs, linear.pairs)
    np.testing.assert_array_equal(back.barriers, linear.barriers)
    for a, b in zip(back.images, linear.images, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(back.profile_loss, linear.profile_loss, strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.method == "linear" and back.settings == linear.settings


def test_plane_slice(land, mins):
    a, b, c = mins.thetas[0], mins.thetas[1], mins.thetas[2]
    sl = plane_slice(land, a, b, c, resolution=12, margin=0.2)
    assert sl.loss.shape == (12, 12) and sl.x.shape == (12,) and sl.y.shape == (12,)
    assert sl.points[0].tolist() == [0.0, 0.0] and sl.points[1, 1] == 0.0
    np.testing.assert_allclose(sl.point_loss, land.loss(torch.stack([a, b, c])).numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sl.point_loss, mins.train_loss[:3], rtol=1e-4, atol=1e-5)
    # The plane coordinates map back onto the three minima.
    for p, theta in zip(sl.points, (a, b, c), strict=True):
        torch.testing.assert_close(sl.to_params(p[0], p[1]), theta, rtol=1e-4, atol=1e-4)
    # Grid values are the loss at the mapped parameters, indexed [i_x, i_y] like every grid.
    ix, iy = 7, 3
    theta = sl.to_params(sl.x[ix], sl.y[iy])
    assert sl.loss[ix, iy] == pytest.approx(float(land.loss(theta)), rel=1e-4)
    assert sl.x.min() < 0 < sl.points[1, 0] < sl.x.max()
    with pytest.warns(DeprecationWarning, match=r"\[i_x, i_y\]"):
        assert sl.xs is sl.x and sl.ys is sl.y and sl.positions is sl.points
    with pytest.raises(ValueError, match="collinear"):
        plane_slice(land, a, b, 2 * b - a)
    with pytest.raises(ValueError, match="coincide"):
        plane_slice(land, a, a, c)
    with pytest.raises(ValueError, match="resolution"):
        plane_slice(land, a, b, c, resolution=1)


# ---------------------------------------------------------------- converged paths (version 2)


def _analytic(fn, points):
    """A two-/one-parameter Landscape whose loss is ``fn`` (it ignores the data), and its
    minima at ``points`` (the bring-your-own-model API)."""
    land = closed_forms.landscape(fn, len(points[0]))
    thetas = torch.tensor(points, dtype=torch.float64)
    k = len(points)
    mins = Minima(thetas=thetas, train_loss=land.loss(thetas).numpy(),
                  test_loss=np.full(k, np.nan), test_error=np.full(k, np.nan),
                  diverged=np.zeros(k, dtype=bool), seeds=np.arange(k),
                  history_steps=np.zeros(0, dtype=np.int64), history_loss=np.zeros((0, k)),
                  optimizer="sgd", lr=0.05, schedule="constant", steps=0, batch_size=1,
                  momentum=0.9, weight_decay=0.0, seed=0, grad_norm=np.zeros(k))
    return land, mins


_camel, _quartic = closed_forms.camel, closed_forms.quartic
CAMEL_SADDLE, QUARTIC_MAX = closed_forms.CAMEL_SADDLE, closed_forms.QUARTIC_MAX


@pytest.mark.parametrize("method", ["neb", "linear", "bezier"])
def test_three_hump_camel_barrier_is_the_saddle(method):
    land, mins = _analytic(_camel, [[1.747552, -0.873776], [0.0, 0.0], [-1.747552, 0.873776]])
    paths = connect(land, mins, [(0, 1), (1, 2), (0, 2)], method, restarts=1)
    # Every path between the basins crosses the saddle level: never below it (a barrier is
    # measured at a point of the path), and the optimised ones find it to 1e-3.
    assert np.all(paths.barriers >= CAMEL_SADDLE - 1e-6)
    np.testing.assert_allclose(paths.barriers, CAMEL_SADDLE, atol=1e-3)
    assert paths.converged.all()
    assert np.all(paths.barriers <= paths.linear_barriers)
    assert np.all(paths.barriers >= np.maximum(mins.train_loss[paths.pairs[:, 0]],
                                               mins.train_loss[paths.pairs[:, 1]]))
    for t, _ in paths.profiles:
        assert np.all(np.diff(t) >= 0)
    # The reported barrier is a value on the profile, measured at a point of the path.
    assert max(loss.max() for _, loss in paths.profiles) == pytest.approx(
        paths.barriers.max(), abs=1e-12)


def test_three_hump_camel_neb_from_a_bent_start_climbs_to_the_saddle():
    # Minima chosen so that the straight line misses the saddle: NEB must bend onto it.
    land, mins = _analytic(_camel, [[1.747552, -0.873776], [0.3, 0.6]])
    linear = connect(land, mins, [(0, 1)], "linear")
    neb = connect(land, mins, [(0, 1)], "neb")
    assert linear.barriers[0] > CAMEL_SADDLE + 0.1
    assert CAMEL_SADDLE - 1e-6 <= neb.barriers[0] <= CAMEL_SADDLE + 1e-3
    assert neb.converged[0] and not neb.fallback[0]


@pytest.mark.parametrize("method", ["neb", "linear", "bezier"])
def test_quartic_barrier_is_its_maximum(method):
    land, mins = _analytic(_quartic, [[-0.730893], [0.680639]])
    paths = connect(land, mins, [(0, 1)], method)
    assert QUARTIC_MAX - 1e-7 <= paths.barriers[0] <= QUARTIC_MAX + 1e-4
    assert paths.converged[0]


def test_default_paths_converge_with_diagnostics(land, mins):
    calls = []
    # Minimum 3 moved next to minimum 0: their path is flat at once and leaves the batch early.
    near = mins.thetas.clone()
    gen = torch.Generator().manual_seed(0)
    near[3] = near[0] + 1e-4 * torch.randn(near.shape[1], generator=gen)
    mins = dataclasses.replace(mins, thetas=near, train_loss=land.loss(near).double().numpy())
    paths = connect(land, mins, "all", "neb", progress=lambda s, t, info: calls.append(info))
    assert paths.converged.all() and not paths.stalled.any()
    assert paths.version == choices.PATHS_VERSION
    assert paths.settings["version"] == choices.PATHS_VERSION and paths.settings["steps"] is None
    floors = np.maximum(mins.train_loss[paths.pairs[:, 0]], mins.train_loss[paths.pairs[:, 1]])
    for hist, steps, used, floor in zip(paths.barrier_history, paths.history_steps,
                                        paths.steps_used, floors, strict=True):
        assert len(hist) == len(steps) >= 2  # the start and at least one check
        assert steps[0] == 0 and np.all(np.diff(steps) > 0) and steps[-1] == used
        # Converged: the last two checks are calm (within the stated tolerance), or the path
        # is at its lower bound (monotone to the resolution).
        assert (len(hist) >= 3 and abs(hist[-1] - hist[-2]) <= 0.05 * hist[-1] + 1e-4) or (
            hist[-1] <= floor + 1e-4)
    assert np.all(paths.steps_used <= 4000 + choices.PATH_FINAL_STEPS)
    assert np.all(np.isfinite(paths.perp_grad_norm)) and np.all(paths.perp_grad_norm >= 0)
    # Paths leave the batch as they converge: the batch shrinks during the run.
    active = [c["active"] for c in calls if "active" in c]
    assert max(active) == paths.m and min(active) < paths.m
    # Converged paths are better than (or equal to) a short fixed budget on the same minima.
    short = connect(land, mins, "all", "neb", steps=60, batch_size=64)
    assert not short.converged.any() and short.version == 1
    assert paths.barriers.mean() <= short.barriers.mean() + 1e-4


def test_a_path_that_hits_its_cap_is_unconverged(land, mins):
    paths = connect(land, mins, [(0, 1), (2, 3)], "neb", max_steps=50, final_steps=0,
                    restarts=1)
    assert not paths.converged.any() and not paths.stalled.any()
    np.testing.assert_array_equal(paths.steps_used, [50, 50])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"tol": 0}, "tol"), ({"tol": float("nan")}, "tol"), ({"tol": -0.1}, "tol"),
     ({"atol": 0.0}, "atol"), ({"atol": float("inf")}, "atol"), ({"max_steps": 0}, "max_steps"),
     ({"final_steps": -1}, "final_steps"), ({"cycle_steps": 0}, "cycle_steps"),
     ({"tol": True}, "tol")],
)
def test_bad_stopping_rule(land, mins, kwargs, match):
    with pytest.raises(ValueError, match=match):
        connect(land, mins, [(0, 1)], "neb", **kwargs)


def test_diagnostics_roundtrip_and_old_paths_load_unconverged(land, mins, tmp_path):
    paths = connect(land, mins, [(0, 1), (1, 3)], "neb", max_steps=100, final_steps=10)
    np.savez(tmp_path / "p.npz", **paths.to_arrays())
    with np.load(tmp_path / "p.npz") as f:
        back = Paths.from_arrays(f, paths.settings)
    np.testing.assert_array_equal(back.converged, paths.converged)
    np.testing.assert_array_equal(back.steps_used, paths.steps_used)
    np.testing.assert_array_equal(back.perp_grad_norm, paths.perp_grad_norm)
    for a, b in zip(back.barrier_history, paths.barrier_history, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(back.history_steps, paths.history_steps, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.stalled, paths.stalled)
    np.testing.assert_array_equal(back.top_grad_norm, paths.top_grad_norm)
    np.testing.assert_array_equal(back.start, paths.start)
    # Paths of an older path algorithm lack the certificates: refused, to be recomputed.
    old = {k: v for k, v in paths.to_arrays().items() if k not in ("stalled", "top_grad_norm")}
    with pytest.raises(ValueError, match="older lossbarcode"):
        Paths.from_arrays(old, {"steps": 300})
    # Content is checked, not only shapes: a barrier below its endpoint, or NaN, is refused.
    for bad in (np.nan, -1.0):
        arrays = paths.to_arrays()
        arrays["barriers"] = arrays["barriers"].copy()
        arrays["barriers"][0] = bad
        with pytest.raises(ValueError, match="higher endpoint"):
            Paths.from_arrays(arrays)
    arrays = paths.to_arrays()
    arrays["stalled"] = arrays["converged"].copy()
    if arrays["stalled"].any():
        with pytest.raises(ValueError, match="both converged and stalled"):
            Paths.from_arrays(arrays)


@pytest.mark.parametrize("method", ["linear", "neb", "bezier"])
def test_image_losses_are_read_off_the_refined_profile(land, mins, method):
    paths = connect(land, mins, [(0, 1), (2, 3)], method, max_steps=100, final_steps=10)
    for chain, at_images in zip(paths.images, paths.image_losses(), strict=True):
        np.testing.assert_allclose(at_images, land.loss(chain).double().numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_each_stage_draws_the_same_numbers_in_any_order(land, mins):
    settings = paths_mod._Settings(
        method="neb", images=2, fixed_steps=None, lr=0.05, eval_points=1, seed=3,
        optimizer="sgd", batch_size=16, spring=0.5, cycles=3, insert=2, t_samples=4, tol=0.05,
        atol=1e-4, grad_tol=1e-3, restarts=1, max_steps=50, final_steps=0, cycle_steps=10,
        climb=True)

    def draws(roles: list[str]) -> dict[str, list[torch.Tensor]]:
        engine = paths_mod._Engine(land=land, thetas=land.as_thetas(mins.thetas),
                                   minima_loss=mins.train_loss, settings=settings,
                                   progress=None)
        out: dict[str, list[torch.Tensor]] = {}
        for role in roles:
            draw = engine._batches(role)
            out[role] = [draw()[0] for _ in range(20)]  # past one epoch of 256 / 16
        return out

    standard = draws(["tree", "shortcut"])
    for other in (draws(["shortcut", "all", "tree"]), draws(["tree", "tree", "shortcut"])):
        for role in ("tree", "shortcut"):
            for a, b in zip(standard[role], other[role], strict=True):
                assert torch.equal(a, b)
    assert not torch.equal(torch.cat(standard["tree"]), torch.cat(standard["shortcut"]))
    # The stage keys are part of stored runs' numbers: pinned.
    assert [paths_mod._stage_seed(3, r) for r in ("all", "list", "tree", "shortcut",
                                                   "restart")] == [
        derive_seed(3, k) for k in (1, 2, 3, 4, 5)]
    assert paths_mod._stage_seed(3, "tree", 7) == derive_seed(3, 3, 7)


# ---------------------------------------------------------------- certified deaths (version 3)


def _two_channels(x, y, c=5.0, d=0.5):
    """Minima (+-1, 0) at 0; the straight line between them climbs to a maximum of c at the
    origin; two channels around it, over saddles near (0, 1) (about 2 + d) and (0, -1)
    (about 2 - d): on the unit circle f = 2 sin^2 + d sin^3."""
    return c * (x**2 + y**2 - 1) ** 2 + 2 * y**2 + d * y**3


def _saddle(fn, start):
    """The critical point of a 2-D closed form near ``start`` (Newton on the gradient)."""
    p = torch.tensor(start, dtype=torch.float64)
    for _ in range(50):
        p = p.detach().requires_grad_(True)
        g = torch.autograd.grad(fn(*p), p, create_graph=True)[0]
        h = torch.stack([torch.autograd.grad(g[i], p, retain_graph=True)[0] for i in range(2)])
        p = p - torch.linalg.solve(h, g)
    return float(fn(*p.detach()))


def test_restarts_find_the_lower_of_two_saddles():
    low, high = _saddle(_two_channels, [0.0, -0.9]), _saddle(_two_channels, [0.0, 0.9])
    assert 1.0 < low < high - 0.5
    land, mins = _analytic(_two_channels, [[-1.0, 0.0], [1.0, 0.0]])
    once = connect(land, mins, [(0, 1)], "neb", restarts=1)
    # From the straight line the band sits on the ridge over the origin (the gradient has no
    # sideways component there): one start alone cannot find a channel.
    assert once.barriers[0] > high
    paths = connect(land, mins, [(0, 1)], "neb")
    assert paths.m == choices.PATH_RESTARTS and set(paths.start) == {"line", "bent"}
    assert low - 1e-9 <= paths.barriers.min() <= low + 1e-6
    # Both channels were tried: one restart found each saddle.
    found = np.sort(paths.barriers[paths.start == "bent"])
    np.testing.assert_allclose(found, [low, high], atol=1e-6)
    best = int(np.argmin(paths.barriers))
    assert paths.converged[best] and paths.top_grad_norm[best] <= 1e-3
    # The starts disagree: the death is not certified, and the certificate says why.
    deaths = death_certificates(paths.pairs, paths.barriers, paths.converged, paths.stalled,
                                paths.top_grad_norm, mins.train_loss, tol=0.05, atol=1e-4,
                                grad_tol=1e-3)
    assert not deaths[(0, 1)].certified and "restarts disagree" in deaths[(0, 1)].reason
    assert deaths[(0, 1)].barrier == paths.barriers.min()


def test_a_bent_start_on_the_camel_reaches_the_saddle():
    land, mins = _analytic(_camel, [[1.747552, -0.873776], [0.0, 0.0]])
    a, c = land.as_thetas(mins.thetas)
    f = torch.linspace(0, 1, 8, dtype=torch.float64)[:, None]
    bent = a + f * (c - a) + torch.sin(torch.pi * f) * torch.tensor([0.6, 1.2],
                                                                     dtype=torch.float64)
    engine = paths_mod._Engine(land=land, thetas=land.as_thetas(mins.thetas),
                               minima_loss=mins.train_loss, progress=None,
                               settings=paths_mod._Settings(
                                   method="neb", images=6, fixed_steps=None, lr=0.05,
                                   eval_points=3, seed=0, optimizer="sgd", batch_size=None,
                                   spring=0.5, cycles=3, insert=2, t_samples=4, tol=0.05,
                                   atol=1e-4, grad_tol=1e-3, restarts=1, max_steps=4000,
                                   final_steps=2000, cycle_steps=50, climb=True))
    start_bar = land.loss(bent).max().item()
    assert start_bar > CAMEL_SADDLE + 0.3
    paths = engine.optimise(np.array([[0, 1]]), "restart", starts=bent[None],
                            start_kind=np.array(["bent"]))
    assert CAMEL_SADDLE - 1e-9 <= paths.barriers[0] <= CAMEL_SADDLE + 1e-6
    assert paths.converged[0] and paths.top_grad_norm[0] <= 1e-3 and paths.start[0] == "bent"


def test_a_deciding_pair_neb_cannot_converge_is_solved_by_the_string_method_too():
    land, mins = _analytic(_camel, [[1.747552, -0.873776], [0.0, 0.0]])
    # Without its full-batch phase NEB is capped: the string method (NEB's whole budget, full
    # batch) takes the place of one bent start and resolves the saddle.
    paths = connect(land, mins, [(0, 1)], "neb", max_steps=60, final_steps=0)
    assert list(paths.start) == ["line", "bent", "string"]
    neb = paths.start != "string"
    assert not paths.converged[neb].any() and paths.converged[~neb].all()
    assert paths.steps_used[~neb][0] <= 60
    np.testing.assert_allclose(paths.barriers[~neb], CAMEL_SADDLE, atol=1e-6)
    # The converged string path decides the death; the capped NEB starts widen its spread
    # only.
    deaths = death_certificates(paths.pairs, paths.barriers, paths.converged, paths.stalled,
                                paths.top_grad_norm, mins.train_loss, tol=0.05, atol=1e-4,
                                grad_tol=1e-3)
    assert deaths[(0, 1)].certified and deaths[(0, 1)].starts == 3
    # A pair NEB converges keeps its NEB restarts: no cross-check is spent on it.
    converged = connect(land, mins, [(0, 1)], "neb")
    assert "string" not in set(converged.start) and converged.converged.all()


def test_the_barrier_is_the_top_of_the_path_not_of_its_samples():
    # Three samples on the straight segment miss the maximum (at x = 0.050254): the golden-
    # section search finds it to round-off.
    land, mins = _analytic(_quartic, [[-0.730893], [0.680639]])
    line = connect(land, mins, [(0, 1)], "linear", images=1, eval_points=0)
    assert abs(line.barriers[0] - QUARTIC_MAX) < 1e-10
    assert line.profile_loss[0].max() == line.barriers[0]


def test_a_collapsing_step_size_stalls_the_path_and_never_converges_it():
    s = paths_mod._Settings(
        method="neb", images=2, fixed_steps=None, lr=0.05, eval_points=1, seed=0,
        optimizer="sgd", batch_size=None, spring=0.5, cycles=3, insert=2, t_samples=4, tol=0.05,
        atol=1e-4, grad_tol=1e-3, restarts=1, max_steps=10**6, final_steps=0, cycle_steps=10,
        climb=True)
    track = paths_mod._Track.start(np.array([0.0]), np.array([1.0]), s.lr)
    rises = 0
    while not track.stalled[0]:
        # Every cycle raises the barrier (the band is pushed uphill): undone, step halved.
        ok = track.check(np.array([0]), track.barrier + 0.01, s, 10)
        assert not ok[0] and not track.converged[0]
        rises += 1
    assert rises == int(np.log2(1 / choices.PATH_STALL)) + 1
    assert track.lr[0] < s.lr * choices.PATH_STALL and not track.converged[0]


def test_the_spring_shrinks_with_the_step_size():
    # On a flat landscape only the spring moves the images: at a tiny step size it must move
    # them proportionally less, not by its full strength (the cause of stalled bands).
    land, mins = _analytic(lambda x, y: 0 * x, [[0.0, 0.0], [1.0, 0.0]])
    uneven = torch.tensor([[[0.0, 0.0], [0.1, 0.2], [0.15, 0.3], [1.0, 0.0]]],
                          dtype=torch.float64)

    def moved(lr: float) -> float:
        engine = paths_mod._Engine(
            land=land, thetas=land.as_thetas(mins.thetas), minima_loss=mins.train_loss,
            progress=None, settings=paths_mod._Settings(
                method="neb", images=2, fixed_steps=None, lr=0.05, eval_points=1, seed=0,
                optimizer="sgd", batch_size=None, spring=0.5, cycles=3, insert=2,
                t_samples=4, tol=0.05, atol=1e-4, grad_tol=1e-3, restarts=1, max_steps=10,
                final_steps=0, cycle_steps=10, climb=False))
        chain = uneven.clone()
        engine._neb_steps(chain, torch.full((1, 1, 1), lr, dtype=torch.float64),
                          lambda: (land.x_eval, land.y_eval), 1, "list", (0, 1), climb=False)
        return float((chain - uneven).norm())

    full, tiny = moved(0.05), moved(0.05 * 2**-10)
    assert full > 0.01
    assert tiny <= full * 2**-10 * 1.01


@pytest.mark.parametrize("case", ["camel", "quartic", "network"])
def test_every_certified_barrier_is_at_most_the_string_methods(case, land):
    """The independent string method is a second upper bound on each barrier: a death we
    certify (converged, critical or monotone top, restarts agreeing) must not be beaten by
    it beyond the tolerance."""
    from lossbarcode.string_method import string_paths

    if case == "camel":
        land, mins = _analytic(_camel, [[1.747552, -0.873776], [0.0, 0.0],
                                        [-1.747552, 0.873776]])
        pairs = "all"
    elif case == "quartic":
        land, mins = _analytic(_quartic, [[-0.730893], [0.680639]])
        pairs = "all"
    else:
        mins = find_minima(land, 3, steps=300, batch_size=32, polish_steps=300)
        assert mins.certified.all()
        pairs = "all"
    paths = connect(land, mins, pairs, "neb")
    deaths = death_certificates(paths.pairs, paths.barriers, paths.converged, paths.stalled,
                                paths.top_grad_norm, mins.train_loss, tol=0.05, atol=1e-4,
                                grad_tol=1e-3)
    keys = sorted(deaths)
    thetas = land.as_thetas(mins.thetas)
    rows = np.array(keys)
    other = string_paths(land, thetas[rows[:, 0]], thetas[rows[:, 1]])
    checked = 0
    for key, string_barrier in zip(keys, other.barriers, strict=True):
        death = deaths[key]
        if death.certified:
            floor = max(mins.train_loss[key[0]], mins.train_loss[key[1]])
            assert death.barrier <= string_barrier + 0.05 * (string_barrier - floor) + 1e-4
            checked += 1
    assert checked >= 1  # the check is not vacuous
