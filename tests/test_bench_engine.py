"""Tests for lossbarcode.bench.engine: both ways do the same work and the table is complete."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lossbarcode.bench.engine import engine_benchmark, print_engine_benchmark
from lossbarcode.cli import main

TINY = {"widths": (4,), "k": 3, "steps": 4, "batch_size": 16, "neb_k": 3, "neb_steps": 3,
        "neb_images": 2, "neb_batch_size": 16, "repeats": 1}


def test_rows_compare_the_same_work():
    rows = engine_benchmark("cpu", **TINY)
    assert [r["part"] for r in rows] == ["minima", "neb", "neb-image"]
    minima = rows[0]
    # Same initialisations, minibatches and steps: the batched and looped minima agree.
    assert minima["max_abs_diff"] < 1e-4 and minima["median_abs_diff"] <= minima["max_abs_diff"]
    for r in rows:
        assert r["batched_s"] > 0 and r["loop_s"] > 0
        assert math.isclose(r["speedup"], r["loop_s"] / r["batched_s"])
        assert r["gflops_batched"] > 0 and r["matmul_gflops"] > 0
        # At the matmul rate the batched run could not be faster than this ceiling.
        flop = r["gflops_batched"] * r["batched_s"]
        assert math.isclose(r["speedup_ceiling"], r["loop_s"] / (flop / r["matmul_gflops"]))


def test_table_and_command(capsys):
    print_engine_benchmark(engine_benchmark("cpu", **{**TINY, "parts": ("minima",)}))
    out = capsys.readouterr().out
    assert "minima" in out and "ceiling" in out and "largest |diff| per network" in out
    assert main(["bench", "engine", "--widths", "4", "--parts", "nothing"]) == 2
    assert "unknown benchmark parts" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        engine_benchmark("cuda", **TINY)


def test_one_at_a_time_baseline_computes_the_same_paths():
    from lossbarcode import data, models
    from lossbarcode.bench.engine import OneNetworkAtATime
    from lossbarcode.landscape import Landscape
    from lossbarcode.minima import find_minima
    from lossbarcode.paths import connect

    ds = data.load("digits", n_train=120, n_test=40)
    land = Landscape.from_dataset(models.build("fcn", 6, 2, ds.input_shape, 10, seed=0), ds,
                                  device="cpu")
    one = OneNetworkAtATime.of(land)
    thetas = land.init(3, seed=1)
    for batch in (torch.arange(30), torch.randint(0, 120, (3, 12))):
        for a, b in zip(land.loss_and_grad(thetas, batch), one.loss_and_grad(thetas, batch),
                        strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    mins = find_minima(land, 3, steps=30, seed=0, polish_steps=20)
    kw = {"method": "neb", "steps": 6, "images": 2, "batch_size": 32}
    fast, slow = connect(land, mins, [(0, 2)], **kw), connect(one, mins, [(0, 2)], **kw)
    np.testing.assert_allclose(fast.barriers, slow.barriers, rtol=1e-4)


@pytest.mark.slow
def test_convergence_benchmark_compares_every_pair_on_the_same_minima():
    from lossbarcode.bench.convergence import ABS_SLACK, convergence_benchmark

    # Width 24, not the case's 8: the narrow net's cross-checks take 10x longer (34 s).
    quick = {"n_train": 150, "n_test": 50, "steps": 100, "polish_steps": 50, "images": 2,
             "path_max_steps": 150, "width": 24}
    rows = convergence_benchmark(("fcn",), k=3, factor=2, overrides=quick)
    assert [r["pair"] for r in rows] == ["0-1", "0-2", "1-2"]  # every pair, not a mean
    first = rows[0]
    assert first["paths_restarts"] >= 3 and first["paths_string"] == 3
    assert first["paths_2x"] == 3 and first["s_default"] > 0
    for r in rows:
        for name in ("restarts", "string", "2x"):
            assert r[f"excess_{name}"] >= 0
        if r["meets_target"] is not None:
            best = min(r["excess_restarts"], r["excess_string"], r["excess_2x"],
                       r["excess_default"])
            assert r["meets_target"] == (r["excess_default"] <= best + max(
                0.05 * best, ABS_SLACK) + 1e-12)
