"""Tests for lossbarcode.bench_engine: both ways do the same work and the table is complete."""

from __future__ import annotations

import math

import pytest
import torch

from lossbarcode.bench_engine import engine_benchmark, print_engine_benchmark
from lossbarcode.cli import main

TINY = {"widths": (4,), "k": 3, "steps": 4, "batch_size": 16, "neb_k": 3, "neb_steps": 3,
        "neb_images": 2, "neb_batch_size": 16, "repeats": 1}


def test_rows_compare_the_same_work():
    rows = engine_benchmark("cpu", **TINY)
    assert [r["part"] for r in rows] == ["minima", "neb"]
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
