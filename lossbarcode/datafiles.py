"""Where each dataset's data comes from, a fingerprint of its content, and how to get a missing
one (torch-free).

A run's id must name the data it was computed on, not the path it was read from: a text file
rewritten in place, torchvision files replaced, or a relative ``data_root`` used from another
directory are different data. :func:`fingerprint` hashes the bytes the loader reads (an MNIST
``.gz`` is hashed unpacked, so unpacking it does not change it), keyed by the files' names
relative to the root (MNIST-format files by their place in torchvision's layout, wherever they
were found). Embedded datasets are made by code from their arguments, so their fingerprint is
just their name. Hashes are cached per process by (path, size, mtime, inode), so asking again
is a few ``stat`` calls.

Two datasets have a source besides the data folder:

* ``fashion_mnist``: when the data folder holds none of its files, the copy that Debian's
  package ``dataset-fashion-mnist`` installs (:data:`SYSTEM_COPIES`) is read instead, and
  :func:`data_source` says so.
* ``mnist1d``: generated offline by the ``mnist1d`` package (:func:`mnist1d_arrays`: its
  ``make_dataset(get_dataset_args())``, never its downloading ``get_dataset``), once per
  process; its fingerprint hashes the generated arrays.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import importlib.metadata
import os
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np

from lossbarcode.choices import DATASETS, EMBEDDED_DATASETS, PACKAGE_DATASETS

DEFAULT_ROOT = "./data"
TEXT_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz")
MNIST_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# folder, train batch files, test batch files, label key, classes
CIFAR = {
    "cifar10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
    ),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels", 100),
}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
# Copies installed by the operating system, read when the data folder holds none of the
# dataset's files: dataset -> (folder, Debian package that installs it).
SYSTEM_COPIES: dict[str, tuple[Path, str]] = {
    "fashion_mnist": (Path("/usr/share/datasets/fashion-mnist"), "dataset-fashion-mnist"),
}
# The PyPI distribution (and module) that generates MNIST-1D, and the version it was tested at.
MNIST1D_PACKAGE = "mnist1d"
MNIST1D_TESTED = "0.0.2.post1"
MISSING = "missing"

_CACHE: dict[tuple, str] = {}
_MNIST1D: dict[str, dict[str, Any]] = {}  # version -> generated arrays (one per process)
_MNIST1D_LOCK = threading.Lock()


def data_root(root: str | os.PathLike[str] | None) -> Path:
    """The folder of the torchvision sets (``./data`` by default)."""
    return Path(DEFAULT_ROOT if root is None else root).expanduser()


def text_files(path: Path) -> list[Path]:
    """The files the ``text`` dataset reads from ``path``, in reading order ([] if none)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
    return [path] if path.is_file() else []


def _idx_files(folder: Path) -> list[Path]:
    """The four MNIST-format files in ``folder``, each as its ``.gz`` when only that exists."""
    return [folder / f if (folder / f).is_file() or not (folder / f"{f}.gz").is_file()
            else folder / f"{f}.gz" for f in MNIST_FILES]


def system_copy(name: str, root: str | os.PathLike[str] | None) -> Path | None:
    """The operating system's folder that dataset ``name`` is read from instead of the data
    folder ``root`` (:data:`SYSTEM_COPIES`), or None: only when the data folder holds none of
    its files (a partial set there is reported, never mixed) and the copy is complete."""
    if name not in SYSTEM_COPIES:
        return None
    raw = data_root(root) / MNIST_FOLDERS[name] / "raw"
    if any(f.is_file() for f in _idx_files(raw)):
        return None
    folder = SYSTEM_COPIES[name][0]
    return folder if all(f.is_file() for f in _idx_files(folder)) else None


