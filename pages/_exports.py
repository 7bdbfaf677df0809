"""Downloads: rows as CSV, data as JSON, and a row of download buttons."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

from pages._present import columns


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of dicts as CSV (lists are written as JSON)."""
    import csv

    rows = list(rows)
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list | tuple | dict) else v
                         for k, v in row.items()})
    return buffer.getvalue()


def json_text(data: Any) -> str:
    """``data`` as indented JSON (numpy arrays and scalars as lists and numbers)."""
    return json.dumps(data, indent=1, default=_json_default, allow_nan=True)


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def downloads(items: Sequence[tuple[str, str, str, str]], container: Any = None) -> None:
    """A row of download buttons: ``(label, data, file name, mime)`` each."""
    cols = columns(len(items), stack=False, container=container)
    for col, (label, data, name, mime) in zip(cols, items, strict=True):
        col.download_button(label, data, file_name=name, mime=mime, icon=":material/download:",
                            key=f"dl_{name}", width="stretch")
