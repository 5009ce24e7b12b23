"""Serving a task's adapted model: from the cache (by revision) or the database, and its
predictions, on the event loop when they are light, else on the predictions pool."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.concurrency import run_in_threadpool
from torch import Tensor

from app import crud
from app.core.config import Settings
from app.core.errors import InvalidInput, NotFound
from app.schemas import Action, ClassPrediction, PredictOut, readable
from app.services.batching import EncodeBatchers
from app.services.cache import GONE, AdaptedModel
from app.services.inputs import InputLimits, to_inputs
from app.services.keys import Caller
from app.services.pool import WorkPool
from app.services.storage import StoredModel, stored_params
from app.services.texts import TextLimits, text_tokens
from app.services.versions import pinned_meta_model
from app.tables import TaskRow
from meta_core.artifact import Artifact
from meta_core.encoders import TextEncoder
from meta_core.networks import MLPSpec, Predictor
from meta_core.preprocessing import TablePreprocessing

if TYPE_CHECKING:
    from app.services.state import Services


async def load_adapted(task_id: str, *, caller: Caller, services: Services) -> AdaptedModel:
    """The client's adapted model: from the cache (its revision re-checked in the database
    once it is CACHE_TTL_SECONDS old, as another worker may have changed or deleted the
    task), else from the database (re-adapted, if it is stored as its support set), or 404.
    A load runs on the predictions pool, within the client's share of it: a client whose
    predicts miss the cache pays for its own reads and re-adaptations."""
    client_id, cache, db = caller.client_id, services.cache, services.db
    adapted, fresh = cache.get(task_id)
    if adapted is not None and adapted.expired():
        cache.drop(task_id)
        adapted = None
    if adapted is not None and adapted.client_id == client_id:
        if fresh:
            services.metrics.cache_hits.inc()
            return adapted

        def revision_now() -> int | None:
            with db.session() as session:
                return crud.task_revision(session, client_id=client_id, task_id=task_id)

        revision = await run_in_threadpool(revision_now)
        if revision is None:
            cache.drop(task_id, GONE)
            raise NotFound(f"no task {task_id!r}")
        if revision == adapted.revision:
            services.metrics.cache_hits.inc()
            cache.touch(task_id, revision)
            return adapted
        cache.drop(task_id, revision)  # changed by another process: read the new revision
    services.metrics.cache_misses.inc()
    read_at = time.monotonic()
    registry = services.registry

    def load() -> AdaptedModel:
        with db.session() as session:
            task = crud.get_task(session, client_id=client_id, task_id=task_id, with_weights=True)
        meta_model = pinned_meta_model(task, registry)
        params = stored_params(meta_model, StoredModel.of(task, task.support_to_readapt))
        return as_adapted(task, client_id, meta_model, params, meta_model.predictor(params))

    adapted = await services.predict_pool.run(load, client_id, caller.limits.predict_in_flight)
    cache.put(task_id, adapted, read_at)
    return adapted


def as_adapted(
    task: TaskRow,
    client_id: int,
    meta_model: Artifact,
    params: dict[str, Tensor],
    predict: Predictor,
) -> AdaptedModel:
    """What the cache keeps of the client's task at its current revision."""
    return AdaptedModel(
        client_id=client_id,
        meta_model=meta_model,
        predict=predict,
        expires_at=task.expires_at,
        labels=readable(task.labels),
        revision=task.revision,
        nbytes=held_bytes(meta_model, params),
    )


def held_bytes(meta_model: Artifact, params: dict[str, Tensor]) -> int:
    """The memory an adapted model holds beyond its meta-model's: the tensors adaptation made
    (with ANIL, the head; the body is the meta-model's own), or every weight for an MLP,
    whose predictor copies them all (:func:`meta_core.networks.predictor`)."""
    copies_all = isinstance(meta_model.manifest.architecture, MLPSpec)
    base = meta_model.params
    return sum(
        v.numel() * v.element_size()
        for k, v in params.items()
        if copies_all or k not in base or v.data_ptr() != base[k].data_ptr()
    )


INLINE_BODY_BYTES = 64 * 2**10  # a body this small parses and converts in microseconds
# A text predict's body this small is tokenized on the event loop to join a batch: at most
# about 16 short sentences, 0.5 ms (0.33 us a byte, measured). A larger request is a batch of
# its own already, and goes to the pool whole, as before.
BATCHED_BODY_BYTES = 2 * 2**10


