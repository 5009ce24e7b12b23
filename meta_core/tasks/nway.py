"""N-way K-shot classification over any labelled dataset.

Each task draws ``ways`` distinct classes from the split's pool, in random order (so labels are
permuted per task), and for each class ``shots + queries`` distinct examples: the first ``shots``
form the support set, the rest the query set, so support and query never share an example.
Sampling is vectorized: a whole meta-batch is a few ``argsort`` and one gather.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from meta_core.inner_loop import TaskKind
from meta_core.preprocessing import AudioPreprocessing, ImagePreprocessing, TextPreprocessing
from meta_core.tasks.base import Split, TaskBatch


def pool_from_labelled(x: Tensor, y: Tensor) -> Tensor:
    """Group a labelled dataset into ``[classes, per_class, *shape]``.

    Classes keep the first ``m`` examples, ``m`` being the smallest class's count, so every
    class can be sampled alike.
    """
    labels = torch.unique(y)
    groups = [x[y == c] for c in labels]
    m = min(len(g) for g in groups)
    return torch.stack([g[:m] for g in groups])


@dataclass
class NWayKShot:
    """``pools[split]`` is ``[classes, per_class, *input_shape]`` (any dtype; float on output).
    With ``counts[split]`` (``[classes]``), class ``c`` has only its first ``counts[c]``
    examples (the rest is padding, never drawn): classes of different sizes in one tensor.
    ``augment``, if given, transforms the training split's sampled examples (``[tasks, ways,
    shots + queries, *input_shape]``, with the sampling generator), never another split's."""

    pools: dict[str, Tensor]
    ways: int = 5
    shots: int = 1
    queries: int = 15
    name: str = "nway"
    scale: float = 1.0
    preprocessing: ImagePreprocessing | TextPreprocessing | AudioPreprocessing | None = None
    kind: TaskKind = "classification"
    details: dict[str, Any] = field(default_factory=dict)  # more for describe() (the split)
    counts: dict[str, Tensor] | None = None
    augment: Callable[[Tensor, torch.Generator], Tensor] | None = None
    input_shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        shapes = {tuple(p.shape[2:]) for p in self.pools.values()}
        if len(shapes) != 1:
            raise ValueError(f"pools disagree on the example shape: {sorted(shapes)}")
        self.input_shape = shapes.pop()
        for split, pool in self.pools.items():
            if pool.shape[0] < self.ways:
                raise ValueError(f"split {split!r} has {pool.shape[0]} classes < {self.ways} ways")

    @property
    def n_outputs(self) -> int:
        return self.ways

    def sample(
        self,
        n_tasks: int,
        generator: torch.Generator,
        *,
        split: Split = "train",
        shots: int | None = None,
        ways: int | None = None,
    ) -> TaskBatch:
        """Tasks of ``ways`` classes (default: the family's; fewer use the first output units,
        as the service serves a task with fewer classes than the model's outputs)."""
        k = self.shots if shots is None else shots
        n_ways = self.ways if ways is None else ways
        if not 2 <= n_ways <= self.ways:
            raise ValueError(f"{n_ways}-way tasks: the family's model has {self.ways} outputs")
        if split not in self.pools:
            raise ValueError(f"the {self.name} family has no {split} split")
        pool = self.pools[split]
        n_classes, per_class = pool.shape[:2]
        counts = self.counts[split] if self.counts is not None else None
        fewest = int(counts.min()) if counts is not None else per_class
        if k + self.queries > fewest:
            raise ValueError(f"{k} shots + {self.queries} queries > {fewest} examples a class")
        classes = torch.rand(n_tasks, n_classes, generator=generator).argsort(1)[:, :n_ways]
        keys = torch.rand(n_tasks, n_ways, per_class, generator=generator)
        if counts is not None:  # padding sorts last (key 2 > any rand)
            padding = torch.arange(per_class) >= counts.cpu()[classes].unsqueeze(-1)
            keys = keys.masked_fill(padding, 2.0)
        picks = keys.argsort(2)[..., : k + self.queries]
        flat = (classes.unsqueeze(-1) * per_class + picks).to(pool.device)
        images = pool.flatten(0, 1)[flat].float() * self.scale  # [T, ways, k + q, *shape]
        spec = self.preprocessing
        if isinstance(spec, ImagePreprocessing) and spec.mean is not None and spec.std is not None:
            mean = torch.tensor(spec.mean, device=images.device).view(-1, 1, 1)
            images = (images - mean) / torch.tensor(spec.std, device=images.device).view(-1, 1, 1)
        if self.augment is not None and split == "train":
            images = self.augment(images, generator)
        labels = torch.arange(n_ways, device=pool.device).view(1, -1, 1)
        labels = labels.expand(n_tasks, n_ways, k + self.queries)
        shape = self.input_shape
        return TaskBatch(
            images[:, :, :k].reshape(n_tasks, -1, *shape),
            labels[:, :, :k].reshape(n_tasks, -1),
            images[:, :, k:].reshape(n_tasks, -1, *shape),
            labels[:, :, k:].reshape(n_tasks, -1),
        )

    def to(self, device: torch.device | str) -> NWayKShot:
        """Move the pools (once) so sampled tasks are gathered on ``device``."""
        self.pools = {s: p.to(device) for s, p in self.pools.items()}
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "classes": {s: int(p.shape[0]) for s, p in self.pools.items()},
        } | self.details
