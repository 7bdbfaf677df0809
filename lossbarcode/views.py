"""Views derived from a stored run (minima maps, plane slices), cached as stages of the run.

A view's stage records the stages it is computed from (``ResultStore.save_stage(inputs=...)``),
so the pipeline drops it when one of them is recomputed without knowing which views exist, and
every view is made by one skeleton: read the cache; else check the run can make it, take the
run's lock, read again (another process may have made it meanwhile) and compute.

:func:`default_views` lists the views the Minima map and Landscape slice pages open on (their
default widgets, :mod:`lossbarcode.choices`); :func:`make_default_views` (``lossbarcode views``)
makes them ahead of time, as the shipped demo runs carry them, so that a first open reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lossbarcode import choices
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


@dataclass(frozen=True)
class ViewRequest:
    """One view of a run: ``kind`` "map" (``lossbarcode.maps.minima_map`` keywords ``dim``,
    ``method``, ``seed``) or "slice" (``lossbarcode.slices.result_slice`` keywords ``minima``,
    ``resolution``, ``margin``), with those keywords as ``(name, value)`` pairs."""

    kind: str
    args: tuple[tuple[str, Any], ...]

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)

    def describe(self) -> str:
        """E.g. ``map auto 2-D seed 0`` or ``slice minima (0, 1, 2) 41x41 margin 0.25``."""
        a = self.kwargs
        if self.kind == "map":
            return f"map {a['method']} {a['dim']}-D seed {a['seed']}"
        r = a["resolution"]
        return f"slice minima {a['minima']} {r}x{r} margin {a['margin']:g}"


def default_views(diverged: Sequence[bool]) -> list[ViewRequest]:
    """The views a first open of the Minima map and Landscape slice pages shows for a run whose
    minima have ``diverged`` (``(K,)`` bool): the map of the default method, dimension and
    seed and the interim map shown while it is computed, and the slice through the default
    three minima at the default resolution and margin (none when fewer than three converged).
    The pages' widgets read the same defaults (:mod:`lossbarcode.choices`)."""
    from lossbarcode.slices import default_minima

    maps = [ViewRequest("map", (("dim", choices.MAP_DIM), ("method", method),
                                ("seed", choices.MAP_SEED)))
            for method in dict.fromkeys((choices.MAP_INTERIM, choices.MAP_METHOD))]
    triple = default_minima(diverged)
    slices = [] if triple is None else [ViewRequest("slice", (
        ("minima", triple), ("resolution", choices.SLICE_RESOLUTION),
        ("margin", choices.SLICE_MARGIN)))]
    return maps + slices


def make_view(store: ResultStore, run_id: str, request: ViewRequest) -> Any:
    """The view ``request`` of a stored run: read from its cache, else computed and cached."""
    if request.kind == "map":
        from lossbarcode.maps import minima_map

        return minima_map(store, run_id, **request.kwargs)
    if request.kind == "slice":
        from lossbarcode.slices import result_slice

        return result_slice(store, run_id, **request.kwargs)
    raise ValueError(f"unknown view kind {request.kind!r}; expected 'map' or 'slice'")


def make_default_views(store: ResultStore, run_id: str,
                       progress: Callable[[str], None] | None = None
                       ) -> list[tuple[ViewRequest, float]]:
    """Make (or find) every :func:`default_views` view of the finished run ``run_id``, cached
    as stages of the run. Returns ``(request, seconds)`` per view; ``progress`` is told each
    view as it starts. Raises ``ValueError`` when ``run_id`` is not a finished run of
    ``store``."""
    from lossbarcode.experiment import load_result

    result = load_result(store, run_id, strict=True)
    if result is None:
        raise ValueError(f"no finished run {run_id!r} in {store.root} (see 'lossbarcode list')")
    done = []
    for request in default_views(result.diverged):
        if progress is not None:
            progress(request.describe())
        start = time.perf_counter()
        make_view(store, run_id, request)
        done.append((request, time.perf_counter() - start))
    return done
