"""A task's stored tensors (its adapted weights, its support set) as bytes: safetensors (never a
pickle) with a sha256 of the bytes as stored.

Weights are stored in one of the formats of :data:`FORMATS` (the task's ``storage``): the
tensors adaptation changed as float32; their change from the meta-parameters at half
precision (``float16``, ``bfloat16``: half the bytes, and the change is small beside the
weights, so its rounding is too); or nothing (``support``: the task is re-adapted from its
support set when read). Either blob may be zlib-compressed: a compressed blob starts with
:data:`ZLIB`, eight bytes no safetensors file starts with (its first eight are the header's
length, and a header is never near 2**62 bytes), so blobs stored before compression existed
read as they are."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from app.core.config import FORMATS as FORMATS  # callers' import, kept
from app.core.config import Format as Format
from app.core.errors import Conflict, StoredWeightsCorrupt
from meta_core.artifact import Artifact
from meta_core.preprocessing import AudioPreprocessing

HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}
ZLIB = b"\x00\x00\x00\x00zlib"
MAX_INFLATED = 2**30  # bytes a stored blob may inflate to; no task's tensors come near


def compress(data: bytes) -> bytes:
    """``data`` zlib-compressed behind :data:`ZLIB`, if that saves at least a tenth."""
    packed = ZLIB + zlib.compress(data, 6)
    return packed if len(packed) <= 0.9 * len(data) else data


def inflate(data: bytes, what: str) -> bytes:
    """A stored blob as safetensors bytes (decompressed if it was compressed), at most
    MAX_INFLATED of them."""
    if not data.startswith(ZLIB):
        return data
    unpack = zlib.decompressobj()
    try:
        out = unpack.decompress(data[len(ZLIB) :], MAX_INFLATED)
    except zlib.error as exc:
        raise StoredWeightsCorrupt(f"the stored {what} is unreadable ({exc})") from None
    if unpack.unconsumed_tail or not unpack.eof:
        raise StoredWeightsCorrupt(f"the stored {what} is unreadable (truncated or too large)")
    return out


def serialize(
    meta_model: Artifact, changed: dict[str, Tensor], form: Format = "float32", packed: bool = False
) -> tuple[bytes, str]:
    """The tensors adaptation changed, in ``form`` (compressed if ``packed`` and the form
    is half precision: float32 weights shrink by about 7% for 13 ms of zlib per 450 KB), as
    the bytes to store, and their sha256."""
    if form == "support":
        data = b""
    elif form == "float32":
        data = save({k: v.contiguous() for k, v in changed.items()})
    else:
        base, half = meta_model.params, HALF[form]
        data = save({k: (v - base[k]).to(half).contiguous() for k, v in changed.items()})
        data = compress(data) if packed else data
    return data, hashlib.sha256(data).hexdigest()


def deserialize(
    meta_model: Artifact, data: bytes, sha256: str, form: Format = "float32"
) -> dict[str, Tensor]:
    """The full parameter set of a task stored in ``form`` (not ``support``): its tensors
    over the meta-parameters."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoredWeightsCorrupt("stored weights failed their sha256 check")
    try:
        tensors = load(inflate(data, "weights"))
    except (SafetensorError, ValueError) as exc:
        raise StoredWeightsCorrupt(f"stored weights are unreadable ({exc})") from None
    base = meta_model.params
    for k, v in tensors.items():
        if k not in base or v.shape != base[k].shape:
            raise StoredWeightsCorrupt(f"stored tensor {k} does not fit model {meta_model.name}")
        if v.dtype != (torch.float32 if form == "float32" else HALF[form]):
            raise StoredWeightsCorrupt(f"stored tensor {k} is {v.dtype}, not {form}")
        if not bool(torch.isfinite(v).all()):
            raise Conflict(
                "the task's stored model has non-finite weights (its adaptation diverged "
                "before the service refused such adaptations): delete it and adapt again"
            )
    if form != "float32":
        tensors = {k: base[k] + v.float() for k, v in tensors.items()}
    return base | tensors


def features(meta_model: Artifact) -> str | None:
    """What a meta-model's input rows are, when they are not the client's own numbers or
    pixels: a text meta-model's are its encoder's embeddings (named with the weights' hash),
    which another encoder's rows cannot stand in for; an audio meta-model's, spectrograms
    made and standardized as its preprocessing says (named with its hash: another version's
    train split has another mean and std, whose spectrograms these cannot stand in for)."""
    encoder = meta_model.encoder
    if encoder is not None:
        return f"{encoder.spec.name} embeddings (sha256:{encoder.spec.sha256})"
    spec = meta_model.manifest.preprocessing
    if isinstance(spec, AudioPreprocessing):
        digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
        return f"log-mel spectrograms (preprocessing sha256:{digest[:16]})"
    return None


def serialize_support(
    x: Tensor, y: Tensor, kind: str | None = None, packed: bool = False
) -> tuple[bytes, str]:
    """A validated support set (inputs, and targets or label indices) as safetensors bytes
    (compressed if ``packed``: Omniglot's images to a quarter), and their sha256; ``kind``
    (:func:`features`) recorded in its metadata when the rows are embeddings or
    spectrograms."""
    data = save(
        {"x": x.contiguous(), "y": y.contiguous()},
        metadata={"features": kind} if kind is not None else None,
    )
    data = compress(data) if packed else data
    return data, hashlib.sha256(data).hexdigest()


def deserialize_support(data: bytes, sha256: str) -> tuple[Tensor, Tensor, str | None]:
    """A stored support set (inputs, and targets or label indices), checked against its
    sha256, and the :func:`features` it was made with (None: plain rows, as every support
    set stored before text meta-models is); the caller checks it against the meta-model it
    adapts."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise StoredWeightsCorrupt("the stored support set failed its sha256 check")
    data = inflate(data, "support set")
    try:
        tensors = load(data)
        (size,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + size])
    except (SafetensorError, ValueError, struct.error) as exc:
        raise StoredWeightsCorrupt(f"the stored support set is unreadable ({exc})") from None
    x, y = tensors.get("x"), tensors.get("y")
    if x is None or y is None or len(x) != len(y):
        raise StoredWeightsCorrupt("the stored support set lacks x or y, or they disagree")
    kind = (header.get("__metadata__") or {}).get("features")
    return x, y, kind if isinstance(kind, str) else None
