"""One experiment's settings: :class:`ExperimentConfig`, valid once constructed, and the run
id it hashes to.

Every knob is a field with its default from :mod:`lossbarcode.choices` and its meaning in
:data:`FIELD_HELP` (read by the command line's ``--help`` and the dashboard's widgets). The run
id hashes :meth:`ExperimentConfig.identity` (what it holds is said there). Torch-free: the
command line, the dashboard and the cost model read configs without the engine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossbarcode import choices, topology
from lossbarcode._checks import int_problem, is_positive_number
from lossbarcode.datafiles import fingerprint

DTYPES = ("float32", "float64")
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# Python types a config field may hold, by its annotation's parts (bool is never an int here).
_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                       "bool": (bool,)}
_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number",
               "bool": "true or false"}


def _type_problems(values: Mapping[str, Any]) -> list[str]:
    """One message per config value of the wrong Python type (e.g. ``"heads": "4"``)."""
    problems = []
    for f in dataclasses.fields(ExperimentConfig):
        if f.name not in values:
            continue
        value = values[f.name]
        parts = [part.strip() for part in str(f.type).split("|")]
        optional = "None" in parts
        kinds = [part for part in parts if part != "None"]
        if value is None and optional:
            continue
        ok = isinstance(value, bool) == ("bool" in kinds) and isinstance(
            value, tuple(t for kind in kinds for t in _KINDS[kind]))
        if not ok:
            wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds) + (
                " or null" if optional else "")
            problems.append(f"field {f.name!r} must be {wanted}, got {value!r} "
                            f"({type(value).__name__})")
    return problems


def identity_hash(identity: Mapping[str, Any]) -> str:
    """The 16-hex-digit run id of an identity dict (:meth:`ExperimentConfig.identity`)."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _per_optimizer(values: Mapping[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in values.items())


