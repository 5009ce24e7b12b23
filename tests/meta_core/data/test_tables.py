"""A user's table: columns found and checked, rows grouped by task, tasks split with a seed,
and every problem with the data a one-line error naming the file, column and row."""

from __future__ import annotations

from pathlib import Path

import pytest

from meta_core.data.tables import DataError, read_table

HEADER = "store,price,promo,region,sales\n"


def table(path: Path, stores: int = 12, rows: int = 8, extra: str = "") -> Path:
    lines = [HEADER]
    for s in range(stores):
        for r in range(rows):
            lines.append(f"s{s},{1 + r * 0.5},{r % 2},north,{10 * s + r}\n")
    path.write_text("".join(lines) + extra)
    return path


def read(path: Path, **changes):
    args = {
        "task_column": "store",
        "target_column": "sales",
        "features": [],
        "kind": "regression",
        "needed": 4,
        "fractions": (0.5, 0.25, 0.25),
        "seed": 0,
    } | changes
    return read_table(path, **args)


def test_tasks_are_split_by_task_with_numeric_features_found(tmp_path: Path):
    data = read(table(tmp_path / "t.csv"))
    assert data.features == ["price", "promo"]  # "region" is text: not a feature
    assert {s: len(t) for s, t in data.tasks.items()} == {"train": 6, "val": 3, "test": 3}
    stores = [t for s in data.tasks.values() for t in s]
    assert len(stores) == len(set(stores)) == 12
    x, y = next(iter(data.tasks["train"].values()))
    assert x.shape == (8, 2) and y.shape == (8,)
    assert read(tmp_path / "t.csv").tasks.keys() == data.tasks.keys()
    assert read(tmp_path / "t.csv", seed=1).tasks["test"] != data.tasks["test"]


def test_classification_counts_rows_per_class(tmp_path: Path):
    data = read(
        table(tmp_path / "t.csv"),
        target_column="promo",
        features=["price"],
        kind="classification",
        needed=4,
    )
    assert data.classes == ["0", "1"] and not data.skipped
    with pytest.raises(DataError, match="have at least 5 rows of every class"):
        read(
            tmp_path / "t.csv",
            target_column="promo",
            features=["price"],
            kind="classification",
            needed=5,
        )


@pytest.mark.parametrize(
    ("extra", "changes", "message"),
    [
        ("", {"task_column": "shop"}, r"has no column 'shop' \(family.task_column\); its columns"),
        ("", {"features": ["price", "cost"]}, r"has no column 'cost' \(family.features\)"),
        ("s1,abc,0,north,3\n", {}, r"column 'price' row 98 holds 'abc', not a number"),
        ("s1,,0,north,3\n", {}, r"column 'price' row 98 is empty, NaN or infinite"),
        ("s1,2,0,north,nan\n", {}, r"column 'sales' row 98 is empty, NaN or infinite"),
        ("s1,2,0\n", {}, r"row 98 has 3 cells; the header has 5"),
        ("", {"needed": 9}, r"the train split has no task: 0 of the 12 values of 'store' have"),
    ],
)
def test_bad_tables_are_one_line(tmp_path: Path, extra, changes, message):
    path = table(tmp_path / "t.csv", extra=extra)
    with pytest.raises(DataError, match=message):
        read(path, **changes)


def test_missing_file_and_a_bad_parquet(tmp_path: Path):
    with pytest.raises(DataError, match="is not a file"):
        read(tmp_path / "none.csv")
    (tmp_path / "t.parquet").write_bytes(b"PAR1 but not parquet")
    with pytest.raises(DataError, match="is not a readable Parquet file"):
        read(tmp_path / "t.parquet")


def test_parquet_reads_as_the_csv_does(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = table(tmp_path / "t.csv")
    lines = [line.split(",") for line in csv_path.read_text().splitlines()]
    header, body = lines[0], lines[1:]
    columns = {
        name: [row[j] if name in ("store", "region") else float(row[j]) for row in body]
        for j, name in enumerate(header)
    }
    pq.write_table(pa.table(columns), tmp_path / "t.parquet")
    from_csv, from_parquet = read(csv_path), read(tmp_path / "t.parquet")
    assert from_parquet.features == from_csv.features
    assert from_parquet.tasks.keys() == from_csv.tasks.keys()
    for split, tasks in from_csv.tasks.items():
        for task, (x, y) in tasks.items():
            assert (from_parquet.tasks[split][task][0] == x).all()
            assert (from_parquet.tasks[split][task][1] == y).all()
