"""Tests for lossbarcode.string_method: the string method with a climbing image."""

from __future__ import annotations

import closed_forms
import numpy as np
import pytest
import torch
from scipy.optimize import root

from lossbarcode import data, models, toys
from lossbarcode.landscape import Landscape
from lossbarcode.minima import find_minima
from lossbarcode.string_method import (
    GRAD_TOL,
    StringPaths,
    _polygon_maxima,
    _reparametrise,
    string_paths,
)

# design.md §1: exact values of the closed-form landscapes.
CAMEL_SIDE = [1.747552, -0.873776]
CAMEL_SADDLE = closed_forms.CAMEL_SADDLE
QUARTIC_MINIMA = (-0.730893, 0.680639)
QUARTIC_MAX, QUARTIC_ARGMAX = closed_forms.QUARTIC_MAX, 0.050254
# The two-saddle toy's critical points (its docstring; recomputed in a test below).
TS_MIN_A = (-0.996066700, -0.142830285)
TS_MIN_B = (0.980956453, -0.158056231)
TS_LOW = 0.614552241  # the saddle below the straight segment
TS_HIGH = 1.133063541  # the saddle above it


def _analytic(fn, dim: int) -> Landscape:
    """A ``dim``-parameter float64 Landscape whose loss is ``fn(*theta)`` (data ignored)."""
    return closed_forms.landscape(fn, dim)


_camel, _quartic = closed_forms.camel, closed_forms.quartic


def _two_saddle(x, y):  # toys.two_saddle, in torch
    return 2 * (x**2 + y**2 - 1) ** 2 + y**2 + 0.3 * y + 0.1 * x


def _t(rows) -> torch.Tensor:
    return torch.as_tensor(np.asarray(rows, dtype=np.float64))


def _check_result(r: StringPaths, a: torch.Tensor, c: torch.Tensor) -> None:
    """Invariants of every result: shapes, endpoints, profile, barrier = its maximum."""
    assert r.m == a.shape[0]
    assert not np.any(r.converged & r.stalled)
    for i, chain in enumerate(r.chains):
        assert chain.device.type == "cpu" and chain.shape[1] == a.shape[1]
        torch.testing.assert_close(chain[0].double(), a[i].double())
        torch.testing.assert_close(chain[-1].double(), c[i].double())
        t, loss = r.profile_t[i], r.profile_loss[i]
        assert t[0] == 0 and t[-1] == pytest.approx(1) and np.all(np.diff(t) >= 0)
        assert r.barriers[i] == pytest.approx(max(loss.max(), r.endpoint_loss[i].max()),
                                              abs=1e-12)
        assert 0 <= r.top_t[i] <= 1
    assert np.all(r.barriers >= r.endpoint_loss.max(axis=1))
    assert np.all(r.excess >= 0)


def test_three_hump_camel_barrier_is_the_saddle():
    land = _analytic(_camel, 2)
    side, other = CAMEL_SIDE, [-CAMEL_SIDE[0], -CAMEL_SIDE[1]]
    # Side minimum -> origin, origin -> other side, and a bent pair whose straight line
    # misses the saddle: (0.3, 0.6) is not a minimum, so the path must bend onto it.
    a, c = _t([side, [0.0, 0.0], side]), _t([[0.0, 0.0], other, [0.3, 0.6]])
    r = string_paths(land, a, c)
    _check_result(r, a, c)
    np.testing.assert_allclose(r.barriers, CAMEL_SADDLE, atol=1e-4)
    assert np.all(r.barriers >= CAMEL_SADDLE - 1e-9)  # a point of the path: never below
    assert r.converged.all() and r.climbing.all()
    assert np.all(r.top_grad_norm <= GRAD_TOL)
    line = land.loss(a[2] + torch.linspace(0, 1, 401, dtype=torch.float64)[:, None]
                     * (c[2] - a[2]))
    assert float(line.max()) > CAMEL_SADDLE + 0.1  # the straight line does miss the saddle


def test_three_hump_camel_from_a_bent_start():
    land = _analytic(_camel, 2)
    a, c = _t([CAMEL_SIDE]), _t([[0.3, 0.6]])
    # A start bent far from the saddle (3 points, resampled to the default images).
    r = string_paths(land, a, c, start=_t([[CAMEL_SIDE, [1.5, 1.0], [0.3, 0.6]]]))
    _check_result(r, a, c)
    assert r.converged[0] and r.top_grad_norm[0] <= GRAD_TOL
    assert CAMEL_SADDLE - 1e-9 <= r.barriers[0] <= CAMEL_SADDLE + 1e-4
    assert len(r.history[0]) >= 3  # it ran several checks: not converged at the first look


