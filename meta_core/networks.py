"""The networks meta_core trains: an MLP and Conv4, built from a typed architecture spec.

The spec is stored in every artifact's manifest, so a loader rebuilds the exact module.
Parameters of the final layer live under ``head.``; everything else under ``body.``, which is
how ANIL tells the shared body from the adapted head.

Normalization in Conv4 is ``GroupNorm(1, C)`` (layer norm over C x H x W with a per-channel
affine): its statistics are computed per example, so a row's prediction never depends on the
other rows sent with it, at training and at prediction time alike (no transductive batch norm).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Annotated, Any, Literal, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from torch import nn
from torch.nn import functional as F

Norm = Literal["layer", "none"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MLPSpec(_Spec):
    """in -> hidden... -> out, ReLU between layers. With ``skip``, the head sees the input
    beside the last hidden layer (their concatenation): on a pretrained encoder's features,
    the meta-learned layers add to those features instead of replacing them."""

    type: Literal["mlp"] = "mlp"
    in_features: int = Field(ge=1)
    hidden: list[int]
    out_features: int = Field(ge=1)
    skip: bool = False

    @property
    def input_shape(self) -> list[int]:
        return [self.in_features]

    @property
    def flops(self) -> int:
        """Floating-point operations of one example's forward pass (a multiply-add is 2)."""
        widths = [self.in_features, *self.hidden]
        body = sum(2 * a * b + b for a, b in zip(widths, widths[1:], strict=False))
        last = widths[-1] + (self.in_features if self.skip and self.hidden else 0)
        return body + 2 * last * self.out_features + self.out_features


class Conv4Spec(_Spec):
    """4 x [conv 3x3, norm, ReLU, max-pool 2], then linear."""

    type: Literal["conv4"] = "conv4"
    in_channels: int = Field(ge=1)
    image_size: int = Field(ge=16)  # the height, and the width unless image_width says
    hidden: int = Field(ge=1)
    out_features: int = Field(ge=1)
    norm: Norm = "layer"
    # A wider than tall input (a spectrogram: mel bands x frames); None: square.
    image_width: int | None = Field(None, ge=16)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of one input."""
        return self.image_size, self.image_width or self.image_size

    @property
    def input_shape(self) -> list[int]:
        return [self.in_channels, *self.size]

    @property
    def flops(self) -> int:
        """Floating-point operations of one example's forward pass (a multiply-add is 2):
        the 3x3 convolutions, then the head; norms, ReLUs and pooling add a few per value."""
        total, channels, (height, width) = 0, self.in_channels, self.size
        for _ in range(4):
            total += (2 * 9 * channels + 8) * self.hidden * height * width
            channels, height, width = self.hidden, height // 2, width // 2
        return total + 2 * self.hidden * height * width * self.out_features


class GaussianMLPSpec(_Spec):
    """A Gaussian policy (Finn et al. 2017, section 5.3): observations -> hidden... (tanh) ->
    the action's mean, with a state-independent log standard deviation per action dimension
    (a parameter, ``log_std``, adapted with the rest). ``out_features`` is the action's size;
    the network's output is the mean and the log std side by side (``2 x out_features``)."""

    type: Literal["gaussian_mlp"] = "gaussian_mlp"
    in_features: int = Field(ge=1)
    hidden: list[int]
    out_features: int = Field(ge=1)
    init_log_std: float = 0.0

    @property
    def input_shape(self) -> list[int]:
        return [self.in_features]

    @property
    def flops(self) -> int:
        """Floating-point operations of one observation's forward pass (tanh counted as 1)."""
        widths = [self.in_features, *self.hidden, self.out_features]
        return sum(2 * a * b + 2 * b for a, b in zip(widths, widths[1:], strict=False))


AnySpec = MLPSpec | Conv4Spec | GaussianMLPSpec
ArchSpec = Annotated[AnySpec, Field(discriminator="type")]
_ARCH: TypeAdapter[AnySpec] = TypeAdapter(ArchSpec)


def parse_architecture(data: Any) -> AnySpec:
    """A spec from its JSON form, or a ``ValueError`` naming the first problem."""
    if isinstance(data, MLPSpec | Conv4Spec | GaussianMLPSpec):
        return data
    try:
        return _ARCH.validate_python(data)
    except ValidationError as exc:
        raise ValueError(f"bad architecture: {first_error(exc)}") from None


