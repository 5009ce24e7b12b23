"""The interface every task family implements: sample a meta-batch of tasks as stacked tensors.

Adding a family is one small module with a class that has these attributes and methods, a
config class in :mod:`meta_core.config`, and one line in :data:`meta_core.tasks.FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from meta_core.inner_loop import TaskKind
from meta_core.preprocessing import (
    AudioPreprocessing,
    ImagePreprocessing,
    TablePreprocessing,
    TextPreprocessing,
)

# "held_out": the test classes in held-out conditions (an audio folder's held-out voices).
Split = Literal["train", "val", "test", "held_out"]

__all__ = ["Split", "TaskBatch", "TaskFamily", "TaskKind"]


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

    def channels_last(self) -> TaskBatch:
        """Images ``[T, N, C, H, W]`` laid out so that each task's ``[N, C, H, W]`` is
        channels-last (NHWC strides); other tensors as they are."""

        def nhwc(x: Tensor) -> Tensor:
            if x.dim() != 5:
                return x
            return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

        return TaskBatch(nhwc(self.support_x), self.support_y, nhwc(self.query_x), self.query_y)


class TaskFamily(Protocol):
    """A distribution over tasks. ``shots`` is per class for classification."""

    name: str
    kind: TaskKind
    shots: int

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    @property
    def n_outputs(self) -> int: ...

    @property
    def preprocessing(
        self,
    ) -> ImagePreprocessing | TablePreprocessing | TextPreprocessing | AudioPreprocessing | None:
        """How the service turns an uploaded image, a table's row or a sentence into an input
        row (None: numbers as they are)."""
        ...

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

    def to(self, device: torch.device | str) -> TaskFamily:
        """Keep whatever the family samples from on ``device``."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-able description stored in the artifact's training record."""
        ...
