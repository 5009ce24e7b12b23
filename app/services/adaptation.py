"""Turning a client's examples into tensors, adapting with meta_core's inner loop, and storing
the result as safetensors bytes (only the tensors adaptation changed)."""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load, save
from torch import Tensor

from app.core.errors import InvalidInput, Overloaded
from app.services.images import images_to_tensor
from meta_core.artifact import Artifact
from meta_core.inner_loop import LOSSES

Label = int | str


def to_inputs(
    art: Artifact,
    x: Any,
    field: str,
    limit: int,
    *,
    max_image_bytes: int = 4 << 20,
    max_image_pixels: int = 1 << 24,
) -> Tensor:
    """``x`` as a float32 ``[n, *input_shape]`` tensor, or a clear 422. For an image model,
    rows may be base64 PNG/JPEG strings (or data URLs), preprocessed as in training."""
    spec = art.manifest.get("preprocessing") or {}
    if isinstance(x, list) and x and isinstance(x[0], str):
        if spec.get("type") != "image":
            raise InvalidInput(f"{field} holds strings, but model {art.name!r} takes numbers")
        if len(x) > limit:
            raise InvalidInput(f"{field} has {len(x)} rows; the limit is {limit}")
        x = images_to_tensor(x, field, spec, max_bytes=max_image_bytes, max_pixels=max_image_pixels)
    try:
        t = x if isinstance(x, Tensor) else torch.tensor(x, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInput(f"{field} must be a rectangular array of numbers") from None
    if t.dim() == 0 or t.shape[0] == 0:
        raise InvalidInput(f"{field} is empty")
    shape = art.input_shape
    if shape == [1] and t.dim() == 1:
        t = t.unsqueeze(1)
    if list(t.shape[1:]) != shape:
        raise InvalidInput(
            f"{field} has shape {list(t.shape)}; model {art.name!r} takes "
            f"[n, {', '.join(map(str, shape))}]"
        )
    if t.shape[0] > limit:
        raise InvalidInput(f"{field} has {t.shape[0]} rows; the limit is {limit}")
    if not torch.isfinite(t).all():
        raise InvalidInput(f"{field} contains NaN or Inf")
    return t


def to_targets(art: Artifact, y: Any, n: int, field: str) -> Tensor:
    """Regression targets as ``[n, n_outputs]``."""
    try:
        t = torch.tensor(y, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInput(f"{field} must be an array of numbers") from None
    if t.dim() == 1 and art.n_outputs == 1:
        t = t.unsqueeze(1)
    if list(t.shape) != [n, art.n_outputs]:
        raise InvalidInput(
            f"{field} has shape {list(t.shape)}; expected [{n}] or "
            f"[{n}, {art.n_outputs}] to match x"
        )
    if not torch.isfinite(t).all():
        raise InvalidInput(f"{field} contains NaN or Inf")
    return t


def label_order(labels: list[Any], field: str, n_way: int) -> list[Label]:
    """The task's classes: the distinct support labels, sorted (integers before strings)."""
    for v in labels:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise InvalidInput(f"{field} must hold integer or string labels, not {v!r}")
    distinct = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
    if len(distinct) > n_way:
        raise InvalidInput(f"{field} has {len(distinct)} classes; the model takes at most {n_way}")
    return distinct


def to_label_indices(labels: list[Any], order: list[Label], n: int, field: str) -> Tensor:
    if len(labels) != n:
        raise InvalidInput(f"{field} has {len(labels)} labels for {n} rows of x")
    index = {v: i for i, v in enumerate(order)}
    unknown = [v for v in labels if isinstance(v, bool) or v not in index]
    if unknown:
        raise InvalidInput(f"{field} has labels not in the support set: {unknown[:5]}")
    return torch.tensor([index[v] for v in labels], dtype=torch.long)


@dataclass
class Prepared:
    """A validated task, ready for the inner loop."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor | None
    query_y: Tensor | None
    labels: list[Label] | None
    steps: int
    lr: float | None


def prepare(
    art: Artifact,
    body: Any,
    *,
    max_support: int,
    max_query: int,
    max_steps: int,
    max_lr: float,
    **image_limits: int,
) -> Prepared:
    sx = to_inputs(art, body.support.x, "support.x", max_support, **image_limits)
    labels = None
    if art.task_kind == "classification":
        labels = label_order(body.support.y, "support.y", art.n_outputs)
        sy = to_label_indices(body.support.y, labels, sx.shape[0], "support.y")
    else:
        sy = to_targets(art, body.support.y, sx.shape[0], "support.y")
    qx = qy = None
    if body.query is not None:
        qx = to_inputs(art, body.query.x, "query.x", max_query, **image_limits)
        if art.task_kind == "classification":
            qy = to_label_indices(body.query.y, labels, qx.shape[0], "query.y")
        else:
            qy = to_targets(art, body.query.y, qx.shape[0], "query.y")
    steps = art.inner_steps if body.inner_steps is None else body.inner_steps
    if not 0 <= steps <= max_steps:
        raise InvalidInput(f"inner_steps must be between 0 and {max_steps}, got {steps}")
    if body.inner_lr is not None and not (
        0 < body.inner_lr <= max_lr and math.isfinite(body.inner_lr)
    ):
        raise InvalidInput(f"inner_lr must be in (0, {max_lr}], got {body.inner_lr}")
    return Prepared(sx, sy, qx, qy, labels, steps, body.inner_lr)


def outputs(art: Artifact, params: dict[str, Tensor], x: Tensor, n_classes: int | None) -> Tensor:
    """Network outputs; for a task with fewer classes than output units, only its classes."""
    out = art.predict(params, x)
    return out[:, :n_classes] if n_classes is not None else out


def _scores(
    art: Artifact,
    params: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    n_classes: int | None,
    prefix: str,
    when: str,
) -> dict[str, float]:
    out = outputs(art, params, x, n_classes)
    scores = {f"{prefix}_loss_{when}": LOSSES[art.task_kind](out, y).item()}
    if art.task_kind == "classification":
        scores[f"{prefix}_accuracy_{when}"] = (out.argmax(-1) == y).float().mean().item()
    return scores


@dataclass
class Adapted:
    changed: dict[str, Tensor]
    params: dict[str, Tensor]
    metrics: dict[str, float]
    adapt_ms: float


def run_adaptation(art: Artifact, task: Prepared) -> Adapted:
    """The inner loop on the support set (meta_core's ``adapt``), with losses before and after.
    Runs on a worker thread."""
    n_classes = len(task.labels) if task.labels is not None else None
    metrics = _scores(
        art, art.params, task.support_x, task.support_y, n_classes, "support", "before"
    )
    if task.query_x is not None:
        metrics |= _scores(
            art, art.params, task.query_x, task.query_y, n_classes, "query", "before"
        )
    start = time.perf_counter()
    params = art.adapt(task.support_x, task.support_y, steps=task.steps, lr=task.lr)
    adapt_ms = (time.perf_counter() - start) * 1000
    metrics |= _scores(art, params, task.support_x, task.support_y, n_classes, "support", "after")
    if task.query_x is not None:
        metrics |= _scores(art, params, task.query_x, task.query_y, n_classes, "query", "after")
    names = art.adapt_names if art.adapt_names is not None else list(params)
    changed = {k: params[k].contiguous() for k in names}
    return Adapted(changed, params, metrics, adapt_ms)


def serialize(changed: dict[str, Tensor]) -> tuple[bytes, str]:
    data = save(changed)
    return data, hashlib.sha256(data).hexdigest()


class StoredWeightsCorrupt(RuntimeError):
    pass


def deserialize(art: Artifact, data: bytes, sha256: str) -> dict[str, Tensor]:
    """The full parameter set of a stored task: its tensors over the meta-parameters."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoredWeightsCorrupt("stored weights failed their sha256 check")
    tensors = load(data)
    for k, v in tensors.items():
        if k not in art.params or v.shape != art.params[k].shape:
            raise StoredWeightsCorrupt(f"stored tensor {k} does not fit model {art.name}")
    return art.params | tensors


class AdaptationPool:
    """Runs adaptations off the event loop, ``concurrency`` at once, ``queue`` more waiting;
    beyond that it answers 503 with Retry-After instead of queueing without limit."""

    def __init__(self, concurrency: int, queue: int, retry_after: int) -> None:
        self.executor = ThreadPoolExecutor(concurrency, thread_name_prefix="adapt")
        self.capacity = concurrency + queue
        self.retry_after = retry_after
        self.in_flight = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        if self.in_flight >= self.capacity:
            raise Overloaded(
                f"{self.in_flight} adaptations are in progress; retry shortly",
                headers={"Retry-After": str(self.retry_after)},
            )
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.in_flight -= 1

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
