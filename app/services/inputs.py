"""A client's examples as tensors, or a clear 422: shapes, finiteness, row limits, labels, and
images, recordings and sentences preprocessed as in training."""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.schemas import Examples, TaskCreate, Trajectory
from app.services.audio import AudioLimits, recordings_to_array
from app.services.images import ImageLimits as ImageLimits  # callers' import, kept
from app.services.images import images_to_array
from app.services.limits import Limits
from app.services.numbers import as_float32
from app.services.rollouts import check_counts, mean_return, support_rows, to_rollouts
from app.services.texts import TextLimits, texts_to_array
from meta_core.artifact import Artifact
from meta_core.preprocessing import (
    AudioPreprocessing,
    ImagePreprocessing,
    TablePreprocessing,
    TextPreprocessing,
)

Label = int | str


@dataclass
class InputLimits:
    """One request's bounds on what its rows decode: images' pixels, sentences' tokens,
    recordings' samples (make one per request: what was decoded so far is counted there)."""

    images: ImageLimits
    texts: TextLimits
    audio: AudioLimits

    @classmethod
    def of(cls, settings: Settings, cost: Cost | None = None) -> InputLimits:
        """The service's bounds, and with ``cost`` the caller's cost budget on top."""
        if cost is None:
            return cls(ImageLimits.of(settings), TextLimits.of(settings), AudioLimits.of(settings))
        return cls(
            ImageLimits.of(settings, lambda pixels: cost(pixels=pixels)),
            TextLimits.of(settings, lambda tokens: cost(tokens=tokens)),
            AudioLimits.of(settings, lambda samples: cost(samples=samples)),
        )


def to_inputs(
    meta_model: Artifact, x: list[Any], field: str, limit: int, bounds: InputLimits
) -> np.ndarray:
    """``x`` as a float32 ``[n, *input_shape]`` array, or a clear 422. For an image model,
    rows may be base64 PNG/JPEG strings (or data URLs), decoded within ``bounds`` (the
    request's: what they decode is counted there) and preprocessed as in training; for an
    audio model, base64 WAV/FLAC recordings, likewise; for a text model, sentences, embedded
    by its encoder within ``bounds``."""
    if len(x) > limit:
        raise InvalidInput(f"{field} has {len(x)} rows; the limit is {limit}")
    spec = meta_model.manifest.preprocessing
    if isinstance(spec, TablePreprocessing):
        a = table_rows(x, field, spec)  # standardized once its shape is checked, below
    elif x and isinstance(x[0], str):
        if spec is None:
            raise InvalidInput(
                f"{field} holds strings, but model {meta_model.name!r} takes numbers"
            )
        if isinstance(spec, TextPreprocessing):
            assert meta_model.encoder is not None  # loaded with the artifact
            a = texts_to_array(x, field, meta_model.encoder, bounds.texts)
        elif isinstance(spec, AudioPreprocessing):
            a = recordings_to_array(x, field, spec, bounds.audio)
        elif isinstance(spec, ImagePreprocessing):
            a = images_to_array(x, field, spec, bounds.images)
        else:
            raise InvalidInput(
                f"{field} holds strings, but model {meta_model.name!r} takes numbers"
            )
    else:
        a = as_float32(x, field, "a rectangular array of numbers")
    if a.ndim == 0 or a.shape[0] == 0:
        raise InvalidInput(f"{field} is empty")
    shape = meta_model.row_shape
    if shape == (1,) and a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.shape[1:] != shape:
        raise InvalidInput(
            f"{field} has shape {list(a.shape)}; model {meta_model.name!r} takes "
            f"[n, {', '.join(map(str, shape))}]"
        )
    if isinstance(spec, TablePreprocessing):
        a = spec.inputs(a)
    return a


