"""Task orchestration: adapt a meta-model to a support set and store it; load an adapted model;
predict with it; delete it. Routes validate, call one of these, return."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from torch import Tensor

from app import crud
from app.core.config import Settings
from app.core.db import Database
from app.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    TooManyRequests,
)
from app.core.metrics import Metrics
from app.schemas import ClassPrediction, Examples, PredictOut, TaskCreate, etag, readable
from app.services import weights
from app.services.cache import GONE, AdaptedModel, ModelCache
from app.services.inputs import (
    ImageLimits,
    SupportSet,
    check_adapt_cost,
    check_cost,
    grow,
    inner_lr,
    inner_steps,
    prepare,
    to_inputs,
)
from app.services.keys import Caller
from app.services.pool import WorkPool
from app.services.registry import MetaModelRegistry
from app.services.state import Services
from app.tables import TaskRow
from meta_core.artifact import Artifact, Origin, TaskRecord, export_task
from meta_core.networks import MLPSpec, Predictor
from meta_core.preprocessing import TablePreprocessing
from meta_core.scoring import adapt_and_score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Adaptation:
    """The result of the inner loop on one support set."""

    params: dict[str, Tensor]
    predict: Predictor  # the meta-model's network with ``params``, ready to serve
    metrics: dict[str, float]
    adapt_ms: float


def adapt(meta_model: Artifact, support: SupportSet) -> Adaptation:
    """meta_core's inner loop on the support set, scored before and after on the support set
    (and the query set, if sent) by meta_core's one scorer, and the module that will serve
    predictions. Runs on a pool thread."""
    n_classes = len(support.labels) if support.labels is not None else None
    loop = meta_model.inner_loop(steps=support.steps, lr=support.lr)
    targets = {"support": (support.x, support.y)}
    if support.query is not None:
        targets["query"] = support.query
    start = time.perf_counter()
    with torch.no_grad():
        params, scores = adapt_and_score(
            loop,
            meta_model.params,
            (support.x, support.y),
            list(targets.values()),
            at=[0, support.steps],
            n_classes=n_classes,
        )
    adapt_ms = (time.perf_counter() - start) * 1000
    metrics: dict[str, float] = {}
    for name, (losses, accuracies) in zip(targets, scores, strict=True):
        for i, when in enumerate(("before", "after")):
            metrics[f"{name}_loss_{when}"] = losses[i].item()
            if n_classes is not None:
                metrics[f"{name}_accuracy_{when}"] = accuracies[i].item()
    params = {k: v.detach() for k, v in params.items()}
    check_finite(metrics, params, support)
    return Adaptation(params, meta_model.predictor(params), metrics, adapt_ms)


def check_finite(metrics: dict[str, float], params: dict[str, Tensor], support: SupportSet) -> None:
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


async def create_task(
    body: TaskCreate,
    *,
    caller: Caller,
    settings: Settings,
    registry: MetaModelRegistry,
    pool: WorkPool,
    cache: ModelCache,
    metrics: Metrics,
    db: Database,
) -> TaskRow:
    """Check the caller's limits (the adaptation's cost, its stored tasks and bytes), validate
    and adapt (on the pool: inputs, images and the inner loop are CPU work), store row and
    weights in one transaction (checking the quotas again, in it), cache."""
    meta_model = registry.for_new_task(body.model, body.model_version)
    client_id, limits = caller.client_id, caller.limits
    check_cost(meta_model, body, limits, settings)

    def over(count: int, size: int, adding: int) -> TooManyRequests:
        if count + 1 > limits.max_tasks:
            return TooManyRequests(
                f"you store {count} tasks, the most one client may (limit: {limits.max_tasks}); "
                "delete some (DELETE /tasks/{id})",
                retry_after=settings.retry_after_seconds,
            )
        return TooManyRequests(
            f"your tasks take {size} bytes, and this one {adding} more; the limit "
            f"is {limits.max_stored_bytes} bytes: delete some tasks (DELETE /tasks/{{id}})",
            retry_after=settings.retry_after_seconds,
        )

    def early_quota() -> None:
        with db.session() as session:
            count, size = crud.stored(session, client_id=client_id)
        if count + 1 > limits.max_tasks or size > limits.max_stored_bytes:
            raise over(count, size, 0)

    await run_in_threadpool(early_quota)  # before spending the CPU

    def work() -> tuple[SupportSet, Adaptation, tuple[bytes, str], tuple[bytes, str]]:
        support = prepare(meta_model, body, settings, limits=limits)
        adapted = adapt(meta_model, support)
        stored = weights.serialize_support(support.x, support.y)
        return support, adapted, changed_weights(meta_model, adapted), stored

    support, adapted, (data, digest), kept = await pool.run(work, client_id, limits.adapt_in_flight)
    ttl = body.ttl_seconds or settings.task_ttl_seconds
    expires_at = None if ttl is None else datetime.now(UTC) + timedelta(seconds=ttl)

    state = record(meta_model, support, adapted, (data, digest), kept)

    def store() -> TaskRow:
        with db.session() as session:
            return crud.create_task(
                session,
                client_id=client_id,
                name=body.name,
                state=state,
                quota=(limits.max_tasks, limits.max_stored_bytes),
                expires_at=expires_at,
            )

    try:
        row = await run_in_threadpool(store)
    except crud.OverQuota as full:
        raise over(full.task_count, full.stored_bytes, len(data) + len(kept[0])) from None
    cache.put(row.id, as_adapted(row, client_id, meta_model, adapted.params, adapted.predict))
    count_adaptation(metrics, meta_model, adapted)
    log.info(
        "task %s: %s adapted in %.1f ms (%d steps), support loss %.4f -> %.4f",
        row.id,
        meta_model.name,
        adapted.adapt_ms,
        support.steps,
        adapted.metrics["support_loss_before"],
        adapted.metrics["support_loss_after"],
    )
    return row


def count_adaptation(metrics: Metrics, meta_model: Artifact, adapted: Adaptation) -> None:
    metrics.adaptations.labels(meta_model.name).inc()
    metrics.adapt_seconds.labels(meta_model.name).observe(adapted.adapt_ms / 1000)


def if_match_holds(if_match: str | None, revision: int) -> bool:
    """Whether an ``If-Match`` header allows changing the task at ``revision``: absent, ``*``,
    or a list naming its ETag (strong comparison: a weak tag never matches)."""
    if if_match is None:
        return True
    tags = [tag.strip() for tag in if_match.split(",")]
    return "*" in tags or etag(revision) in tags


def check_if_match(if_match: str | None, revision: int) -> None:
    if not if_match_holds(if_match, revision):
        raise PreconditionFailed(
            f"If-Match {if_match} does not name the task's current revision, {etag(revision)}: "
            "it changed since you read it; GET it again and retry"
        )


def names_revisions(if_match: str | None) -> bool:
    """Whether ``If-Match`` asks for particular revisions (absent or ``*``: any current one)."""
    return if_match is not None and "*" not in [tag.strip() for tag in if_match.split(",")]


def changed_meanwhile(if_match: str | None) -> PreconditionFailed:
    """The 412 for a conditional write that found the task changed after it was read."""
    return PreconditionFailed(
        f"If-Match {if_match} named the task's revision when this request read it, but the task "
        "changed while it was being processed; GET it again and retry"
    )


UPDATE_ATTEMPTS = 3  # a change without If-Match is redone on the newer revision this often


@dataclass(frozen=True)
class Update:
    """What ``POST /tasks/{id}/examples`` or ``/readapt`` asks of a task."""

    examples: Examples | None = None  # to add to the support set
    model_version: str | None = None  # None: the pinned one; "latest": the newest served
    inner_steps: int | None = None  # None: the task's
    inner_lr: float | None = None  # None: the task's
    if_match: str | None = None


async def update_task(
    task_id: str, change: Update, *, caller: Caller, services: Services
) -> TaskRow:
    """Adapt the task again from the meta-initialization on its stored support set (with
    ``change.examples`` added, onto ``change.model_version`` if named) and replace its model,
    one revision on. The write is conditional on the revision the work started from: with
    If-Match, a change in between is a 412; without, the update is redone on the newer
    revision (so concurrent additions all land), up to UPDATE_ATTEMPTS times, then 409."""
    for _ in range(UPDATE_ATTEMPTS):
        row = await _update_once(task_id, change, caller=caller, services=services)
        if row is not None:
            return row
    raise Conflict(
        f"task {task_id!r} changed {UPDATE_ATTEMPTS} times while this update was adapting; retry"
    )


async def _update_once(
    task_id: str, change: Update, *, caller: Caller, services: Services
) -> TaskRow | None:
    """One attempt of :func:`update_task`: the updated row, or None if the task changed
    while it adapted (without If-Match)."""
    client_id, limits = caller.client_id, caller.limits
    settings, registry, db, cache = (
        services.settings,
        services.registry,
        services.db,
        services.cache,
    )

    def read() -> TaskRow:
        with db.session() as session:
            return crud.get_task(session, client_id=client_id, task_id=task_id, with_support=True)

    task = await run_in_threadpool(read)
    check_if_match(change.if_match, task.revision)
    if task.support is None or task.support_sha256 is None:
        raise Conflict(
            f"task {task_id!r} was made before tasks kept their support sets, so it cannot "
            "be re-adapted: adapt a new task from its examples (POST /tasks) and delete "
            "this one"
        )
    meta_model = target_meta_model(task, change.model_version, registry)
    steps = inner_steps(
        meta_model,
        task.inner_steps if change.inner_steps is None else change.inner_steps,
        settings,
    )
    lr = inner_lr(task.inner_lr if change.inner_lr is None else change.inner_lr, settings)
    added = len(change.examples.x) if change.examples else 0
    check_adapt_cost(meta_model, task.support_size + added, 0, steps, limits)
    support_data, support_sha256 = task.support, task.support_sha256
    labels = readable(task.labels)

    def work() -> tuple[SupportSet, Adaptation, tuple[bytes, str], tuple[bytes, str]]:
        x, y = weights.deserialize_support(support_data, support_sha256)
        fits(meta_model, task, x, labels)
        new_labels = labels
        if change.examples is not None:
            x, y, new_labels = grow(
                meta_model, (x, y), labels, change.examples, settings, limits=limits, steps=steps
            )
        support = SupportSet(x, y, None, new_labels, steps, lr)
        adapted = adapt(meta_model, support)
        kept = weights.serialize_support(x, y)
        return support, adapted, changed_weights(meta_model, adapted), kept

    support, adapted, (data, digest), kept = await services.pool.run(
        work, client_id, limits.adapt_in_flight
    )
    state = record(meta_model, support, adapted, (data, digest), kept)
    revision, size = task.revision, task.weights_bytes + task.support_bytes

    def store() -> TaskRow:
        with db.session() as session:
            crud.update_task(
                session,
                client_id=client_id,
                task_id=task_id,
                revision=revision,
                stored_bytes=size,
                quota=limits.max_stored_bytes,
                state=state,
            )
            return crud.get_task(session, client_id=client_id, task_id=task_id)

    try:
        row = await run_in_threadpool(store)
    except crud.StaleRevision:
        if names_revisions(change.if_match):
            raise changed_meanwhile(change.if_match) from None
        return None  # redone on the newer revision
    except crud.OverQuota as full:
        raise TooManyRequests(
            f"your tasks take {full.stored_bytes} bytes, and this update "
            f"{len(data) + len(kept[0]) - size} more; the limit is "
            f"{limits.max_stored_bytes} bytes: delete some tasks (DELETE /tasks/{{id}})",
            retry_after=settings.retry_after_seconds,
        ) from None
    # No model read or stored before this revision may come back (a slower update of an
    # older revision included); then this one is cached.
    cache.drop(task_id, row.revision)
    cache.put(task_id, as_adapted(row, client_id, meta_model, adapted.params, adapted.predict))
    count_adaptation(services.metrics, meta_model, adapted)
    log.info(
        "task %s: re-adapted (revision %d) from %s %s on %d examples in %.1f ms",
        task_id,
        row.revision,
        meta_model.name,
        meta_model.version,
        row.support_size,
        adapted.adapt_ms,
    )
    return row


def target_meta_model(task: TaskRow, version: str | None, registry: MetaModelRegistry) -> Artifact:
    """The meta-model an update adapts from: the task's own (pinned; 409 if gone), or the
    version named ("latest": the newest served; 422 if not served)."""
    if version is None:
        return pinned_meta_model(task, registry)
    name = task.meta_model_name
    if name not in registry.meta_models:
        raise Conflict(f"no version of meta-model {name!r} is served: the task cannot move")
    return registry.for_new_task(name, None if version == "latest" else version)


def fits(meta_model: Artifact, task: TaskRow, x: Tensor, labels: list[Any] | None) -> None:
    """422 when the task's support set cannot adapt ``meta_model`` (another version of its
    meta-model with another input shape, kind or fewer classes)."""
    where = f"version {meta_model.version} of {meta_model.name!r}"
    if tuple(x.shape[1:]) != meta_model.row_shape:
        raise InvalidInput(
            f"{where} takes rows of shape {list(meta_model.row_shape)}; the task's support set "
            f"has {list(x.shape[1:])}"
        )
    if (labels is not None) != (meta_model.task_kind == "classification"):
        raise InvalidInput(f"{where} is a {meta_model.task_kind} model; the task is not")
    if labels is not None and len(labels) > meta_model.n_outputs:
        raise InvalidInput(
            f"{where} takes at most {meta_model.n_outputs} classes; the task has {len(labels)}"
        )


async def load_adapted(task_id: str, *, caller: Caller, services: Services) -> AdaptedModel:
    """The client's adapted model: from the cache (its revision re-checked in the database
    once it is CACHE_TTL_SECONDS old, as another worker may have changed or deleted the
    task), else from the database, or 404. A load runs on the predictions pool, within the
    client's share of it: a client whose predicts miss the cache pays for its own reads."""
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
        params = weights.deserialize(meta_model, task.weights, task.weights_sha256)
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


