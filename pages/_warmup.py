"""The first run of each page in a server process runs alone.

Sessions run their scripts in threads of one process. Two sessions opening pages at once on a
fresh server import the same heavy modules (pandas, plotly, scipy) at the same moment, and one of
them could be handed a module another was still initialising ("partially initialized module
'pandas' has no attribute 'Series'", seen with five sessions opening Scaling). Once a page has run
once, everything it imports is loaded, so only first runs wait on the lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_WARM: set[str] = set()  # pages that have run once in this process


@contextlib.contextmanager
def first_run_alone(page: str) -> Iterator[None]:
    """Run the block under the process-wide lock unless ``page`` has run before (then at once).
    The page counts as run however the block ends (``st.stop``, a rerun, an error)."""
    if page in _WARM:
        yield
        return
    with _LOCK:
        try:
            yield
        finally:
            _WARM.add(page)
