"""Bring your own table: tasks sampled per value of the task column (rows of every class for
classification), standardized with the train split's statistics recorded in the artifact;
``meta-core train --preset table`` and ``meta-core eval`` run on ``meta-core data example``'s
CSV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_core.artifact import load_artifact
from meta_core.cli import main
from meta_core.config import TableFamily
from meta_core.data.example import write_table
from meta_core.tasks.tables import table_family


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("table"))


def family(path: Path, **changes) -> TableFamily:
    base = {"path": str(path), "task_column": "machine", "target_column": "wear"}
    return TableFamily.model_validate(base | changes)


def test_regression_tasks_are_rows_of_one_machine_standardized(csv_path: Path):
    tasks = table_family(family(csv_path, shots=5, queries=7))
    assert tasks.input_shape == (3,) and tasks.n_outputs == 1
    spec = tasks.preprocessing
    assert spec.columns == ("temperature", "load", "vibration") and spec.target == "wear"
    batch = tasks.sample(6, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (6, 5, 3) and batch.query_y.shape == (6, 7, 1)
    # Standardized: the train split's rows have mean 0 and deviation 1 per column.
    x = np.concatenate([spec.inputs(x) for x, _ in tasks.table.tasks["train"].values()])
    assert np.allclose(x.mean(0), 0, atol=1e-5) and np.allclose(x.std(0), 1, atol=1e-4)
    # A task's support and query rows are distinct rows of one machine.
    rows = torch.cat([batch.support_x[0], batch.query_x[0]])
    assert len(torch.unique(rows, dim=0)) == 12
    assert tasks.describe()["tasks"] == {"train": 28, "val": 6, "test": 6}


def test_classification_draws_rows_of_every_class(tmp_path: Path):
    lines = ["user,a,b,churn"]
    rng = np.random.default_rng(0)
    for u in range(10):
        for r in range(12):
            lines.append(f"u{u},{rng.normal():.3f},{rng.normal():.3f},{'yes' if r % 3 else 'no'}")
    path = tmp_path / "c.csv"
    path.write_text("\n".join(lines) + "\n")
    tasks = table_family(
        TableFamily(
            path=str(path),
            task_column="user",
            target_column="churn",
            kind="classification",
            shots=2,
            queries=2,
        )
    )
    assert tasks.n_outputs == 2 and tasks.table.classes == ["no", "yes"]
    batch = tasks.sample(3, torch.Generator().manual_seed(0))
    assert batch.support_y.tolist() == [[0, 0, 1, 1]] * 3
    assert tasks.preprocessing.target_mean is None


def test_train_and_eval_a_table_through_the_cli(csv_path: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    sets = [
        f"family.path={csv_path}",
        "family.task_column=machine",
        "family.target_column=wear",
        "name=wear",
        "train.iterations=20",
        "train.val_every=10",
        "train.val_tasks=10",
        "train.checkpoint_every=10",
    ]
    args = ["train", "--preset", "table", "--out", str(out), "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    art = load_artifact(out)
    assert art.input_shape == [3] and art.manifest.preprocessing is not None
    assert art.manifest.preprocessing.type == "table"
    assert art.manifest.training.family["split"]["test"]
    assert (
        main(
            ["eval", str(out), "--set", "tasks=20", "--set", "baseline_iterations=10", "--no-plots"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"maml", "pretrained", "random"}
    assert "maml K=10" in capsys.readouterr().out


def test_a_bad_table_is_one_line(csv_path: Path, tmp_path: Path, capsys):
    sets = [f"family.path={csv_path}", "family.task_column=machine", "family.target_column=cost"]
    args = ["train", "--preset", "table", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("meta-core train: ") and "has no column 'cost'" in err and "\n" not in err
