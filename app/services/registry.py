"""The meta-models the service serves: every artifact under MODEL_DIR (the image's) and
TRAINED_MODEL_DIR (trained since), loaded at start and reloaded while it runs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from app.core.errors import InvalidInput, NotFound
from meta_core.artifact import Artifact, load_artifact, version_key

log = logging.getLogger(__name__)


@dataclass
class Reload:
    """What one scan of the model folders changed."""

    added: list[str] = field(default_factory=list)  # "name version (path)"
    removed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "path: why"


class MetaModelRegistry:
    """Every version of every meta-model in the model folders; a name's default is its newest
    version, which new tasks get unless they name one. A task keeps the version it was
    adapted from (prediction.load_adapted).

    :meth:`reload` scans the folders again (every MODEL_POLL_SECONDS, on an announcement, or
    at the operator's ``python -m app models reload``): a new artifact is loaded and served; an
    invalid one is refused with a log line and never replaces what is served; a version
    already served keeps its artifact (a version is immutable: another artifact under the
    same name and version, or its own folder changed in place, is refused); an artifact whose
    folder is gone stops being served. Folders whose names start with "." are skipped: copy an
    artifact in under such a name, then rename it into place."""

    def __init__(self, artifacts: list[Artifact], folders: list[Path] | None = None) -> None:
        self.folders = folders or []
        self._lock = threading.Lock()  # one reload at a time
        self._seen: dict[Path, tuple[tuple[int, int], Artifact | None]] = {}
        self.versions: dict[str, dict[str, Artifact]] = {}
        self.meta_models: dict[str, Artifact] = {}
        self._serve(artifacts)

    def _serve(self, artifacts: list[Artifact]) -> list[Artifact]:
        """Serve these artifacts; those refused as a second artifact of a served version."""
        versions: dict[str, dict[str, Artifact]] = {}
        refused = []
        for art in artifacts:
            served = versions.setdefault(art.name, {})
            other = served.get(art.version)
            if other is None:
                served[art.version] = art
            elif other.manifest.content_hash != art.manifest.content_hash:
                refused.append(art)
        defaults = {  # each name's default: its newest version
            name: served[max(served, key=version_key)] for name, served in versions.items()
        }
        self.versions, self.meta_models = versions, defaults
        return refused

    @classmethod
    def load(cls, *folders: Path | None) -> MetaModelRegistry:
        """Every artifact in the folders (the first must exist); invalid ones are refused
        with a log line, as in :meth:`reload`."""
        found = [f for f in folders if f is not None]
        if not found or not found[0].is_dir():
            raise RuntimeError(f"MODEL_DIR {found[0] if found else None} is not a directory")
        registry = cls([], found)
        registry.reload()
        return registry

    def reload(self) -> Reload:
        """Scan the folders again; what changed (each change is logged)."""
        with self._lock:
            return self._reload()

    def _reload(self) -> Reload:
        """Scan the folders, serve what may be served (a version served already keeps its
        artifact: a newcomer under the same name and version is refused), report what
        changed."""
        report = Reload()
        before = self._served()
        current = self._scan(report)
        ordered = sorted(current, key=lambda a: _key(a) not in before)  # served ones first
        for art in self._serve(ordered):
            self._refuse(
                report,
                f"{art.path}: {art.name!r} version {art.version} is already served from "
                f"another artifact ({self.versions[art.name][art.version].path}); a version "
                "is immutable: write a new version instead",
            )
        after = self._served()
        for key in after.keys() - before.keys():
            report.added.append(f"{key[0]} {key[1]} ({after[key].path})")
            log.info("serving meta-model %s %s from %s", key[0], key[1], after[key].path)
        for key in before.keys() - after.keys():
            report.removed.append(f"{key[0]} {key[1]} ({before[key].path})")
            log.warning("no longer serving meta-model %s %s: its folder is gone", *key[:2])
        return report

    def _scan(self, report: Reload) -> list[Artifact]:
        """The artifact to serve from each folder holding a manifest (folders whose names
        start with "." are being copied in, and skipped)."""
        paths = sorted(
            p.parent
            for folder in self.folders
            if folder.is_dir()
            for p in folder.glob("*/manifest.json")
            if not p.parent.name.startswith(".")
        )
        for path in set(self._seen) - set(paths):
            del self._seen[path]
        found = (self._examine(path, report) for path in paths)
        return [art for art in found if art is not None]

    def _examine(self, path: Path, report: Reload) -> Artifact | None:
        """The artifact to serve from ``path``: as loaded before if its files have not
        changed, else loaded again and warmed up. An invalid one, or one changed in place
        under a version it served, is refused, and what it served stays served."""
        try:
            stamp = _stamp(path)
        except OSError:
            return None  # removed while scanning
        seen = self._seen.get(path)
        was = seen[1] if seen is not None else None
        if seen is not None and seen[0] == stamp:
            return was
        try:
            art = load_artifact(path)
            _warm_up(art)
        except Exception as exc:  # any reason: refused, and what is served stays
            self._refuse(report, f"{path}: {exc}")
            self._seen[path] = (stamp, was)
            return was
        if (
            was is not None
            and (was.name, was.version) == (art.name, art.version)
            and was.manifest.content_hash != art.manifest.content_hash
        ):
            self._refuse(
                report,
                f"{path}: changed in place, but {art.name!r} version {art.version} is already "
                "served from it; a version is immutable: write a new version (its own "
                "folder) instead",
            )
            self._seen[path] = (stamp, was)
            return was
        self._seen[path] = (stamp, art)
        return art

    def _served(self) -> dict[tuple[str, str, str], Artifact]:
        return {_key(a): a for served in self.versions.values() for a in served.values()}

    @staticmethod
    def _refuse(report: Reload, why: str) -> None:
        report.refused.append(why)
        log.error("meta-model refused, not served: %s", why)

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


def _stamp(path: Path) -> tuple[int, int]:
    """When the artifact's files last changed: (manifest, weights) modification times. An
    artifact is written weights first, manifest last (meta_core.artifact.save_artifact)."""
    return (path / "manifest.json").stat().st_mtime_ns, (
        path / "weights.safetensors"
    ).stat().st_mtime_ns


def _key(art: Artifact) -> tuple[str, str, str]:
    return art.name, art.version, art.manifest.content_hash


def _warm_up(art: Artifact) -> None:
    """One adaptation at load, so the first client request does not pay torch's set-up, and
    the inner loop's memory per row measured (:attr:`Artifact.adapt_memory`), so that no
    request's cost check measures it on the event loop."""
    art.adapt_memory  # noqa: B018  (a cached property: measured here, once)
    x = torch.zeros(2, *art.input_shape)
    if art.task_kind == "classification":
        y = torch.zeros(2, dtype=torch.long)
    else:  # a policy's rows are an action and its weight
        y = torch.zeros(2, art.n_outputs + (art.task_kind == "policy"))
    art.predictor(art.adapt(x, y, steps=1))(x.numpy())