def source_files(name: str, root: str | os.PathLike[str] | None) -> tuple[Path, list[Path]]:
    """``(base, files)``: the files dataset ``name`` reads from ``root`` (``[]`` for embedded
    and generated datasets). For MNIST a file that only exists gzipped is listed as its
    ``.gz``; Fashion-MNIST's are the system copy's when :func:`system_copy` says so."""
    if name in EMBEDDED_DATASETS or name in PACKAGE_DATASETS:
        return Path("."), []
    if name == "text":
        if root is None:
            return Path("."), []
        path = Path(root).expanduser()
        return (path if path.is_dir() else path.parent), text_files(path)
    base = data_root(root)
    if name in MNIST_FOLDERS:
        system = system_copy(name, root)
        if system is not None:
            return system, _idx_files(system)
        return base, _idx_files(base / MNIST_FOLDERS[name] / "raw")
    if name in CIFAR:
        folder, train, test, _, _ = CIFAR[name]
        return base, [base / folder / f for f in (*train, *test)]
    if name == "svhn":
        return base, [base / f for f in SVHN_FILES.values()]
    raise ValueError(f"unknown dataset {name!r}")


def _file_digest(path: Path, unpack: bool) -> str:
    st = path.stat()
    key = (str(path.absolute()), st.st_size, st.st_mtime_ns, st.st_ino, unpack)
    cached = _CACHE.get(key)
    if cached is None:
        digest = hashlib.sha256()
        opener = gzip.open if unpack else open
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        cached = _CACHE[key] = digest.hexdigest()
    return cached


def fingerprint(name: str, root: str | os.PathLike[str] | None) -> str:
    """A content hash of the data dataset ``name`` reads from ``root``: ``"embedded:<name>"``
    for the embedded datasets, ``"missing"`` when any file (or MNIST-1D's package) is absent
    (loading then says how to get it), else ``"sha256:<hex>"`` over each file's relative name
    and content (MNIST-1D: over the generated arrays)."""
    if name in EMBEDDED_DATASETS:
        return f"embedded:{name}"
    if name in PACKAGE_DATASETS:
        try:
            return mnist1d_arrays()["fingerprint"]
        except (FileNotFoundError, ValueError):  # loading says what is wrong
            return MISSING
    base, files = source_files(name, root)
    if not files or not all(f.is_file() for f in files):
        return MISSING
    digest = hashlib.sha256(name.encode())
    for f in files:
        unpack = name in MNIST_FOLDERS and f.name.endswith(".gz")
        # MNIST files are named by their place in torchvision's layout wherever they were
        # found: the same files from the data folder or the system copy are the same data.
        relative = (f"{MNIST_FOLDERS[name]}/raw/{f.name.removesuffix('.gz')}"
                    if name in MNIST_FOLDERS else f.relative_to(base).as_posix())
        try:
            digest.update(f"\0{relative}\0{_file_digest(f, unpack)}".encode())
        except (OSError, EOFError):  # unreadable or a broken .gz: loading reports it
            return MISSING
    return "sha256:" + digest.hexdigest()


def system_hint(name: str) -> str:
    """How the operating system can install dataset ``name`` (``""`` when it cannot), as a
    clause to append to a sentence that says where to put its files."""
    if name not in SYSTEM_COPIES:
        return ""
    folder, package = SYSTEM_COPIES[name]
    return (f"; or install Debian's package: apt-get install {package} (it puts them in "
            f"{folder}, which is read when the data folder has none of them)")


def missing_files(name: str, root: str | os.PathLike[str] | None) -> str | None:
    """None when dataset ``name`` is available (its files under ``root``, a system copy, or
    MNIST-1D's package), else one sentence saying how to get it: which files to put where, the
    apt package or the pip package (checked before a run starts; nothing is read or
    downloaded)."""
    if name in PACKAGE_DATASETS:
        return None if mnist1d_version() is not None else _MNIST1D_MISSING
    if name == "text":
        if root is None or not text_files(Path(root).expanduser()):
            return ("the 'text' dataset needs a data folder or file: a .txt/.jsonl file, or a "
                    f"folder of files ending in {', '.join(TEXT_SUFFIXES)}")
        return None
    base, files = source_files(name, root)
    absent = [f for f in files if not f.is_file()]
    if not absent:
        return None
    folders = sorted({str(f.parent) for f in absent})
    return (f"{name} is not under {base}: put {', '.join(f.name for f in absent)} in "
            f"{' and '.join(folders)} (or set the data folder to where they are)"
            f"{system_hint(name)}; nothing is downloaded here")