def pinned_meta_model(task: TaskRow, registry: MetaModelRegistry) -> Artifact:
    """The exact artifact the task was adapted from (name, version and content hash), or 409
    saying how to move the task: its weights belong to that artifact only (with ANIL, a head
    for that body)."""
    name, version = task.meta_model_name, task.meta_model_version
    meta_model = registry.exact(name, version)
    pinned = task.meta_model_hash
    if meta_model is None or (pinned and pinned != meta_model.manifest.content_hash):
        served = registry.version_names(name)
        what = "no longer serves" if meta_model is None else "serves a different artifact as"
        if not served:
            how = f"no version of {name!r} is served: delete the task"
        elif task.support_bytes:
            how = (
                f"move it with POST /tasks/{task.id}/readapt and "
                f'{{"model_version": "{served[-1]}"}} (or "latest")'
            )
        else:
            how = (
                "it was made before tasks kept their support sets: adapt a new task from its "
                "examples (POST /tasks) and delete this one"
            )
        raise Conflict(
            f"task {task.id!r} was adapted from meta-model {name!r} version {version}, which "
            f"this service {what} ({name!r} versions served: {', '.join(served) or 'none'}); "
            f"{how}"
        )
    return meta_model


def export(
    session: Session, *, client_id: int, task_id: str, registry: MetaModelRegistry
) -> tuple[bytes, TaskRow]:
    """The task's adapted model as a standalone artifact archive
    (:func:`meta_core.artifact.export_task`), and its row."""
    task = crud.get_task(session, client_id=client_id, task_id=task_id, with_weights=True)
    meta_model = pinned_meta_model(task, registry)
    params = weights.deserialize(meta_model, task.weights, task.weights_sha256)
    record = TaskRecord(
        id=task.id,
        revision=task.revision,
        adapted_from=Origin(
            name=meta_model.name,
            version=meta_model.version,
            content_hash=meta_model.manifest.content_hash,
        ),
        labels=readable(task.labels),
        support_size=task.support_size,
        inner_steps=task.inner_steps,
        inner_lr=task.inner_lr,
        metrics=task.metrics,
    )
    return export_task(meta_model, params, record), task


