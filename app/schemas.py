"""Request and response bodies (pydantic v2)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.tables import TaskRow
from meta_core.artifact import Artifact, InnerLoopSpec
from meta_core.preprocessing import Preprocessing

# The shapes rows and targets may take, for the OpenAPI schema. The service validates them
# itself, against the meta-model they are for (a 422 that names the field and says what fits).
NUMBERS = {"type": "array", "items": {"type": "number"}}
ROWS = WithJsonSchema(
    {
        "type": "array",
        "items": {
            "anyOf": [
                {"type": "number", "description": "a one-number row (a one-input model)"},
                {
                    "type": "array",
                    "description": "a row of numbers, or an image model's [channels, height, "
                    "width] (an audio model's [1, mel bands, frames]) as nested arrays of "
                    "numbers",
                    "items": {"anyOf": [{"type": "number"}, {"type": "array", "items": {}}]},
                },
                {
                    "type": "string",
                    "description": "an image model's base64 PNG or JPEG, an audio model's base64 "
                    "WAV or FLAC recording (either plain or as a data URL), or a text model's "
                    "sentence",
                },
                {
                    "type": "object",
                    "description": "a table model's row, keyed by column name",
                    "additionalProperties": {"type": "number"},
                },
            ]
        },
    }
)
TARGETS = WithJsonSchema(
    {
        "type": "array",
        "items": {
            "anyOf": [
                {"type": "number", "description": "a regression target"},
                {**NUMBERS, "description": "a regression target of several outputs"},
                {"type": "string", "description": "a class label"},
            ]
        },
        "description": "regression: a number (or numbers) per row; classification: a label "
        "per row, an integer or a string",
    }
)
Rows = Annotated[list[Any], ROWS]
Targets = Annotated[list[Any], TARGETS]


class Examples(BaseModel):
    x: Rows = Field(description="rows of inputs, each of the model's input shape")
    y: Targets = Field(description="targets (regression) or labels, integers or strings")


STEPS = WithJsonSchema(
    {
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
    }
)
NUMBER_LIST = WithJsonSchema(NUMBERS)


class Trajectory(BaseModel):
    """One rollout of a policy in the client's environment, step by step."""

    model_config = ConfigDict(extra="forbid")

    observations: Annotated[list[Any], STEPS] = Field(
        description="the observation at each step, each of the model's input shape"
    )
    actions: Annotated[list[Any], STEPS] = Field(
        description="the action taken at each step, as the policy sampled it (before the "
        "environment clipped it)"
    )
    rewards: Annotated[list[Any], NUMBER_LIST] = Field(description="the reward of each step")
    dones: list[bool] | None = Field(
        None,
        description="whether each step ended the episode (only the last may; default: none "
        "did, the trajectory stopped at its length)",
    )


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(max_length=200)
    model_version: str | None = Field(
        None, max_length=50, description="default: the model's newest version served"
    )
    support: Examples | None = Field(
        None, description="the labelled examples to adapt on (every model but a policy)"
    )
    trajectories: list[Trajectory] | None = Field(
        None,
        description="a policy model's support set: rollouts of the meta-policy in the task's "
        "environment, for one policy-gradient step; none: the task starts as the meta-policy, "
        "to collect its first rollouts with",
    )
    query: Examples | None = Field(None, description="labelled examples to measure adaptation")
    inner_steps: int | None = Field(None, description="default: the model's")
    inner_lr: float | None = Field(None, description="default: the model's (or learned) lr")
    name: str | None = Field(None, max_length=200)
    ttl_seconds: int | None = Field(
        None,
        ge=1,
        le=10 * 365 * 86400,
        description="the task expires this long after it is made (default: TASK_TTL_SECONDS, "
        "else never); an expired task answers 404 and is purged",
    )


