"""The task service: adapt a meta-model to a client's support set and store it (a new task, or
an existing one with examples added or moved to another version), export it, delete it, and
purge expired tasks. Built once when the service starts; routes validate, call it, return.

Creating a task and updating one are the same pipeline (:meth:`TaskService._adapt_and_store`):
validate and adapt on the adaptation pool within the caller's share, store in one transaction
(within the caller's quotas, counted again in it), cache, count, log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app import crud
from app.core.config import Settings
from app.core.db import Database
from app.core.errors import Conflict, InvalidInput, TooManyRequests
from app.core.metrics import Metrics
from app.schemas import Examples, TaskCreate, Trajectory, readable
from app.services import weights
from app.services.adaptation import Adaptation, Stored, adapt, count_adaptation, record
from app.services.cache import GONE, ModelCache
from app.services.inputs import (
    AdaptationRequest,
    check_adapt_cost,
    check_cost,
    grow,
    inner_lr,
    inner_steps,
    policy_request,
    policy_steps,
    prepare,
)
from app.services.keys import Caller
from app.services.pool import WorkPool
from app.services.preconditions import changed_meanwhile, check_if_match, names_revisions
from app.services.prediction import as_adapted
from app.services.registry import MetaModelRegistry
from app.services.rollouts import check_counts
from app.services.storage import StoredModel, storage_for, stored_params
from app.services.versions import check_fits, pinned_meta_model, target_meta_model
from app.tables import TaskRow
from meta_core.artifact import Artifact, Origin, TaskRecord, export_task

log = logging.getLogger(__name__)

UPDATE_ATTEMPTS = 3  # a change without If-Match is redone on the newer revision this often


@dataclass(frozen=True)
class PolicyStep:
    """What ``POST /tasks/{id}/examples`` asks of a policy task: one more step on rollouts."""

    trajectories: list[Trajectory]
    revision: int  # the task revision whose policy collected them
    inner_steps: int | None = None  # None: one
    inner_lr: float | None = None  # None: the task's
    if_match: str | None = None


def check_rollout_revision(task: TaskRow, revision: int) -> None:
    """409 unless the rollouts were collected by the task's current policy."""
    if revision != task.revision:
        older = "an older revision" if revision < task.revision else "no revision yet"
        raise Conflict(
            f"these rollouts were collected with revision {revision} of task {task.id!r}, "
            f"{older}; it is at revision {task.revision}: roll out its current policy "
            "(predict) and send those with that revision"
        )


def policy_refusal(task_id: str, examples: bool) -> Conflict | InvalidInput:
    """What a policy task answers to labelled examples (422) or a re-adaptation (409)."""
    if examples:
        return InvalidInput(
            f"task {task_id!r} is a policy's: send trajectories and the revision that "
            "collected them, not x and y"
        )
    return Conflict(
        f"task {task_id!r} is a policy's, adapted step by step on rollouts of its own "
        "policies: it cannot be re-adapted from the meta-policy; create a new task "
        "(POST /tasks) and collect its rollouts"
    )


@dataclass(frozen=True)
class Update:
    """What ``POST /tasks/{id}/examples`` or ``/readapt`` asks of a task."""

    examples: Examples | None = None  # to add to the support set
    model_version: str | None = None  # None: the pinned one; "latest": the newest served
    inner_steps: int | None = None  # None: the task's
    inner_lr: float | None = None  # None: the task's
    if_match: str | None = None


Store = Callable[[Session, crud.AdaptedState], TaskRow]  # writes an adaptation's row


