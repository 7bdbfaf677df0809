"""The cost of a run before it starts: seconds per stage and peak memory.

The model counts FLOPs and optimisation steps per stage (:func:`stage_seconds`; deterministic
given a config, a matmul throughput and a :class:`Calibration`). Raw, it is an
order-of-magnitude estimate; calibrated on the finished runs of a results folder
(:func:`store_calibration`: per stage, the median of measured / predicted seconds over the
stored runs of the same device kind), it is typically within 2x (``lossbarcode bench
estimate`` prints both against measured runs). A calibration factor also absorbs the
machine's throughput, which the raw model takes from a short matmul timing
(:func:`throughput`: best of several trials, re-measured now and then, the best kept).

:func:`memory_need` estimates the peak memory of each stage and :func:`check_memory` refuses
a config that cannot fit, saying what to lower.

Nothing here imports torch at module level: the dashboard reads :data:`CONFIRM_ABOVE_S`
while it renders.
"""

from __future__ import annotations

import functools
import math
import numbers
import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossbarcode.choices import (
    BEZIER_T_SAMPLES,
    DATASET_SHAPES,
    LANCZOS_ITERS,
    NEB_CYCLES,
    NEB_INSERT,
    PATH_BATCH_SIZE,
    PATH_CYCLE_STEPS,
    PATH_GOLDEN_PEAKS,
    PATH_GOLDEN_STEPS,
    SCREEN_POINTS,
    VECTOR_DATASETS,
)

if TYPE_CHECKING:
    from lossbarcode.config import ExperimentConfig
    from lossbarcode.store import ResultStore

__all__ = ["CONFIRM_ABOVE_S", "COST_STAGES", "RAW", "Calibration", "check_fits", "check_memory",
           "config_throughput", "device_kind", "estimate_cost", "fit_calibration",
           "free_memory", "memory_need", "stage_seconds", "store_calibration", "throughput"]

CONFIRM_ABOVE_S = 180.0  # the dashboard asks before starting work estimated above this
COST_STAGES = ("minima", "paths")  # the stages that cost time (Result.timings keys)

# Share of a plain matmul's throughput that the batched programs reach, calibrated on the
# default digits run at fcn widths 8-256 on 2 CPU cores: about 0.4 for the fcn family (its
# hand-derived wide-net gradient, lossbarcode.wide) and, measured before that gradient existed,
# about 0.2 through vmap + autograd, which every other family uses. Small networks are bound by
# a fixed cost per step instead (one minima step: K networks; one path step: every image).
_EFFICIENCY = {"fcn": 0.4}
_AUTOGRAD_EFFICIENCY = 0.2
_STEP_OVERHEAD_S = {"cpu": 0.7e-3, "cuda": 0.3e-3}  # dispatch per minima training step
_PATH_STEP_OVERHEAD_S = {"cpu": 3e-3, "cuda": 2e-3}  # dispatch per path optimisation step
_SETUP_S = 0.2  # data loading, landscape, saving (outside the stage timings)
_STAGE_FIXED_S = 0.05  # per stage: first calls, evaluation set-up, whatever the size
_REFINE = PATH_GOLDEN_PEAKS * (2 + PATH_GOLDEN_STEPS)  # golden-section points at a top
# Converging paths, measured on the default digits fcn runs at widths 4-256: minibatch steps
# per path, and the share of paths that need the full-batch phase and its typical length.
_EXPECTED_PATH_STEPS, _FINAL_SHARE, _FINAL_STEPS_TYPICAL = 800, 0.5, 200
_POLISH_TYPICAL = 300  # full-batch L-BFGS iterations a minimum typically needs
# A calibration factor is clipped to this range: a stored run timed under a freak load (or a
# clock jump) must not make every later estimate absurd.
_FACTOR_RANGE = (1e-2, 1e2)
_CALIBRATION_RUNS = 100  # the most recent stored runs a calibration reads
_THROUGHPUT_TTL_S = 60.0  # a throughput older than this is measured again when asked for

# Memory: working copies per parameter vector while training (parameters, new parameters,
# gradient, optimizer state: two moments for Adam), the same per path image (chain, gradient,
# force, optimizer state), and per activation (kept for backward, its gradient, a temporary).
_TRAIN_COPIES = {"sgd": 4, "adam": 5}
_PATH_COPIES = {"sgd": 4, "adam": 5}
_ACTIVATION_COPIES = 3