# What each config field means: the one description, read by the CLI's --help, the dashboard's
# widgets and the docs (field_help adds the default).
FIELD_HELP: dict[str, str] = {
    "dataset": "digits: 8x8 handwritten, bundled; spirals, blobs and teacher are synthetic; "
               "modadd and text are token sequences; mnist1d: 1-D signals of length 40, "
               "generated offline by the mnist1d package; the torchvision sets ("
               + ", ".join(choices.TORCHVISION_DATASETS) + ") are read from the data folder, "
               "never downloaded (fashion_mnist from Debian's dataset-fashion-mnist when the "
               "folder has none of its files)",
    "n_train": "training examples, a seeded subset (none: the whole training split; "
               "synthetic sets: 512)",
    "n_test": "test examples, a seeded subset (none: the whole test split)",
    "data_root": "folder of the torchvision datasets (their own layout), or the .txt/.jsonl "
                 "file or folder for 'text'",
    "arch": "fcn: fully connected; cnn: convolutional; resnet: residual blocks; transformer: "
            "for the sequence sets (modadd, text)",
    "width": "hidden units (fcn), channels (cnn, resnet) or d_model (transformer)",
    "depth": "hidden layers, conv layers, residual blocks or transformer layers",
    "heads": "attention heads of the transformer; must divide the width",
    "k": "number of minima K (>= 2): networks trained from K seeds, all at once; the barcode "
         "has K bars, and pairs 'all' joins K(K-1)/2 pairs",
    "optimizer": "how the K networks are trained: sgd (with momentum) or adam (none: the "
                 "family's: " + ", ".join(f"{a} {t[0]}" for a, t in choices.TRAINING.items())
                 + ")",
    "lr": "learning rate (none: the family's for its optimizer, "
          + ", ".join(f"{a} {t[1]:g}" for a, t in choices.TRAINING.items())
          + f"; else the optimizer's, {_per_optimizer(choices.MINIMA_LR)})",
    "schedule": "constant, or anneal (cosine decay to 0)",
    "steps": "minibatch training steps per network (none: the family's, "
             + ", ".join(f"{a} {t[2]}" for a, t in choices.TRAINING.items()) + ")",
    "batch_size": "examples per training step",
    "polish_steps": "full-batch L-BFGS iterations after training at most: they run until "
                    "every gradient norm is at most minima_tol (a minimum that does not get "
                    "there is not certified; none: the family's, "
                    + ", ".join(f"{a} {t[3]}" for a, t in choices.TRAINING.items()) + ")",
    "minima_tol": "a certified minimum has a full-batch gradient norm of at most this (mean "
                  "training loss) and no Hessian eigenvalue below minus this; a path's top is "
                  "a saddle when its gradient norm is at most this (at most "
                  f"{choices.MINIMA_TOL_MAX:g})",
    "path_method": "linear: the straight line (an upper bound); neb: nudged elastic band; "
                   "bezier: a trained curve with one bend; string: the string method with a "
                   "climbing image (independent of neb, full batch, slower)",
    "pairs": "mst: the spanning tree of the straight-line barriers first, then only the pairs "
             "that could undercut their route (the all-pairs barcode to path_atol, with far "
             "fewer paths where barriers vanish); all: every pair",
    "images": "movable points of each path; more follow a bent valley more closely",
    "path_steps": "none: optimise every path until it converges; a number: that fixed step "
                  "budget instead (the old method, never reported as converged)",
    "path_max_steps": "minibatch steps per path at most; a path that reaches it is reported "
                      "unconverged",
    "path_tol": "stopping rule: a path stops when a cycle lowers its barrier by at most this "
                "share of its segment (plus path_atol), twice in a row (at most "
                f"{choices.PATH_TOL_MAX:g})",
    "path_atol": "the resolution of a barrier, in loss units (at most "
                 f"{choices.PATH_ATOL_MAX:g}: a coarser one would certify anything)",
    "restarts": "starts per pair that decides the barcode: the straight line and restarts-1 "
                "others (the route through other minima, bent lines); the lowest counts and "
                f"they must agree for a certified death (1 to {choices.PATH_RESTARTS_MAX})",
    "path_lr": f"initial path step size (none: {_per_optimizer(choices.PATH_LR)}; paths "
               "step with " + ", ".join(f"{o} ({m})" for m, o in choices.PATH_OPTIMIZER.items()
                                        if m not in ("linear", "string"))
               + "; the string method chooses its own)",
    "eval_points": "interpolated evaluation points between neighbouring images",
    "eval_subset": "evaluate barriers on a fixed subset of this many training examples "
                   "(none: the whole training set)",
    "align": "re-basin: permute the hidden units of every minimum onto a reference minimum "
             "(the lowest) by weight matching before the paths; the same functions and losses, "
             "so what is left of a barrier is not permutation symmetry (arch "
             + " or ".join(choices.ALIGN_ARCHS) + "; another run id than the unaligned run)",
    "rule": "union_find: exact H0; direct: the paper code's rule",
    "score_norm": "how the finite segment lengths make the TO-score: l2 (the paper's), sum, "
                  "max or mean",
    "score_normalize": "none: in loss units; range: divided by the spread of the minima's "
                       "losses, to compare different tasks",
    "seed": "seeds the data split and the K initialisations; another seed gives another "
            "sample of minima",
    "device": "auto (CUDA when present, else CPU), cpu, cuda or cuda:N; not part of the run "
              "id: devices differ in round-off, which can send a network's training to "
              "another nearby minimum (another sample of the same run; the result records "
              "its device)",
    "dtype": "float32 or float64",
}


def field_help(name: str) -> str:
    """:data:`FIELD_HELP` of config field ``name`` plus its default (where it is not None,
    whose meaning the description says) and its upper bound (:data:`choices.FIELD_MAX`)."""
    default = next(f.default for f in dataclasses.fields(ExperimentConfig) if f.name == name)
    text = FIELD_HELP[name] if default is None else f"{FIELD_HELP[name]} (default {default!r})"
    most = choices.FIELD_MAX.get(name, choices.LR_MAX if name in ("lr", "path_lr") else None)
    if most is None:
        return text
    return f"{text}; at most {most if isinstance(most, int) else format(most, 'g')}"