def record(
    meta_model: Artifact,
    support: SupportSet,
    adapted: Adaptation,
    stored: tuple[bytes, str],
    kept: tuple[bytes, str],
) -> crud.AdaptedState:
    """What an adaptation leaves of its task: ``stored`` (its changed weights) and ``kept``
    (its support set) as bytes with their sha256."""
    return crud.AdaptedState(
        meta_model_name=meta_model.name,
        meta_model_version=meta_model.version,
        meta_model_hash=meta_model.manifest.content_hash,
        support_size=int(support.x.shape[0]),
        inner_steps=support.steps,
        inner_lr=support.lr,
        adapt_ms=round(adapted.adapt_ms, 3),
        labels=support.labels,
        metrics=adapted.metrics,
        weights=stored[0],
        weights_sha256=stored[1],
        support=kept[0],
        support_sha256=kept[1],
    )


def changed_weights(meta_model: Artifact, adapted: Adaptation) -> tuple[bytes, str]:
    """The stored form of an adaptation: the tensors it changed (with ANIL, the head)."""
    names = meta_model.adapt_names or list(adapted.params)
    return weights.serialize({k: adapted.params[k] for k in names})


INLINE_BODY_BYTES = 64 * 2**10  # a body this small parses and converts in microseconds


async def predict(
    task_id: str,
    adapted: AdaptedModel,
    x: list[Any],
    *,
    body_bytes: int,
    caller: Caller,
    settings: Settings,
    pool: WorkPool,
) -> PredictOut:
    """:func:`predict_now`, on the event loop when the request is light (numbers in a small
    body, rows x the model's FLOPs per row within PREDICT_INLINE_FLOPS: microseconds, where
    a thread hop would cost more than the work), else on the predictions pool (images, many
    rows, a large model), so that no request holds the event loop."""
    light = (
        body_bytes <= INLINE_BODY_BYTES
        and not (x and isinstance(x[0], str))
        and len(x) * adapted.meta_model.flops_per_example <= settings.predict_inline_flops
    )
    if light:
        return predict_now(task_id, adapted, x, settings)
    work = lambda: predict_now(task_id, adapted, x, settings)  # noqa: E731
    return await pool.run(work, caller.client_id, caller.limits.predict_in_flight)


