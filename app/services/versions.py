"""Which meta-model a task uses: the exact artifact it was adapted from, or the version an update
moves it to, and whether its support set fits that one."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from app.core.errors import Conflict, InvalidInput
from app.services.registry import MetaModelRegistry
from app.services.weights import features
from app.tables import TaskRow
from meta_core.artifact import Artifact


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


def target_meta_model(task: TaskRow, version: str | None, registry: MetaModelRegistry) -> Artifact:
    """The meta-model an update adapts from: the task's own (pinned; 409 if gone), or the
    version named ("latest": the newest served; 422 if not served)."""
    if version is None:
        return pinned_meta_model(task, registry)
    name = task.meta_model_name
    if name not in registry.meta_models:
        raise Conflict(f"no version of meta-model {name!r} is served: the task cannot move")
    return registry.for_new_task(name, None if version == "latest" else version)


def check_fits(
    meta_model: Artifact,
    task: TaskRow,
    x: Tensor,
    labels: list[Any] | None,
    stored: str | None = None,
) -> None:
    """422 when the task's support set cannot adapt ``meta_model`` (another version of its
    meta-model with another input shape, kind, fewer classes, or rows ``stored`` by another
    encoder or audio preprocessing: :func:`app.services.weights.features`)."""
    where = f"version {meta_model.version} of {meta_model.name!r}"
    wanted = features(meta_model)
    if stored != wanted:
        raise InvalidInput(
            f"{where} takes {wanted or 'rows of numbers'}; the task's support set holds "
            f"{stored or 'rows of numbers'}, which it cannot adapt from: adapt a new task "
            "from its examples (POST /tasks)"
        )
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