def table_rows(x: list[Any], field: str, spec: TablePreprocessing) -> np.ndarray:
    """A table model's rows: lists of numbers in the column order the manifest records, or
    objects keyed by column name (every column, no other key); raw, not yet standardized."""
    if x and any(isinstance(row, dict) for row in x):
        columns, rows = spec.columns, []
        for i, row in enumerate(x):
            if not isinstance(row, dict):
                raise InvalidInput(f"{field} mixes objects with other rows")
            missing = [c for c in columns if c not in row]
            if missing:
                raise InvalidInput(
                    f"{field}[{i}] lacks column {missing[0]!r}; columns: {list(columns)}"
                )
            unknown = [k for k in row if k not in columns]
            if unknown:
                raise InvalidInput(
                    f"{field}[{i}] has unknown column {reprlib.repr(unknown[0])}; "
                    f"columns: {list(columns)}"
                )
            rows.append([row[c] for c in columns])
        x = rows
    if any(isinstance(v, bool) for row in x if isinstance(row, list) for v in row):
        raise InvalidInput(f"{field} must hold numbers, not true or false")
    return as_float32(x, field, "rows of numbers, or objects keyed by column name")


def to_targets(meta_model: Artifact, y: list[Any], n: int, field: str) -> Tensor:
    """Regression targets as ``[n, n_outputs]`` (a table model's standardized as in
    training)."""
    a = as_float32(y, field, "an array of numbers")
    spec = meta_model.manifest.preprocessing
    if isinstance(spec, TablePreprocessing):
        a = spec.targets(a)
    outputs, sent = meta_model.n_outputs, list(a.shape)
    if a.ndim == 1 and outputs == 1:
        a = a.reshape(-1, 1)
    if list(a.shape) != [n, outputs]:
        raise InvalidInput(
            f"{field} has shape {sent}; expected [{n}] or [{n}, {outputs}] to match x"
        )
    return torch.from_numpy(a)


MAX_INT_LABEL = 2**53  # beyond, a JSON client may not read the integer back exactly


def check_label(value: Any, field: str, max_chars: int) -> Label:
    """A label the service can store and send back: an integer within ±2^53, or a string of
    at most ``max_chars`` characters that is valid Unicode (no lone surrogates)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_INT_LABEL:
            raise InvalidInput(f"{field} holds {value}; integer labels must be within ±2^53")
        return value
    if isinstance(value, str):
        if len(value) > max_chars:
            raise InvalidInput(
                f"{field} holds a label of {len(value)} characters; the limit is {max_chars}"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{field} holds a label that is not valid Unicode (a lone surrogate)"
            ) from None
        return value
    raise InvalidInput(f"{field} must hold integer or string labels, not {reprlib.repr(value)}")


def label_order(labels: list[Any], field: str, n_way: int, max_chars: int) -> list[Label]:
    """The task's classes: the distinct support labels, sorted (integers before strings)."""
    checked = [check_label(v, field, max_chars) for v in labels]
    distinct = sorted(set(checked), key=lambda v: (isinstance(v, str), v))
    if len(distinct) > n_way:
        raise InvalidInput(f"{field} has {len(distinct)} classes; the model takes at most {n_way}")
    return distinct


def to_label_indices(
    labels: list[Any], order: list[Label], n: int, field: str, max_chars: int
) -> Tensor:
    if len(labels) != n:
        raise InvalidInput(f"{field} has {len(labels)} labels for {n} rows of x")
    checked = [check_label(v, field, max_chars) for v in labels]
    index = {v: i for i, v in enumerate(order)}
    unknown = [v for v in checked if v not in index]
    if unknown:
        raise InvalidInput(f"{field} has labels not in the support set: {unknown[:5]}")
    return torch.tensor([index[v] for v in checked], dtype=torch.long)