def data_source(name: str, root: str | os.PathLike[str] | None) -> str | None:
    """Where dataset ``name`` is read from, in words (for notices and a run's provenance), or
    None when it is not available (:func:`missing_files` says how to get it)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}")
    if missing_files(name, root) is not None:
        return None
    if name == "digits":
        return "scikit-learn's bundled 8x8 digits"
    if name in EMBEDDED_DATASETS:
        return f"generated by lossbarcode ({name})"
    if name in PACKAGE_DATASETS:
        return (f"generated offline by {MNIST1D_PACKAGE} {mnist1d_version()}: "
                "make_dataset(get_dataset_args()), its fixed seed")
    if name == "text":
        return f"text from {Path(str(root)).expanduser()}"
    system = system_copy(name, root)
    if system is not None:
        raw = data_root(root) / MNIST_FOLDERS[name] / "raw"
        return (f"{system}, installed by Debian's package {SYSTEM_COPIES[name][1]} (the data "
                f"folder has none of its files in {raw})")
    base, files = source_files(name, root)
    return ", ".join(sorted({str(f.parent) for f in files})) or str(base)


# ---------------------------------------------------------------------------------- MNIST-1D

_MNIST1D_MISSING = (f"mnist1d needs the {MNIST1D_PACKAGE} package, which generates the data "
                    f"offline: pip install {MNIST1D_PACKAGE}>={MNIST1D_TESTED} (nothing is "
                    "downloaded at run time)")


def mnist1d_version() -> str | None:
    """The installed version of the ``mnist1d`` package, None when it is not installed."""
    try:
        return importlib.metadata.version(MNIST1D_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def mnist1d_arrays() -> dict[str, Any]:
    """MNIST-1D as the installed ``mnist1d`` package generates it offline, once per process.

    Returns ``x_train`` ``(4000, 40)`` / ``x_test`` ``(1000, 40)`` float32 signals (as the
    package makes them: centred and scaled over the whole set), ``y_train`` / ``y_test``
    int64 labels in 0..9, ``args`` (the generator's settings: ``get_dataset_args()``, seed 42),
    ``version`` and ``fingerprint`` (``"sha256:<hex>"`` of the arrays). The package seeds
    NumPy's and Python's global random generators; their states are restored afterwards.
    ``FileNotFoundError`` (saying how to get it) when the package is absent, ``ValueError``
    when it does not make MNIST-1D as expected.
    """
    version = mnist1d_version()
    if version is None:
        raise FileNotFoundError(_MNIST1D_MISSING)
    with _MNIST1D_LOCK:
        if version not in _MNIST1D:
            _MNIST1D[version] = _generate_mnist1d(version)
        return _MNIST1D[version]


def _generate_mnist1d(version: str) -> dict[str, Any]:
    # The package draws from NumPy's legacy global generator; leave it as it was found.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        # Never its get_dataset: that one downloads.
        generator = importlib.import_module(f"{MNIST1D_PACKAGE}.data")
        args = generator.get_dataset_args()
        made = generator.make_dataset(args)
        settings = {k: v for k, v in vars(args).items() if k != "url"}
        arrays = {"x_train": np.asarray(made["x"], dtype=np.float32),
                  "y_train": np.asarray(made["y"], dtype=np.int64),
                  "x_test": np.asarray(made["x_test"], dtype=np.float32),
                  "y_test": np.asarray(made["y_test"], dtype=np.int64)}
    except (ImportError, AttributeError, KeyError, TypeError) as err:
        raise ValueError(f"the installed {MNIST1D_PACKAGE} {version} did not generate MNIST-1D "
                         f"({type(err).__name__}: {err}); install {MNIST1D_PACKAGE}=="
                         f"{MNIST1D_TESTED}") from err
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 2 or y.shape != (len(x),) or len(x) == 0 or not (
                0 <= y.min() and y.max() < 10) or not np.isfinite(x).all():
            raise ValueError(f"the installed {MNIST1D_PACKAGE} {version} made {split} arrays "
                             f"{x.shape} / {y.shape}, not MNIST-1D's (N, 40) signals with "
                             f"labels 0..9; install {MNIST1D_PACKAGE}=={MNIST1D_TESTED}")
    digest = hashlib.sha256(b"mnist1d")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        digest.update(f"\0{key}{arrays[key].dtype.str}{arrays[key].shape}\0".encode())
        digest.update(np.ascontiguousarray(arrays[key]).data)
    return {**arrays, "args": settings, "version": version,
            "fingerprint": "sha256:" + digest.hexdigest()}
