"""N-way K-shot tasks over a user's recordings (:mod:`meta_core.data.folders` reads them):
spoken keywords, commands, sounds.

The preprocessing (rate, duration and how a clip is fitted to it, the log-mel spectrogram,
and the train split's mean and std) is recorded in the artifact's manifest, and the service
applies it to uploaded WAV or FLAC files; the class split is recorded in the training
record. Augmentation (time shift, noise, SpecAugment masks) applies to meta-training's
sampled clips only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from meta_core.config import AudioAugment, AudioFolderFamily
from meta_core.data.folders import HELD_OUT, load_folders
from meta_core.preprocessing import AudioPreprocessing
from meta_core.tasks.nway import NWayKShot


def audio_spec(cfg: AudioFolderFamily) -> AudioPreprocessing:
    """The family's preprocessing, before the train split's statistics are known."""
    return AudioPreprocessing(
        sample_rate=cfg.sample_rate,
        duration=cfg.duration,
        fit=cfg.fit,
        min_duration=cfg.min_duration,
        n_fft=round(cfg.window_ms * cfg.sample_rate / 1000),
        hop=round(cfg.hop_ms * cfg.sample_rate / 1000),
        n_mels=cfg.n_mels,
        f_min=cfg.f_min,
        f_max=cfg.f_max or None,
        floor=cfg.floor,
    )


@dataclass(frozen=True)
class SpecAugment:
    """:class:`~meta_core.config.AudioAugment` on a batch of spectrograms ``[..., 1, mels,
    frames]``, each example drawn its own shift, noise and masks from the generator."""

    cfg: AudioAugment

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-2], shape[-1])  # [n, mels, frames]
        n, mels, frames = flat.shape

        def draw(high: int) -> Tensor:  # [n] integers in [0, high)
            return (torch.rand(n, generator=generator) * high).long().to(x.device)

        if self.cfg.shift:
            most = int(self.cfg.shift * frames)
            offsets = draw(2 * most + 1) - most
            index = (torch.arange(frames, device=x.device) - offsets[:, None]) % frames
            flat = flat.gather(2, index[:, None, :].expand(n, mels, frames))
        if self.cfg.noise:
            noise = torch.randn(flat.shape, generator=generator).to(x.device)
            flat = flat + self.cfg.noise * noise
        for count, width, axis, size in (
            (self.cfg.time_masks, self.cfg.time_mask, 2, frames),
            (self.cfg.freq_masks, self.cfg.freq_mask, 1, mels),
        ):
            positions = torch.arange(size, device=x.device)[None]
            for _ in range(count):
                lengths = draw(min(width, size) + 1)
                room = (size - lengths + 1).float()
                starts = (torch.rand(n, generator=generator).to(x.device) * room).long()
                mask = (positions >= starts[:, None]) & (positions < (starts + lengths)[:, None])
                mask = mask[:, None, :] if axis == 2 else mask[:, :, None]
                flat = flat.masked_fill(mask, 0.0)
        return flat.reshape(shape)


def audio_folder_family(cfg: AudioFolderFamily) -> NWayKShot:
    spec = audio_spec(cfg)
    root = Path(cfg.root)
    data = load_folders(
        root,
        spec,
        ways=cfg.ways,
        needed=cfg.shots + cfg.queries,
        fractions=cfg.split,
        seed=cfg.split_seed,
        held_out=cfg.held_out,
    )
    pools = data.pools
    if cfg.normalize:  # one mean and std, the train split's, recorded for the service
        mean = round(float(pools["train"].mean()), 6)
        std = round(max(float(pools["train"].std()), 1e-3), 6)
        spec = spec.model_copy(update={"mean": mean, "std": std})
        pools = {s: (p - mean) / std for s, p in pools.items()}
    return NWayKShot(
        pools,
        ways=cfg.ways,
        shots=cfg.shots,
        queries=cfg.queries,
        name="audio_folder",
        preprocessing=spec,
        augment=SpecAugment(cfg.augment) if cfg.augment.active else None,
        details={
            "root": str(root),
            "grouped": data.grouped,
            "split_seed": cfg.split_seed,
            "split": data.classes,  # class names per split: never a clip in two
            "held_out": {
                "patterns": cfg.held_out,
                "clips_per_class": int(pools[HELD_OUT].shape[1]) if HELD_OUT in pools else 0,
            },
        },
    )


__all__ = ["SpecAugment", "audio_folder_family", "audio_spec"]
