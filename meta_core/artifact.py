"""The artifact: the one contract between meta-training and the service.

A directory with ``weights.safetensors`` (network tensors under ``net.``, learned inner learning
rates under ``lr.``) and ``manifest.json``, read into the typed :class:`Manifest`. The manifest's
``content_hash`` covers the weights' bytes and every other manifest field, so any edit or
corruption is detected. Loading validates every field, rebuilds the network from its spec and
checks each tensor's name, shape and dtype against it. Nothing is ever unpickled.

Encoding (:func:`save_artifact`, :func:`export_task`) and decoding (:func:`load_artifact`) live
here side by side.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import math
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from meta_core.config import Config
from meta_core.encoders import EncoderError, TextEncoder, load_encoder
from meta_core.inner_loop import InnerLoop, LearningRate, Params, TaskKind, forward
from meta_core.memory import AdaptMemory
from meta_core.memory import measure as measure_memory
from meta_core.networks import (
    ArchSpec,
    GaussianMLPSpec,
    Predictor,
    build_network,
    first_error,
    head_names,
    predictor,
)
from meta_core.preprocessing import Preprocessing, RolloutPreprocessing, TextPreprocessing
from meta_core.rl.config import PolicyRunConfig

SCHEMA_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
LearnedLR = Literal["none", "lslr", "metasgd"]


class ArtifactError(ValueError):
    """The artifact is missing, corrupted, or does not match its own manifest."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InnerLoopSpec(_Record):
    """The inner loop the meta-initialization was trained for (the service's defaults)."""

    steps: int = Field(ge=0)
    lr: float = Field(gt=0)
    # A policy's steps after the first take this lr (None: ``lr``); see meta_core.rl.config.
    later_lr: float | None = Field(None, gt=0)
    learned_lr: LearnedLR = "none"
    adapt: Literal["all", "head"] = "all"
    first_order_training: bool = False

    @field_validator("lr")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class WarmStart(_Record):
    """The artifact a run started from (``train.init_from``)."""

    path: str
    name: str
    version: str
    content_hash: str


class TrainingRecord(_Record):
    """How the meta-parameters were made: the whole config and the run's outcome."""

    config: Config | PolicyRunConfig  # a supervised run's, or a policy's (meta_core.rl)
    family: dict[str, Any] = Field(default_factory=dict)
    iterations_done: int = 0
    best_iteration: int = -1
    best_val_loss: float | None = None
    seconds: float = 0.0
    warm_start: WarmStart | None = None
    device: str = "cpu"
    strategy: str = "vmap"
    threads: int = 1


class Framework(_Record):
    torch: str
    safetensors: str
    meta_core: str


class Origin(_Record):
    """The meta-model an exported task was adapted from."""

    name: str
    version: str
    content_hash: str


class TaskRecord(_Record):
    """An adapted task exported by the service (``GET /tasks/{id}/model``): its weights are
    the artifact's; ``labels`` names each output unit (classification)."""

    id: str
    revision: int
    adapted_from: Origin
    labels: list[int | str] | None
    support_size: int
    inner_steps: int
    inner_lr: float | None
    metrics: dict[str, float]
    # How the service stored it: float32, float16/bfloat16 (the weights here are what it
    # served, the meta-model plus the rounded change) or support (re-adapted to export).
    storage: str = "float32"


class Manifest(_Record):
    """Every field of ``manifest.json``; a loader fails loudly on a missing or wrong one
    (``task`` alone is optional: only an exported task has it)."""

    schema_version: Literal[1]
    name: str = Field(min_length=1, max_length=200)
    version: str = Field(min_length=1, max_length=50)
    created_at: str
    architecture: ArchSpec
    task_kind: TaskKind
    input_shape: list[int]
    n_outputs: int = Field(ge=1)
    inner_loop: InnerLoopSpec
    preprocessing: Preprocessing | None
    training: TrainingRecord
    evaluation: dict[str, Any]
    framework: Framework
    content_hash: str
    task: TaskRecord | None = None

    @property
    def n_classes(self) -> int | None:
        return self.n_outputs if self.task_kind == "classification" else None


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Order versions as numbers where they are ("1.10.0" after "1.9.0"), else as text; a
    version ``meta-core train`` writes by default (YYYY.MM.DD.HHMMSS) is newer than "1.x"."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split("."))


def content_hash(weights: bytes, manifest: Mapping[str, Any]) -> str:
    """sha256 over the weights' bytes and the canonical JSON of the manifest sans its hash."""
    body = {k: v for k, v in manifest.items() if k != "content_hash"}
    h = hashlib.sha256(weights)
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return "sha256:" + h.hexdigest()


