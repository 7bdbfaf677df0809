"""Datasets: embedded toy sets, local text, and torchvision image sets, as tensors in memory.

Every loader returns a :class:`Dataset` whose tensors are already preprocessed, so a loss is a
pure function of the parameters: no augmentation, no shuffling, no lazy loading. Splits and
subsets are drawn from ``seed``; the same arguments always give identical tensors.

Datasets (``DATASETS``):

* ``digits`` (default): scikit-learn's bundled 8x8 handwritten digits, 1,797 images, split
  80/20. Images ``(N, 1, 8, 8)``, 10 classes.
* ``spirals``: two interleaved 2-D spiral arms, 2 classes. Inputs ``(N, 2)``.
* ``blobs``: Gaussian blobs on a circle, 4 classes by default. Inputs ``(N, 2)``.
* ``teacher``: regression on ``x ~ N(0, I_d)`` with targets from a fixed random tanh MLP.
* ``modadd``: ``(a + b) mod p`` as token sequences ``[a, b, =]`` for transformers.
* ``text``: character-level next-token prediction over a local ``.txt`` / ``.jsonl`` file or a
  folder of them (``root`` is the path), e.g. an OSCAR shard.
* ``mnist1d``: MNIST-1D (Greydanus 2020), generated offline by the ``mnist1d`` package
  (``make_dataset(get_dataset_args())``, its fixed seed 42; never its downloading
  ``get_dataset``): 4,000 train / 1,000 test signals of length 40, 10 classes. Inputs
  ``(N, 1, 40)``: one channel, which ``cnn`` convolves in 1-D and ``fcn`` / ``resnet``
  flatten. Kept as the package scales them (over the whole set).
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``: read from ``root``
  (default ``./data``, relative to the working directory) in the layout torchvision uses;
  fetched by torchvision only when ``download=True``. ``fashion_mnist`` is read from Debian's
  ``dataset-fashion-mnist`` copy (``/usr/share/datasets/fashion-mnist``) when ``root`` holds
  none of its files; ``meta["source"]`` says where the data was read from.

Image pixels are scaled to [0, 1] and then standardised per channel with the mean and standard
deviation of the full training split (before any ``n_train`` subset), so a subset sees the same
preprocessing as the full set.

Synthetic sets (``spirals``, ``blobs``, ``teacher``) are generated at the requested size
(default 512 train / 512 test), so there is no upper limit on ``n_train`` / ``n_test`` for them;
the train and test samples come from separate random streams, so the test set does not change
when ``n_train`` does. For every finite set, ``n_train`` / ``n_test`` pick a seeded subset.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import pickle
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lossbarcode._checks import check_fraction, check_int, check_nonnegative
from lossbarcode.choices import DATASET, DATASET_SHAPES, DATASETS, SYNTHETIC_N, TASKS
from lossbarcode.datafiles import CIFAR as _CIFAR
from lossbarcode.datafiles import (
    DEFAULT_ROOT,
    data_source,
    fingerprint,
    mnist1d_arrays,
    source_files,
    system_hint,
    text_files,
)
from lossbarcode.datafiles import MNIST_FOLDERS as _MNIST_FOLDERS
from lossbarcode.datafiles import SVHN_FILES as _SVHN_FILES
from lossbarcode.datafiles import TEXT_SUFFIXES as _TEXT_SUFFIXES
from lossbarcode.datafiles import data_root as _root
from lossbarcode.losses import IGNORE_INDEX, task_error, task_loss  # kept for compatibility
from lossbarcode.seeds import stream_rng as _rng

__all__ = [
    "DATASETS",
    "DEFAULT_ROOT",
    "Dataset",
    "IGNORE_INDEX",
    "TASKS",
    "load",
    "task_error",
    "fingerprint",
    "tensor_digest",
    "task_loss",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed dataset held in memory.

    Shapes (``N`` examples, ``T`` sequence length):

    * images: ``x`` is ``(N, C, H, W)`` float32, standardised; vectors: ``(N, d)`` float32;
      sequences: ``(N, T)`` int64 token ids.
    * classification: ``y`` is ``(N,)`` int64; regression: ``(N, d_out)`` float32;
      sequence: ``(N, T)`` int64 next-token ids, ``IGNORE_INDEX`` (-100) where there is no target.

    ``input_shape`` is the per-example shape of ``x`` and ``n_outputs`` the number of classes,
    regression outputs or vocabulary size. ``meta`` holds loader details (normalisation
    statistics, vocabulary, source path, generator options) for display and caching.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    n_outputs: int
    task: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> Dataset:
        """A new Dataset with all four tensors moved to ``device`` (once, up front)."""
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )


def tensor_digest(dataset: Dataset) -> str:
    """sha256 of the tensors a run trains on (shapes, dtypes and bytes of the four splits,
    plus task and output count): stored with every stage and compared on resume, so stages
    made from different data are never mixed."""
    digest = hashlib.sha256(f"{dataset.task}:{dataset.n_outputs}".encode())
    for tensor in (dataset.x_train, dataset.y_train, dataset.x_test, dataset.y_test):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(f"|{array.dtype.str}{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


# --------------------------------------------------------------------------- public entry point


def load(
    name: str = DATASET,
    root: str | Path | None = None,
    download: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load dataset ``name`` (one of ``DATASETS``) with a seeded train/test split.

    ``root``: folder for torchvision sets (default ``./data``) or the text file/folder for
    ``text``. ``download``: let torchvision fetch missing files (needs a network).
    ``n_train`` / ``n_test``: seeded subset sizes (default: everything, or 512 for synthetic
    sets). Per-dataset keyword options:

    * digits: ``test_fraction=0.2``
    * spirals: ``noise=0.05``, ``turns=1.5``
    * blobs: ``n_classes=4``, ``std=0.6``
    * teacher: ``dim=8``, ``out_dim=1``, ``hidden=16``, ``noise=0.0``
    * modadd: ``p=23``, ``train_fraction=0.5``
    * text: ``seq_len=32``, ``test_fraction=0.1``, ``max_chars=10_000_000``

    Raises ValueError for an unknown name, option or bad size, FileNotFoundError when files
    (or MNIST-1D's package) are missing (the message says how to get them: where to put the
    files, the apt package or the pip package).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    for label, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{label} must be a positive integer or None, got {n!r}")
    seed = check_int(seed, "seed", 0)
    loader, allowed = _LOADERS[name]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown option(s) {unknown} for dataset {name!r}; allowed: {hint}")
    return loader(
        name=name,
        root=root,
        download=download,
        n_train=n_train,
        n_test=n_test,
        seed=seed,
        **options,
    )


# ------------------------------------------------------------------------------------- helpers


def _subset_indices(
    n_available: int, n: int | None, rng: np.random.Generator, label: str, name: str
) -> np.ndarray | None:
    """Seeded indices of a size-``n`` subset, or None to keep everything."""
    if n is None:
        return None
    if n > n_available:
        raise ValueError(
            f"{label}={n} is larger than the {n_available} examples available in {name!r}; "
            f"pass {label}<={n_available} or None"
        )
    return np.sort(rng.choice(n_available, size=n, replace=False))


def _take(x: np.ndarray | torch.Tensor, idx: np.ndarray | None):
    return x if idx is None else x[idx]


def _images(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_classes: int,
    max_value: float,
    n_train: int | None,
    n_test: int | None,
    seed: int,
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """Standardise integer images ``(N, C, H, W)`` in ``[0, max_value]`` into a Dataset.

    Statistics come from the whole training split; subsets are taken before the float copy so
    large sets (CIFAR) are only converted for the rows actually kept.
    """
    (xtr, ytr), (xte, yte) = train, test
    mean, std = _channel_stats(xtr, max_value)
    itr = _subset_indices(len(xtr), n_train, _rng(seed, "subset-train"), "n_train", name)
    ite = _subset_indices(len(xte), n_test, _rng(seed, "subset-test"), "n_test", name)

    def prep(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32) / max_value
        return ((t - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)).contiguous()

    return Dataset(
        name=name,
        x_train=prep(_take(xtr, itr)),
        y_train=torch.as_tensor(np.asarray(_take(ytr, itr)), dtype=torch.int64),
        x_test=prep(_take(xte, ite)),
        y_test=torch.as_tensor(np.asarray(_take(yte, ite)), dtype=torch.int64),
        input_shape=tuple(int(s) for s in xtr.shape[1:]),
        n_outputs=n_classes,
        task="classification",
        meta={"mean": mean.tolist(), "std": std.tolist(), **(meta or {})},
    )


def _channel_stats(x: np.ndarray, max_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``x / max_value`` over ``(N, H, W)``, in float64.

    Works channel by channel in chunks so a 50,000-image uint8 set is never copied to float
    in full.
    """
    n_channels = x.shape[1]
    total = np.zeros(n_channels)
    total_sq = np.zeros(n_channels)
    count = x.shape[0] * int(np.prod(x.shape[2:]))
    for start in range(0, x.shape[0], 4096):
        chunk = x[start : start + 4096].astype(np.float64) / max_value
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += (chunk**2).sum(axis=(0, 2, 3))
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    # a constant channel would divide by zero; leave it centred but unscaled
    std = np.where(var > 1e-12, np.sqrt(var), 1.0)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def _vectors(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    n_outputs: int,
    task: str,
    meta: Mapping[str, Any],
) -> Dataset:
    y_dtype = torch.int64 if task == "classification" else torch.float32
    return Dataset(
        name=name,
        x_train=torch.as_tensor(x_train, dtype=torch.float32).contiguous(),
        y_train=torch.as_tensor(y_train, dtype=y_dtype).contiguous(),
        x_test=torch.as_tensor(x_test, dtype=torch.float32).contiguous(),
        y_test=torch.as_tensor(y_test, dtype=y_dtype).contiguous(),
        input_shape=(int(x_train.shape[1]),),
        n_outputs=n_outputs,
        task=task,
        meta=dict(meta),
    )