@dataclass(frozen=True)
class Calibration:
    """Per-stage correction factors of the cost model: measured / predicted seconds.

    Attributes:
        factors: ``(stage, factor)`` pairs, stages of :data:`COST_STAGES`; a stage not listed
            keeps the raw model (factor 1).
        runs: how many finished runs the factors were fitted on (0: the raw model).
    """

    factors: tuple[tuple[str, float], ...] = ()
    runs: int = 0

    def factor(self, stage: str) -> float:
        return dict(self.factors).get(stage, 1.0)


RAW = Calibration()


def device_kind(config: ExperimentConfig) -> str:
    """``"cuda"`` or ``"cpu"``: the kind of device the config runs on here."""
    return "cuda" if _device(config).startswith("cuda") else "cpu"


def estimate_cost(config: ExperimentConfig, calibration: Calibration = RAW) -> dict[str, Any]:
    """Cost of running ``config``, before running it (milliseconds to compute).

    Returns ``{"seconds", "stages", "n_params", "n_pairs", "flops", "memory",
    "calibrated_runs"}``: ``seconds`` is the total (set-up included), ``stages`` the seconds of
    :data:`COST_STAGES`, ``memory`` the peak bytes (:func:`memory_need`), ``calibrated_runs``
    the number of stored runs behind ``calibration`` (0: the raw model, off by a factor of a
    few either way). ``flops`` counts training the K minima (forward + backward = 3 forward
    passes per example: about ``6 * params * examples per step * K * steps`` for dense layers;
    convolutions are counted per output position) and the paths (optimisation of every pair's
    images plus the barrier evaluation along them).
    """
    parts = _cost_parts(config)
    stages = stage_seconds(config, config_throughput(config), calibration)
    return {"seconds": _SETUP_S + sum(stages.values()), "stages": stages,
            "n_params": parts["n_params"], "n_pairs": parts["n_pairs"],
            "flops": parts["minima_flops"] + parts["paths_flops"],
            "memory": max(memory_need(config).values()), "calibrated_runs": calibration.runs}


def stage_seconds(config: ExperimentConfig, flops_per_s: float,
                  calibration: Calibration = RAW) -> dict[str, float]:
    """Predicted seconds of each stage of :data:`COST_STAGES` (set-up excluded, as in
    ``Result.timings``) at a matmul throughput of ``flops_per_s``; pure."""
    parts = _cost_parts(config)
    rate = flops_per_s * parts["efficiency"]
    return {stage: calibration.factor(stage) * (parts[f"{stage}_flops"] / rate
                                                + parts[f"{stage}_overhead_s"])
            for stage in COST_STAGES}


def fit_calibration(observations: Iterable[tuple[Mapping[str, float], Mapping[str, float]]]
                    ) -> Calibration:
    """Per stage, the median of measured / predicted seconds over ``observations``, pairs
    ``(predicted, measured)`` of per-stage seconds (e.g. :func:`stage_seconds` and
    ``Result.timings``). A stage without a usable pair (both > 0 and finite numbers) keeps
    factor 1; each run's factor is clipped to ``_FACTOR_RANGE`` before the median, and the
    median is too; nothing raises on a huge or non-numeric timing."""
    ratios: dict[str, list[float]] = {stage: [] for stage in COST_STAGES}
    runs = 0
    lo, hi = _FACTOR_RANGE
    for predicted, measured in observations:
        runs += 1
        for stage in COST_STAGES:
            p, m = _seconds(predicted.get(stage)), _seconds(measured.get(stage))
            if p > 0 and m > 0 and math.isfinite(p) and math.isfinite(m):
                # Each run's factor clipped, then the median: one freak timing moves nothing.
                ratios[stage].append(min(max(m / p, lo), hi))
    factors = tuple((stage, min(max(statistics.median(r), lo), hi))
                    for stage, r in ratios.items() if r)
    return Calibration(factors, runs if factors else 0)


