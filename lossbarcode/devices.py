"""The device a computation runs on and how much memory it has free."""

from __future__ import annotations

import os

import torch


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: free CUDA memory, or ``MemAvailable`` RAM on the host."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def mib(n_bytes: float) -> str:
    """``n_bytes`` as a readable size, e.g. ``"1,024.0 MiB"`` (for memory messages)."""
    return f"{n_bytes / 2**20:,.1f} MiB"