# ----------------------------------------------------------------------------- embedded sets


def _load_digits(
    name: str, root, download, n_train, n_test, seed, *, test_fraction: float = 0.2
) -> Dataset:
    from sklearn.datasets import load_digits

    test_fraction = check_fraction(test_fraction, "test_fraction")
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    perm = _rng(seed, "split").permutation(len(images))
    n_te = max(1, round(test_fraction * len(images)))
    te, tr = perm[:n_te], perm[n_te:]
    return _images(
        name,
        (images[tr], labels[tr]),
        (images[te], labels[te]),
        10,
        16.0,
        n_train,
        n_test,
        seed,
        {"test_fraction": test_fraction},
    )


def _synthetic_sizes(n_train: int | None, n_test: int | None) -> tuple[int, int]:
    return (n_train or SYNTHETIC_N, n_test or SYNTHETIC_N)


def _load_spirals(
    name: str, root, download, n_train, n_test, seed, *, noise: float = 0.05, turns: float = 1.5
) -> Dataset:
    noise = check_nonnegative(noise, "noise")
    if not float(turns) > 0:
        raise ValueError(f"turns must be > 0, got {turns!r}")

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % 2)
        # sqrt spreads points evenly along the arm's length instead of crowding the centre
        t = np.sqrt(rng.uniform(0.0, 1.0, n))
        angle = 2 * math.pi * turns * t + math.pi * labels
        x = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
        return x + noise * rng.standard_normal(x.shape), labels

    ntr, nte = _synthetic_sizes(n_train, n_test)
    (xtr, ytr), (xte, yte) = sample(ntr, _rng(seed, "train")), sample(nte, _rng(seed, "test"))
    meta = {"noise": noise, "turns": float(turns)}
    return _vectors(name, xtr, ytr, xte, yte, 2, "classification", meta)


