"""Meta-model artifacts for tests: another version of a shipped one, as retraining gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors.torch import load, save

from meta_core.artifact import MANIFEST, WEIGHTS, content_hash


def new_version(source: Path, target: Path, version: str, *, nudge: float = 0.0) -> None:
    """A copy of the artifact at ``source`` as another version (its weights nudged, if asked),
    its content hash recomputed, as retraining would give."""
    shutil.copytree(source, target)
    raw = json.loads((target / MANIFEST).read_text())
    raw["version"] = version
    if nudge:
        tensors = {k: v + nudge for k, v in load((target / WEIGHTS).read_bytes()).items()}
        (target / WEIGHTS).write_bytes(save(tensors))
    raw["content_hash"] = content_hash((target / WEIGHTS).read_bytes(), raw)
    (target / MANIFEST).write_text(json.dumps(raw))
