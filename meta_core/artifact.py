"""The artifact: the one contract between meta-training and the service.

A directory with ``weights.safetensors`` (network tensors under ``net.``, learned inner learning
rates under ``lr.``) and ``manifest.json``. The manifest's ``content_hash`` covers the weights'
bytes and every other manifest field, so any edit or corruption is detected. Loading validates
every field, rebuilds the network from its spec and checks each tensor's name, shape and dtype
against it. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _pkg_version
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor, nn

from meta_core.inner_loop import LOSSES, LearningRate, Params, adapt, forward
from meta_core.networks import build_network, head_names, input_shape

SCHEMA_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
TASK_KINDS = ("regression", "classification")
LEARNED_LR = ("none", "lslr", "metasgd")
ADAPT = ("all", "head")

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "name": str,
    "version": str,
    "created_at": str,
    "architecture": dict,
    "task_kind": str,
    "input_shape": list,
    "n_outputs": int,
    "inner_loop": dict,
    "preprocessing": (dict, type(None)),
    "training": dict,
    "evaluation": dict,
    "framework": dict,
    "content_hash": str,
}


class ArtifactError(ValueError):
    """The artifact is missing, corrupted, or does not match its own manifest."""


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
    architecture: dict[str, Any],
    task_kind: str,
    params: Mapping[str, Tensor],
    lrs: Mapping[str, Tensor],
    inner_loop: dict[str, Any],
    preprocessing: dict[str, Any] | None,
    training: dict[str, Any],
    evaluation: dict[str, Any] | None = None,
) -> Path:
    """Write an artifact (weights, then manifest, each atomically) and return its directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().float().cpu().contiguous() for k, v in params.items()}
    tensors |= {f"lr.{k}": v.detach().float().cpu().contiguous() for k, v in lrs.items()}
    weights = save(tensors)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": architecture,
        "task_kind": task_kind,
        "input_shape": input_shape(architecture),
        "n_outputs": int(architecture["out_features"]),
        "inner_loop": inner_loop,
        "preprocessing": preprocessing,
        "training": training,
        "evaluation": evaluation or {},
        "framework": {
            "torch": torch.__version__,
            "safetensors": _version("safetensors"),
            "meta_core": _version("maml-service"),
        },
    }
    manifest["content_hash"] = content_hash(weights, manifest)
    _write_atomic(directory / WEIGHTS, weights)
    _write_atomic(directory / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return directory


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
    manifest: dict[str, Any]
    model: nn.Module
    params: Params
    lrs: Params

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def task_kind(self) -> str:
        return self.manifest["task_kind"]

    @property
    def input_shape(self) -> list[int]:
        return list(self.manifest["input_shape"])

    @property
    def n_outputs(self) -> int:
        return int(self.manifest["n_outputs"])

    @property
    def inner_steps(self) -> int:
        return int(self.manifest["inner_loop"]["steps"])

    @property
    def inner_lr(self) -> float:
        return float(self.manifest["inner_loop"]["lr"])

    @property
    def adapt_names(self) -> list[str] | None:
        return head_names(self.params) if self.manifest["inner_loop"]["adapt"] == "head" else None

    def learning_rate(self, lr: float | None = None) -> LearningRate:
        """The inner lr to use: an explicit one, else the learned rates, else the default."""
        if lr is not None:
            return float(lr)
        return self.lrs if self.lrs else self.inner_lr

    def adapt(
        self, x: Tensor, y: Tensor, *, steps: int | None = None, lr: float | None = None
    ) -> Params:
        """Adapted parameters for one task's support set (no meta-gradient is kept)."""
        with torch.no_grad():
            fast = adapt(
                self.model,
                self.params,
                x,
                y,
                loss_fn=LOSSES[self.task_kind],
                steps=self.inner_steps if steps is None else steps,
                lr=self.learning_rate(lr),
                adapt_names=self.adapt_names,
                first_order=True,
                eager=True,
            )
        return {k: v.detach() for k, v in fast.items()}

    def predict(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Raw network outputs (regression values or class logits) for ``x``."""
        with torch.inference_mode():
            return forward(self.model, params, x)


def load_artifact(directory: Path | str, device: torch.device | str = "cpu") -> Artifact:
    """Load and validate an artifact; raise :class:`ArtifactError` saying what is wrong."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        weights = (directory / WEIGHTS).read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"{directory}: missing {Path(exc.filename).name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{directory}: {MANIFEST} is not valid JSON ({exc})") from None
    _validate_manifest(directory, manifest)
    if content_hash(weights, manifest) != manifest["content_hash"]:
        raise ArtifactError(
            f"{directory}: content hash mismatch: the weights or the manifest "
            "were changed or corrupted after the artifact was written"
        )
    try:
        tensors = load(weights)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{directory}: {WEIGHTS} is unreadable ({exc})") from None
    try:
        model = build_network(manifest["architecture"])
    except (ValueError, TypeError) as exc:
        raise ArtifactError(f"{directory}: bad architecture: {exc}") from None
    model.to(device).eval()
    expected = {k: v for k, v in model.named_parameters()}
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
    _validate_lrs(directory, manifest["inner_loop"], params, lrs)
    for p in model.parameters():
        p.requires_grad_(False)
    params = {k: v.to(device) for k, v in params.items()}
    lrs = {k: v.to(device) for k, v in lrs.items()}
    return Artifact(directory, manifest, model, params, lrs)


def _validate_manifest(directory: Path, m: Any) -> None:
    if not isinstance(m, dict):
        raise ArtifactError(f"{directory}: manifest must be a JSON object")
    for key, kind in _REQUIRED.items():
        if key not in m:
            raise ArtifactError(f"{directory}: manifest lacks required field {key!r}")
        if not isinstance(m[key], kind) or (kind is int and isinstance(m[key], bool)):
            raise ArtifactError(f"{directory}: manifest field {key!r} has the wrong type")
    if m["schema_version"] != SCHEMA_VERSION:
        raise ArtifactError(
            f"{directory}: schema_version {m['schema_version']} is not supported "
            f"(this meta_core reads {SCHEMA_VERSION})"
        )
    if m["task_kind"] not in TASK_KINDS:
        raise ArtifactError(f"{directory}: task_kind must be one of {TASK_KINDS}")
    arch = m["architecture"]
    try:
        shape, outputs = input_shape(arch), int(arch["out_features"])
    except (KeyError, TypeError, ValueError):
        raise ArtifactError(f"{directory}: architecture spec is incomplete: {arch}") from None
    if m["input_shape"] != shape or m["n_outputs"] != outputs:
        raise ArtifactError(
            f"{directory}: input_shape/n_outputs {m['input_shape']}/"
            f"{m['n_outputs']} disagree with the architecture {shape}/{outputs}"
        )
    inner = m["inner_loop"]
    steps, lr = inner.get("steps"), inner.get("lr")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ArtifactError(f"{directory}: inner_loop.steps must be a non-negative integer")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
        raise ArtifactError(f"{directory}: inner_loop.lr must be a positive number")
    if inner.get("learned_lr") not in LEARNED_LR:
        raise ArtifactError(f"{directory}: inner_loop.learned_lr must be one of {LEARNED_LR}")
    if inner.get("adapt") not in ADAPT:
        raise ArtifactError(f"{directory}: inner_loop.adapt must be one of {ADAPT}")


def _validate_lrs(directory: Path, inner: dict[str, Any], params: Params, lrs: Params) -> None:
    names = list(head_names(params)) if inner["adapt"] == "head" else list(params)
    if inner["learned_lr"] == "none":
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