def _load_blobs(
    name: str, root, download, n_train, n_test, seed, *, n_classes: int = 4, std: float = 0.6
) -> Dataset:
    n_classes = check_int(n_classes, "n_classes", 2)
    if not float(std) > 0:
        raise ValueError(f"std must be > 0, got {std!r}")
    angles = 2 * math.pi * np.arange(n_classes) / n_classes
    centres = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.arange(n) % n_classes)
        return centres[labels] + std * rng.standard_normal((n, 2)), labels

    ntr, nte = _synthetic_sizes(n_train, n_test)
    (xtr, ytr), (xte, yte) = sample(ntr, _rng(seed, "train")), sample(nte, _rng(seed, "test"))
    meta = {"n_classes": n_classes, "std": float(std)}
    return _vectors(name, xtr, ytr, xte, yte, n_classes, "classification", meta)


def _load_teacher(
    name: str,
    root,
    download,
    n_train,
    n_test,
    seed,
    *,
    dim: int = 8,
    out_dim: int = 1,
    hidden: int = 16,
    noise: float = 0.0,
) -> Dataset:
    dim = check_int(dim, "dim", 1)
    out_dim = check_int(out_dim, "out_dim", 1)
    hidden = check_int(hidden, "hidden", 1)
    noise = check_nonnegative(noise, "noise")
    t = _rng(seed, "teacher")
    w1 = t.standard_normal((dim, hidden)) / math.sqrt(dim)
    b1 = 0.1 * t.standard_normal(hidden)
    w2 = t.standard_normal((hidden, out_dim)) / math.sqrt(hidden)

    def sample(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((n, dim))
        y = np.tanh(x @ w1 + b1) @ w2
        return x, y + noise * rng.standard_normal(y.shape)

    ntr, nte = _synthetic_sizes(n_train, n_test)
    (xtr, ytr), (xte, yte) = sample(ntr, _rng(seed, "train")), sample(nte, _rng(seed, "test"))
    meta = {"dim": dim, "out_dim": out_dim, "hidden": hidden, "noise": noise}
    return _vectors(name, xtr, ytr, xte, yte, out_dim, "regression", meta)


def _load_modadd(
    name: str, root, download, n_train, n_test, seed, *, p: int = 23, train_fraction: float = 0.5
) -> Dataset:
    p = check_int(p, "p", 2)
    train_fraction = check_fraction(train_fraction, "train_fraction")
    a, b = np.divmod(np.arange(p * p), p)
    x = np.stack([a, b, np.full_like(a, p)], axis=1)  # token p is '='
    y = np.full_like(x, IGNORE_INDEX)
    y[:, -1] = (a + b) % p
    perm = _rng(seed, "split").permutation(p * p)
    n_tr = min(max(1, round(train_fraction * p * p)), p * p - 1)
    tr, te = perm[:n_tr], perm[n_tr:]
    itr = _subset_indices(len(tr), n_train, _rng(seed, "subset-train"), "n_train", name)
    ite = _subset_indices(len(te), n_test, _rng(seed, "subset-test"), "n_test", name)
    tr, te = _take(tr, itr), _take(te, ite)
    return Dataset(
        name=name,
        x_train=torch.as_tensor(x[tr], dtype=torch.int64),
        y_train=torch.as_tensor(y[tr], dtype=torch.int64),
        x_test=torch.as_tensor(x[te], dtype=torch.int64),
        y_test=torch.as_tensor(y[te], dtype=torch.int64),
        input_shape=(3,),
        n_outputs=p + 1,
        task="sequence",
        meta={"p": p, "train_fraction": train_fraction, "equals_token": p},
    )


# ---------------------------------------------------------------------------------- local text

# At most this many windows by default (choices.DATASET_SHAPES: the run id relies on the cap).
_TEXT_DEFAULT_TRAIN, _TEXT_DEFAULT_TEST = DATASET_SHAPES["text"][2:]


def _load_text(
    name: str,
    root,
    download,
    n_train,
    n_test,
    seed,
    *,
    seq_len: int = 32,
    test_fraction: float = 0.1,
    max_chars: int = 10_000_000,
) -> Dataset:
    """Character-level next-token windows over local text.

    The text (files in sorted order, joined by newlines, cut at ``max_chars``) is split by
    position: the last ``test_fraction`` is the test region, so train and test windows never
    overlap. Windows of ``seq_len + 1`` characters start at seeded random distinct offsets;
    ``x`` is the first ``seq_len`` characters and ``y`` the following ones. Defaults: up to 4,096
    train and 1,024 test windows.
    """
    seq_len = check_int(seq_len, "seq_len", 1)
    test_fraction = check_fraction(test_fraction, "test_fraction")
    max_chars = check_int(max_chars, "max_chars", 1)
    if root is None:
        raise ValueError(
            "dataset 'text' needs root=<path to a .txt/.jsonl file or a folder of them>"
        )
    path = Path(root).expanduser()
    text = _read_text(path, max_chars)
    if not text:
        raise ValueError(f"no text found in {path}; the file(s) are empty")
    vocab = sorted(set(text))
    lookup = {c: i for i, c in enumerate(vocab)}
    tokens = np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text))
    cut = len(tokens) - max(1, round(test_fraction * len(tokens)))
    regions = {"train": tokens[:cut], "test": tokens[cut:]}
    window = seq_len + 1
    for label, region in regions.items():
        if len(region) < window:
            raise ValueError(
                f"the {label} part of the text in {path} has {len(region)} characters, fewer "
                f"than seq_len + 1 = {window}; use more text or a smaller seq_len"
            )

    def windows(region: np.ndarray, n: int | None, default: int, label: str):
        n_available = len(region) - window + 1
        if n is not None and n > n_available:
            raise ValueError(
                f"n_{label}={n} is larger than the {n_available} windows available in the "
                f"{label} part of {path}; pass a smaller n_{label}"
            )
        count = min(default, n_available) if n is None else n
        starts = np.sort(_rng(seed, f"text-{label}").choice(n_available, count, replace=False))
        rows = region[starts[:, None] + np.arange(window)]
        return torch.from_numpy(rows[:, :-1].copy()), torch.from_numpy(rows[:, 1:].copy())

    x_tr, y_tr = windows(regions["train"], n_train, _TEXT_DEFAULT_TRAIN, "train")
    x_te, y_te = windows(regions["test"], n_test, _TEXT_DEFAULT_TEST, "test")
    return Dataset(
        name=name,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        input_shape=(seq_len,),
        n_outputs=len(vocab),
        task="sequence",
        meta={
            "vocab": "".join(vocab),
            "source": str(path),
            "n_chars": len(text),
            "seq_len": seq_len,
            "test_fraction": test_fraction,
        },
    )