def save_artifact(
    directory: Path | str,
    *,
    name: str,
    version: str,
    architecture: ArchSpec,
    task_kind: TaskKind,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor],
    inner_loop: InnerLoopSpec,
    preprocessing: Preprocessing | None,
    training: TrainingRecord,
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact (weights, then manifest, each atomically) and return its directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in params.items()}
    tensors |= {f"lr.{k}": v.detach().float().cpu().contiguous() for k, v in lrs.items()}
    weights = save(tensors)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        name=name,
        version=version,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        architecture=architecture,
        task_kind=task_kind,
        input_shape=architecture.input_shape,
        n_outputs=architecture.out_features,
        inner_loop=inner_loop,
        preprocessing=preprocessing,
        training=training,
        evaluation=evaluation or {},
        framework=Framework(
            torch=torch.__version__,
            safetensors=_version("safetensors"),
            meta_core=_version("maml-service"),
        ),
        content_hash="",
    ).model_dump(mode="json")
    manifest["content_hash"] = content_hash(weights, manifest)
    _write_atomic(directory / WEIGHTS, weights)
    _write_atomic(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return directory


def inner_loop_spec(cfg: Config) -> InnerLoopSpec:
    """The manifest's ``inner_loop`` for a training config."""
    algo = cfg.algorithm
    learned: LearnedLR = "metasgd" if algo.name == "metasgd" else "lslr" if algo.lslr else "none"
    return InnerLoopSpec(
        steps=algo.inner_steps,
        lr=algo.inner_lr,
        learned_lr=learned,
        adapt="head" if algo.name == "anil" else "all",
        first_order_training=algo.first_order,
    )


def update_evaluation(directory: Path | str, evaluation: dict[str, Any]) -> None:
    """Record evaluation metrics in the manifest (re-hashed: the weights are unchanged)."""
    directory = Path(directory)
    weights = (directory / WEIGHTS).read_bytes()
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["evaluation"] = evaluation
    manifest["content_hash"] = content_hash(weights, manifest)
    _write_atomic(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


@dataclass
class Artifact:
    """A loaded, validated meta-model, ready to adapt to a task and predict."""

    path: Path
    manifest: Manifest
    model: nn.Module
    params: Params
    lrs: Params
    encoder: TextEncoder | None = None  # a text meta-model's frozen encoder (its manifest's)
    _threads: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    def network(self) -> nn.Module:
        """This thread's copy of the network. ``functional_call`` swaps a module's parameters
        in place while it runs, so threads adapting or predicting at once must each have
        their own (tested); ``model`` itself is only copied."""
        module: nn.Module | None = getattr(self._threads, "module", None)
        if module is None:
            module = self._threads.module = copy.deepcopy(self.model)
        return module

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def task_kind(self) -> TaskKind:
        return self.manifest.task_kind

    @functools.cached_property
    def row_shape(self) -> tuple[int, ...]:
        """:attr:`input_shape` as a tuple, computed once (the shape of one input row)."""
        return tuple(self.manifest.input_shape)

    @functools.cached_property
    def flops_per_example(self) -> int:
        """One example's forward pass, in floating-point operations (the architecture's)."""
        return self.manifest.architecture.flops

    @functools.cached_property
    def adapt_memory(self) -> AdaptMemory:
        """What one adaptation holds in memory, per support row and besides
        (:mod:`meta_core.memory`): measured on first use, once (a step on two rows)."""
        return measure_memory(self.inner_loop(steps=1), self.params, self.row_shape, self.n_outputs)

    @property
    def input_shape(self) -> list[int]:
        return list(self.manifest.input_shape)

    @property
    def n_outputs(self) -> int:
        return self.manifest.n_outputs

    @functools.cached_property
    def changed_bytes(self) -> int:
        """The bytes of the tensors adaptation changes (with ANIL, the head's), as float32."""
        names = self.adapt_names or list(self.params)
        return sum(self.params[k].numel() * 4 for k in names)

    @property
    def adapt_names(self) -> list[str] | None:
        return head_names(self.params) if self.manifest.inner_loop.adapt == "head" else None

    def learning_rate(self, lr: float | None = None) -> LearningRate:
        """The inner lr to use: an explicit one, else the learned rates, else the default."""
        if lr is not None:
            return float(lr)
        return self.lrs if self.lrs else self.manifest.inner_loop.lr

    def inner_loop(self, *, steps: int | None = None, lr: float | None = None) -> InnerLoop:
        """The serving inner loop: first order, eager gradients, the manifest's defaults."""
        return InnerLoop(
            self.network(),
            self.task_kind,
            self.manifest.inner_loop.steps if steps is None else steps,
            self.learning_rate(lr),
            adapt_names=self.adapt_names,
            first_order=True,
            eager=True,
        )

    def adapt(
        self, x: Tensor, y: Tensor, *, steps: int | None = None, lr: float | None = None
    ) -> Params:
        """Adapted parameters for one task's support set (no meta-gradient is kept)."""
        with torch.no_grad():
            fast = self.inner_loop(steps=steps, lr=lr).adapt(self.params, x, y)
        return {k: v.detach() for k, v in fast.items()}

    def predict(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Raw network outputs (regression values or class logits) for ``x``."""
        with torch.inference_mode():
            return forward(self.network(), params, x)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """A text meta-model's input rows for ``texts``: its encoder's embeddings."""
        if self.encoder is None:
            raise ValueError(f"meta-model {self.name!r} does not take text")
        return self.encoder.encode(texts)

    def materialize(self, params: Mapping[str, Tensor]) -> nn.Module:
        """A module holding ``params`` (shared, not copied), for repeated prediction without
        ``functional_call``'s per-call cost; it computes exactly what :meth:`predict` does."""
        module = copy.deepcopy(self.network())
        module.load_state_dict(dict(params), assign=True)
        return module.requires_grad_(False).eval()

    def predictor(self, params: Mapping[str, Tensor]) -> Predictor:
        """:meth:`predict` for repeated use on float32 arrays, as the service predicts
        (:func:`meta_core.networks.predictor`)."""
        return predictor(self.materialize(params))


MAX_ARCHIVE_MEMBER = 2**31  # bytes; no artifact's weights come near


def export_task(meta_model: Artifact, params: Mapping[str, Tensor], task: TaskRecord) -> bytes:
    """An adapted task as a standalone artifact in one tar archive (``manifest.json`` and
    ``weights.safetensors``): the meta-model's manifest and learned rates with the task's
    parameters, named ``<meta-model>-task-<id>``, version its revision, ``task`` saying what
    it was adapted from. :func:`load_artifact` reads it; ``predictor(params)`` predicts
    exactly as the service does (a text meta-model's encoder is named, not copied: it is
    loaded from the same installed package, and :meth:`Artifact.embed` makes the rows)."""
    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in params.items()}
    tensors |= {f"lr.{k}": v.detach().float().cpu().contiguous() for k, v in meta_model.lrs.items()}
    weights = save(tensors)
    manifest = meta_model.manifest.model_dump(mode="json") | {
        "name": f"{meta_model.name}-task-{task.id}",
        "version": str(task.revision),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task.model_dump(mode="json"),
    }
    manifest["content_hash"] = content_hash(weights, manifest)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            (MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode()),
            (WEIGHTS, weights),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _read_files(path: Path) -> tuple[bytes, bytes]:
    """``manifest.json`` and ``weights.safetensors`` from an artifact directory, or from a tar
    archive (an exported task): only those two regular files at its top are read, never
    extracted; in a directory too, only regular files of at most MAX_ARCHIVE_MEMBER bytes (a
    FIFO, opened without waiting for a writer, or a device is refused unread)."""
    import os
    import stat

    if not path.is_file():
        contents = []
        for name in (MANIFEST, WEIGHTS):
            fd = os.open(path / name, os.O_RDONLY | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as file:
                info = os.fstat(fd)
                too_large = f"{path}: {name} is larger than {MAX_ARCHIVE_MEMBER} bytes"
                if not stat.S_ISREG(info.st_mode):
                    raise ArtifactError(f"{path}: {name} is not a regular file")
                if info.st_size > MAX_ARCHIVE_MEMBER:
                    raise ArtifactError(too_large)
                contents.append(file.read(MAX_ARCHIVE_MEMBER + 1))
                if len(contents[-1]) > MAX_ARCHIVE_MEMBER:  # it grew while read
                    raise ArtifactError(too_large)
        return contents[0], contents[1]
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if member.name in (MANIFEST, WEIGHTS) and member.isfile():
                    if member.size > MAX_ARCHIVE_MEMBER:
                        raise ArtifactError(f"{path}: {member.name} is too large")
                    stream = tar.extractfile(member)
                    assert stream is not None  # a regular file
                    found[member.name] = stream.read()
    except tarfile.TarError as exc:
        raise ArtifactError(f"{path}: not an artifact directory or archive ({exc})") from None
    for name in (MANIFEST, WEIGHTS):
        if name not in found:
            raise FileNotFoundError(2, "missing", name)
    return found[MANIFEST], found[WEIGHTS]


def read_manifest(directory: Path | str) -> tuple[Manifest, dict[str, Any], bytes]:
    """The typed manifest, its raw JSON (what the hash covers) and the weights' bytes, from an
    artifact directory or an exported task's archive."""
    directory = Path(directory)
    try:
        text, weights = _read_files(directory)
        raw = json.loads(text.decode("utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{directory}: missing {Path(str(exc.filename)).name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{directory}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{directory}: manifest must be a JSON object")
    missing = [f for f in Manifest.model_fields if f not in raw and f != "task"]
    if missing:
        raise ArtifactError(f"{directory}: manifest lacks required field {missing[0]!r}")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(
            f"{directory}: schema_version {raw['schema_version']} is not supported "
            f"(this meta_core reads {SCHEMA_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        raise ArtifactError(f"{directory}: manifest field {first_error(exc)}") from None
    arch = manifest.architecture
    if manifest.input_shape != arch.input_shape or manifest.n_outputs != arch.out_features:
        raise ArtifactError(
            f"{directory}: input_shape/n_outputs {manifest.input_shape}/"
            f"{manifest.n_outputs} disagree with the architecture "
            f"{arch.input_shape}/{arch.out_features}"
        )
    policy = manifest.task_kind == "policy"
    parts = (
        isinstance(arch, GaussianMLPSpec),
        isinstance(manifest.preprocessing, RolloutPreprocessing),
    )
    if (policy and not all(parts)) or (not policy and any(parts)):
        raise ArtifactError(
            f"{directory}: a policy meta-model (task_kind 'policy') has a gaussian_mlp "
            "architecture and rollouts preprocessing, and only it has them"
        )
    return manifest, raw, weights


def load_artifact(directory: Path | str, device: torch.device | str = "cpu") -> Artifact:
    """Load and validate an artifact (a directory, or an exported task's tar archive); raise
    :class:`ArtifactError` saying what is wrong."""
    directory = Path(directory)
    manifest, raw, weights = read_manifest(directory)
    if content_hash(weights, raw) != manifest.content_hash:
        raise ArtifactError(
            f"{directory}: content hash mismatch: the weights or the manifest "
            "were changed or corrupted after the artifact was written"
        )
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{directory}: {WEIGHTS} is unreadable ({exc})") from None
    model = build_network(manifest.architecture)
    model.to(device).eval()
    expected = dict(model.named_parameters())
    params = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    lrs = {k[3:]: v for k, v in tensors.items() if k.startswith("lr.")}
    stray = set(tensors) - {f"net.{k}" for k in params} - {f"lr.{k}" for k in lrs}
    if set(params) != set(expected) or stray:
        raise ArtifactError(
            f"{directory}: tensors do not match the architecture: missing "
            f"{sorted(set(expected) - set(params))}, unexpected "
            f"{sorted((set(params) - set(expected)) | stray)}"
        )
    for k, v in sorted(params.items()):
        if v.shape != expected[k].shape or v.dtype != torch.float32:
            raise ArtifactError(
                f"{directory}: tensor net.{k} is {v.dtype} {list(v.shape)}, "
                f"the architecture needs float32 {list(expected[k].shape)}"
            )
        if not torch.isfinite(v).all():
            raise ArtifactError(f"{directory}: tensor net.{k} holds NaN or Inf")
    _validate_lrs(directory, manifest.inner_loop, params, lrs)
    for p in model.parameters():
        p.requires_grad_(False)
    params = {k: v.to(device) for k, v in params.items()}
    lrs = {k: v.to(device) for k, v in lrs.items()}
    return Artifact(directory, manifest, model, params, lrs, _encoder(directory, manifest))


def _encoder(directory: Path, manifest: Manifest) -> TextEncoder | None:
    """The frozen encoder a text meta-model's manifest names, its weights' sha256 checked
    (loaded once per process, shared by every artifact naming it)."""
    spec = manifest.preprocessing
    if not isinstance(spec, TextPreprocessing):
        return None
    try:
        return load_encoder(spec.encoder)
    except EncoderError as exc:
        raise ArtifactError(f"{directory}: {exc}") from None


def _validate_lrs(directory: Path, inner: InnerLoopSpec, params: Params, lrs: Params) -> None:
    names = list(head_names(params)) if inner.adapt == "head" else list(params)
    if inner.learned_lr == "none":
        if lrs:
            raise ArtifactError(f"{directory}: learned_lr is 'none' but lr.* tensors are present")
        return
    if set(lrs) != set(names):
        raise ArtifactError(
            f"{directory}: learned rates must cover exactly the adapted "
            f"parameters {sorted(names)}, found {sorted(lrs)}"
        )
    for k, v in lrs.items():
        if v.dim() != params[k].dim() + 1 or not torch.isfinite(v).all():
            raise ArtifactError(f"{directory}: learned rate lr.{k} has shape {list(v.shape)}")
        try:
            torch.broadcast_shapes(v.shape[1:], params[k].shape)
        except RuntimeError:
            raise ArtifactError(
                f"{directory}: learned rate lr.{k} does not broadcast against its parameter"
            ) from None


def _version(package: str) -> str:
    try:
        return _pkg_version(package)
    except PackageNotFoundError:
        return "unknown"