@dataclass(frozen=True)
class ExperimentConfig:
    """Every knob of one experiment, checked at construction. Same config -> same ``run_id``
    anywhere.

    Groups: data (``dataset`` ... ``data_root``), model (``arch`` ... ``heads``), minima
    (``k`` ... ``polish_steps``), paths (``path_method`` ... ``eval_subset``, and ``align``:
    re-basin before them), barcode and
    score (``rule``, ``score_norm``, ``score_normalize``), run (``seed``, ``device``,
    ``dtype``). What each field means: :data:`FIELD_HELP` (:func:`field_help` with its default).
    """

    dataset: str = choices.DATASET
    n_train: int | None = None
    n_test: int | None = None
    data_root: str | None = None
    arch: str = choices.ARCH
    width: int = choices.WIDTH
    depth: int = choices.DEPTH
    heads: int = choices.HEADS
    k: int = choices.K
    optimizer: str | None = None
    lr: float | None = None
    schedule: str = choices.SCHEDULE
    steps: int | None = None
    batch_size: int = choices.BATCH_SIZE
    polish_steps: int | None = None
    minima_tol: float = choices.MINIMA_TOL
    path_method: str = choices.PATH_METHOD
    pairs: str = choices.PAIRING
    images: int = choices.PATH_IMAGES
    path_steps: int | None = None
    path_max_steps: int = choices.PATH_MAX_STEPS
    path_tol: float = choices.PATH_TOL
    path_atol: float = choices.PATH_ATOL
    restarts: int = choices.PATH_RESTARTS
    path_lr: float | None = None
    eval_points: int = choices.PATH_EVAL_POINTS
    eval_subset: int | None = None
    align: bool = choices.ALIGN
    rule: str = "union_find"
    score_norm: str = "l2"
    score_normalize: str | None = None
    seed: int = 0
    device: str = "auto"
    dtype: str = choices.DTYPE

    def __post_init__(self) -> None:
        """Check every value once, at construction: an ``ExperimentConfig`` that exists is
        valid. ``ValueError`` lists all problems, each with what to do."""
        # Types first: the checks below compare and do arithmetic on the values.
        problems = _type_problems(self.to_dict())
        if problems:
            raise ValueError("invalid experiment config: " + "; ".join(problems))

        def need(ok: bool, message: str) -> None:
            if not ok:
                problems.append(message)

        def positive_int(name: str, minimum: int = 1, optional: bool = False) -> None:
            value = getattr(self, name)
            if not (optional and value is None):
                problem = int_problem(value, name, minimum)
                need(problem is None, problem or "")

        def choice(name: str, options: tuple) -> None:
            need(getattr(self, name) in options,
                 f"{name} must be one of {list(options)}, got {getattr(self, name)!r}")

        choice("dataset", choices.DATASETS)
        choice("arch", choices.ARCHS)
        choice("optimizer", (*choices.OPTIMIZERS, None))
        choice("schedule", choices.SCHEDULES)
        choice("path_method", choices.PATH_METHODS)
        choice("pairs", choices.PAIRINGS)
        choice("rule", topology.RULES)
        choice("score_norm", topology.NORMS)
        choice("score_normalize", topology.NORMALIZATIONS)
        choice("dtype", DTYPES)
        for name in ("width", "depth", "heads", "batch_size", "path_max_steps"):
            positive_int(name)
        positive_int("steps", optional=True)
        positive_int("path_steps", optional=True)
        positive_int("polish_steps", minimum=1, optional=True)
        positive_int("restarts", minimum=1)
        positive_int("k", minimum=2)
        positive_int("images", minimum=1)
        positive_int("eval_points", minimum=0)
        positive_int("seed", minimum=0)
        for name in ("n_train", "n_test", "eval_subset"):
            positive_int(name, optional=True)
        # Upper bounds (choices.FIELD_MAX): a typo such as 1e9 steps is refused, not run.
        for name, most in choices.FIELD_MAX.items():
            value = getattr(self, name)
            need(not isinstance(value, int) or value <= most,
                 f"{name} must be at most {most}, got {value}" if isinstance(value, int)
                 else "")
        for name in ("lr", "path_lr"):
            value = getattr(self, name)
            need(value is None or (is_positive_number(value) and value <= choices.LR_MAX),
                 f"{name} must be a positive number of at most {choices.LR_MAX:g} (or None for "
                 f"the default), got {value!r}")
        for name, hint, most in (
                ("path_tol", choices.PATH_TOL, choices.PATH_TOL_MAX),
                ("path_atol", choices.PATH_ATOL, choices.PATH_ATOL_MAX),
                ("minima_tol", choices.MINIMA_TOL, choices.MINIMA_TOL_MAX)):
            value = getattr(self, name)
            need(is_positive_number(value) and value <= most,
                 f"{name} must be a positive number of at most {most:g} (a larger one would "
                 f"certify anything), got {value!r}; the default is {hint}")
        need(_DEVICE.fullmatch(self.device) is not None,
             f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.path_method == "string":
            unused = [name for name in ("path_steps", "path_lr") if getattr(self, name) is not None]
            need(not unused, f"path_method 'string' chooses its own step size and stops on its "
                             f"rule: drop {', '.join(unused)}")
        if self.arch == "transformer":
            need(self.dataset in choices.SEQUENCE_DATASETS,
                 "arch 'transformer' needs a sequence dataset: use dataset 'modadd' or 'text'")
            need(self.width % max(self.heads, 1) == 0,
                 f"transformer width (d_model) {self.width} must be divisible by heads "
                 f"{self.heads}")
        elif self.dataset in choices.SEQUENCE_DATASETS:
            problems.append(f"dataset {self.dataset!r} is a token sequence task: use arch "
                            "'transformer'")
        need(not self.align or self.arch in choices.ALIGN_ARCHS,
             f"align (re-basin) supports arch {' and '.join(choices.ALIGN_ARCHS)}, not "
             f"{self.arch!r}: drop align")
        if self.arch in ("cnn",):
            need(self.dataset not in choices.VECTOR_DATASETS,
                 f"arch 'cnn' needs image data; {self.dataset!r} has vector inputs (use fcn or "
                 "resnet)")
        if problems:
            raise ValueError("invalid experiment config: " + "; ".join(problems))

    def validate(self) -> ExperimentConfig:
        """``self``: kept for compatibility (deprecated). A config is validated when it is
        constructed, so there is nothing left to check."""
        return self

    @property
    def path_rule(self) -> str:
        """How this config's paths stop, in words (for captions, notes and sweep files)."""
        if self.path_steps is not None:
            return f"a fixed budget of {self.path_steps} steps"
        return (f"optimised until converged (tol {self.path_tol:g} x segment + "
                f"{self.path_atol:g}, cap {self.path_max_steps} steps)")

    def minima_settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`lossbarcode.minima.find_minima` (after the
        landscape and ``k``) that this config sets."""
        optimizer, lr, steps, polish_steps = self.training()
        return {"optimizer": optimizer, "lr": lr, "schedule": self.schedule, "steps": steps,
                "batch_size": self.batch_size, "seed": self.seed, "polish_steps": polish_steps,
                "tol": self.minima_tol}

    def training(self) -> tuple[str, float, int, int]:
        """``(optimizer, lr, steps, polish_steps)`` of the minima, the family's defaults
        filled in (:func:`lossbarcode.choices.training`)."""
        return choices.training(self.arch, self.optimizer, self.lr, self.steps,
                                self.polish_steps)

    def path_settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`lossbarcode.paths.connect` (after the landscape
        and the minima) that this config sets."""
        return {"pairs": self.pairs, "method": self.path_method, "images": self.images,
                "steps": self.path_steps, "lr": self.path_lr, "eval_points": self.eval_points,
                "seed": self.seed, "tol": self.path_tol, "atol": self.path_atol,
                "max_steps": self.path_max_steps, "grad_tol": self.minima_tol,
                "restarts": self.restarts}

    @property
    def score_variant(self) -> str:
        """Name of the TO-score variant this config reports (``"l2"``, ``"max_range"``...)."""
        return score_variant(self.score_norm, self.score_normalize)

    def identity(self, data: str | None = None) -> dict[str, Any]:
        """The dict the run id hashes: what determines the computation, canonicalised.

        Every field but ``device`` (devices differ only in round-off, though that can send
        a network to another nearby minimum; the result records its device) and
        ``align`` when it is False (so unaligned runs keep their old ids), with the
        training defaults of the family written out (:meth:`training`), plus
        ``paths_version`` (:data:`~lossbarcode.choices.PATHS_VERSION`), with
        ``data_root`` replaced by ``data``, the content fingerprint of the data files
        (computed from ``data_root`` when not given), ``heads`` at its default outside
        transformers, and ``eval_subset`` None when it covers all ``n_train`` examples (n_train
        unset: the dataset's, :func:`~lossbarcode.choices.train_examples_at_most`).
        """
        values = self.to_dict()
        del values["device"]
        # The family's training defaults, written out: naming them changes nothing.
        values.update(zip(("optimizer", "lr", "steps", "polish_steps"), self.training(),
                          strict=True))
        if self.arch != "transformer":
            values["heads"] = ExperimentConfig.heads
        # A subset as large as the training set is the training set (with n_train unset
        # too: the dataset's own size), so it names the same run.
        most = choices.train_examples_at_most(self.dataset, self.n_train)
        if self.eval_subset is not None and most is not None and self.eval_subset >= most:
            values["eval_subset"] = None
        values["data_root"] = None
        values["data"] = fingerprint(self.dataset, self.data_root) if data is None else data
        # The path algorithm: a result made by an older one is never returned for a config
        # whose paths are now computed differently.
        values["paths_version"] = choices.PATHS_VERSION
        # Unaligned runs keep the run ids they had before alignment existed.
        if not self.align:
            del values["align"]
        return values

    @functools.cached_property
    def run_id(self) -> str:
        """A stable 16-hex-digit hash of :meth:`identity` (computed once per config)."""
        return identity_hash(self.identity())


    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        """Build from a dict (e.g. a JSON/TOML file); ``ValueError`` naming the field for an
        unknown key or a value of the wrong type."""
        if not isinstance(values, Mapping):
            raise ValueError(f"a config must be an object of field: value pairs, got "
                             f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        # "none" means None in a file as on the command line (--score-normalize none).
        optional = {f.name for f in dataclasses.fields(cls) if "None" in str(f.type)}
        values = {key: None if key in optional and isinstance(value, str)
                  and value.lower() in ("none", "null") else value
                  for key, value in values.items()}
        problems = _type_problems(values)
        if problems:
            raise ValueError("invalid experiment config: " + "; ".join(problems))
        return cls(**values)

    def replace(self, **changes: Any) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)


def setting_differences(configs: Sequence[ExperimentConfig]) -> dict[str, list[Any]]:
    """The knobs on which ``configs`` differ, ``name -> distinct values`` (first-seen order;
    empty if they agree): the fields of :meth:`ExperimentConfig.identity` (so ``device`` and
    knobs that change nothing are not differences) other than ``seed`` and the data
    fingerprint. Runs pooled across such a difference confound it with what is compared."""
    values: dict[str, list[Any]] = {}
    for config in configs:
        identity = config.identity(data="")  # the data files' fingerprint is not a knob
        del identity["seed"]  # seeds differ by design
        identity["align"] = config.align  # in the identity only when True
        for name, value in identity.items():
            values.setdefault(name, [])
            if value not in values[name]:
                values[name].append(value)
    return {name: seen for name, seen in values.items() if len(seen) > 1}


def score_variant(norm: str, normalize: str | None) -> str:
    """Name of a TO-score variant: ``"l2"``, ``"max_range"``, ..."""
    return f"{norm}_range" if normalize else norm


def parse_score_variant(variant: str) -> tuple[str, str | None]:
    """``(norm, normalize)`` of a variant's name (the inverse of :func:`score_variant`);
    ``ValueError`` for a name that is not one."""
    norm, _, normalize = variant.partition("_")
    if norm not in topology.NORMS or normalize not in ("", "range"):
        raise ValueError(f"unknown TO-score variant {variant!r}")
    return norm, normalize or None
