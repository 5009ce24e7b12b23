"""A client's numbers as a float32 array, or a clear 422."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.core.errors import InvalidInput

FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32(values: list[Any], field: str, what: str) -> np.ndarray:
    """Nested lists of numbers as a float32 array, or a 422 naming ``field``: not ``what`` (a
    ragged array, strings, objects), or a NaN, an infinity or a number float32 cannot hold.
    NumPy, not torch: on a few rows torch's per-call overhead is most of a predict."""
    try:
        a = np.asarray(values)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(f"{field} must be {what}") from None
    if a.dtype.kind not in "biuf":  # strings, None, objects and integers beyond int64
        raise InvalidInput(f"{field} must be {what}")
    # One reduction: NaN fails the comparison, as do infinities and numbers beyond float32.
    if a.dtype.kind == "f" and a.size and not np.abs(a).max() <= FLOAT32_MAX:
        raise InvalidInput(f"{field} contains NaN or Inf, or a number beyond float32's range")
    return a.astype(np.float32)