def _read_text(path: Path, max_chars: int) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"text source {path} does not exist; pass root=<a .txt or .jsonl file, or a folder "
            "of them (e.g. an OSCAR shard)>"
        )
    files = text_files(path)
    if path.is_dir():
        if not files:
            raise FileNotFoundError(
                f"no text files under {path}; expected files ending in {', '.join(_TEXT_SUFFIXES)}"
            )
    parts: list[str] = []
    size = 0
    for file in files:
        for piece in _read_text_file(file):
            parts.append(piece)
            size += len(piece) + 1
            if size >= max_chars:
                return "\n".join(parts)[:max_chars]
    return "\n".join(parts)


def _read_text_file(path: Path):
    """Yield one file's text: the whole .txt, or each .jsonl line's ``text``/``content`` field."""
    opener = gzip.open if path.name.endswith(".gz") else open
    is_jsonl = path.name.removesuffix(".gz").endswith(".jsonl")
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if not is_jsonl:
            yield f.read()
            return
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no} is not valid JSON ({err.msg})") from err
            # OSCAR's own jsonl calls the field "content"; Hugging Face exports call it "text"
            value = record.get("text", record.get("content")) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise ValueError(f'{path}:{line_no} has no string "text" (or "content") field')
            yield value


# -------------------------------------------------------------------------- torchvision sets