def test_quartic_barrier_is_its_maximum():
    land = _analytic(_quartic, 1)
    a, c = _t([[QUARTIC_MINIMA[0]]]), _t([[QUARTIC_MINIMA[1]]])
    r = string_paths(land, a, c)
    _check_result(r, a, c)
    assert r.converged[0]
    assert QUARTIC_MAX - 1e-9 <= r.barriers[0] <= QUARTIC_MAX + 1e-6
    top = QUARTIC_MINIMA[0] + r.top_t[0] * (QUARTIC_MINIMA[1] - QUARTIC_MINIMA[0])
    assert top == pytest.approx(QUARTIC_ARGMAX, abs=1e-4)


def test_polygon_maximum_is_found_between_images():
    # A chain whose vertices all miss the quartic's maximum: the golden-section search on the
    # polygon finds it to the precision of the position (1e-6 of the path).
    land = _analytic(_quartic, 1)
    chain = _t([[[QUARTIC_MINIMA[0]], [0.3], [QUARTIC_MINIMA[1]]]])
    ends = np.array([[_quartic(QUARTIC_MINIMA[0]), _quartic(QUARTIC_MINIMA[1])]])
    barrier, top_t, prof_t, prof_l = _polygon_maxima(land, chain, ends)
    assert barrier[0] == pytest.approx(QUARTIC_MAX, abs=1e-11)
    length = QUARTIC_MINIMA[1] - QUARTIC_MINIMA[0]
    assert QUARTIC_MINIMA[0] + top_t[0] * length == pytest.approx(QUARTIC_ARGMAX, abs=2e-6)
    assert np.all(np.diff(prof_t[0]) >= 0) and prof_l[0].max() == barrier[0]


def test_reparametrise_spreads_images_and_keeps_the_climbing_image():
    chain = _t([[[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.9, 0.0], [2.0, 0.0]]])  # length 2
    even_u = torch.linspace(0, 1, 5, dtype=torch.float64)[None]
    even = _reparametrise(chain, even_u, torch.tensor([2]), torch.tensor([False]))
    torch.testing.assert_close(even[0, :, 0], _t([0.0, 0.5, 1.0, 1.5, 2.0]))
    climbing = _reparametrise(chain, even_u, torch.tensor([2]), torch.tensor([True]))
    assert torch.equal(climbing[0, 2], chain[0, 2])  # exactly in place
    assert torch.equal(climbing[0, 0], chain[0, 0]) and torch.equal(climbing[0, 4], chain[0, 4])
    # Each side spread equally over its own part of the path.
    torch.testing.assert_close(climbing[0, :, 0], _t([0.0, 0.1, 0.2, 1.1, 2.0]))
    # Uneven target fractions (after refinement) are kept, scaled on each side.
    u = _t([[0.0, 0.25, 0.5, 0.625, 1.0]])
    torch.testing.assert_close(_reparametrise(chain, u, torch.tensor([2]),
                                              torch.tensor([False]))[0, :, 0],
                               _t([0.0, 0.5, 1.0, 1.25, 2.0]))
    torch.testing.assert_close(_reparametrise(chain, u, torch.tensor([2]),
                                              torch.tensor([True]))[0, :, 0],
                               _t([0.0, 0.1, 0.2, 0.65, 2.0]))


def test_refinement_follows_a_curved_valley():
    # A stiff ring: chords between images spread along the lower channel cut through the high
    # inside of the ring, so one image cannot resolve the path; refinement inserts images
    # where a segment rises above them, until the climbing image is the polygon's top.
    stiff = 20.0

    def ring(x, y):
        return stiff * (x**2 + y**2 - 1) ** 2 + y**2 + 0.3 * y + 0.1 * x

    def grad(p):
        x, y = p
        r = x * x + y * y - 1
        return np.array([4 * stiff * x * r + 0.1, 4 * stiff * y * r + 2 * y + 0.3])

    a_pt, c_pt, saddle = (root(grad, s, tol=1e-13).x for s in ([-1, 0], [1, 0], [0, -0.95]))
    height = float(ring(*saddle))
    assert np.linalg.norm(grad(saddle)) < 1e-10 and height == pytest.approx(0.693933, abs=1e-6)
    land = _analytic(ring, 2)
    a, c = _t([a_pt]), _t([c_pt])
    start = _t([[a_pt, [0.0, -1.0], c_pt]])
    coarse = string_paths(land, a, c, images=1, start=start, max_images=1, max_steps=300)
    assert coarse.barriers[0] > height + 1 and not coarse.converged[0]
    r = string_paths(land, a, c, images=1, start=start)
    _check_result(r, a, c)
    assert 3 < r.chains[0].shape[0] <= 7 + 2  # refined, within the default max_images
    assert r.converged[0] and r.top_grad_norm[0] <= GRAD_TOL
    segment = r.barriers[0] - r.endpoint_loss[0].max()
    # The polygon's top is the climbing image's saddle, to the rule's tolerance.
    assert height - 1e-9 <= r.barriers[0] <= height + 0.05 * segment + 1e-4