def utc(at: datetime) -> datetime:
    """A stored time in UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def readable(labels: list[int | str] | None) -> list[int | str] | None:
    """Stored labels as JSON can carry them: a string with a lone surrogate (stored before the
    service refused them) has it replaced by U+FFFD, so no stored row can break a response."""
    if labels is None:
        return None
    return [_unicode(v) if isinstance(v, str) else v for v in labels]


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # pairs rejoin, lone surrogates become U+FFFD
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class TaskOut(BaseModel):
    """A stored task as the API shows it (``model`` is the meta-model's name)."""

    id: str
    model: str
    model_version: str
    name: str | None
    created_at: datetime
    support_size: int
    labels: list[int | str] | None = Field(description="the task's classes, in output order")
    inner_steps: int
    inner_lr: float | None
    adapt_ms: float
    metrics: dict[str, float]
    expires_at: datetime | None = Field(description="when the task expires (null: never)")
    revision: int = Field(
        description="one more at each update (examples, re-adaptation); the ETag header"
    )
    updated_at: datetime | None = Field(description="the last update (null: none since made)")
    readaptable: bool = Field(
        description="whether the task keeps its support set (tasks made before it was kept "
        "cannot take examples or be re-adapted; a policy task keeps its weights alone, and "
        "takes rollouts instead)"
    )
    storage: str = Field(
        description="how its adapted model is stored: float32, float16 or bfloat16 weights, "
        "or support (its support set alone, adapted again when the model is read)"
    )
    stored_bytes: int = Field(
        description="what the task counts against your storage quota: its stored weights "
        "and support set, in bytes"
    )

    @classmethod
    def of(cls, row: TaskRow) -> TaskOut:
        return cls(
            id=row.id,
            model=row.meta_model_name,
            model_version=row.meta_model_version,
            name=row.name,
            created_at=utc(row.created_at),
            support_size=row.support_size,
            labels=readable(row.labels),
            inner_steps=row.inner_steps,
            inner_lr=row.inner_lr,
            adapt_ms=row.adapt_ms,
            metrics=row.metrics,
            expires_at=row.expires_at and utc(row.expires_at),
            revision=row.revision,
            updated_at=row.updated_at and utc(row.updated_at),
            readaptable=row.support_bytes > 0,
            storage=row.storage,
            stored_bytes=row.weights_bytes + row.support_bytes,
        )

    @property
    def etag(self) -> str:
        return etag(self.revision)


def etag(revision: int) -> str:
    """A task revision's entity tag (strong: each revision is one exact adapted model)."""
    return f'"{revision}"'


class ExamplesIn(BaseModel):
    """Labelled examples to add to a task's support set (``POST /tasks/{id}/examples``), or a
    policy task's rollouts of its current revision, for one more policy-gradient step."""

    model_config = ConfigDict(extra="forbid")

    x: Rows | None = Field(None, description="rows of inputs, each of the model's input shape")
    y: Targets | None = Field(None, description="targets (regression) or labels")
    trajectories: list[Trajectory] | None = Field(
        None, description="a policy task's rollouts, collected with its current revision"
    )
    revision: int | None = Field(
        None,
        description="the task revision whose policy collected the trajectories (its ETag); "
        "rollouts of an older one are refused (409)",
    )

    inner_steps: int | None = Field(None, description="default: the task's")
    inner_lr: float | None = Field(None, description="default: the task's")


class ReadaptIn(BaseModel):
    """``POST /tasks/{id}/readapt``: adapt again from the stored support set."""

    model_config = ConfigDict(extra="forbid")

    model_version: str | None = Field(
        None,
        max_length=50,
        description="move the task to this version of its meta-model (default: the version it "
        'is pinned to; "latest": the newest served)',
    )
    inner_steps: int | None = Field(None, description="default: the task's")
    inner_lr: float | None = Field(None, description="default: the task's")


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: Rows = Field(description="rows of inputs, each of the model's input shape")
    sample: bool = Field(
        False, description="a policy: sample each action (default: the mean action)"
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,
        description="a policy's sampling seed: the same seed and rows give the same actions",
    )


class ClassPrediction(BaseModel):
    label: int | str
    probabilities: list[float] = Field(description="one per entry of `labels`")


class Action(BaseModel):
    action: list[float] = Field(description="the action: the policy's mean, or a sample")
    log_prob: float = Field(description="its log-probability under the policy")


class PredictOut(BaseModel):
    task_id: str
    labels: list[int | str] | None = None
    predictions: list[float] | list[list[float]] | list[ClassPrediction] | list[Action] = Field(
        description="regression: a value (or a list of outputs) per row; "
        "classification: the predicted label and probabilities per row; a policy: the action "
        "and its log-probability per observation"
    )


class MetaModelOut(BaseModel):
    """A meta-model (an artifact) as the API shows it."""

    name: str
    version: str
    task_kind: str
    input_shape: list[int]
    n_outputs: int
    n_classes: int | None
    inner_loop: InnerLoopSpec
    preprocessing: Preprocessing | None
    evaluation: dict[str, Any]
    content_hash: str = Field(description="what a task adapted from this version is pinned to")
    default: bool = Field(
        False, description="whether new tasks get this version when they name none"
    )
    versions: list[str] = Field(
        default_factory=list, description="every version of this name served, oldest first"
    )

    @classmethod
    def of(cls, meta_model: Artifact, *, default: bool, versions: list[str]) -> MetaModelOut:
        """Read from the typed manifest, whose fields (and ``n_classes``) it shares."""
        out = cls.model_validate(meta_model.manifest, from_attributes=True)
        return out.model_copy(update={"default": default, "versions": versions})


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(description="what is wrong, and what to change")
    errors: list[dict[str, str]] | None = Field(
        None, description="for a body that fails validation: each problem's location and message"
    )


PROBLEM_WHEN = {
    400: "The body is not valid JSON, or could not be read",
    401: "No API key, or an invalid or revoked one",
    404: "No such task or meta-model (another client's task is none)",
    408: "The body did not arrive within BODY_TIMEOUT_SECONDS",
    409: "The stored task cannot be used as it is (say how to fix it)",
    412: "If-Match names a revision of the task other than its current one (its ETag)",
    413: "The body exceeds MAX_BODY_BYTES, the most the meta-model's rows can take, or "
    "MAX_BODY_VALUES values",
    422: "The body, a parameter or a header is invalid, or does not fit the meta-model or the "
    "service's limits",
    429: "Over one of the client's limits (rate, work in flight, stored tasks or bytes)",
    503: "Overloaded, or the database is unavailable; retry after Retry-After",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each a problem+json ``Problem``."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {
        status: {
            "description": PROBLEM_WHEN[status],
            "content": {"application/problem+json": {"schema": schema}},
        }
        for status in statuses
    }