def check_cost(meta_model: Artifact, body: TaskCreate, limits: Limits, settings: Settings) -> None:
    """:func:`check_adapt_cost` for ``POST /tasks``'s body (a policy's: its rollouts' steps)."""
    if meta_model.task_kind == "policy":
        rows = check_policy_body(meta_model, body, settings)
        steps = policy_steps(meta_model, body.inner_steps, rows, settings)
        check_adapt_cost(meta_model, rows, 0, steps, limits)
        return
    support = check_support_body(meta_model, body)
    steps = inner_steps(meta_model, body.inner_steps, settings)
    query = len(body.query.x) if body.query else 0
    check_adapt_cost(meta_model, len(support.x), query, steps, limits)


def check_support_body(meta_model: Artifact, body: TaskCreate) -> Examples:
    """The support set of ``POST /tasks`` for a model that is not a policy."""
    if body.trajectories is not None:
        raise InvalidInput(
            f"model {meta_model.name!r} is not a policy: send support (x and y), not trajectories"
        )
    if body.support is None:
        raise InvalidInput(f"support is required: model {meta_model.name!r} adapts to examples")
    return body.support


def check_policy_body(meta_model: Artifact, body: TaskCreate, settings: Settings) -> int:
    """A policy's ``POST /tasks``: trajectories or nothing; their steps in all."""
    if body.support is not None or body.query is not None:
        raise InvalidInput(
            f"model {meta_model.name!r} is a policy: send trajectories (rollouts of its "
            "meta-policy), or nothing to start from the meta-policy; not support or query"
        )
    if body.trajectories is None:
        return 0
    return check_counts(body.trajectories, "trajectories", settings)


def policy_steps(meta_model: Artifact, requested: int | None, rows: int, settings: Settings) -> int:
    """A policy task's inner steps: none without rollouts, else as asked (the model's one)."""
    if rows == 0:
        if requested:
            raise InvalidInput("inner_steps needs trajectories to step on")
        return 0
    return inner_steps(meta_model, requested, settings)


# Decoding and resizing one image pixel takes about as long as this many of the inner loop's
# FLOPs on one core (docs/benchmarks.md, "Image decoding": the measurements).
DECODE_FLOPS_PER_PIXEL = 200
# Decoding a recording's sample and making its spectrogram (mono, resampling, log-mel) takes,
# at the dearest rate accepted, about as long as this many of the inner loop's FLOPs
# (docs/benchmarks.md, "Audio decoding"); so does making one entry of a resampling filter.
DECODE_FLOPS_PER_SAMPLE = 2500


def check_adapt_cost(
    meta_model: Artifact,
    rows: int,
    query: int,
    steps: int,
    limits: Limits,
    *,
    pixels: int = 0,
    tokens: int = 0,
    samples: int = 0,
) -> None:
    """422 for an adaptation over the caller's budgets, before any of it is done. Its cost:
    the model's FLOPs per row x (3 x support rows x inner steps (forward and backward) + 2 x
    (support + query rows) (scored before and after)), ``pixels`` of images to decode at
    DECODE_FLOPS_PER_PIXEL each, ``samples`` of recordings at DECODE_FLOPS_PER_SAMPLE each,
    and ``tokens`` of sentences to encode at the encoder's FLOPs per token. Its memory: what
    the meta-model's inner loop is measured to keep per row (:attr:`Artifact.adapt_memory`)."""
    flops = meta_model.flops_per_example * (3 * rows * steps + 2 * (rows + query))
    flops += DECODE_FLOPS_PER_PIXEL * pixels + DECODE_FLOPS_PER_SAMPLE * samples
    per_token = meta_model.encoder.flops_per_token if meta_model.encoder is not None else 0
    flops += per_token * tokens
    if flops > limits.max_adapt_flops:
        images, fewer = "", "rows or inner_steps"
        if pixels:
            images = f", and {pixels} image pixels to decode at {DECODE_FLOPS_PER_PIXEL} FLOPs each"
            fewer = "rows, inner_steps or smaller images"
        if samples:
            images = (
                f", and {samples} audio samples to decode at {DECODE_FLOPS_PER_SAMPLE} FLOPs each"
            )
            fewer = "rows, inner_steps or shorter recordings"
        if tokens:
            images = f", and {tokens} tokens to encode at {per_token / 1e6:.3g} MFLOPs each"
            fewer = "rows, inner_steps or shorter sentences"
        raise InvalidInput(
            f"this adaptation would cost {flops / 1e9:.3g} GFLOP ({rows} support rows x {steps} "
            f"inner steps of model {meta_model.name!r}, {meta_model.flops_per_example} FLOPs "
            f"per row{images}); the limit is {limits.max_adapt_flops / 1e9:.3g} GFLOP: send "
            f"fewer {fewer}"
        )
    memory = meta_model.adapt_memory.peak(rows, query, steps)
    if memory > limits.max_adapt_bytes:
        sets = f"{rows} support rows" + (f" and {query} query rows" if query else "")
        raise InvalidInput(
            f"this adaptation would need about {memory / 2**20:.0f} MiB of memory ({sets} of "
            f"model {meta_model.name!r}); the limit is {limits.max_adapt_bytes / 2**20:.0f} "
            "MiB: send fewer rows"
        )


