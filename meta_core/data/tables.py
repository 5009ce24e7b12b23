"""A user's table (CSV, or Parquet with pyarrow) as a family of tasks: each distinct value of
the task column (a machine, a store, a user) is a task; the numeric feature columns are the
input, in the order recorded in the artifact; the target is regressed or classified.

Tasks, never rows, are split into train / val / test by a seeded shuffle. Features (and a
regression target) are standardized with the train split's mean and standard deviation, which
the artifact records and the service applies. Every problem is one line naming the file, the
column and the row, before any training.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meta_core.data.folders import SPLITS, DataError, split_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    """Per split: each task's rows (features ``[n, F]`` float64, targets ``[n]``)."""

    features: list[str]
    tasks: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]  # split -> task -> (x, y)
    classes: list[Any] | None  # classification: the target's values, sorted
    skipped: dict[str, int]  # tasks left out for too few rows: task -> rows


def read_columns(path: Path) -> dict[str, list[Any]]:
    """Every column of a CSV or Parquet file, as lists (CSV cells stay strings)."""
    if not path.is_file():
        raise DataError(f"family.path {path} is not a file")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise DataError(
                f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or save it as CSV"
            ) from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow's errors have no common base
            raise DataError(f"{path} is not a readable Parquet file ({exc})") from None
        return {name: table.column(name).to_pylist() for name in table.column_names}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path} is not a readable CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path} is empty")
    header, body = rows[0], rows[1:]
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{path} row {i + 2} has {len(row)} cells; the header has {len(header)}"
            )
    return {name: [row[j] for row in body] for j, name in enumerate(header)}


def _numbers(path: Path, name: str, values: list[Any]) -> np.ndarray:
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            number = float(v) if v not in ("", None) else math.nan
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: column {name!r} row {i + 2} holds {v!r}, not a number"
            ) from None
        if not math.isfinite(number):
            raise DataError(f"{path}: column {name!r} row {i + 2} is empty, NaN or infinite")
        out[i] = number
    return out


def read_table(
    path: Path,
    *,
    task_column: str,
    target_column: str,
    features: list[str],
    kind: str,
    needed: int,
    fractions: tuple[float, float, float],
    seed: int,
) -> Table:
    """Read and check the table; group rows by task; split tasks. ``needed``: the rows a task
    must have (shots + queries; per class for classification)."""
    columns = read_columns(path)
    features = _feature_columns(path, columns, task_column, target_column, features)
    x = np.stack([_numbers(path, c, columns[c]) for c in features], axis=1)
    y, classes = _targets(path, target_column, columns[target_column], kind)
    rows = _rows_by_task(columns[task_column])
    enough, skipped = _tasks_with_enough_rows(path, rows, y, classes, needed)
    split = split_names(list(enough), fractions, seed)
    for s in SPLITS:
        if not split[s]:
            raise DataError(
                f"{path}: the {s} split has no task: {len(enough)} of the {len(rows)} values "
                f"of {task_column!r} have at least {needed} rows"
                + (" of every class" if classes else "")
                + " (shots + queries); at least 3 such tasks are needed"
            )
    tasks = {s: {t: (x[enough[t]], y[enough[t]]) for t in split[s]} for s in SPLITS}
    return Table(features, tasks, classes, skipped)


def _feature_columns(
    path: Path,
    columns: dict[str, list[Any]],
    task_column: str,
    target_column: str,
    features: list[str],
) -> list[str]:
    """The input columns, ``features`` or else every other numeric column, once the task and
    target columns are known to be there."""
    for role, name in (
        ("family.task_column", task_column),
        ("family.target_column", target_column),
    ):
        if name not in columns:
            raise DataError(
                f"{path} has no column {name!r} ({role}); its columns: {sorted(columns)}"
            )
    if not features:  # every other numeric column
        features = [
            c for c in columns if c not in (task_column, target_column) and _all_numbers(columns[c])
        ]
        if not features:
            raise DataError(f"{path} has no numeric feature column besides the task and target")
    missing = [c for c in features if c not in columns]
    if missing:
        raise DataError(f"{path} has no column {missing[0]!r} (family.features)")
    return features


def _targets(
    path: Path, name: str, values: list[Any], kind: str
) -> tuple[np.ndarray, list[Any] | None]:
    """The target column as numbers to regress, or (classification) as indices into its
    sorted distinct values, which are returned with them."""
    if kind != "classification":
        return _numbers(path, name, values), None
    labels = [str(v) for v in values]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{path}: column {name!r} has one class; need at least 2")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in labels], dtype=np.int64), classes


def _rows_by_task(owners: list[Any]) -> dict[str, list[int]]:
    """Each value of the task column (as text), with the indices of its rows in order."""
    rows: dict[str, list[int]] = {}
    for i, task in enumerate(owners):
        rows.setdefault(str(task), []).append(i)
    return rows


def _tasks_with_enough_rows(
    path: Path,
    rows: dict[str, list[int]],
    y: np.ndarray,
    classes: list[Any] | None,
    needed: int,
) -> tuple[dict[str, list[int]], dict[str, int]]:
    """The tasks with at least ``needed`` rows (of every class), and the others' row counts,
    which are left out with one warning."""
    enough, skipped = {}, {}
    for task, idx in rows.items():
        counts = np.bincount(y[idx], minlength=len(classes)) if classes else np.array([len(idx)])
        if counts.min() >= needed:
            enough[task] = idx
        else:
            skipped[task] = len(idx)
    if skipped:
        log.warning(
            "%s: %d of %d tasks have too few rows (%d needed%s) and are left out",
            path,
            len(skipped),
            len(rows),
            needed,
            " of every class" if classes else "",
        )
    return enough, skipped


def _all_numbers(values: list[Any]) -> bool:
    """Whether a column is numeric: nine in ten of its filled cells, or more, are numbers (the
    others are then a clear error naming the row, not a column silently left out)."""
    filled = [v for v in values if v not in ("", None)]
    numbers = 0
    for v in filled:
        try:
            float(v)
            numbers += 1
        except (TypeError, ValueError):
            pass
    return bool(filled) and numbers >= 0.9 * len(filled)
