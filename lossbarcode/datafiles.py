"""Which files each file-backed dataset reads, and a fingerprint of their content (torch-free).

A run's id must name the data it was computed on, not the path it was read from: a text file
rewritten in place, torchvision files replaced, or a relative ``data_root`` used from another
directory are different data. :func:`fingerprint` hashes the bytes the loader reads (a ``.gz``
that the loader would unpack is hashed unpacked, so unpacking does not change it), keyed by the
files' names relative to the root. Embedded datasets are made by code from their arguments, so
their fingerprint is just their name. Hashes are cached per process by (path, size, mtime,
inode), so asking again is a few ``stat`` calls.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

from lossbarcode.choices import EMBEDDED_DATASETS

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
MISSING = "missing"

_CACHE: dict[tuple, str] = {}


def data_root(root: str | os.PathLike[str] | None) -> Path:
    """The folder of the torchvision sets (``./data`` by default)."""
    return Path(DEFAULT_ROOT if root is None else root).expanduser()


def text_files(path: Path) -> list[Path]:
    """The files the ``text`` dataset reads from ``path``, in reading order ([] if none)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))
    return [path] if path.is_file() else []


def source_files(name: str, root: str | os.PathLike[str] | None) -> tuple[Path, list[Path]]:
    """``(base, files)``: the files dataset ``name`` reads from ``root`` (``[]`` for embedded
    datasets). For MNIST a file that only exists gzipped is listed as its ``.gz``."""
    if name in EMBEDDED_DATASETS:
        return Path("."), []
    if name == "text":
        if root is None:
            return Path("."), []
        path = Path(root).expanduser()
        return (path if path.is_dir() else path.parent), text_files(path)
    base = data_root(root)
    if name in MNIST_FOLDERS:
        raw = base / MNIST_FOLDERS[name] / "raw"
        return base, [raw / f if (raw / f).is_file() or not (raw / f"{f}.gz").is_file()
                      else raw / f"{f}.gz" for f in MNIST_FILES]
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
    """A content hash of the files dataset ``name`` reads from ``root``: ``"embedded:<name>"``
    for the embedded datasets, ``"missing"`` when any file is absent (loading then says where
    to put them), else ``"sha256:<hex>"`` over each file's relative name and content."""
    if name in EMBEDDED_DATASETS:
        return f"embedded:{name}"
    base, files = source_files(name, root)
    if not files or not all(f.is_file() for f in files):
        return MISSING
    digest = hashlib.sha256(name.encode())
    for f in files:
        unpack = name in MNIST_FOLDERS and f.name.endswith(".gz")
        relative = f.relative_to(base).as_posix().removesuffix(".gz" if unpack else "")
        try:
            digest.update(f"\0{relative}\0{_file_digest(f, unpack)}".encode())
        except (OSError, EOFError):  # unreadable or a broken .gz: loading reports it
            return MISSING
    return "sha256:" + digest.hexdigest()


def missing_files(name: str, root: str | os.PathLike[str] | None) -> str | None:
    """None when dataset ``name`` has its files under ``root``, else a sentence that says which
    files to put where (checked before a run starts; nothing is read or downloaded)."""
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
            f"{' and '.join(folders)} (or set the data folder to where they are); nothing is "
            "downloaded here")
