"""The interface every task family implements: sample a meta-batch of tasks as stacked tensors.

Adding a family is one small module with a class that has these attributes and ``sample``,
plus one line in :data:`meta_core.tasks.FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor

Split = Literal["train", "val", "test"]
TaskKind = Literal["regression", "classification"]


@dataclass(frozen=True)
class TaskBatch:
    """``T`` tasks: support ``[T, Ns, *input]`` / ``[T, Ns, ...]``, query likewise."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(
            *(
                t.to(device, non_blocking=True)
                for t in (self.support_x, self.support_y, self.query_x, self.query_y)
            )
        )

    def __len__(self) -> int:
        return self.support_x.shape[0]


class TaskFamily(Protocol):
    """A distribution over tasks. ``shots`` is per class for classification."""

    kind: TaskKind
    input_shape: tuple[int, ...]
    n_outputs: int
    shots: int

    def sample(
        self,
        n_tasks: int,
        generator: torch.Generator,
        *,
        split: Split = "train",
        shots: int | None = None,
    ) -> TaskBatch:
        """Draw ``n_tasks`` tasks from ``split`` with ``generator`` (on the CPU)."""
        ...

    def describe(self) -> dict:
        """A JSON-able description stored in the artifact's training config."""
        ...
