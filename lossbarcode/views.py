"""Views derived from a stored run (minima maps, plane slices), cached as stages of the run.

A view's stage records the stages it is computed from (``ResultStore.save_stage(inputs=...)``),
so the pipeline drops it when one of them is recomputed without knowing which views exist, and
every view is made by one skeleton: read the cache; else check the run can make it, take the
run's lock, read again (another process may have made it meanwhile) and compute.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from lossbarcode.store import ResultStore

T = TypeVar("T")


def cached_view(store: ResultStore, run_id: str, load: Callable[[], T | None],
                compute: Callable[[], T], check: Callable[[], Any] | None = None) -> T:
    """``load()`` if it finds the view, else ``compute()`` (which saves it) under the run's lock.

    ``check()`` raises ``ValueError`` when the run cannot make the view yet; it runs before the
    lock, which a run being computed holds for minutes, so a missing stage fails at once.
    """
    found = load()
    if found is not None:
        return found
    if check is not None:
        check()
    with store.lock(run_id):
        found = load()  # made while we waited?
        return found if found is not None else compute()


def drop_views_of(store: ResultStore, run_id: str, stage: str,
                  pipeline: dict[str, tuple[str, ...]]) -> None:
    """Drop every stage of ``run_id`` computed from ``stage``, before ``stage`` is recomputed.

    ``pipeline`` gives the inputs of the pipeline's own stages (``{"paths": ("minima",), ...}``);
    any other stage is a view that recorded its inputs, and one that recorded none (written
    before views did) counts as made from everything: a cache, dropped to be safe.
    """
    for name in store.stages(run_id):
        if name == stage:
            continue
        inputs = pipeline[name] if name in pipeline else store.stage_inputs(run_id, name)
        if inputs is None or stage in inputs:
            store.drop_stage(run_id, name)