def first_error(exc: ValidationError) -> str:
    """``field.path: message`` of a validation error's first problem."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


class MLP(nn.Module):
    """Fully connected ReLU network: in -> hidden... -> out (W1 uses 1 -> 40 -> 40 -> 1).

    :meth:`forward` is the network's one definition in torch; :func:`predictor` mirrors it in
    NumPy for serving (tested equal). It calls the functional ops on the layers' parameters
    (which ``functional_call`` swaps as usual) instead of a module call per layer, whose
    overhead is most of the time on a small batch (docs/benchmarks.md, "The predict path
    against its floor")."""

    def __init__(
        self, in_features: int, hidden: list[int], out_features: int, skip: bool = False
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        # Keyed 0, 2, 4...: the parameter names every artifact carries (body.0.weight,
        # body.2.weight...), given when a ReLU module sat between the layers.
        self.body = nn.ModuleDict(
            {str(2 * i): nn.Linear(a, b) for i, (a, b) in enumerate(pairwise(widths))}
        )
        self.skip = skip and bool(hidden)
        self.head = nn.Linear(widths[-1] + (in_features if self.skip else 0), out_features)

    @property
    def hidden_layers(self) -> Iterable[nn.Linear]:
        """The hidden layers in order, each followed by a ReLU."""
        return cast("Iterable[nn.Linear]", self.body.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.hidden_layers:
            h = torch.relu(F.linear(h, layer.weight, layer.bias))
        if self.skip:
            h = torch.cat([x, h], dim=-1)
        return F.linear(h, self.head.weight, self.head.bias)


class Conv4(nn.Module):
    """4 x [conv 3x3 (padding 1), GroupNorm(1, C), ReLU, max-pool 2], then a linear head."""

    def __init__(
        self,
        in_channels: int,
        image_size: int | tuple[int, int],
        hidden: int,
        out_features: int,
        norm: Norm,
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        channels = in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(channels, hidden, 3, padding=1)]
            if norm == "layer":
                blocks += [nn.GroupNorm(1, hidden)]
            blocks += [nn.ReLU(), nn.MaxPool2d(2)]
            channels, height, width = hidden, height // 2, width // 2
        blocks.append(nn.Flatten())
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(hidden * height * width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


class GaussianMLP(nn.Module):
    """A Gaussian policy's network: tanh hidden layers, a linear head for the action's mean,
    and ``log_std`` (one per action dimension). ``forward`` gives ``[..., 2 x actions]``: the
    mean, then the log std broadcast to each row, so the inner loop's loss
    (:func:`meta_core.inner_loop.policy_gradient_loss`) and the service both read the whole
    distribution from one output."""

    def __init__(
        self, in_features: int, hidden: list[int], out_features: int, init_log_std: float = 0.0
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden]
        self.body = nn.ModuleDict(
            {str(2 * i): nn.Linear(a, b) for i, (a, b) in enumerate(pairwise(widths))}
        )
        self.head = nn.Linear(widths[-1], out_features)
        self.log_std = nn.Parameter(torch.full((out_features,), float(init_log_std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in cast("Iterable[nn.Linear]", self.body.values()):
            h = torch.tanh(F.linear(h, layer.weight, layer.bias))
        mean = F.linear(h, self.head.weight, self.head.bias)
        return torch.cat([mean, self.log_std.expand_as(mean)], dim=-1)


Predictor = Callable[[np.ndarray], np.ndarray]


PREDICT_CHUNK = 64  # rows a non-MLP predictor runs at once


def predictor(module: nn.Module) -> Predictor:
    """``module``'s forward as a function of float32 arrays, for serving: an MLP runs in NumPy
    on copies of its weights (on a few rows, torch's per-operator dispatch costs several times
    the arithmetic; docs/architecture.md, "The predict path"); any other network runs, in chunks, as
    the module itself, under ``inference_mode``. Both agree with ``module(x)`` to float32
    rounding (tested)."""
    if isinstance(module, MLP):
        layers = [
            (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
            for layer in (*module.hidden_layers, module.head)
        ]
        *hidden, (w_out, b_out) = layers
        skip = module.skip

        def mlp(x: np.ndarray) -> np.ndarray:
            # np.dot, not @: on a few rows its dispatch is the cheaper (about 1.1 against 1.4 us)
            # Overflow gives inf and NaN, as torch does, for the caller to check, unwarned.
            with np.errstate(over="ignore", invalid="ignore"):
                h = x
                for w, b in hidden:
                    h = np.dot(h, w)  # a new array: the caller's is never written
                    h += b
                    np.maximum(h, 0, out=h)
                if skip:
                    h = np.concatenate([x, h], axis=-1)
                out: np.ndarray = np.dot(h, w_out) + b_out
            return out

        return mlp

    def run(x: np.ndarray) -> np.ndarray:
        # In chunks: rows are independent, and a whole request's activations at once would
        # need memory in proportion to its rows (about 0.4 MiB a row for Conv4 on 28x28).
        with torch.inference_mode():
            chunks = [
                module(torch.from_numpy(x[i : i + PREDICT_CHUNK])).numpy()
                for i in range(0, max(len(x), 1), PREDICT_CHUNK)
            ]
        out: np.ndarray = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        return out

    return run


def build_network(spec: AnySpec | dict[str, Any]) -> nn.Module:
    """Build the module an architecture spec describes; refuse unknown or missing fields."""
    spec = parse_architecture(spec)
    if isinstance(spec, MLPSpec):
        return MLP(spec.in_features, list(spec.hidden), spec.out_features, spec.skip)
    if isinstance(spec, GaussianMLPSpec):
        return GaussianMLP(
            spec.in_features, list(spec.hidden), spec.out_features, spec.init_log_std
        )
    return Conv4(spec.in_channels, spec.size, spec.hidden, spec.out_features, spec.norm)


def head_names(params: dict[str, torch.Tensor]) -> list[str]:
    """Names of the final layer's parameters (the part ANIL adapts)."""
    return [name for name in params if name.startswith("head.")]