def test_two_saddle_toy_critical_points():
    f = toys.two_saddle

    def grad(p):
        x, y = p
        r = x * x + y * y - 1
        return np.array([8 * x * r + 0.1, 8 * y * r + 2 * y + 0.3])

    def hess(p):
        x, y = p
        r = x * x + y * y - 1
        return np.array([[8 * r + 16 * x * x, 16 * x * y], [16 * x * y, 8 * r + 16 * y * y + 2]])

    # (start, the docstring's point, f there, number of negative Hessian eigenvalues)
    known = [
        ((-1.0, 0.0), TS_MIN_A, -0.121740292, 0),
        ((1.0, 0.0), TS_MIN_B, 0.075985299, 0),
        ((0.0, -0.9), (0.060162101, -0.888036330), TS_LOW, 1),
        ((0.0, 0.9), (0.042414618, 0.838743873), TS_HIGH, 1),
        ((0.0, 0.0), (0.012533527, 0.050178973), 2.008139211, 2),
    ]
    for start, point, value, index in known:
        sol = root(grad, start, jac=hess, tol=1e-13)
        assert np.linalg.norm(grad(sol.x)) < 1e-12
        np.testing.assert_allclose(sol.x, point, atol=1e-9)
        assert float(f(sol.x)) == pytest.approx(value, abs=1e-9)
        assert int((np.linalg.eigvalsh(hess(sol.x)) < 0).sum()) == index
    # The straight segment between the minima crosses the central ridge, above both saddles.
    s = np.linspace(0, 1, 2001)[:, None]
    line = f(np.array(TS_MIN_A) + s * (np.array(TS_MIN_B) - np.array(TS_MIN_A)))
    assert line.max() > TS_HIGH + 0.5
    assert "two_saddle" in toys.TOYS


def test_two_saddle_each_channel_gives_its_own_saddle():
    land = _analytic(_two_saddle, 2)
    a, c = _t([TS_MIN_A] * 3), _t([TS_MIN_B] * 3)
    start = _t([[TS_MIN_A, [0.0, 1.0], TS_MIN_B],  # through the upper channel
                [TS_MIN_A, [0.0, -1.0], TS_MIN_B],  # through the lower channel
                [TS_MIN_A, [0.0, 0.0], TS_MIN_B]])  # the straight segment
    r = string_paths(land, a, c, start=start)
    _check_result(r, a, c)
    assert r.converged.all() and np.all(r.top_grad_norm <= GRAD_TOL)
    # Local MEPs differ: the string keeps the channel it started in.
    assert r.barriers[0] == pytest.approx(TS_HIGH, abs=1e-4)
    assert r.barriers[1] == pytest.approx(TS_LOW, abs=1e-4)
    assert np.all(r.barriers >= TS_LOW - 1e-9)  # never below the lowest saddle
    assert r.chains[0][1:-1, 1].min() > 0 and r.chains[1][1:-1, 1].max() < 0


def test_plain_string_without_climbing_is_an_unresolved_upper_bound():
    land = _analytic(_two_saddle, 2)
    a, c = _t([TS_MIN_A]), _t([TS_MIN_B])
    r = string_paths(land, a, c, start=_t([[TS_MIN_A, [0.0, -1.0], TS_MIN_B]]), climb=False,
                     max_steps=300)
    _check_result(r, a, c)
    assert not r.climbing[0]
    # Its images straddle the saddle: a little above it, and no critical point at the top,
    # so it is capped, not converged.
    assert TS_LOW < r.barriers[0] <= TS_LOW + 5e-3
    assert r.top_grad_norm[0] > GRAD_TOL
    assert not r.converged[0] and not r.stalled[0] and r.steps[0] == 300


@pytest.fixture(scope="module")
def net():
    ds = data.load("digits", n_train=256, n_test=64)
    model = models.build("fcn", 8, 1, ds.input_shape, ds.n_outputs, seed=0)
    land = Landscape.from_dataset(model, ds, device="cpu")
    mins = find_minima(land, 2, steps=300, batch_size=32, lr=0.05, schedule="anneal")
    return land, mins.thetas[:1], mins.thetas[1:]