async def predict(
    task_id: str,
    adapted: AdaptedModel,
    x: list[Any],
    *,
    body_bytes: int,
    caller: Caller,
    settings: Settings,
    pool: WorkPool,
    batchers: EncodeBatchers | None = None,
    sampling: Sampling | None = None,
) -> PredictOut:
    """:func:`predict_now`, on the event loop when the request is light (numbers in a small
    body, rows x the model's FLOPs per row within PREDICT_INLINE_FLOPS: microseconds, where
    a thread hop would cost more than the work), else on the predictions pool (images,
    recordings, sentences, many rows, a large model), so that no request holds the event
    loop. With ``batchers``
    (PREDICT_BATCHING), a small text predict's sentences are encoded on the pool together with
    other requests' for the same encoder (:mod:`app.services.batching`). ``sampling`` is a
    policy's (:class:`Sampling`)."""
    if sampling is not None and adapted.meta_model.task_kind != "policy":
        raise InvalidInput(
            f"sample and seed are a policy's; model {adapted.meta_model.name!r} is not one"
        )
    light = (
        body_bytes <= INLINE_BODY_BYTES
        and not (x and isinstance(x[0], str))
        and len(x) * adapted.meta_model.flops_per_example <= settings.predict_inline_flops
    )
    if light:
        return predict_now(task_id, adapted, x, settings, sampling)
    share = caller.limits.predict_in_flight
    encoder = batched_encoder(adapted.meta_model, x, body_bytes, settings)
    if batchers is not None and encoder is not None:
        tokens = text_tokens(x, "x", encoder, TextLimits.of(settings))  # its own 422s, first
        finish = partial(respond, task_id, adapted)  # on the pool thread, with its rows
        return await batchers.of(encoder).run(tokens, finish, pool, caller.client_id, share)
    work = lambda: predict_now(task_id, adapted, x, settings, sampling)  # noqa: E731
    return await pool.run(work, caller.client_id, share)


def batched_encoder(
    meta_model: Artifact, x: list[Any], body_bytes: int, settings: Settings
) -> TextEncoder | None:
    """The encoder a predict of ``x`` is batched through: a text meta-model's, for sentences
    in a body of at most BATCHED_BODY_BYTES. None for any other predict, and for those that
    :func:`to_inputs` refuses past the tokens (too many rows, an encoder of other rows than the
    model takes), which go the ordinary way and get its 422."""
    encoder = meta_model.encoder
    if (
        encoder is None
        or body_bytes > BATCHED_BODY_BYTES
        or not (x and isinstance(x[0], str))
        or len(x) > settings.max_predict_rows
        or meta_model.row_shape != (encoder.spec.dim,)
    ):
        return None
    return encoder


def predict_now(
    task_id: str,
    adapted: AdaptedModel,
    x: list[Any],
    settings: Settings,
    sampling: Sampling | None = None,
) -> PredictOut:
    """The adapted model's prediction for every row of ``x``."""
    limits = InputLimits.of(settings)
    inputs = to_inputs(adapted.meta_model, x, "x", settings.max_predict_rows, limits)
    return respond(task_id, adapted, inputs, sampling)


@dataclass(frozen=True)
class Sampling:
    """How a policy answers: its mean action, or (``sample``) a draw from its Gaussian, with
    ``seed`` reproducibly (row ``i``'s draw depends on the seed and ``i`` alone, never on the
    other rows)."""

    sample: bool = False
    seed: int | None = None


def actions(out: np.ndarray, sampling: Sampling | None) -> list[Action]:
    """A policy's actions (its mean, or samples) and their log-probabilities, from its
    network's outputs (the mean and log std side by side)."""
    mean, log_std = np.split(out.astype(np.float64), 2, axis=-1)
    action = mean
    if sampling is not None and sampling.sample:
        noise = np.random.default_rng(sampling.seed).standard_normal(mean.shape)
        action = mean + np.exp(log_std) * noise
    action = action.astype(np.float32).astype(np.float64)  # the action as sent, rounded
    z = (action - mean) * np.exp(-log_std)
    log_prob = (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return [
        Action.model_construct(action=a, log_prob=lp)
        for a, lp in zip(action.tolist(), log_prob.tolist(), strict=True)
    ]


def respond(
    task_id: str, adapted: AdaptedModel, inputs: np.ndarray, sampling: Sampling | None = None
) -> PredictOut:
    """The adapted model's prediction for every row of ``inputs`` (the model's input rows:
    :func:`to_inputs`'s, or a batch's embeddings): values (regression), or the predicted label
    and the probabilities over the task's labels (classification)."""
    meta_model = adapted.meta_model
    out = adapted.predict(inputs)
    # One reduction: a float64 sum of finite float32 values is finite; NaN and inf are not.
    if not math.isfinite(out.sum(dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
        raise InvalidInput(
            f"the predictions for rows {bad[:5].tolist()} of x are not finite: those inputs "
            "are too large for the model's float32 arithmetic"
        )
    labels = adapted.labels
    if meta_model.task_kind == "policy":
        chosen = actions(out, sampling)
        return PredictOut.model_construct(task_id=task_id, labels=None, predictions=chosen)
    if labels is None:
        spec = meta_model.manifest.preprocessing
        if isinstance(spec, TablePreprocessing):  # back to the target's units
            out = spec.outputs(out)
        values = out.reshape(-1).tolist() if meta_model.n_outputs == 1 else out.tolist()
        # Floats from a float32 array: nothing to validate (the schema still serializes it).
        return PredictOut.model_construct(task_id=task_id, labels=None, predictions=values)
    logits = out[:, : len(labels)]  # the units of the task's classes
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = exp / exp.sum(axis=1, keepdims=True)
    rows = [
        ClassPrediction(label=labels[i], probabilities=p)
        for i, p in zip(probs.argmax(axis=1).tolist(), probs.tolist(), strict=True)
    ]
    return PredictOut(task_id=task_id, labels=labels, predictions=rows)
