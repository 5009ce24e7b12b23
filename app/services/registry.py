"""The meta-models the service serves: every artifact under MODEL_DIR, loaded once at start."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from app.core.errors import InvalidInput
from meta_core.artifact import Artifact, load_artifact

log = logging.getLogger(__name__)


class ModelRegistry:
    def __init__(self, models: dict[str, Artifact]) -> None:
        self.models = models

    @classmethod
    def load(cls, model_dir: Path) -> ModelRegistry:
        """Load every artifact directory; an invalid artifact stops the start (loudly)."""
        if not model_dir.is_dir():
            raise RuntimeError(f"MODEL_DIR {model_dir} is not a directory")
        models = {}
        for path in sorted(p.parent for p in model_dir.glob("*/manifest.json")):
            art = load_artifact(path)
            if art.name in models:
                raise RuntimeError(f"two artifacts named {art.name!r} in {model_dir}")
            models[art.name] = art
            _warm_up(art)
            log.info("loaded model %s %s from %s", art.name, art.version, path)
        return cls(models)

    def get(self, name: str) -> Artifact:
        try:
            return self.models[name]
        except KeyError:
            raise InvalidInput(
                f"unknown model {name!r}; available: {sorted(self.models)}"
            ) from None


def _warm_up(art: Artifact) -> None:
    """One adaptation at start, so the first client request does not pay torch.func's set-up."""
    x = torch.zeros(2, *art.input_shape)
    y = (
        torch.zeros(2, dtype=torch.long)
        if art.task_kind == "classification"
        else torch.zeros(2, art.n_outputs)
    )
    art.predict(art.adapt(x, y, steps=1), x)
