"""One adaptation: meta_core's inner loop on a validated support set, scored before and after,
refused if it diverged, and what of it a task stores."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from app import crud
from app.core.errors import InvalidInput
from app.core.metrics import Metrics
from app.services import weights
from app.services.inputs import AdaptationRequest
from meta_core.artifact import Artifact
from meta_core.networks import Predictor
from meta_core.scoring import adapt_and_score


@dataclass(frozen=True)
class Adaptation:
    """The result of the inner loop on one support set."""

    params: dict[str, Tensor]
    predict: Predictor  # the meta-model's network with ``params``, ready to serve
    metrics: dict[str, float]
    adapt_ms: float


def adapt(meta_model: Artifact, support: AdaptationRequest) -> Adaptation:
    """meta_core's inner loop on the support set, scored before and after on the support set
    (and the query set, if sent) by meta_core's one scorer, and the module that will serve
    predictions. Runs on a pool thread."""
    n_classes = len(support.labels) if support.labels is not None else None
    loop = meta_model.inner_loop(steps=support.steps, lr=support.lr)
    start_params = meta_model.params if support.start is None else support.start
    targets = {"support": (support.x, support.y)}
    if support.query is not None:
        targets["query"] = support.query
    start = time.perf_counter()
    with torch.no_grad():
        params, scores = adapt_and_score(
            loop,
            start_params,
            (support.x, support.y),
            list(targets.values()),
            at=[0, support.steps],
            n_classes=n_classes,
        )
    adapt_ms = (time.perf_counter() - start) * 1000
    metrics: dict[str, float] = dict(support.metrics)
    for name, (losses, accuracies) in zip(targets, scores, strict=True):
        for i, when in enumerate(("before", "after")):
            metrics[f"{name}_loss_{when}"] = losses[i].item()
            if n_classes is not None:
                metrics[f"{name}_accuracy_{when}"] = accuracies[i].item()
    params = {k: v.detach() for k, v in params.items()}
    check_finite(metrics, params, support)
    return Adaptation(params, meta_model.predictor(params), metrics, adapt_ms)


def check_finite(
    metrics: dict[str, float], params: dict[str, Tensor], support: AdaptationRequest
) -> None:
    """422 (and nothing stored) when a loss or an adapted weight is not finite: the values are
    beyond float32 from the start, or the inner loop diverged."""
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    for name in ("support_loss_before", "query_loss_before"):
        if name in bad:
            raise InvalidInput(
                f"{name} is {bad[name]}: the {name.split('_')[0]} set's values are too large "
                "for the model's float32 arithmetic; scale x and y down"
            )
    if bad or not all(bool(torch.isfinite(v).all()) for v in params.values()):
        lr = "the model's inner_lr" if support.lr is None else f"inner_lr {support.lr}"
        after = metrics["support_loss_after"]
        raise InvalidInput(
            f"the adaptation diverged: the support loss went from "
            f"{metrics['support_loss_before']:.4g} to {after} in {support.steps} steps at {lr}; "
            "lower inner_lr or inner_steps"
        )


def readapt(
    meta_model: Artifact, x: Tensor, y: Tensor, *, steps: int, lr: float | None
) -> dict[str, Tensor]:
    """The parameters :func:`adapt` made from this support set (the same inner loop on the
    same tensors, unscored): a task stored as its support set, read again."""
    with torch.no_grad():
        params = meta_model.inner_loop(steps=steps, lr=lr).adapt(meta_model.params, x, y)
    return {k: v.detach() for k, v in params.items()}


@dataclass(frozen=True)
class Stored:
    """An adaptation as its task stores it: the row's state, and the parameters a read of
    the row gives back (the adapted ones, or, stored at half precision, their rounding:
    every process then serves the same model)."""

    state: crud.AdaptedState
    params: dict[str, Tensor]
    predict: Predictor


def record(
    meta_model: Artifact,
    request: AdaptationRequest,
    adapted: Adaptation,
    kept: tuple[bytes, str] | None,
    form: weights.Format,
    packed: bool,
) -> Stored:
    """What an adaptation leaves of its task: the tensors it changed (with ANIL, the head)
    in ``form`` (compressed if ``packed``), and ``kept``, its support set, as bytes with
    their sha256 (None: a policy's, which keeps its weights alone)."""
    names = meta_model.adapt_names or list(adapted.params)
    changed = {k: adapted.params[k] for k in names}
    data, sha256 = weights.serialize(meta_model, changed, form, packed)
    state = crud.AdaptedState(
        meta_model_name=meta_model.name,
        meta_model_version=meta_model.version,
        meta_model_hash=meta_model.manifest.content_hash,
        support_size=request.before[1] + int(request.x.shape[0]),
        inner_steps=request.before[0] + request.steps,
        inner_lr=request.lr,
        adapt_ms=round(adapted.adapt_ms, 3),
        labels=request.labels,
        metrics=adapted.metrics,
        storage=form,
        weights=data,
        weights_sha256=sha256,
        support=None if kept is None else kept[0],
        support_sha256=None if kept is None else kept[1],
    )
    if form in weights.HALF:
        params = weights.deserialize(meta_model, data, sha256, form)
        return Stored(state, params, meta_model.predictor(params))
    return Stored(state, adapted.params, adapted.predict)


def count_adaptation(metrics: Metrics, meta_model: Artifact, adapted: Adaptation) -> None:
    metrics.adaptations.labels(meta_model.name).inc()
    metrics.adapt_seconds.labels(meta_model.name).observe(adapted.adapt_ms / 1000)
