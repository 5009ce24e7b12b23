"""How a task's adapted model is kept in its row, and how it comes back.

Each meta-model's tasks are stored in one format (TASK_STORAGE, TASK_STORAGE_BY_MODEL), and
each row records its own (``tasks.storage``), so rows of every format, older ones included,
read side by side. ``support`` keeps no weights at all: the inner loop is re-run on the
support set the task keeps anyway. It is deterministic on a given machine and thread count
(the same float32 kernels on the same inputs), so the re-adapted model equals the one
adapted at creation bit for bit (tested); across machines with other vector units it agrees
to float32 rounding."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace

import torch
from sqlalchemy.orm import Session
from torch import Tensor

from app import crud
from app.core.config import Settings
from app.core.db import Database
from app.core.errors import AppError, StoredWeightsCorrupt
from app.services import weights
from app.services.adaptation import readapt
from app.services.registry import MetaModelRegistry
from app.tables import TaskRow
from meta_core.artifact import Artifact

log = logging.getLogger(__name__)


def storage_for(meta_model: Artifact, settings: Settings, rows: int, steps: int) -> weights.Format:
    """The format of a task of ``meta_model`` adapted on ``rows`` support rows in ``steps``
    steps: the meta-model's setting. Under ``auto``: ``float32`` where the tensors adaptation
    changes are small (under READAPT_MIN_BYTES: a miss then decodes them, cheaper than any
    inner loop), else ``support`` where re-adapting costs at most READAPT_MAX_FLOPS (the
    inner loop's forward and backward passes, 3 x FLOPs per row x rows x steps), else
    ``float32``. A policy keeps its weights (``float32``, or a half precision asked for)."""
    mode = settings.task_storage_by_model.get(meta_model.name, settings.task_storage)
    if meta_model.task_kind == "policy" and mode in ("auto", "support"):
        return "float32"  # a policy's steps were each on other rollouts: none re-adapts it
    if mode != "auto":
        return mode
    if meta_model.changed_bytes < settings.readapt_min_bytes:
        return "float32"
    cost = 3 * meta_model.flops_per_example * rows * steps
    return "support" if cost <= settings.readapt_max_flops else "float32"


@dataclass(frozen=True)
class StoredModel:
    """What of a task's row gives its adapted model back."""

    storage: str
    weights: bytes
    weights_sha256: str
    support: bytes | None  # needed only where storage is "support"
    support_sha256: str | None
    support_size: int
    inner_steps: int
    inner_lr: float | None

    @classmethod
    def of(cls, task: TaskRow, support: bytes | None) -> StoredModel:
        """The task's, with its ``support`` set as read (``task.support_to_readapt`` where
        ``crud.get_task(with_weights=True)`` read it: for ``support`` rows alone)."""
        return cls(
            task.storage,
            task.weights,
            task.weights_sha256,
            support,
            task.support_sha256,
            task.support_size,
            task.inner_steps,
            task.inner_lr,
        )


def stored_params(meta_model: Artifact, stored: StoredModel) -> dict[str, Tensor]:
    """The task's full parameter set over its (pinned) meta-model: its stored weights
    decoded, or, stored as ``support``, its support set adapted again exactly as at its
    last adaptation (same steps, same rate)."""
    form = stored.storage
    if form not in weights.FORMATS:
        raise StoredWeightsCorrupt(f"the task's storage {form!r} is unknown to this version")
    if form != "support":
        return weights.deserialize(meta_model, stored.weights, stored.weights_sha256, form)
    if stored.support is None or stored.support_sha256 is None:
        raise StoredWeightsCorrupt("the task is stored as its support set, which is missing")
    x, y, _ = weights.deserialize_support(stored.support, stored.support_sha256)
    if tuple(x.shape[1:]) != meta_model.row_shape or len(x) != stored.support_size:
        raise StoredWeightsCorrupt(f"the stored support set does not fit {meta_model.name}")
    return readapt(meta_model, x, y, steps=stored.inner_steps, lr=stored.inner_lr)


@dataclass
class Restored:
    """What :func:`store_again` did, by meta-model: tasks rewritten, already stored so, kept
    as they were (their support set does not re-adapt to their weights bit for bit: made by
    another torch or machine; or unreadable), or not served; and the bytes before and
    after."""

    rewritten: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    kept: Counter[str] = field(default_factory=Counter)  # or unreadable: logged
    not_served: Counter[str] = field(default_factory=Counter)
    bytes_before: int = 0
    bytes_after: int = 0


def store_again(
    db: Database,
    registry: MetaModelRegistry,
    settings: Settings,
    *,
    storage: weights.Format | None = None,
    model: str | None = None,
    batch: int = 100,
) -> Restored:
    """Rewrite every task (of ``model``, if named) in ``storage``, or the format the
    settings choose for it, compressed as TASK_COMPRESSION says: a database made before
    there was a choice, compacted, or one made ready for a downgrade. A task goes to
    ``support`` only if its support set re-adapts to its stored weights bit for bit, and
    its revision moves on only if the model it serves changes (to or from half
    precision): caches elsewhere then drop it."""
    done = Restored()
    after = ""
    while True:
        with db.session() as session:
            ids = crud.task_ids(session, after=after, limit=batch, model=model)
        if not ids:
            return done
        for task_id in ids:
            with db.session() as session:
                _store_one(session, task_id, registry, settings, storage, done)
        after = ids[-1]


def _store_one(
    session: Session,
    task_id: str,
    registry: MetaModelRegistry,
    settings: Settings,
    storage: weights.Format | None,
    done: Restored,
) -> None:
    """One task of :func:`store_again`, in its own transaction."""
    task = crud.task_for_storage(session, task_id=task_id)
    if task is None:  # deleted meanwhile
        return
    name, size = task.meta_model_name, task.weights_bytes + task.support_bytes
    done.bytes_before += size
    meta_model = registry.exact(name, task.meta_model_version)
    if meta_model is None or task.meta_model_hash not in ("", meta_model.manifest.content_hash):
        done.not_served[name] += 1
        done.bytes_after += size
        return
    form = storage or storage_for(meta_model, settings, task.support_size, task.inner_steps)
    was = StoredModel.of(task, task.support)
    outcome, now = "kept", was
    try:
        if form != "support" or was.support is not None:
            outcome, now = _store_as(meta_model, was, form, settings.task_compression == "zlib")
    except AppError as exc:  # a corrupt row, say: left as it is, and named
        log.error("task %s: not stored again: %s", task_id, exc.detail)
    if outcome in ("same model", "changed model") and not crud.store_again(
        session,
        task=task,
        storage=now.storage,
        weights=(now.weights, now.weights_sha256),
        support=(now.support, now.support_sha256),
        changed_model=outcome == "changed model",
    ):
        outcome, now = "unchanged", was  # a request changed it meanwhile, and stored it
    getattr(done, "rewritten" if outcome.endswith("model") else outcome)[name] += 1
    done.bytes_after += len(now.weights) + len(now.support or b"") if now is not was else size


def _store_as(
    meta_model: Artifact, was: StoredModel, form: weights.Format, packed: bool
) -> tuple[str, StoredModel]:
    """``was`` in ``form``, and what storing it so does: "unchanged" (it is stored so),
    "kept" (as ``support`` it would serve another model than its stored weights), "same
    model" or "changed model" (the rounding of half precision)."""
    old = stored_params(meta_model, was)
    changed = {k: old[k] for k in meta_model.adapt_names or old}
    data, sha256 = weights.serialize(meta_model, changed, form, packed)
    support, support_sha256 = was.support, was.support_sha256
    if support is not None:
        raw = weights.inflate(support, "support set")
        support = weights.compress(raw) if packed else raw
        support_sha256 = hashlib.sha256(support).hexdigest()
    now = replace(
        was,
        storage=form,
        weights=data,
        weights_sha256=sha256,
        support=support,
        support_sha256=support_sha256,
    )
    if now == was:
        return "unchanged", was
    new = stored_params(meta_model, now)
    if all(torch.equal(new[k], old[k]) for k in old):
        return "same model", now
    return ("kept", was) if form == "support" else ("changed model", now)