def test_network_string(net):
    land, a, c = net
    r = string_paths(land, a, c)
    _check_result(r, a, c)
    assert np.isfinite(r.barriers).all() and np.isfinite(r.top_grad_norm).all()
    s = torch.linspace(0, 1, 401, dtype=a.dtype)[:, None]
    line = float(land.loss(a[0] + s * (c[0] - a[0])).max())
    assert r.barriers[0] <= line
    assert r.converged[0] or r.stalled[0] or r.steps[0] > 0
    again = string_paths(land, a, c)  # deterministic
    np.testing.assert_array_equal(again.barriers, r.barriers)
    np.testing.assert_array_equal(again.steps, r.steps)
    assert torch.equal(again.chains[0], r.chains[0])


def test_capped_string_is_not_converged(net):
    land, a, c = net
    r = string_paths(land, a, c, max_steps=5, check_every=1)
    _check_result(r, a, c)
    assert r.steps[0] == 5 and not r.converged[0] and not r.stalled[0]


def _cliff(x, y):
    # Finite only on the line y = 0, where the endpoints and the straight start lie; the
    # gradient (0, 1) pushes every image off it: every step is rejected.
    return torch.where(y == 0, (x**2 - 1) ** 2 + y, torch.full_like(y, float("nan")))


def test_step_size_floor_is_a_stall():
    land = _analytic(_cliff, 2)
    a, c = _t([[-1.0, 0.0]]), _t([[1.0, 0.0]])
    r = string_paths(land, a, c, max_steps=1000)
    assert r.stalled[0] and not r.converged[0]
    assert 15 <= r.steps[0] <= 30  # halving from dt0 to 1e-6 dt0 takes about 20 steps
    assert r.barriers[0] >= r.endpoint_loss[0].max()
    # A start whose images are already on non-finite ground cannot move at all.
    bent = string_paths(land, a, c, start=_t([[[-1.0, 0.0], [0.0, 0.5], [1.0, 0.0]]]))
    assert bent.stalled[0] and bent.steps[0] == 0 and not bent.converged[0]


def test_bad_input():
    land = _analytic(_camel, 2)
    a, c = _t([CAMEL_SIDE]), _t([[0.0, 0.0]])
    cases = [
        (dict(a=_t(CAMEL_SIDE)), r"shape \(M, P\)"),
        (dict(a=_t([[1.0, 2.0, 3.0]])), "P=3"),
        (dict(c=_t([[0.0, 0.0], [1.0, 1.0]])), "same shape"),
        (dict(a=_t([[float("nan"), 0.0]])), "NaN or inf"),
        (dict(c=_t([CAMEL_SIDE])), "coincide"),
        (dict(images=0), "images"),
        (dict(images=2.5), "images"),
        (dict(tol=1.5), "tol"),
        (dict(tol=-0.1), "tol"),
        (dict(atol=-1.0), "atol"),
        (dict(atol=float("inf")), "atol"),
        (dict(grad_tol=0.0), "grad_tol"),
        (dict(max_steps=0), "max_steps"),
        (dict(check_every=0), "check_every"),
        (dict(climb="yes"), "climb"),
        (dict(max_images=3), "max_images"),
        (dict(start=_t([[CAMEL_SIDE, [0.0, 0.0]]])[0]), "start must have shape"),
        (dict(start=_t([[CAMEL_SIDE]])), "start must have shape"),
        (dict(start=_t([[CAMEL_SIDE, [1.0, 1.0], [0.1, 0.0]]])), r"start\[:, -1\]"),
        (dict(start=_t([[[9.0, 9.0], [1.0, 1.0], [0.0, 0.0]]])), r"start\[:, 0\]"),
        (dict(start=_t([[CAMEL_SIDE, [float("inf"), 0.0], [0.0, 0.0]]])), "start holds"),
    ]
    for change, message in cases:
        kwargs = dict(a=a, c=c) | change
        with pytest.raises(ValueError, match=message):
            string_paths(land, **kwargs)
    with pytest.raises(ValueError, match="Landscape"):
        string_paths("not a landscape", a, c)  # type: ignore[arg-type]
    far = _analytic(lambda x, y: torch.exp(x * 1e3) + y, 2)  # inf at an endpoint
    with pytest.raises(ValueError, match="endpoint"):
        string_paths(far, _t([[1.0, 0.0]]), _t([[0.0, 0.0]]))
