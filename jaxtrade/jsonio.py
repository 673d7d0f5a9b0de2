"""The one JSON helper: plain values for summary.json, metrics.json, Orbax meta and `.pth` configs.

    to_json(obj)                     -> str/int/float/bool/None, lists and str-keyed dicts only
    write_json_atomic(path, obj)     through `jaxtrade.atomic` (never a half-written file)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def to_json(obj: Any, where: str = "value") -> Any:
    """`obj` as plain JSON-able Python: numpy and JAX scalars and arrays become numbers and lists, tuples lists,
    `Path`s strings, dataclasses (and objects with `to_dict`) dicts; non-finite floats become None (JSON's
    null, DESIGN section 7's "undefined"). Anything else is a TypeError naming `where`."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        return {str(k): to_json(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "__array__") and hasattr(obj, "shape"):  # numpy and JAX arrays
        arr = np.asarray(obj)
        return to_json(arr.item() if arr.ndim == 0 else arr.tolist(), where)
    if hasattr(obj, "to_dict"):
        return to_json(obj.to_dict(), where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_json(dataclasses.asdict(obj), where)
    raise TypeError(f"{where}: {type(obj).__name__} is not a plain value (str, number, bool, None, list, dict)")


def write_json_atomic(path, obj: Any, indent: int | None = 2) -> None:
    """Write `to_json(obj)` to `path` through `jaxtrade.atomic` (a temporary name in the same folder, fsync,
    rename)."""
    from jaxtrade import atomic

    atomic.write_text(path, json.dumps(to_json(obj), indent=indent) + "\n")
