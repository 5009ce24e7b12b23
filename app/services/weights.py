"""A task's stored tensors (its adapted weights, its support set) as bytes: safetensors (never a
pickle) with a sha256."""

from __future__ import annotations

import hashlib
import json
import struct

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from app.core.errors import Conflict, StoredWeightsCorrupt
from meta_core.artifact import Artifact


def serialize(changed: dict[str, Tensor]) -> tuple[bytes, str]:
    """The tensors adaptation changed, as safetensors bytes, and their sha256."""
    data = save({k: v.contiguous() for k, v in changed.items()})
    return data, hashlib.sha256(data).hexdigest()


def deserialize(meta_model: Artifact, data: bytes, sha256: str) -> dict[str, Tensor]:
    """The full parameter set of a stored task: its tensors over the meta-parameters."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoredWeightsCorrupt("stored weights failed their sha256 check")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise StoredWeightsCorrupt(f"stored weights are unreadable ({exc})") from None
    for k, v in tensors.items():
        if k not in meta_model.params or v.shape != meta_model.params[k].shape:
            raise StoredWeightsCorrupt(f"stored tensor {k} does not fit model {meta_model.name}")
        if not bool(torch.isfinite(v).all()):
            raise Conflict(
                "the task's stored model has non-finite weights (its adaptation diverged "
                "before the service refused such adaptations): delete it and adapt again"
            )
    return meta_model.params | tensors


def features(meta_model: Artifact) -> str | None:
    """What a meta-model's input rows are, when they are not the client's own numbers or
    pixels: a text meta-model's are its encoder's embeddings (named with the weights' hash),
    which another encoder's rows cannot stand in for."""
    encoder = meta_model.encoder
    return (
        None
        if encoder is None
        else f"{encoder.spec.name} embeddings (sha256:{encoder.spec.sha256})"
    )


def serialize_support(x: Tensor, y: Tensor, kind: str | None = None) -> tuple[bytes, str]:
    """A validated support set (inputs, and targets or label indices) as safetensors bytes;
    ``kind`` (:func:`features`) recorded in its metadata when the rows are embeddings."""
    data = save(
        {"x": x.contiguous(), "y": y.contiguous()},
        metadata={"features": kind} if kind is not None else None,
    )
    return data, hashlib.sha256(data).hexdigest()


def support_features(data: bytes) -> str | None:
    """The :func:`features` a stored support set was made with (None: plain rows, as every
    support set stored before text meta-models is)."""
    try:
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
    except (struct.error, ValueError):
        raise StoredWeightsCorrupt("the stored support set is unreadable") from None
    value = (header.get("__metadata__") or {}).get("features")
    return value if isinstance(value, str) else None


def deserialize_support(data: bytes, sha256: str) -> tuple[Tensor, Tensor]:
    """A stored support set (inputs, and targets or label indices), checked against its
    sha256; the caller checks it against the meta-model it adapts."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoredWeightsCorrupt("the stored support set failed its sha256 check")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise StoredWeightsCorrupt(f"the stored support set is unreadable ({exc})") from None
    x, y = tensors.get("x"), tensors.get("y")
    if x is None or y is None or len(x) != len(y):
        raise StoredWeightsCorrupt("the stored support set lacks x or y, or they disagree")
    return x, y