def _missing(name: str, root: Path, where: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"dataset {name!r} not found under {root}. Put {where}{system_hint(name)}; or call "
        f"load({name!r}, root={str(root)!r}, download=True) on a machine with a network."
    )


def _load_mnist(name: str, root, download, n_train, n_test, seed) -> Dataset:
    """MNIST / Fashion-MNIST from the idx files in ``<root>/<MNIST|FashionMNIST>/raw``, plain
    or gzipped as distributed (read in place, never unpacked), or from the system copy
    (:func:`~lossbarcode.datafiles.system_copy`) when the data folder has none of them.
    torchvision is used only to download.
    """
    base = _root(root)
    raw = base / _MNIST_FOLDERS[name] / "raw"
    _, files = source_files(name, root)
    if download and not all(f.is_file() for f in files):
        from torchvision import datasets

        cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
        try:
            for train in (True, False):
                cls(str(base), train=train, download=True)
        except Exception as err:  # network errors come in many types
            raise _missing(name, base, f"the four idx-ubyte files in {raw}/") from err
        _, files = source_files(name, root)
    if not all(f.is_file() for f in files):
        listing = ", ".join(f"{f.name.removesuffix('.gz')}(.gz)" for f in files)
        raise _missing(name, base, f"{listing} in {raw}/")
    images_train, labels_train, images_test, labels_test = (_read_idx(f) for f in files)
    splits = []
    for images, labels in ((images_train, labels_train), (images_test, labels_test)):
        if images.ndim != 3 or labels.shape != (len(images),) or (labels.max(initial=0) > 9):
            raise ValueError(f"{files[0].parent} holds images {images.shape} and labels "
                             f"{labels.shape}, not an MNIST-format set; re-download it")
        splits.append((images[:, None], labels.astype(np.int64)))
    return _images(name, splits[0], splits[1], 10, 255.0, n_train, n_test, seed,
                   {"source": data_source(name, root)})


