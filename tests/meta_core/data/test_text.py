"""A user's labelled sentences: read from CSV, JSONL or Parquet, classes (or groups) split, and
every problem refused in one line before anything is encoded."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from meta_core.config import TextFamily
from meta_core.data.example import write_sentences
from meta_core.data.folders import DataError
from meta_core.data.text import read_text_dataset


def family(file: Path | str, **changes) -> TextFamily:
    base = {"path": str(file), "label_column": "intent", "ways": 2, "shots": 2, "queries": 3}
    return TextFamily.model_validate(base | changes)


def write_csv(path: Path, rows: list[list[str]], header=("text", "intent")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def classes(n: int, per_class: int) -> list[list[str]]:
    return [[f"sentence {i} of class {c}", f"c{c}"] for c in range(n) for i in range(per_class)]


def test_classes_never_examples_are_split_with_the_seed(tmp_path: Path):
    path = write_sentences(tmp_path, per_class=6)
    data = read_text_dataset(family(path))
    assert len(data.texts) == 20 and not data.grouped
    names = [set(data.split[s]) for s in ("train", "val", "test")]
    assert sum(len(n) for n in names) == 20 and not (names[0] & names[1] or names[1] & names[2])
    assert all(len(t) == 18 for t in data.texts.values())  # 6 per customer, 3 customers
    again = read_text_dataset(family(path))
    assert again.split == data.split
    assert read_text_dataset(family(path, split_seed=1)).split != data.split


def test_groups_stay_within_one_split(tmp_path: Path):
    path = write_sentences(tmp_path, per_class=6)
    data = read_text_dataset(family(path, group_column="customer"))
    assert data.grouped and len(data.texts) == 60
    groups = {s: {c.split("/")[0] for c in data.split[s]} for s in ("train", "val", "test")}
    assert all(len(g) == 1 for g in groups.values())
    assert len(set.union(*groups.values())) == 3
    assert all(len(t) == 6 for t in data.texts.values())


def test_jsonl_and_parquet_read_as_csv_does(tmp_path: Path):
    rows = classes(14, 5)
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "intent": c}) + "\n" for t, c in rows))
    from_csv = read_text_dataset(family(write_csv(tmp_path / "s.csv", rows)))
    assert read_text_dataset(family(jsonl)).texts == from_csv.texts
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": [t for t, _ in rows], "intent": [c for _, c in rows]})
    pq.write_table(table, tmp_path / "s.parquet")
    assert read_text_dataset(family(tmp_path / "s.parquet")).texts == from_csv.texts


def test_large_classes_keep_a_seeded_sample(tmp_path: Path):
    path = write_csv(tmp_path / "s.csv", classes(14, 40))
    data = read_text_dataset(family(path, max_per_class=10))
    assert all(len(t) == 10 for t in data.texts.values())
    assert read_text_dataset(family(path, max_per_class=10)).texts == data.texts


@pytest.mark.parametrize(
    ("rows", "changes", "message"),
    [
        (None, {"path": "missing.csv"}, "family.path missing.csv is not a file"),
        (
            classes(14, 5),
            {"label_column": "topic"},
            "s.csv has no column 'topic' (family.label_column); its columns: ['intent', 'text']",
        ),
        (
            classes(14, 5),
            {"group_column": "customer"},
            "s.csv has no column 'customer' (family.group_column); its columns: ['intent', 'text']",
        ),
        (
            [*classes(14, 5), ["  ", "c1"]],
            {},
            "s.csv row 72: column 'text' is empty",
        ),
        (
            [*classes(14, 5), ["a sentence", ""]],
            {},
            "s.csv row 72: column 'intent' is empty (or set family.unlabelled=\"drop\" to "
            "leave such rows out)",
        ),
        (
            [[f"s{i}", "one"] for i in range(10)],
            {},
            "s.csv: column 'intent' has 1 class; need at least 2 per split for 2-way tasks",
        ),
        (
            [*classes(14, 5), ["a", "tiny"], ["b", "tiny"]],
            {},
            "s.csv: class 'tiny' has 2 sentences; shots + queries need 5 per class (or set "
            'family.small_classes="drop" to leave such classes out)',
        ),
        (
            classes(6, 5),
            {},
            "s.csv: the val split has 1 classes of the 6 with at least 5 sentences; 2-way tasks "
            "need at least that many in each split: add classes or lower family.ways",
        ),
    ],
)
def test_every_problem_is_one_line(tmp_path: Path, rows, changes, message):
    path = write_csv(tmp_path / "s.csv", rows) if rows is not None else tmp_path / "s.csv"
    cfg = family(path, **changes)
    with pytest.raises(DataError) as info:
        read_text_dataset(cfg)
    assert str(info.value).endswith(message)


def test_small_classes_and_unlabelled_rows_can_be_left_out(tmp_path: Path):
    rows = [*classes(14, 5), ["a", "tiny"], ["b", ""]]
    path = write_csv(tmp_path / "s.csv", rows)
    data = read_text_dataset(family(path, small_classes="drop", unlabelled="drop"))
    assert "tiny" not in data.texts and len(data.texts) == 14
    assert data.left_out == {"unlabelled rows": 1, "rows of small classes": 1}


def test_a_broken_jsonl_line_is_named(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"text": "a", "intent": "x"}\n{"text": \n')
    with pytest.raises(DataError, match=r"s.jsonl line 2 is not valid JSON"):
        read_text_dataset(family(path))
