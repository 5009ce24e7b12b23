"""A task's stored tensors (its adapted weights, its support set) as bytes: safetensors (never a
pickle) with a sha256."""

from __future__ import annotations

import hashlib

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


def serialize_support(x: Tensor, y: Tensor) -> tuple[bytes, str]:
    """A validated support set (inputs, and targets or label indices) as safetensors bytes."""
    return serialize({"x": x, "y": y})


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
