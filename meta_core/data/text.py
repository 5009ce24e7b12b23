"""A user's labelled sentences (CSV, JSONL or Parquet) as an N-way K-shot dataset: one column
holds the sentence, another its class, and optionally a third a group (a customer, a source)
that stays within one split.

Classes (or, with a group column, groups), never examples, are split into train / val / test
by a seeded shuffle; the split is returned and recorded in the artifact's manifest. Everything
is checked before any sentence is encoded, and a problem is one line naming the file, the
column, the row or the class.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meta_core.config import TextFamily
from meta_core.data.folders import SPLITS, DataError, split_names
from meta_core.data.tables import read_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextDataset:
    """Each class's sentences (a class is ``group/label`` with a group column), the classes
    of each split, and what was left out."""

    texts: dict[str, list[str]]
    split: dict[str, list[str]]
    grouped: bool
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> rows


def read_records(path: Path) -> dict[str, list[Any]]:
    """Every column of a CSV, Parquet or JSONL file (one JSON object a line), as lists."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return read_columns(path)
    if not path.is_file():
        raise DataError(f"family.path {path} is not a file")
    rows: list[dict[str, Any]] = []
    try:
        with path.open(encoding="utf-8") as f:
            for i, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {i} is not a JSON object")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {i} is not valid JSON ({exc.msg})") from None
    if not rows:
        raise DataError(f"{path} is empty")
    names = list(dict.fromkeys(k for row in rows for k in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _cell(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _labelled_rows(path: Path, cfg: TextFamily) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Class name -> its sentences in file order, and rows left out (unlabelled)."""
    columns = read_records(path)
    roles = [("family.text_column", cfg.text_column), ("family.label_column", cfg.label_column)]
    if cfg.group_column:
        roles.append(("family.group_column", cfg.group_column))
    for role, name in roles:
        if name not in columns:
            raise DataError(
                f"{path} has no column {name!r} ({role}); its columns: {sorted(columns)}"
            )
    texts, labels = columns[cfg.text_column], columns[cfg.label_column]
    groups = columns[cfg.group_column] if cfg.group_column else None
    by_class: dict[str, list[str]] = {}
    unlabelled = 0
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        row = i + 1 if path.suffix.lower() in (".jsonl", ".ndjson", ".parquet", ".pq") else i + 2
        sentence, name = _cell(text), _cell(label)
        if not sentence:
            raise DataError(f"{path} row {row}: column {cfg.text_column!r} is empty")
        if groups is not None and name:
            group = _cell(groups[i])
            if not group:
                raise DataError(f"{path} row {row}: column {cfg.group_column!r} is empty")
            name = f"{group}/{name}"
        if not name:
            if cfg.unlabelled == "error":
                raise DataError(
                    f"{path} row {row}: column {cfg.label_column!r} is empty (or set "
                    'family.unlabelled="drop" to leave such rows out)'
                )
            unlabelled += 1
            continue
        by_class.setdefault(name, []).append(sentence)
    return by_class, {"unlabelled rows": unlabelled} if unlabelled else {}


def _enough(
    path: Path, by_class: dict[str, list[str]], cfg: TextFamily
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The classes with at least shots + queries sentences (and a seeded sample of at most
    ``max_per_class`` of each); the others refused or, with ``small_classes="drop"``, left
    out."""
    needed = cfg.shots + cfg.queries
    few = {name: len(t) for name, t in by_class.items() if len(t) < needed}
    if few and cfg.small_classes == "error":
        name, count = next(iter(few.items()))
        raise DataError(
            f"{path}: class {name!r} has {count} sentences; shots + queries need {needed} "
            "per class"
            + (f" ({len(few) - 1} more classes have too few)" if len(few) > 1 else "")
            + ' (or set family.small_classes="drop" to leave such classes out)'
        )
    rng = random.Random(cfg.split_seed)
    kept = {}
    for name in sorted(set(by_class) - set(few)):
        texts = by_class[name]
        if len(texts) > cfg.max_per_class:
            texts = [texts[i] for i in sorted(rng.sample(range(len(texts)), cfg.max_per_class))]
        kept[name] = texts
    left_out = {"rows of small classes": sum(few.values())} if few else {}
    return kept, left_out


def read_text_dataset(cfg: TextFamily) -> TextDataset:
    """Read, check and split the family's file (nothing encoded yet)."""
    path = Path(cfg.path)
    by_class, left_out = _labelled_rows(path, cfg)
    if len(by_class) < 2:
        raise DataError(
            f"{path}: column {cfg.label_column!r} has {len(by_class)} class; need at least "
            f"{cfg.ways} per split for {cfg.ways}-way tasks"
        )
    classes, small = _enough(path, by_class, cfg)
    left_out |= small
    grouped = bool(cfg.group_column)
    if grouped:
        groups = sorted({name.split("/")[0] for name in classes})
        by_group = split_names(groups, cfg.split, cfg.split_seed)
        split = {s: sorted(c for c in classes if c.split("/")[0] in by_group[s]) for s in SPLITS}
    else:
        split = split_names(list(classes), cfg.split, cfg.split_seed)
    for s in SPLITS:
        if len(split[s]) < cfg.ways:
            what = "groups' classes" if grouped else "classes"
            raise DataError(
                f"{path}: the {s} split has {len(split[s])} {what} of the {len(classes)} with "
                f"at least {cfg.shots + cfg.queries} sentences; {cfg.ways}-way tasks need at "
                "least that many in each split: add classes or lower family.ways"
            )
    if left_out:
        log.warning("%s: left out %s", path, ", ".join(f"{n} {r}" for r, n in left_out.items()))
    log.info(
        "%s: %d classes, %d sentences; split %s",
        path,
        len(classes),
        sum(len(t) for t in classes.values()),
        {s: len(split[s]) for s in SPLITS},
    )
    return TextDataset(classes, split, grouped, left_out)
