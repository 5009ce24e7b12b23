"""The networks meta_core trains: an MLP and Conv4, built from a plain architecture spec.

The spec is a JSON-able dict stored in every artifact's manifest, so a loader rebuilds the exact
module. Parameters of the final layer live under ``head.``; everything else under ``body.``,
which is how ANIL tells the shared body from the adapted head.

Normalization in Conv4 is ``GroupNorm(1, C)`` (layer norm over C x H x W with a per-channel
affine): its statistics are computed per example, so a row's prediction never depends on the
other rows sent with it, at training and at prediction time alike (no transductive batch norm).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ArchSpec = dict[str, Any]


class MLP(nn.Module):
    """Fully connected ReLU network: in -> hidden... -> out (W1 uses 1 -> 40 -> 40 -> 1)."""

    def __init__(self, in_features: int, hidden: list[int], out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class Conv4(nn.Module):
    """4 x [conv 3x3 (padding 1), GroupNorm(1, C), ReLU, max-pool 2], then a linear head."""

    def __init__(
        self, in_channels: int, image_size: int, hidden: int, out_features: int, norm: str
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(4):
            blocks += [nn.Conv2d(channels, hidden, 3, padding=1)]
            if norm == "layer":
                blocks += [nn.GroupNorm(1, hidden)]
            elif norm != "none":
                raise ValueError(f"unknown norm {norm!r}: use 'layer' or 'none'")
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
            channels, size = hidden, size // 2
        blocks.append(nn.Flatten())
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden * size * size, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


_FIELDS = {
    "mlp": ("in_features", "hidden", "out_features"),
    "conv4": ("in_channels", "image_size", "hidden", "out_features", "norm"),
}


def build_network(spec: ArchSpec) -> nn.Module:
    """Build the module an architecture spec describes; refuse unknown or missing fields."""
    kind = spec.get("type")
    if kind not in _FIELDS:
        raise ValueError(f"unknown architecture type {kind!r}: use 'mlp' or 'conv4'")
    fields = _FIELDS[kind]
    missing = [f for f in fields if f not in spec]
    if missing:
        raise ValueError(f"architecture {kind!r} needs field {missing[0]!r}")
    unknown = sorted(set(spec) - set(fields) - {"type"})
    if unknown:
        raise ValueError(f"architecture {kind!r} has unknown fields {unknown}")
    if kind == "mlp":
        return MLP(
            int(spec["in_features"]), [int(h) for h in spec["hidden"]], int(spec["out_features"])
        )
    return Conv4(
        int(spec["in_channels"]),
        int(spec["image_size"]),
        int(spec["hidden"]),
        int(spec["out_features"]),
        str(spec["norm"]),
    )


def input_shape(spec: ArchSpec) -> list[int]:
    """The shape of one input row the network expects."""
    if spec["type"] == "mlp":
        return [int(spec["in_features"])]
    return [int(spec["in_channels"]), int(spec["image_size"]), int(spec["image_size"])]


def head_names(params: dict[str, torch.Tensor]) -> list[str]:
    """Names of the final layer's parameters (the part ANIL adapts)."""
    return [name for name in params if name.startswith("head.")]
