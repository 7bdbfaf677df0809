"""The device a computation runs on, how much memory it has free, and the CPU share of a
background worker."""

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


# Background jobs run at this lower CPU priority so that the dashboard's server (and the
# user's own work) keeps the CPU it needs to render pages while a job trains.
WORKER_NICE = 10


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (a container
    or ``taskset`` may allow fewer cores than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS (macOS, Windows)
        return os.cpu_count() or 1


def worker_threads(cores: int) -> int:
    """Torch intra-op threads of a background worker that may run on ``cores`` cores: one core
    is left to the server when there are two or more, and there is always one thread.

    More threads than free cores oversubscribe them: with one other busy process the default
    experiment's paths took 7x as long, not 2x.
    """
    return max(1, int(cores) - 1)


def become_background_worker(nice: int = WORKER_NICE) -> int:
    """Lower this process's CPU priority by ``nice`` and set torch's intra-op threads to
    :func:`worker_threads` of its :func:`usable_cores`; returns the thread count."""
    if hasattr(os, "nice"):  # POSIX only
        os.nice(nice)
    threads = worker_threads(usable_cores())
    torch.set_num_threads(threads)
    return threads