def _seconds(value: Any) -> float:
    """``value`` as float seconds; 0 (unusable) for what is not a real number, and for an
    integer too large for a float (``float(10**400)`` raises ``OverflowError``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return 0.0
    try:
        return float(value)
    except OverflowError:
        return 0.0


def store_calibration(store: ResultStore, kind: str, like: ExperimentConfig | None = None
                      ) -> Calibration:
    """The calibration fitted on the finished runs in ``store`` that ran on a ``kind``
    (``"cpu"``/``"cuda"``) device, at the current throughput; :data:`RAW` without any.

    With ``like``, only the runs of its dataset and architecture count when there are any:
    how long paths take to converge depends on the task far more than the model can say
    (e.g. spirals paths take about three times the steps of digits paths).

    The store is read once per list of runs (cached); unreadable results (e.g. from before
    results were checksummed) are skipped.
    """
    runs = tuple(store.list())[-_CALIBRATION_RUNS:]
    observed = [(config, timings) for config, timings, device in _stored_timings(
        str(store.root), runs) if device == kind]
    if like is not None:
        same = [(c, t) for c, t in observed if (c.dataset, c.arch) == (like.dataset, like.arch)]
        observed = same or observed
    if not observed:
        return RAW
    return fit_calibration(
        (stage_seconds(config, config_throughput(config)), timings)
        for config, timings in observed)


@functools.lru_cache(maxsize=8)
def _stored_timings(root: str, runs: tuple[str, ...]
                    ) -> tuple[tuple[ExperimentConfig, dict[str, float], str], ...]:
    """``(config, stage timings, device kind)`` of the finished runs ``runs`` of ``root``
    that verify (:func:`~lossbarcode.experiment.load_result`: checksums, a config that hashes
    to the run id, content): an edited result never calibrates the model."""
    from lossbarcode.experiment import load_result
    from lossbarcode.store import ResultStore

    store = ResultStore(root)
    found = []
    for run_id in runs:
        try:
            result = load_result(store, run_id, warn=False)
            if result is None:
                continue
            config = result.config
            timings = {s: float(result.timings[s]) for s in COST_STAGES}
            kind = "cuda" if result.device.startswith("cuda") else "cpu"
            if result.alignment.get("minima_from", "trained") != "trained":
                timings["minima"] = 0.0  # permuted stored minima: no training was timed
        except (ValueError, KeyError, TypeError, OverflowError, OSError):  # skip it
            continue
        found.append((config, timings, kind))
    return tuple(found)


def memory_need(config: ExperimentConfig) -> dict[str, int]:
    """Estimated peak bytes of each stage of :data:`COST_STAGES`: the data, the K parameter
    vectors with their training copies and the activations of a K x batch minibatch
    (minima); every path image with its optimisation copies and activations (paths)."""
    parts = _cost_parts(config)
    item = {"float32": 4, "float64": 8}.get(config.dtype, 4)
    p, k, acts = parts["n_params"], config.k, parts["activations"]
    data = parts["data_values"] * item
    optimizer = config.training()[0]
    minima = (_TRAIN_COPIES[optimizer] * k * p
              + _ACTIVATION_COPIES * k * parts["batch"] * acts)
    images = parts["n_pairs"] * parts["path_images"]
    paths = (k * p + _PATH_COPIES[optimizer] * images * p
             + _ACTIVATION_COPIES * images * parts["path_batch"] * acts)
    return {"minima": int(data + minima * item), "paths": int(data + paths * item)}


def check_memory(config: ExperimentConfig, free_bytes: int, where: str) -> None:
    """``ValueError`` saying what to lower if the peak stage of ``config`` needs more than
    ``free_bytes`` (the free memory of the device ``where``)."""
    need = memory_need(config)
    parts = _cost_parts(config)
    stage = max(need, key=need.__getitem__)  # the stage that decides
    n_bytes = need[stage]
    if n_bytes > free_bytes:
        hint = ("use " + ("pairs 'mst', " if config.pairs == "all" else "")
                + "fewer minima K, fewer images per path or a smaller width/depth"
                if stage == "paths" else
                "use fewer minima K, a smaller batch or a smaller width/depth")
        raise ValueError(
            f"this run cannot fit in memory: its {stage} stage needs about "
            f"{n_bytes / 2**30:,.1f} GiB for {config.k:,} minima of "
            f"{parts['n_params']:,} parameters"
            + (f" and {parts['n_pairs']:,} paths" if stage == "paths" else "")
            + f", but {where} has {free_bytes / 2**30:,.1f} GiB free; {hint}")


def check_fits(config: ExperimentConfig) -> None:
    """:func:`check_memory` against the free memory of the device ``config`` runs on here
    (``ValueError`` saying what to lower, or that the device is not usable)."""
    check_memory(config, *free_memory(config.device))


def free_memory(device: str) -> tuple[int, str]:
    """``(free bytes, device name)`` of the device a config's ``device`` names (``ValueError``
    if it is not usable here)."""
    from lossbarcode.experiment import check_device
    from lossbarcode.landscape import available_memory

    dev = check_device(device)
    return available_memory(dev), str(dev)


# --------------------------------------------------------------------------- the model


@functools.lru_cache(maxsize=512)
def _cost_parts(config: ExperimentConfig) -> dict[str, Any]:
    """Throughput-independent counts of each stage: FLOPs, per-step overhead seconds (the
    device kind's), and the sizes the memory estimate needs."""
    shape, n_out, full_train, full_test = DATASET_SHAPES[config.dataset]
    if config.dataset in VECTOR_DATASETS:
        n_train, n_test = config.n_train or full_train, config.n_test or full_test
    else:
        n_train = min(config.n_train or full_train, full_train)
        n_test = min(config.n_test or full_test, full_test)
    n_eval = min(config.eval_subset or n_train, n_train)
    n_params, fwd, acts = _model_cost(config, shape, n_out)
    k = config.k

    batch = min(config.batch_size, n_train)
    _, _, train_steps, polish = config.training()
    # The full-batch phase: its typical iterations (with a line search's extra evaluation)
    # and the Lanczos Hessian-vector products (about 4 forward passes each).
    minima_flops = (3 * fwd * batch * k * train_steps + fwd * k * (n_eval + n_test)
                    + 4 * fwd * k * n_eval * min(polish, _POLISH_TYPICAL)
                    + 4 * fwd * k * n_eval * LANCZOS_ITERS)

    n_all = k * (k - 1) // 2
    n_pairs = n_all if config.pairs == "all" or k == 2 else min(n_all, 2 * (k - 1))
    e, img = config.eval_points, config.images
    path_batch = min(PATH_BATCH_SIZE, n_eval)

    def chain_points(n: int) -> int:  # loss profile points along a chain of n images
        return (n - 1) * (e + 1) + 1

    evals = n_pairs * (chain_points(img + 2) + _REFINE)  # the straight line is always profiled
    train_points = 0.0  # interior image-steps of the optimisation (minibatch)
    full_points = 0.0  # the same on the whole evaluation set (NEB's final phase)
    fixed = config.path_steps
    # Converging paths stop when their barrier is steady: typically after about
    # _EXPECTED_PATH_STEPS minibatch steps (never more than the cap).
    steps = fixed if fixed is not None else min(config.path_max_steps, _EXPECTED_PATH_STEPS)
    checks = 3 if fixed is not None else steps / PATH_CYCLE_STEPS
    path_images = img + 2
    if config.path_method == "neb":
        final = path_images = img + 2 + 2 * NEB_INSERT
        if fixed is not None:
            bounds = [round(fixed * c / NEB_CYCLES) for c in range(NEB_CYCLES + 1)]
            train_points = sum((img + NEB_INSERT * c) * (bounds[c + 1] - bounds[c])
                               for c in range(NEB_CYCLES))
        else:
            train_points = (final - 2) * steps
            full_points = (final - 2) * _FINAL_SHARE * _FINAL_STEPS_TYPICAL
            checks += _FINAL_SHARE * _FINAL_STEPS_TYPICAL / 10
        evals += n_pairs * ((checks + 1) * (chain_points(final) + _REFINE)
                            + 2 * (final - 1))  # + insertion checks
        evals += n_pairs * (final - 2) * 3  # the final perpendicular gradient (with backward)
    elif config.path_method == "bezier":
        train_points = BEZIER_T_SAMPLES * steps
        evals += n_pairs * (checks + 1) * (chain_points(img + 2) + _REFINE)
    if config.pairs == "mst" and k > 2:
        evals += n_all * SCREEN_POINTS
    paths_flops = (3 * fwd * n_pairs * (path_batch * train_points + n_eval * full_points)
                   + fwd * n_eval * evals)

    kind = device_kind(config)
    path_steps = steps if config.path_method != "linear" else 0
    return {
        "minima_flops": float(minima_flops), "paths_flops": float(paths_flops),
        "minima_overhead_s": _STAGE_FIXED_S + _STEP_OVERHEAD_S[kind] * (
            train_steps + min(polish, _POLISH_TYPICAL) + LANCZOS_ITERS),
        "paths_overhead_s": _STAGE_FIXED_S + _PATH_STEP_OVERHEAD_S[kind] * path_steps,
        "efficiency": _EFFICIENCY.get(config.arch, _AUTOGRAD_EFFICIENCY),
        "n_params": n_params, "n_pairs": n_pairs, "activations": acts, "batch": batch,
        "path_batch": path_batch, "path_images": path_images,
        "data_values": (n_train + n_test) * math.prod(shape),
    }


def _device(config: ExperimentConfig) -> str:
    if config.device != "auto":
        return config.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def config_throughput(config: ExperimentConfig) -> float:
    """:func:`throughput` of the device and dtype ``config`` runs with."""
    return throughput(_device(config), config.dtype)


_throughput_cache: dict[tuple[str, str], tuple[float, float]] = {}  # key: (FLOP/s, when)
_throughput_lock = threading.Lock()


def throughput(device: str, dtype: str) -> float:
    """FLOP/s of a small square matmul on ``device``: the best of several short trials,
    measured again when the last measurement is over a minute old; the best measurement of
    the process is kept, so a busy moment never lowers it for good. ``ValueError`` if the
    device is not usable here."""
    key = (device, dtype)
    with _throughput_lock:
        best, when = _throughput_cache.get(key, (0.0, -math.inf))
        if time.monotonic() - when > _THROUGHPUT_TTL_S:
            try:
                best = max(best, _measure_matmul(device, dtype))
            except (RuntimeError, AssertionError) as err:  # e.g. "cuda" without a GPU
                raise ValueError(f"device {device!r} is not usable here ({err})") from err
            _throughput_cache[key] = best, time.monotonic()
        return best


def _measure_matmul(device: str, dtype: str) -> float:
    import torch

    dev = torch.device(device)
    n = 256 if dev.type == "cpu" else 2048
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=dev, dtype=getattr(torch, dtype))
    for _ in range(3):  # warm-up: thread pool start, allocations, kernel selection
        a @ b
    sync()
    best = 0.0
    for _ in range(5):  # best of five short trials: other processes may share the device
        reps, start = 0, time.perf_counter()
        while True:
            a @ b
            reps += 1
            sync()
            spent = time.perf_counter() - start
            if spent > 0.01 or reps >= 1000:
                break
        best = max(best, 2.0 * n**3 * reps / max(spent, 1e-9))
    return best


