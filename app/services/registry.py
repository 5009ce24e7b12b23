"""The meta-models the service serves: every artifact under MODEL_DIR, loaded once at start."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from app.core.errors import InvalidInput, NotFound
from meta_core.artifact import Artifact, load_artifact, version_key

log = logging.getLogger(__name__)


class MetaModelRegistry:
    """Every version of every meta-model under MODEL_DIR; a name's default is its newest
    version, which new tasks get unless they name one. A task keeps the version it was
    adapted from (tasks.load_adapted)."""

    def __init__(self, artifacts: list[Artifact]) -> None:
        self.versions: dict[str, dict[str, Artifact]] = {}
        for art in artifacts:
            served = self.versions.setdefault(art.name, {})
            if art.version in served:
                raise RuntimeError(f"two artifacts of {art.name!r} version {art.version}")
            served[art.version] = art
        self.meta_models = {  # each name's default: its newest version
            name: served[max(served, key=version_key)] for name, served in self.versions.items()
        }

    @classmethod
    def load(cls, model_dir: Path) -> MetaModelRegistry:
        """Load every artifact directory; an invalid artifact stops the start (loudly)."""
        if not model_dir.is_dir():
            raise RuntimeError(f"MODEL_DIR {model_dir} is not a directory")
        found = []
        for path in sorted(p.parent for p in model_dir.glob("*/manifest.json")):
            art = load_artifact(path)
            _warm_up(art)
            found.append(art)
            log.info("loaded meta-model %s %s from %s", art.name, art.version, path)
        return cls(found)

    @property
    def names(self) -> list[str]:
        return sorted(self.meta_models)

    def version_names(self, name: str) -> list[str]:
        """The versions of ``name`` served, oldest first."""
        return sorted(self.versions.get(name, {}), key=version_key)

    def for_new_task(self, name: str, version: str | None = None) -> Artifact:
        """The meta-model a new task names, its default version unless it names one (422 if
        there is none: it is the body's fault)."""
        if name not in self.meta_models:
            raise InvalidInput(f"unknown model {name!r}; available: {self.names}")
        if version is None:
            return self.meta_models[name]
        try:
            return self.versions[name][version]
        except KeyError:
            raise InvalidInput(
                f"model {name!r} has no version {version!r}; served: {self.version_names(name)}"
            ) from None

    def exact(self, name: str, version: str) -> Artifact | None:
        """The artifact of exactly this name and version, if served."""
        return self.versions.get(name, {}).get(version)

    def get(self, name: str) -> Artifact:
        """The meta-model at ``/models/{name}``: its default version (404 if there is none)."""
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
