"""Sinusoid regression exactly as W1 (MAML paper, section 5.1).

y = A sin(x - phi), A ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5]. Training and validation
queries are ``queries`` random points; the test protocol's query is 100 points evenly spaced
on [-5, 5]. ``train_shots`` (optional) draws each training meta-batch's K from a list, so one
meta-initialization serves several support sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from meta_core.inner_loop import TaskKind
from meta_core.preprocessing import ImagePreprocessing
from meta_core.tasks.base import Split, TaskBatch

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)
TEST_QUERY_POINTS = 100


@dataclass
class Sinusoid:
    shots: int = 10
    queries: int = 10
    train_shots: tuple[int, ...] = ()
    name: str = "sinusoid"
    kind: TaskKind = "regression"
    input_shape: tuple[int, ...] = (1,)
    n_outputs: int = 1
    preprocessing: ImagePreprocessing | None = None

    def sample(
        self,
        n_tasks: int,
        generator: torch.Generator,
        *,
        split: Split = "train",
        shots: int | None = None,
    ) -> TaskBatch:
        k = self.shots if shots is None else shots
        if shots is None and split == "train" and self.train_shots:
            pick = int(torch.randint(len(self.train_shots), (1,), generator=generator).item())
            k = self.train_shots[pick]
        amp, phase = self.sample_functions(n_tasks, generator)
        sx = _uniform(generator, (n_tasks, k, 1), *X_RANGE)
        if split == "test":
            qx = torch.linspace(*X_RANGE, TEST_QUERY_POINTS).view(1, -1, 1).expand(n_tasks, -1, -1)
        else:
            qx = _uniform(generator, (n_tasks, self.queries, 1), *X_RANGE)
        return TaskBatch(
            sx, self.target(sx, amp, phase), qx.contiguous(), self.target(qx, amp, phase)
        )

    @staticmethod
    def sample_functions(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitudes and phases, each ``[n, 1, 1]``."""
        return (_uniform(generator, (n, 1, 1), *AMPLITUDE), _uniform(generator, (n, 1, 1), *PHASE))

    @staticmethod
    def target(x: torch.Tensor, amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return amp * torch.sin(x - phase)

    def to(self, device: torch.device | str) -> Sinusoid:
        """Tasks are drawn on the CPU; a batch moves with ``TaskBatch.to``."""
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "family": "sinusoid",
            "shots": self.shots,
            "queries": self.queries,
            "train_shots": list(self.train_shots),
        }


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> torch.Tensor:
    return torch.rand(shape, generator=g) * (hi - lo) + lo
