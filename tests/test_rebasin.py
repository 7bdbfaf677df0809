"""Re-basin: permutations are symmetries, weight matching finds them, aligned runs."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lossbarcode import models, rebasin
from lossbarcode.cli import main
from lossbarcode.experiment import (
    ExperimentConfig,
    build_landscape,
    load_minima,
    rebasin_pair,
    rebasin_table,
    run_experiment,
    twin_run_id,
)
from lossbarcode.landscape import Landscape
from lossbarcode.store import ResultStore

# (arch, width, depth, options): fcn depths 1-3; cnn with GroupNorm in groups of 2 channels
# (width 16: 8 groups), in one channel per group (width 8), in one group (width 5), and without.
CASES = [("fcn", 12, 1, {}), ("fcn", 12, 2, {}), ("fcn", 12, 3, {}),
         ("cnn", 16, 2, {}), ("cnn", 8, 2, {}), ("cnn", 5, 1, {}), ("cnn", 6, 2, {"norm": "none"})]
IDS = [f"{a}{w}x{d}{'-' + '-'.join(o.values()) if o else ''}" for a, w, d, o in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def case(request, digits):
    arch, width, depth, options = request.param
    model = models.build(arch, width, depth, digits.input_shape, digits.n_outputs, seed=0,
                         **options)
    land = Landscape.from_dataset(model, digits, device="cpu")
    return land, rebasin.permutation_spec(land.module.spec)


def random_symmetry(pspec, rng):
    """A random permutation per hidden layer that keeps the normalisation groups."""
    perms = []
    for n, g in zip(pspec.units, pspec.group_size, strict=True):
        groups = rng.permutation(n // g)
        perms.append(np.concatenate([b * g + rng.permutation(g) for b in groups]))
    return perms


def test_a_permuted_network_computes_the_same_function(case):
    land, pspec = case
    thetas = land.init(2, seed=3)
    permuted = rebasin.apply_permutation(pspec, thetas, random_symmetry(pspec,
                                                                       np.random.default_rng(0)))
    assert permuted.dtype == thetas.dtype and not torch.equal(permuted, thetas)
    assert torch.equal(permuted.sort(dim=1).values, thetas.sort(dim=1).values)  # same numbers
    torch.testing.assert_close(land.test_outputs(permuted), land.test_outputs(thetas),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(land.loss(permuted), land.loss(thetas), rtol=0, atol=1e-5)
    # Through the plain module too, not only the landscape's batched forward.
    net, net_p = land.unflatten(thetas[0]), land.unflatten(permuted[0])
    torch.testing.assert_close(net_p(land.x_test), net(land.x_test), rtol=0, atol=1e-5)


def test_weight_matching_a_permuted_copy_recovers_the_original(case):
    land, pspec = case
    rng = np.random.default_rng(1)
    for seed in (0, 1):
        theta = land.init(1, seed=seed)[0]
        permuted = rebasin.apply_permutation(pspec, theta, random_symmetry(pspec, rng))
        perm = rebasin.weight_matching(pspec, theta, permuted)
        assert torch.equal(rebasin.apply_permutation(pspec, permuted, perm), theta)
        # The original against itself: nothing to permute.
        same = rebasin.weight_matching(pspec, theta, theta)
        assert all(np.array_equal(p, np.arange(len(p))) for p in same)


def test_alignment_keeps_every_loss_and_never_moves_a_minimum_away(case):
    land, pspec = case
    thetas = land.init(4, seed=7)
    alignment = rebasin.align_minima(pspec, thetas, reference=2)
    aligned = alignment.thetas
    assert isinstance(aligned, torch.Tensor) and aligned.shape == thetas.shape
    assert torch.equal(aligned[2], thetas[2])  # the reference stays
    torch.testing.assert_close(land.loss(aligned), land.loss(thetas), rtol=0, atol=1e-5)
    before = torch.linalg.vector_norm((thetas - thetas[2]).double(), dim=1).numpy()
    after = torch.linalg.vector_norm((aligned - thetas[2]).double(), dim=1).numpy()
    np.testing.assert_allclose(alignment.distance_before, before)
    np.testing.assert_allclose(alignment.distance_after, after)
    assert (after <= before + 1e-9).all()
    assert (after[[0, 1, 3]] < before[[0, 1, 3]]).all()  # random networks: something to gain
    for i in range(4):
        assert torch.equal(rebasin.apply_permutation(pspec, thetas[i],
                                                     alignment.permutations[i]), aligned[i])


def test_permutations_across_groupnorm_groups_are_refused_because_they_change_the_function(
        digits):
    model = models.build("cnn", 16, 1, digits.input_shape, digits.n_outputs, seed=0)
    land = Landscape.from_dataset(model, digits, device="cpu")
    pspec = rebasin.permutation_spec(land.module.spec)
    assert pspec.group_size == (2,)
    swap = np.arange(16)
    swap[[1, 2]] = swap[[2, 1]]  # channel 1 (group 0) <-> channel 2 (group 1)
    with pytest.raises(ValueError, match="normalisation groups"):
        rebasin.apply_permutation(pspec, land.init(1, seed=0)[0], [swap])
    # The same reordering, forced through: another function.
    loose = dataclasses.replace(pspec, group_size=(16,))
    theta = land.init(1, seed=0)
    moved = rebasin.apply_permutation(loose, theta, [swap])
    assert (land.loss(moved) - land.loss(theta)).abs().item() > 1e-4


def test_other_architectures_and_bad_input_are_refused(digits):
    for arch in ("resnet",):
        model = models.build(arch, 8, 1, digits.input_shape, digits.n_outputs, seed=0)
        with pytest.raises(ValueError, match="supports the built-in architectures fcn, cnn"):
            rebasin.permutation_spec(model.spec)
    with pytest.raises(ValueError, match="align .* supports arch fcn and cnn"):
        ExperimentConfig(arch="resnet", align=True)
    with pytest.raises(ValueError, match="'align' must be true or false"):
        ExperimentConfig.from_dict({"align": 1})
    model = models.build("fcn", 4, 1, digits.input_shape, digits.n_outputs, seed=0)
    pspec = rebasin.permutation_spec(model.spec)
    theta = torch.zeros(pspec.n_params)
    with pytest.raises(ValueError, match="permutation of range"):
        rebasin.apply_permutation(pspec, theta, [np.array([0, 0, 1, 2])])
    with pytest.raises(ValueError, match="non-finite"):
        rebasin.weight_matching(pspec, theta, torch.full_like(theta, float("nan")))
    with pytest.raises(ValueError, match="reference"):
        rebasin.align_minima(pspec, torch.zeros(2, pspec.n_params), reference=2)


def test_cli_refuses_align_for_other_architectures_in_one_line(tmp_path, capsys):
    assert main(["run", "--results", str(tmp_path), "--arch", "resnet", "--align"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--align (re-basin) supports --arch fcn and cnn" in err


def test_identical_predictions_are_found_with_their_output_difference(case):
    land, pspec = case
    thetas = land.init(3, seed=5)
    # Minimum 2 is minimum 0 with its hidden units permuted: the same function.
    thetas[2] = rebasin.apply_permutation(pspec, thetas[0],
                                          random_symmetry(pspec, np.random.default_rng(2)))
    found = SimpleNamespace(thetas=thetas, valid=np.arange(3), test_error=np.zeros(3))
    pairs = rebasin.identical_predictions(land, found)
    assert [p["pair"] for p in pairs] == [[0, 2]]
    assert pairs[0]["max_output_difference"] < 1e-5
    assert rebasin.identical_prediction_pairs(np.array([[1, 2], [1, 3], [1, 2], [1, 3]])) == [
        (0, 2), (1, 3)]
    regression = SimpleNamespace(thetas=thetas, valid=np.arange(3),
                                 test_error=np.full(3, np.nan))
    assert rebasin.identical_predictions(land, regression) is None


# ----------------------------------------------------------------------- aligned runs

TINY = ExperimentConfig(n_train=200, n_test=100, width=8, depth=2, k=3, steps=60,
                        batch_size=32, images=2, path_steps=10, eval_points=2, device="cpu")


def test_an_aligned_run_permutes_the_unaligned_runs_minima_and_keeps_their_births(tmp_path,
                                                                                  capsys):
    store = ResultStore(tmp_path / "results")
    aligned_config = TINY.replace(align=True)
    # Unaligned runs keep the ids they had before alignment existed; aligned runs are others.
    assert "align" not in TINY.identity() and aligned_config.identity()["align"] is True
    assert aligned_config.run_id != TINY.run_id
    before = run_experiment(TINY, store)
    assert rebasin_pair(store, before) == (before, None)
    after = run_experiment(aligned_config, store)
    assert twin_run_id(after) == before.run_id and twin_run_id(before) == after.run_id
    assert after.alignment["minima_from"] == before.run_id
    # The same minima: identical births, permuted parameters, same recomputed losses.
    np.testing.assert_array_equal(after.train_loss, before.train_loss)
    np.testing.assert_array_equal(after.minima_certified, before.minima_certified)
    old, new = load_minima(store, before.run_id), load_minima(store, after.run_id)
    reference = after.alignment["reference"]
    assert reference == int(np.nanargmin(before.train_loss))
    assert torch.equal(new.thetas[reference], old.thetas[reference])
    assert not torch.equal(new.thetas, old.thetas)
    assert torch.equal(new.thetas.sort(dim=1).values, old.thetas.sort(dim=1).values)
    land = build_landscape(TINY)
    torch.testing.assert_close(land.loss(new.thetas), land.loss(old.thetas), rtol=0,
                               atol=1e-5)
    distances = np.array(after.alignment["distance_after"]) <= np.array(
        after.alignment["distance_before"]) + 1e-9
    assert distances.all()
    # Before and after, side by side.
    unaligned, aligned = rebasin_pair(store, after)
    assert (unaligned.run_id, aligned.run_id) == (before.run_id, after.run_id)
    rows = {row["measure"]: row for row in rebasin_table(unaligned, aligned)}
    assert rows["TO-score (l2)"]["unaligned"] == before.score
    assert rows["TO-score (l2)"]["aligned"] == after.score
    assert rows[f"distance to the reference (minimum {reference}), mean"]["aligned"] <= rows[
        f"distance to the reference (minimum {reference}), mean"]["unaligned"]
    with pytest.raises(ValueError, match="unaligned run first"):
        rebasin_table(aligned, unaligned)
    assert isinstance(after.identical_predictions, tuple)
    assert main(["show", after.run_id, "--results", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "re-basin: before (unaligned" in out and "straight-line barrier excess" in out
    assert "identical test predictions:" in out
    # Stored and read back: the alignment record survives the round trip.
    assert run_experiment(aligned_config, store).alignment == after.alignment
    # The cost model does not calibrate training time on minima that were not trained here.
    from lossbarcode.cost import _stored_timings

    (timed,) = _stored_timings(str(store.root), (after.run_id,))
    assert timed[1]["minima"] == 0.0 and after.timings["minima"] > 0
    # The command that reproduces it has the switch, and parses back to the same run.
    from lossbarcode.cli import _config_from as config_from
    from lossbarcode.cli import build_parser, reproduce_command

    command = reproduce_command(aligned_config)
    assert " --align " in command + " "
    assert config_from(build_parser().parse_args(command.split()[1:])) == aligned_config


@pytest.mark.slow
def test_an_aligned_run_without_its_twin_trains_the_same_minima(tmp_path):
    store = ResultStore(tmp_path / "results")
    after = run_experiment(TINY.replace(align=True), store)
    assert after.alignment["minima_from"] == "trained"
    before = run_experiment(TINY, ResultStore(tmp_path / "other"))
    np.testing.assert_array_equal(after.train_loss, before.train_loss)
