"""Meta-model artifacts for tests: another version of a shipped one, as retraining gives, and a
small audio meta-model made on the spot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load, save

from meta_core.artifact import (
    MANIFEST,
    WEIGHTS,
    InnerLoopSpec,
    TrainingRecord,
    content_hash,
    save_artifact,
)
from meta_core.config import load_config
from meta_core.networks import Conv4Spec, build_network
from meta_core.preprocessing import AudioPreprocessing


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


# A small speech-like preprocessing, so that audio tests run fast: half a second at 16 kHz,
# 16 mel bands every 256 samples (a 16 x 32 spectrogram), standardized.
TONES = AudioPreprocessing(duration=0.5, n_mels=16, n_fft=512, hop=256, mean=-0.3, std=2.9)


def audio_meta_model(
    directory: Path,
    *,
    name: str = "tones",
    version: str = "1.0.0",
    ways: int = 3,
    spec: AudioPreprocessing = TONES,
    hidden: int = 8,
    seed: int = 0,
) -> Path:
    """An audio classification artifact at ``directory``: a Conv4 of ``hidden`` channels over
    ``spec``'s spectrograms with fresh (not meta-trained) weights from ``seed``, adapted whole
    by 5 steps at lr 0.1."""
    _, n_mels, frames = spec.input_shape
    arch = Conv4Spec(
        in_channels=1, image_size=n_mels, image_width=frames, hidden=hidden, out_features=ways
    )
    torch.manual_seed(seed)
    net = build_network(arch)
    return save_artifact(
        directory,
        name=name,
        version=version,
        architecture=arch,
        task_kind="classification",
        params=dict(net.named_parameters()),
        lrs={},
        inner_loop=InnerLoopSpec(steps=5, lr=0.1),
        preprocessing=spec,
        # A record is required; this one says only that the weights are not meta-trained.
        training=TrainingRecord(config=load_config("sinusoid"), iterations_done=0),
    )
