"""Small fake data files in the formats the loaders read (shared by the data and CLI tests)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from lossbarcode import datafiles


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX ("ubyte") format: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", s) for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str | None, compress: bool = False, seed: int = 0) -> None:
    """Four small idx files in ``root/folder/raw`` (torchvision's layout), or straight in
    ``root`` when ``folder`` is None (as Debian's package installs them)."""
    raw = root if folder is None else root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = raw / f"{split}-{kind}-ubyte"
            write_idx(path, array)
            if compress:
                with gzip.open(f"{path}.gz", "wb") as f:
                    f.write(path.read_bytes())
                path.unlink()


def fake_debian_fashion(tmp_path: Path, monkeypatch) -> Path:
    """A fake copy of Debian's dataset-fashion-mnist (four small ``.gz`` idx files, 12 train /
    6 test images) where the loader looks for it, and an empty data folder
    ``tmp_path / "data"``; returns the copy's folder."""
    folder = tmp_path / "debian" / "fashion-mnist"
    write_mnist(folder, None, compress=True)
    monkeypatch.setitem(datafiles.SYSTEM_COPIES, "fashion_mnist",
                        (folder, "dataset-fashion-mnist"))
    (tmp_path / "data").mkdir()
    return folder
