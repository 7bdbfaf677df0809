"""Maps (PCA/UMAP projections of minima and paths) and loss slices through three minima."""

import numpy as np
import pytest

from lossbarcode import maps, slices
from lossbarcode.experiment import ExperimentConfig, run_experiment
from lossbarcode.maps import MinimaMap, Projection, minima_map, project
from lossbarcode.slices import ResultSlice, result_slice
from lossbarcode.store import ResultStore

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=1, k=3, steps=30,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("maps") / "results")
    return store, run_experiment(TINY, store)


def cloud(n=30, p=200, seed=0):
    """Points with a clear principal structure: decreasing spread along random directions."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, p)) * np.geomspace(10, 0.1, p)


# --------------------------------------------------------------------------- project


@pytest.mark.parametrize("p", [5, 200])  # P < n (SVD) and P >> n (Gram matrix)
def test_pca_shape_explained_and_determinism(p):
    x = cloud(n=12, p=p)
    proj = project(x, dim=3, method="pca")
    assert isinstance(proj, Projection) and proj.method == "pca"
    assert proj.coords.shape == (12, 3) and np.isfinite(proj.coords).all()
    ex = proj.explained
    assert ex.shape == (3,) and np.all((ex >= 0) & (ex <= 1)) and np.all(np.diff(ex) <= 0)
    assert ex.sum() <= 1 + 1e-12
    again = project(x.copy(), dim=3, method="pca")
    np.testing.assert_array_equal(again.coords, proj.coords)
    # It is PCA: the scores' variances are the leading eigenvalues of the covariance.
    centred = x - x.mean(axis=0)
    eig = np.sort(np.linalg.eigvalsh(centred.T @ centred if p < 12 else centred @ centred.T))
    np.testing.assert_allclose((proj.coords**2).sum(axis=0), eig[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(ex, eig[::-1][:3] / eig.sum(), rtol=1e-8)


def test_pca_of_degenerate_points_pads_with_zeros():
    proj = project(np.ones((4, 10)), dim=2, method="pca")
    np.testing.assert_array_equal(proj.coords, np.zeros((4, 2)))
    np.testing.assert_array_equal(proj.explained, [0.0, 0.0])
    line = project(np.outer(np.arange(5.0), np.ones(7)), dim=3, method="pca")
    np.testing.assert_allclose(line.explained, [1.0, 0.0, 0.0], atol=1e-12)
    single = project(np.zeros((1, 3)), dim=2, method="pca")
    assert single.coords.shape == (1, 2)


def test_auto_uses_pca_below_twenty_points(monkeypatch):
    assert project(cloud(n=19), method="auto").method == "pca"
    monkeypatch.setattr(maps, "umap_available", lambda: False)
    assert project(cloud(n=40), method="auto").method == "pca"


def test_project_rejects_bad_input():
    with pytest.raises(ValueError, match="dim must be 2 or 3"):
        project(cloud(), dim=4)
    with pytest.raises(ValueError, match="method must be one of"):
        project(cloud(), method="tsne")
    with pytest.raises(ValueError, match="finite"):
        project(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(n, P\)"):
        project(np.zeros(5))


@pytest.mark.slow
@pytest.mark.skipif(not maps.umap_available(), reason="umap-learn not installed")
def test_umap_gives_finite_coordinates():
    x = cloud(n=40)
    proj = project(x, dim=2, method="umap", seed=1)
    assert proj.method == "umap" and proj.explained is None
    assert proj.coords.shape == (40, 2) and np.isfinite(proj.coords).all()
    assert project(x, dim=3, method="auto").method == "umap"
    with pytest.warns(RuntimeWarning, match="using PCA"):
        assert project(cloud(n=4), method="umap").method == "pca"


# --------------------------------------------------------------------------- minima_map


def test_minima_map_of_a_stored_run(tiny_run, monkeypatch):
    store, result = tiny_run
    m = minima_map(store, result.run_id, dim=2, method="pca")
    assert isinstance(m, MinimaMap) and m.method == "pca" and m.dim == 2
    assert m.minima_coords.shape == (3, 2) and np.isfinite(m.minima_coords).all()
    np.testing.assert_array_equal(m.pairs, result.pairs)
    assert len(m.path_coords) == len(m.path_loss) == len(result.pairs) == 3
    for (i, j), path, loss, (_, profile) in zip(m.pairs, m.path_coords, m.path_loss,
                                                  result.profiles, strict=True):
        assert path.ndim == 2 and path.shape[1] == 2 and len(path) >= 4
        np.testing.assert_array_equal(path[0], m.minima_coords[i])
        np.testing.assert_array_equal(path[-1], m.minima_coords[j])
        assert loss.shape == (len(path),)
        assert loss[0] == pytest.approx(profile[0]) and loss[-1] == pytest.approx(profile[-1])
    np.testing.assert_allclose(m.minima_loss, result.train_loss)
    assert m.explained.shape == (2,) and 0 < m.explained.sum() <= 1 + 1e-12
    assert "map-pca-2" in store.stages(result.run_id)

    # PCA is linear: projecting the stored endpoint images lands on the minima's points.
    from lossbarcode.experiment import load_minima, load_paths

    found, connected = load_minima(store, result.run_id), load_paths(store, result.run_id)
    inner = [img.numpy()[1:-1] for img in connected.images]
    direct = project(np.concatenate([found.thetas.numpy(), *inner]), 2, "pca").coords
    np.testing.assert_allclose(direct[:3], m.minima_coords, atol=1e-9)

    # The second call reads the store and never projects again.
    def fail(*args, **kwargs):
        raise AssertionError("projected again instead of loading the cached map")

    monkeypatch.setattr(maps, "project", fail)
    again = minima_map(store, result.run_id, dim=2, method="pca")
    np.testing.assert_array_equal(again.minima_coords, m.minima_coords)
    for a, b in zip(again.path_coords, m.path_coords, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.explained, m.explained)
    # "auto" with fewer than 20 points (or without umap) is this same PCA map.
    monkeypatch.setattr(maps, "umap_available", lambda: False)
    assert minima_map(store, result.run_id, dim=2).method == "pca"


def test_minima_map_in_3d_and_errors(tiny_run, tmp_path):
    store, result = tiny_run
    m = minima_map(store, result.run_id, dim=3, method="pca")
    assert m.minima_coords.shape == (3, 3) and all(p.shape[1] == 3 for p in m.path_coords)
    empty = ResultStore(tmp_path / "empty")
    with pytest.raises(ValueError, match="no stored minima stage"):
        minima_map(empty, TINY.run_id, method="pca")
    with pytest.raises(ValueError, match="dim must be"):
        minima_map(store, result.run_id, dim=1)


# --------------------------------------------------------------------------- result_slice


def test_result_slice_through_three_minima(tiny_run, monkeypatch):
    store, result = tiny_run
    s = result_slice(store, result.run_id, minima=(0, 1, 2), resolution=15)
    assert isinstance(s, ResultSlice) and s.resolution == 15
    assert s.x.shape == s.y.shape == (15,) and s.loss.shape == (15, 15)
    assert s.points.shape == (3, 2) and s.minima.tolist() == [0, 1, 2]
    np.testing.assert_allclose(s.points[0], [0.0, 0.0], atol=1e-9)
    assert s.points[1, 1] == pytest.approx(0.0, abs=1e-9) and s.points[1, 0] > 0
    assert len(s.barcode) >= 1 and np.isinf(s.barcode.deaths).sum() == 1
    assert s.barcode.births.min() == pytest.approx(s.loss.min())
    # Exactly at the minima the loss is their stored training loss; at the nearest grid
    # points it is close (loose: the grid is coarse).
    np.testing.assert_allclose(s.point_loss, result.train_loss, rtol=1e-4)
    spread = s.loss.max() - s.loss.min()
    for (px, py), loss in zip(s.points, result.train_loss, strict=True):
        ix, iy = np.abs(s.x - px).argmin(), np.abs(s.y - py).argmin()
        assert abs(s.loss[ix, iy] - loss) < 0.25 * spread
    # loss is indexed [i_x, i_y]: along x from a to b the first column is the a-b line.
    assert s.x[0] < 0 < s.x[-1] and s.y[0] < 0

    def fail(*args, **kwargs):
        raise AssertionError("computed the slice again instead of loading it")

    monkeypatch.setattr("lossbarcode.planes.plane_slice", fail)
    monkeypatch.setattr(slices, "build_landscape", fail)
    again = result_slice(store, result.run_id, minima=(0, 1, 2), resolution=15)
    np.testing.assert_array_equal(again.loss, s.loss)
    assert again.barcode == s.barcode
    assert "slice-0-1-2-15" in store.stages(result.run_id)


@pytest.mark.parametrize(("minima", "resolution", "match"), [
    ((0, 0, 1), 15, "three different"),
    ((0, 1, 3), 15, "out of range"),
    ((0, 1, -1), 15, ">= 0"),
    ((0, 1), 15, "three integer"),
    ((0, 1, 2), 4, "resolution must be"),
])
def test_result_slice_rejects_bad_arguments(tiny_run, minima, resolution, match):
    store, result = tiny_run
    with pytest.raises(ValueError, match=match):
        result_slice(store, result.run_id, minima=minima, resolution=resolution)


def test_result_slice_needs_a_stored_run(tmp_path):
    with pytest.raises(ValueError, match="no stored minima"):
        result_slice(ResultStore(tmp_path), TINY.run_id)


def test_result_slice_refuses_diverged_minima(tiny_run, monkeypatch):
    import dataclasses

    from lossbarcode.experiment import load_minima

    store, result = tiny_run

    def with_diverged(*args):
        found = load_minima(*args)
        return dataclasses.replace(found, diverged=np.array([False, False, True]))

    monkeypatch.setattr(slices, "load_minima", with_diverged)
    with pytest.raises(ValueError, match=r"minima \[2\] .* diverged"):
        result_slice(store, result.run_id, minima=(0, 1, 2), resolution=7)


def test_the_old_map_field_names_are_aliases():
    from lossbarcode.maps import MinimaMap

    m = MinimaMap(minima_coords=np.zeros((2, 2)), path_coords=(np.zeros((3, 2)),),
                  pairs=np.array([[0, 1]]), method="pca", explained=None,
                  minima_loss=np.zeros(2), path_loss=(np.zeros(3),))
    assert m.minima is m.minima_coords and m.paths is m.path_coords and m.dim == 2