class Cost(Protocol):
    def __call__(self, *, pixels: int = 0, tokens: int = 0, samples: int = 0) -> None: ...


def decoding_cost(
    meta_model: Artifact, rows: int, query: int, steps: int, limits: Limits | None
) -> Cost | None:
    """:func:`check_adapt_cost` of an adaptation with the pixels its images decode, the
    samples its recordings decode or the tokens its sentences encode, for
    :class:`InputLimits` to call before decoding them (None: no budget to count them in)."""
    if limits is None:
        return None

    def cost(*, pixels: int = 0, tokens: int = 0, samples: int = 0) -> None:
        check_adapt_cost(
            meta_model, rows, query, steps, limits, pixels=pixels, tokens=tokens, samples=samples
        )

    return cost


def inner_steps(meta_model: Artifact, requested: int | None, settings: Settings) -> int:
    """The steps asked for (else the meta-model's), within MAX_INNER_STEPS."""
    steps = meta_model.manifest.inner_loop.steps if requested is None else requested
    if not 0 <= steps <= settings.max_inner_steps:
        raise InvalidInput(
            f"inner_steps must be between 0 and {settings.max_inner_steps}, got {steps}"
        )
    return steps


@dataclass(frozen=True)
class AdaptationRequest:
    """A validated adaptation request, ready for the inner loop: from the
    meta-initialization, or (a policy's next step) from ``start``."""

    x: Tensor
    y: Tensor
    query: tuple[Tensor, Tensor] | None
    labels: list[Label] | None
    steps: int
    lr: float | None
    start: dict[str, Tensor] | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # reported beside the losses
    # The steps and rows ``start`` was adapted with already (a policy's earlier steps).
    before: tuple[int, int] = (0, 0)


def prepare(
    meta_model: Artifact, body: TaskCreate, settings: Settings, *, limits: Limits
) -> AdaptationRequest:
    """Validate ``POST /tasks``'s body against the meta-model and the service's limits, and
    (with the caller's ``limits``) its images' or recordings' decoding against the
    adaptation's cost."""
    if meta_model.task_kind == "policy":
        rows = check_policy_body(meta_model, body, settings)
        steps = policy_steps(meta_model, body.inner_steps, rows, settings)
        return policy_request(
            meta_model, body.trajectories, steps, inner_lr(body.inner_lr, settings)
        )
    support = check_support_body(meta_model, body)
    steps = inner_steps(meta_model, body.inner_steps, settings)
    query_rows = len(body.query.x) if body.query is not None else 0
    cost = decoding_cost(meta_model, len(support.x), query_rows, steps, limits)
    bounds = InputLimits.of(settings, cost)
    sx = torch.from_numpy(
        to_inputs(meta_model, support.x, "support.x", settings.max_support, bounds)
    )
    labels = None
    if meta_model.task_kind == "classification":
        chars = settings.max_label_chars
        labels = label_order(support.y, "support.y", meta_model.n_outputs, chars)
        sy = to_label_indices(support.y, labels, sx.shape[0], "support.y", chars)
    else:
        sy = to_targets(meta_model, support.y, sx.shape[0], "support.y")
    query = None
    if body.query is not None:
        qx = torch.from_numpy(
            to_inputs(meta_model, body.query.x, "query.x", settings.max_query, bounds)
        )
        if labels is not None:
            qy = to_label_indices(
                body.query.y, labels, qx.shape[0], "query.y", settings.max_label_chars
            )
        else:
            qy = to_targets(meta_model, body.query.y, qx.shape[0], "query.y")
        query = (qx, qy)
    return AdaptationRequest(sx, sy, query, labels, steps, inner_lr(body.inner_lr, settings))


