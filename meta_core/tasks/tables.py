"""Tasks from a user's table (:mod:`meta_core.data.tables` reads it): one task per value of
the task column. A regression task draws ``shots + queries`` of its rows; a classification
task ``shots + queries`` rows of every class (the classes are the target's values, sorted:
output unit k is the k-th, as the service orders a task's labels). Rows are standardized with
the train split's statistics, recorded in the artifact (``TablePreprocessing``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from meta_core.config import TableFamily
from meta_core.data.tables import Table, read_table
from meta_core.inner_loop import TaskKind
from meta_core.preprocessing import TablePreprocessing
from meta_core.tasks.base import Split, TaskBatch


@dataclass
class TableTasks:
    """Per split, every task's standardized rows padded to one tensor: ``x [T, R, F]``,
    ``y [T, R]`` and how many rows (per class) each task has."""

    table: Table
    preprocessing: TablePreprocessing
    kind: TaskKind
    shots: int
    queries: int
    name: str = "table"
    details: dict[str, Any] = field(default_factory=dict)
    pools: dict[str, tuple[Tensor, Tensor, Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        self.pools = {s: self._pad(s) for s in ("train", "val", "test")}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (len(self.table.features),)

    @property
    def n_outputs(self) -> int:
        return len(self.table.classes) if self.table.classes else 1

    def _pad(self, split: str) -> tuple[Tensor, Tensor, Tensor]:
        """Rows grouped ``[T, C, R, F]`` by class (C = 1 for regression), padded to the
        largest group; ``counts [T, C]``."""
        spec, tasks = self.preprocessing, self.table.tasks[split]
        classes = len(self.table.classes) if self.table.classes else 1
        groups = []
        for x, y in tasks.values():
            xs = spec.inputs(x)
            ys = spec.targets(y) if self.kind == "regression" else y
            if self.kind == "regression":
                groups.append([(xs, ys)])
            else:
                groups.append([(xs[y == c], ys[y == c]) for c in range(classes)])
        most = max(len(g[0]) for task in groups for g in task)
        width = len(self.table.features)
        x_pad = np.zeros((len(groups), classes, most, width), dtype=np.float32)
        y_pad = np.zeros((len(groups), classes, most), dtype=np.float32)
        counts = np.zeros((len(groups), classes), dtype=np.int64)
        for t, task in enumerate(groups):
            for c, (gx, gy) in enumerate(task):
                x_pad[t, c, : len(gx)], y_pad[t, c, : len(gy)], counts[t, c] = gx, gy, len(gx)
        return torch.from_numpy(x_pad), torch.from_numpy(y_pad), torch.from_numpy(counts)

    def sample(
        self,
        n_tasks: int,
        generator: torch.Generator,
        *,
        split: Split = "train",
        shots: int | None = None,
    ) -> TaskBatch:
        k = self.shots if shots is None else shots
        x, y, counts = self.pools[split]
        total, classes, most = x.shape[:3]
        if k + self.queries > int(counts.min()):
            raise ValueError(
                f"{k} shots + {self.queries} queries > {int(counts.min())} rows of a task"
            )
        tasks = torch.randint(0, total, (n_tasks,), generator=generator).to(x.device)
        # Random rows of each task (and class): padding sorts last (key 2 > any rand).
        keys = torch.rand(n_tasks, classes, most, generator=generator).to(x.device)
        padding = torch.arange(most, device=x.device) >= counts[tasks].unsqueeze(-1)
        picks = keys.masked_fill(padding, 2.0).argsort(-1)[..., : k + self.queries]
        chosen = x[tasks]  # [n, C, R, F]
        rows = torch.gather(chosen, 2, picks.unsqueeze(-1).expand(-1, -1, -1, chosen.shape[-1]))
        if self.kind == "regression":
            targets = torch.gather(y[tasks], 2, picks).unsqueeze(-1)  # [n, 1, k + q, 1]
        else:
            targets = torch.arange(classes, device=x.device).view(1, -1, 1)
            targets = targets.expand(n_tasks, classes, k + self.queries)
        width = rows.shape[-1]
        return TaskBatch(
            rows[:, :, :k].reshape(n_tasks, -1, width),
            _flat(targets[:, :, :k], n_tasks, self.kind),
            rows[:, :, k:].reshape(n_tasks, -1, width),
            _flat(targets[:, :, k:], n_tasks, self.kind),
        )

    def to(self, device: torch.device | str) -> TableTasks:
        self.pools = {s: tuple(t.to(device) for t in p) for s, p in self.pools.items()}  # type: ignore[misc]
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "kind": self.kind,
            "shots": self.shots,
            "queries": self.queries,
            "features": self.table.features,
            "classes": self.table.classes,
            "tasks": {s: len(t) for s, t in self.table.tasks.items()},
        } | self.details


def _flat(targets: Tensor, n_tasks: int, kind: TaskKind) -> Tensor:
    if kind == "regression":
        return targets.reshape(n_tasks, -1, 1)
    return targets.reshape(n_tasks, -1)


def table_family(cfg: TableFamily) -> TableTasks:
    path = Path(cfg.path)
    table = read_table(
        path,
        task_column=cfg.task_column,
        target_column=cfg.target_column,
        features=cfg.features,
        kind=cfg.kind,
        needed=cfg.shots + cfg.queries,
        fractions=cfg.split,
        seed=cfg.split_seed,
    )
    train_x = np.concatenate([x for x, _ in table.tasks["train"].values()])
    train_y = np.concatenate([y for _, y in table.tasks["train"].values()])
    std = np.where(train_x.std(axis=0) > 1e-8, train_x.std(axis=0), 1.0)
    regression = cfg.kind == "regression"
    target_std = float(train_y.std()) if regression else None
    spec = TablePreprocessing(
        columns=tuple(table.features),
        mean=tuple(float(v) for v in train_x.mean(axis=0)),
        std=tuple(float(v) for v in std),
        target=cfg.target_column,
        target_mean=float(train_y.mean()) if regression else None,
        target_std=(target_std if target_std and target_std > 1e-8 else 1.0)
        if regression
        else None,
    )
    return TableTasks(
        table,
        spec,
        "regression" if regression else "classification",
        cfg.shots,
        cfg.queries,
        details={
            "path": str(path),
            "task_column": cfg.task_column,
            "target_column": cfg.target_column,
            "split_seed": cfg.split_seed,
            "split": {s: sorted(t) for s, t in table.tasks.items()},
            "left_out": table.skipped,
        },
    )