async def purge_expired(db: Database, every: float) -> None:
    """Delete expired tasks every ``every`` seconds, for as long as the service runs."""
    while True:

        def purge() -> int:
            with db.session() as session:
                return crud.purge_expired(session)

        try:
            if purged := await run_in_threadpool(purge):
                log.info("purged %d expired tasks", purged)
        except Exception:  # a database hiccup must not end the loop
            log.exception("purging expired tasks failed; retrying in %.0f s", every)
        await asyncio.sleep(every)


def predict_now(
    task_id: str, adapted: AdaptedModel, x: list[Any], settings: Settings
) -> PredictOut:
    """The adapted model's prediction for every row of ``x``: values (regression), or the
    predicted label and the probabilities over the task's labels (classification)."""
    meta_model = adapted.meta_model
    inputs = to_inputs(meta_model, x, "x", settings.max_predict_rows, ImageLimits.of(settings))
    out = adapted.predict(inputs)
    # One reduction: a float64 sum of finite float32 values is finite; NaN and inf are not.
    if not math.isfinite(out.sum(dtype=np.float64)):
        bad = np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))
        raise InvalidInput(
            f"the predictions for rows {bad[:5].tolist()} of x are not finite: those inputs "
            "are too large for the model's float32 arithmetic"
        )
    labels = adapted.labels
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


def delete_task(
    session: Session,
    *,
    client_id: int,
    task_id: str,
    cache: ModelCache,
    if_match: str | None = None,
) -> None:
    """Delete the task (412 if ``if_match`` names revisions and not its current one)."""
    if names_revisions(if_match):
        task = crud.get_task(session, client_id=client_id, task_id=task_id)
        check_if_match(if_match, task.revision)
        try:
            crud.delete_task(session, client_id=client_id, task_id=task_id, revision=task.revision)
        except crud.StaleRevision:
            raise changed_meanwhile(if_match) from None
    else:  # no If-Match, or "*": the task must only exist
        crud.delete_task(session, client_id=client_id, task_id=task_id)
    cache.drop(task_id, GONE)