def policy_request(
    meta_model: Artifact,
    trajectories: list[Trajectory] | None,
    steps: int,
    lr: float | None,
    start: dict[str, Tensor] | None = None,
) -> AdaptationRequest:
    """A policy's inner step on its rollouts (none: no step, the policy as it is), from
    ``start`` (None: the meta-policy); the rollouts' mean return reported as
    ``rollout_return``."""
    if not trajectories:
        x = torch.zeros(0, *meta_model.row_shape)
        y = torch.zeros(0, meta_model.n_outputs + 1)
        return AdaptationRequest(x, y, None, None, 0, lr, start)
    rollouts = to_rollouts(meta_model, trajectories, "trajectories")
    x, y = support_rows(meta_model, rollouts)
    metrics = {"rollout_return": mean_return(rollouts), "trajectories": float(len(trajectories))}
    return AdaptationRequest(x, y, None, None, steps, lr, start, metrics)


def inner_lr(lr: float | None, settings: Settings) -> float | None:
    if lr is not None and not (0 < lr <= settings.max_inner_lr and math.isfinite(lr)):
        raise InvalidInput(f"inner_lr must be in (0, {settings.max_inner_lr}], got {lr}")
    return lr


def grow(
    meta_model: Artifact,
    support: tuple[Tensor, Tensor],
    labels: list[Label] | None,
    examples: Any,
    settings: Settings,
    *,
    limits: Limits,
    steps: int,
) -> tuple[Tensor, Tensor, list[Label] | None]:
    """A stored support set with ``examples`` (``x`` and ``y``) added, validated as
    ``POST /tasks`` validates its support set: new classes may join up to the model's ways
    (the classes stay sorted, so stored label indices are renumbered). With the caller's
    ``limits``, the images' or recordings' decoding (or the sentences' encoding) counts
    against the cost of
    ``steps`` inner steps."""
    x, y = support
    room = settings.max_support - len(x)
    if len(examples.x) > room:
        raise InvalidInput(
            f"the task has {len(x)} examples and x adds {len(examples.x)}; a support set holds "
            f"at most {settings.max_support}"
        )
    rows = len(x) + len(examples.x)
    bounds = InputLimits.of(settings, decoding_cost(meta_model, rows, 0, steps, limits))
    new_x = torch.from_numpy(to_inputs(meta_model, examples.x, "x", room, bounds))
    if labels is None:
        new_y = to_targets(meta_model, examples.y, len(new_x), "y")
        return torch.cat([x, new_x]), torch.cat([y, new_y]), None
    chars = settings.max_label_chars
    added = label_order(examples.y, "y", meta_model.n_outputs, chars)
    order = sorted(set(labels) | set(added), key=lambda v: (isinstance(v, str), v))
    if len(order) > meta_model.n_outputs:
        raise InvalidInput(
            f"y brings the task to {len(order)} classes; model {meta_model.name!r} takes at "
            f"most {meta_model.n_outputs}"
        )
    renumber = torch.tensor([order.index(v) for v in labels], dtype=torch.long)
    new_y = to_label_indices(examples.y, order, len(new_x), "y", chars)
    return torch.cat([x, new_x]), torch.cat([renumber[y], new_y]), order