def _model_cost(config: ExperimentConfig, shape: tuple[int, ...], n_out: int
                ) -> tuple[int, float, int]:
    """``(n_params, forward FLOPs per example, activation values per example)`` of the
    config's model, without initialising (or, for huge models, allocating) its weights.

    Weight-bearing layers cost ``2 * weight size`` per output position; the positions (tokens,
    pixels) do not depend on the width, so they are read off a forward pass of the same
    architecture at a tiny width. Attention adds ``4 * T^2 * width`` per layer. Activations
    count the outputs of the weight-bearing layers.
    """
    import torch
    from torch import nn

    from lossbarcode import models

    tiny = models.build(config.arch, config.heads if config.arch == "transformer" else 2,
                        config.depth, shape, n_out, heads=config.heads, seed=0)
    weighted = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    positions: dict[str, int] = {}

    def counter(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            positions[name] = positions.get(name, 0) + output.numel() // _per_position(module)
        return hook

    handles = [m.register_forward_hook(counter(name)) for name, m in tiny.named_modules()
               if isinstance(m, weighted)]
    dtype = torch.int64 if config.arch == "transformer" else torch.float32
    with torch.no_grad():
        tiny(torch.zeros((1, *shape), dtype=dtype))
    for handle in handles:
        handle.remove()

    full = _build_uninitialised(models.build, config, shape, n_out)
    layers = [(name, m) for name, m in full.named_modules() if isinstance(m, weighted)]
    flops = sum(2.0 * m.weight.numel() * positions.get(name, 0) for name, m in layers)
    acts = sum(_per_position(m) * positions.get(name, 0) for name, m in layers)
    if config.arch == "transformer":
        flops += 4.0 * shape[0] ** 2 * config.width * config.depth
    return models.n_params(full), flops, acts


def _per_position(module: Any) -> int:
    return module.out_features if hasattr(module, "out_features") else module.out_channels


def _build_uninitialised(build: Any, config: ExperimentConfig, shape: tuple[int, ...],
                         n_out: int) -> Any:
    """The full model with uninitialised weights (fast, and untouched memory costs nothing);
    on the meta device if even that allocation fails."""
    import torch

    args = (config.arch, config.width, config.depth, shape, n_out)
    try:
        with _SkipInit():
            return build(*args, heads=config.heads, seed=0)
    except (RuntimeError, MemoryError):
        with torch.device("meta"), _SkipInit():
            return build(*args, heads=config.heads, seed=0)


@functools.cache
def _skip_init_mode() -> type:
    from torch.overrides import TorchFunctionMode

    # Random initialisers: skipping them leaves the (lazily mapped) memory untouched. The meta
    # device is not used by default because its first random/arithmetic op imports
    # torch._dynamo, which takes seconds.
    names = {"normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "trunc_normal_", "orthogonal_"}

    class SkipInit(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in names:
                return args[0] if args else kwargs["tensor"]
            return func(*args, **kwargs)

    return SkipInit


class _SkipInit:
    """Context manager: ``torch.nn.init``-style random initialisers do nothing (this thread)."""

    def __enter__(self) -> None:
        self._mode = _skip_init_mode()()
        self._mode.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