def _read_idx(path: Path) -> np.ndarray:
    """An IDX ("ubyte") file of unsigned bytes, plain or ``.gz`` -> a uint8 array of its shape
    (``(N, H, W)`` images, ``(N,)`` labels). ``ValueError`` for anything else."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # a truncated or corrupt .gz
        raise ValueError(f"{path} could not be read ({err}); re-download it") from err
    ndim = raw[3] if len(raw) >= 4 else 0
    header = 4 + 4 * ndim
    if raw[:3] != b"\x00\x00\x08" or ndim == 0 or len(raw) < header:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; re-download it")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) != header + math.prod(shape):
        raise ValueError(f"{path} holds {len(raw) - header} bytes of data, not the {shape} its "
                         "header says; re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_mnist1d(name: str, root, download, n_train, n_test, seed) -> Dataset:
    """MNIST-1D from :func:`~lossbarcode.datafiles.mnist1d_arrays` (generated offline once per
    process), as ``(N, 1, 40)`` one-channel signals, with seeded ``n_train`` / ``n_test``
    subsets."""
    arrays = mnist1d_arrays()
    itr = _subset_indices(len(arrays["y_train"]), n_train, _rng(seed, "subset-train"),
                          "n_train", name)
    ite = _subset_indices(len(arrays["y_test"]), n_test, _rng(seed, "subset-test"),
                          "n_test", name)

    def signals(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x[:, None, :])  # a copy: the generated arrays are shared

    x_train = signals(_take(arrays["x_train"], itr))
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=torch.tensor(_take(arrays["y_train"], itr)),
        x_test=signals(_take(arrays["x_test"], ite)),
        y_test=torch.tensor(_take(arrays["y_test"], ite)),
        input_shape=tuple(int(s) for s in x_train.shape[1:]),
        n_outputs=10,
        task="classification",
        meta={"source": data_source(name, root), "generator": arrays["args"],
              "version": arrays["version"]},
    )


def _load_cifar(name: str, root, download, n_train, n_test, seed) -> Dataset:
    """CIFAR-10/100 from the python-pickle batches in ``<root>/cifar-10-batches-py`` etc.

    The batches are read by a small reader of the same on-disk format rather than by
    ``torchvision.datasets.CIFAR10``, because torchvision insists on the official md5 sums
    (so it cannot read re-packed or test files); torchvision is used only to download.
    The reader only unpickles numpy arrays, never arbitrary objects.
    """
    base = _root(root)
    folder, train_files, test_files, label_key, n_classes = _CIFAR[name]
    files = [base / folder / f for f in (*train_files, *test_files)]
    if download and not all(f.is_file() for f in files):
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            cls(str(base), train=True, download=True)
        except Exception as err:  # network errors come in many types
            raise _missing(name, base, f"the batches in {base / folder}/") from err
    if not all(f.is_file() for f in files):
        where = (
            f"{', '.join(train_files + test_files)} in {base / folder}/ (unpack cifar-"
            + ("10" if name == "cifar10" else "100")
            + "-python.tar.gz into "
            + f"{base}/)"
        )
        raise _missing(name, base, where)

    def read(batch_files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_read_cifar_batch(base / folder / f, label_key) for f in batch_files]
        return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])

    return _images(
        name, read(train_files), read(test_files), n_classes, 255.0, n_train, n_test, seed
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only, so a data file cannot run code."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # array bytes in protocols 0-2 written by Python 3
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        if module.startswith("numpy.core") and hasattr(np, "_core"):
            module = module.replace("numpy.core", "numpy._core", 1)
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> images ``(n, 3, 32, 32)`` uint8 and labels ``(n,)`` int64."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        # batches written by Python 3 from bytes keys keep bytes keys
        entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
        x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(entry[label_key], dtype=np.int64).reshape(-1)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        msg = f"{path} is not a CIFAR python batch file ({err}); re-download it"
        raise ValueError(msg) from err
    except KeyError as err:
        msg = f"{path} is not a CIFAR python batch file (no {err} entry); re-download it"
        raise ValueError(msg) from err
    if len(x) != len(y):
        raise ValueError(f"{path} has {len(x)} images but {len(y)} labels; re-download it")
    return x, y


def _load_svhn(name: str, root, download, n_train, n_test, seed) -> Dataset:
    """SVHN from ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat`` (torchvision's layout).

    Read with ``scipy.io.loadmat`` directly rather than through ``torchvision.datasets.SVHN``,
    which insists on the official md5 sums; torchvision is used only to download. Label 10
    means digit 0, as in torchvision.
    """
    base = _root(root)
    files = {split: base / name for split, name in _SVHN_FILES.items()}
    if download and not all(f.is_file() for f in files.values()):
        from torchvision import datasets

        try:
            for split in files:
                datasets.SVHN(str(base), split=split, download=True)
        except Exception as err:  # network errors come in many types
            raise _missing(name, base, f"train_32x32.mat and test_32x32.mat in {base}/") from err
    if not all(f.is_file() for f in files.values()):
        raise _missing(name, base, f"train_32x32.mat and test_32x32.mat in {base}/")

    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            mat = loadmat(path)
            x = np.transpose(np.asarray(mat["X"], dtype=np.uint8), (3, 2, 0, 1))  # -> N,C,H,W
            y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        except (KeyError, ValueError, TypeError, MatReadError) as err:
            raise ValueError(f"{path} is not an SVHN .mat file ({err}); re-download it") from err
        return x, np.where(y == 10, 0, y)

    return _images(
        name, read(files["train"]), read(files["test"]), 10, 255.0, n_train, n_test, seed
    )


_LOADERS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...]]] = {
    "digits": (_load_digits, ("test_fraction",)),
    "spirals": (_load_spirals, ("noise", "turns")),
    "blobs": (_load_blobs, ("n_classes", "std")),
    "teacher": (_load_teacher, ("dim", "out_dim", "hidden", "noise")),
    "modadd": (_load_modadd, ("p", "train_fraction")),
    "mnist1d": (_load_mnist1d, ()),
    "text": (_load_text, ("seq_len", "test_fraction", "max_chars")),
    "mnist": (_load_mnist, ()),
    "fashion_mnist": (_load_mnist, ()),
    "cifar10": (_load_cifar, ()),
    "cifar100": (_load_cifar, ()),
    "svhn": (_load_svhn, ()),
}
