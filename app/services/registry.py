"""The meta-models the service serves: every artifact under MODEL_DIR, loaded once at start."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from app.core.errors import InvalidInput, NotFound
from meta_core.artifact import Artifact, load_artifact

log = logging.getLogger(__name__)


class MetaModelRegistry:
    def __init__(self, meta_models: dict[str, Artifact]) -> None:
        self.meta_models = meta_models

    @classmethod
    def load(cls, model_dir: Path) -> MetaModelRegistry:
        """Load every artifact directory; an invalid artifact stops the start (loudly)."""
        if not model_dir.is_dir():
            raise RuntimeError(f"MODEL_DIR {model_dir} is not a directory")
        found: dict[str, Artifact] = {}
        for path in sorted(p.parent for p in model_dir.glob("*/manifest.json")):
            art = load_artifact(path)
            if art.name in found:
                raise RuntimeError(f"two artifacts named {art.name!r} in {model_dir}")
            found[art.name] = art
            _warm_up(art)
            log.info("loaded meta-model %s %s from %s", art.name, art.version, path)
        return cls(found)

    @property
    def names(self) -> list[str]:
        return sorted(self.meta_models)

    def for_new_task(self, name: str) -> Artifact:
        """The meta-model a new task names (422 if there is none: it is the body's fault)."""
        try:
            return self.meta_models[name]
        except KeyError:
            raise InvalidInput(f"unknown model {name!r}; available: {self.names}") from None

    def get(self, name: str) -> Artifact:
        """The meta-model at ``/models/{name}`` (404 if there is none)."""
        try:
            return self.meta_models[name]
        except KeyError:
            raise NotFound(f"no model {name!r}") from None


def _warm_up(art: Artifact) -> None:
    """One adaptation at start, so the first client request does not pay torch's set-up."""
    x = torch.zeros(2, *art.input_shape)
    y = (
        torch.zeros(2, dtype=torch.long)
        if art.task_kind == "classification"
        else torch.zeros(2, art.n_outputs)
    )
    art.predictor(art.adapt(x, y, steps=1))(x.numpy())