@dataclass(frozen=True)
class TaskService:
    settings: Settings
    db: Database
    registry: MetaModelRegistry
    adapt_pool: WorkPool
    cache: ModelCache
    metrics: Metrics

    async def create(self, body: TaskCreate, caller: Caller) -> TaskRow:
        """A new task: the caller's limits checked before any work (the adaptation's cost,
        its stored tasks and bytes), then adapted and stored."""
        meta_model = self.registry.for_new_task(body.model, body.model_version)
        limits = caller.limits
        check_cost(meta_model, body, limits, self.settings)
        await run_in_threadpool(self._check_room, caller)  # before spending the CPU
        ttl = body.ttl_seconds or self.settings.task_ttl_seconds
        expires_at = None if ttl is None else datetime.now(UTC) + timedelta(seconds=ttl)

        def store(session: Session, state: crud.AdaptedState) -> TaskRow:
            try:
                return crud.create_task(
                    session,
                    client_id=caller.client_id,
                    name=body.name,
                    state=state,
                    quota=(limits.max_tasks, limits.max_stored_bytes),
                    expires_at=expires_at,
                )
            except crud.OverQuota as full:
                raise self._over_quota(caller, full, state.stored_bytes) from None

        prepared = lambda: prepare(meta_model, body, self.settings, limits=limits)  # noqa: E731
        return await self._adapt_and_store(caller, meta_model, prepared, store, "adapted")

    def _check_room(self, caller: Caller) -> None:
        with self.db.session() as session:
            count, size = crud.stored(session, client_id=caller.client_id)
        limits = caller.limits
        if count + 1 > limits.max_tasks or size > limits.max_stored_bytes:
            raise self._over_quota(caller, crud.OverQuota(count, size), 0)

    def _over_quota(
        self, caller: Caller, full: crud.OverQuota, adding: int, update: bool = False
    ) -> TooManyRequests:
        """The 429 of a task that does not fit the caller's quotas: one task too many (a new
        one), or ``adding`` bytes too many."""
        limits, wait = caller.limits, self.settings.retry_after_seconds
        what = "this update" if update else "this one"
        if not update and full.task_count + 1 > limits.max_tasks:
            return TooManyRequests(
                f"you store {full.task_count} tasks, the most one client may (limit: "
                f"{limits.max_tasks}); delete some (DELETE /tasks/{{id}})",
                retry_after=wait,
            )
        return TooManyRequests(
            f"your tasks take {full.stored_bytes} bytes, and {what} {adding} more; the limit "
            f"is {limits.max_stored_bytes} bytes: delete some tasks (DELETE /tasks/{{id}})",
            retry_after=wait,
        )

    async def update(self, task_id: str, change: Update, caller: Caller) -> TaskRow:
        """Adapt the task again from the meta-initialization on its stored support set (with
        ``change.examples`` added, onto ``change.model_version`` if named) and replace its
        model, one revision on. The write is conditional on the revision the work started
        from: with If-Match, a change in between is a 412; without, the update is redone on
        the newer revision (so concurrent additions all land), up to UPDATE_ATTEMPTS times,
        then 409."""
        for _ in range(UPDATE_ATTEMPTS):
            row = await self._update_once(task_id, change, caller)
            if row is not None:
                return row
        raise Conflict(
            f"task {task_id!r} changed {UPDATE_ATTEMPTS} times while this update was adapting; "
            "retry"
        )

    async def _update_once(self, task_id: str, change: Update, caller: Caller) -> TaskRow | None:
        """One attempt of :meth:`update`: the updated row, or None if the task changed while
        it adapted (without If-Match)."""
        task = await self._read(task_id, caller, with_support=True)
        check_if_match(change.if_match, task.revision)
        meta_model, prepared = self._readaptation(task, change, caller)
        store = self._replacing(task, caller)
        try:
            return await self._adapt_and_store(caller, meta_model, prepared, store, "re-adapted")
        except crud.StaleRevision:
            if names_revisions(change.if_match):
                raise changed_meanwhile(change.if_match) from None
            return None  # redone on the newer revision

    async def _read(
        self,
        task_id: str,
        caller: Caller,
        *,
        with_support: bool = False,
        with_weights: bool = False,
    ) -> TaskRow:
        """The caller's task as an update starts from it (404 if none), off the event loop."""

        def read() -> TaskRow:
            with self.db.session() as session:
                return crud.get_task(
                    session,
                    client_id=caller.client_id,
                    task_id=task_id,
                    with_support=with_support,
                    with_weights=with_weights,
                )

        return await run_in_threadpool(read)

    def _replacing(self, task: TaskRow, caller: Caller) -> Store:
        """What writes an update of ``task``: its row replaced if still at the revision read
        (else :class:`crud.StaleRevision`), within the caller's storage quota."""
        client_id, task_id = caller.client_id, task.id
        revision, size = task.revision, task.weights_bytes + task.support_bytes

        def store(session: Session, state: crud.AdaptedState) -> TaskRow:
            try:
                crud.update_task(
                    session,
                    client_id=client_id,
                    task_id=task_id,
                    revision=revision,
                    stored_bytes=size,
                    quota=caller.limits.max_stored_bytes,
                    state=state,
                )
            except crud.OverQuota as full:
                adding = state.stored_bytes - size
                raise self._over_quota(caller, full, adding, update=True) from None
            return crud.get_task(session, client_id=client_id, task_id=task_id)

        return store

    def _readaptation(
        self, task: TaskRow, change: Update, caller: Caller
    ) -> tuple[Artifact, Callable[[], AdaptationRequest]]:
        """The meta-model an update adapts from, its cost checked, and the work that makes its
        adaptation request (on the pool): the stored support set, checked to fit it, with
        ``change.examples`` added."""
        settings, limits = self.settings, caller.limits
        meta_model = target_meta_model(task, change.model_version, self.registry)
        if meta_model.task_kind == "policy":
            raise policy_refusal(task.id, change.examples is not None)
        support_data, support_sha256 = task.support, task.support_sha256
        if support_data is None or support_sha256 is None:
            raise Conflict(
                f"task {task.id!r} was made before tasks kept their support sets, so it cannot "
                "be re-adapted: adapt a new task from its examples (POST /tasks) and delete "
                "this one"
            )
        asked = task.inner_steps if change.inner_steps is None else change.inner_steps
        steps = inner_steps(meta_model, asked, settings)
        lr = inner_lr(task.inner_lr if change.inner_lr is None else change.inner_lr, settings)
        added = len(change.examples.x) if change.examples else 0
        check_adapt_cost(meta_model, task.support_size + added, 0, steps, limits)
        labels = readable(task.labels)

        def prepared() -> AdaptationRequest:
            x, y, kind = weights.deserialize_support(support_data, support_sha256)
            check_fits(meta_model, task, x, labels, kind)
            new_labels = labels
            if change.examples is not None:
                x, y, new_labels = grow(
                    meta_model,
                    (x, y),
                    labels,
                    change.examples,
                    settings,
                    limits=limits,
                    steps=steps,
                )
            return AdaptationRequest(x, y, None, new_labels, steps, lr)

        return meta_model, prepared

    async def _adapt_and_store(
        self,
        caller: Caller,
        meta_model: Artifact,
        prepared: Callable[[], AdaptationRequest],
        store: Store,
        what: str,
    ) -> TaskRow:
        """The one pipeline of creating and updating a task: ``prepared`` (validation, images,
        recordings, sentences) and the inner loop on the adaptation pool, within the caller's
        share; what it leaves written by ``store`` in one transaction; the model cached at the
        row's revision (no model read or stored before it may come back: a slower update of
        an older revision included); the adaptation counted and logged."""

        settings = self.settings
        packed = settings.task_compression == "zlib"

        def work() -> tuple[AdaptationRequest, Stored, Adaptation]:
            request = prepared()
            adapted = adapt(meta_model, request)
            kind = weights.features(meta_model)
            kept = None  # a policy's steps were each on other rollouts: it keeps weights
            if meta_model.task_kind != "policy":
                kept = weights.serialize_support(request.x, request.y, kind, packed)
            form = storage_for(meta_model, settings, len(request.x), request.steps)
            return request, record(meta_model, request, adapted, kept, form, packed), adapted

        client_id = caller.client_id
        request, stored, adapted = await self.adapt_pool.run(
            work, client_id, caller.limits.adapt_in_flight
        )

        def write() -> TaskRow:
            with self.db.session() as session:
                return store(session, stored.state)

        row = await run_in_threadpool(write)
        self.cache.drop(row.id, row.revision)
        self.cache.put(
            row.id, as_adapted(row, client_id, meta_model, stored.params, stored.predict)
        )
        count_adaptation(self.metrics, meta_model, adapted)
        log.info(
            "task %s: %s (revision %d) from %s %s on %d examples in %.1f ms (%d steps), "
            "support loss %.4f -> %.4f",
            row.id,
            what,
            row.revision,
            meta_model.name,
            meta_model.version,
            row.support_size,
            adapted.adapt_ms,
            request.steps,
            adapted.metrics["support_loss_before"],
            adapted.metrics["support_loss_after"],
        )
        return row

    async def step(self, task_id: str, step: PolicyStep, caller: Caller) -> TaskRow:
        """One more policy-gradient step of a policy task (the paper's multi-step adaptation):
        from its current policy, on rollouts that policy collected (``step.revision`` must be
        the task's revision, else 409: they are another policy's), stored one revision on.
        Not redone if the task changes meanwhile (its rollouts would be stale): 409, or 412
        with If-Match."""
        task = await self._read(task_id, caller, with_weights=True)
        check_if_match(step.if_match, task.revision)
        meta_model, prepared = self._policy_step(task, step, caller)
        store = self._replacing(task, caller)
        try:
            return await self._adapt_and_store(caller, meta_model, prepared, store, "stepped")
        except crud.StaleRevision:
            if names_revisions(step.if_match):
                raise changed_meanwhile(step.if_match) from None
            raise Conflict(
                f"task {task_id!r} moved past revision {task.revision} while these rollouts were "
                "learned from (another step landed first): roll out its current policy and "
                "send those"
            ) from None

    def _policy_step(
        self, task: TaskRow, step: PolicyStep, caller: Caller
    ) -> tuple[Artifact, Callable[[], AdaptationRequest]]:
        """A policy task's meta-model, the step checked (its rollouts' revision, counts and
        cost), and the work that makes its adaptation request from the task's current policy
        (on the pool)."""
        settings = self.settings
        meta_model = pinned_meta_model(task, self.registry)
        if meta_model.task_kind != "policy":
            raise InvalidInput(
                f"task {task.id!r} is not a policy's: send examples as x and y, not trajectories"
            )
        check_rollout_revision(task, step.revision)
        rows = check_counts(step.trajectories, "trajectories", settings)
        asked = 1 if step.inner_steps is None else step.inner_steps
        steps = policy_steps(meta_model, asked, rows, settings)
        lr = inner_lr(step.inner_lr, settings) or task.inner_lr
        if lr is None and task.inner_steps > 0:  # a step after the first: the model's later_lr
            lr = meta_model.manifest.inner_loop.later_lr
        check_adapt_cost(meta_model, rows, 0, steps, caller.limits)
        stored = StoredModel.of(task, None)
        before = (task.inner_steps, task.support_size)

        def prepared() -> AdaptationRequest:
            current = stored_params(meta_model, stored)
            request = policy_request(meta_model, step.trajectories, steps, lr, current)
            return replace(request, before=before)

        return meta_model, prepared

    def export(self, session: Session, *, client_id: int, task_id: str) -> tuple[bytes, TaskRow]:
        """The task's adapted model as a standalone artifact archive
        (:func:`meta_core.artifact.export_task`), and its row."""
        task = crud.get_task(session, client_id=client_id, task_id=task_id, with_weights=True)
        meta_model = pinned_meta_model(task, self.registry)
        params = stored_params(meta_model, StoredModel.of(task, task.support_to_readapt))
        origin = Origin(
            name=meta_model.name,
            version=meta_model.version,
            content_hash=meta_model.manifest.content_hash,
        )
        summary = TaskRecord(
            id=task.id,
            revision=task.revision,
            adapted_from=origin,
            labels=readable(task.labels),
            support_size=task.support_size,
            inner_steps=task.inner_steps,
            inner_lr=task.inner_lr,
            metrics=task.metrics,
            storage=task.storage,
        )
        return export_task(meta_model, params, summary), task

    def delete(
        self, session: Session, *, client_id: int, task_id: str, if_match: str | None = None
    ) -> None:
        """Delete the task (412 if ``if_match`` names revisions and not its current one)."""
        if names_revisions(if_match):
            task = crud.get_task(session, client_id=client_id, task_id=task_id)
            check_if_match(if_match, task.revision)
            try:
                crud.delete_task(
                    session, client_id=client_id, task_id=task_id, revision=task.revision
                )
            except crud.StaleRevision:
                raise changed_meanwhile(if_match) from None
        else:  # no If-Match, or "*": the task must only exist
            crud.delete_task(session, client_id=client_id, task_id=task_id)
        self.cache.drop(task_id, GONE)

    async def purge_expired(self, every: float) -> None:
        """Delete expired tasks every ``every`` seconds, for as long as the service runs."""
        while True:

            def purge() -> int:
                with self.db.session() as session:
                    return crud.purge_expired(session)

            try:
                if purged := await run_in_threadpool(purge):
                    log.info("purged %d expired tasks", purged)
            except Exception:  # a database hiccup must not end the loop
                log.exception("purging expired tasks failed; retrying in %.0f s", every)
            await asyncio.sleep(every)
