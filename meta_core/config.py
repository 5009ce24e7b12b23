"""Training configuration: small TOML presets read into typed dataclasses.

Every field can be overridden on the command line with ``--set section.field=value`` (the value
is read as TOML, falling back to a plain string), e.g. ``--set train.iterations=500``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"
ALGORITHMS = ("maml", "anil", "metasgd")


@dataclass
class AlgorithmConfig:
    """Which meta-learner: MAML (second or first order), ANIL or Meta-SGD, with MAML++ options."""

    name: str = "maml"
    first_order: bool = False
    inner_steps: int = 1
    inner_lr: float = 0.01
    lslr: bool = False  # MAML++: a learned lr per parameter tensor and inner step
    multi_step_loss: bool = False  # MAML++: query loss after every step, annealed weights
    msl_iterations: int = 10_000  # iterations over which the multi-step weights anneal


@dataclass
class TrainConfig:
    iterations: int = 70_000
    meta_batch: int = 25
    outer_lr: float = 1e-3
    cosine: bool = False  # MAML++: cosine annealing of the outer lr down to min_outer_lr
    min_outer_lr: float = 1e-5
    grad_clip: float = 10.0  # max global norm of the meta-gradient (0 = off)
    val_every: int = 1000
    val_tasks: int = 200
    checkpoint_every: int = 1000
    log_every: int = 100
    seed: int = 0
    # Warm start: begin from this artifact's meta-parameters (same architecture) instead of a
    # random initialization, with a fresh optimizer and schedule (a new cosine cycle).
    init_from: str = ""
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False  # bf16 autocast on CUDA
    strategy: str = "auto"  # auto | vmap | loop (how a meta-batch is executed)
    compile: bool = False  # torch.compile the meta-loss (and so its backward): W1 ~3x faster
    threads: int = 0  # torch CPU threads (0 = torch's default)
    max_seconds: float = 0.0  # stop after this wall time (0 = no limit), keeping the best


@dataclass
class EvalConfig:
    tasks: int = 600
    steps: list[int] = field(default_factory=lambda: [0, 1, 5, 10])
    inner_lr: float = 0.0  # 0 = the artifact's own inner-loop lr
    shots: list[int] = field(default_factory=list)  # empty = the trained shots
    seed: int = 20170717
    chunk: int = 100  # at most this many tasks (and ~8,000 examples) evaluated together
    baselines: list[str] = field(default_factory=lambda: ["pretrained", "random"])
    baseline_iterations: int = 5000


@dataclass
class Config:
    name: str
    family: dict[str, Any]
    model: dict[str, Any]
    version: str = "1.0.0"
    description: str = ""
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = dict(data)
        sections = {"algorithm": AlgorithmConfig, "train": TrainConfig, "eval": EvalConfig}
        kwargs: dict[str, Any] = {}
        for key, kind in sections.items():
            kwargs[key] = typed_section(kind, data.pop(key, {}), key)
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        cfg = cls(**data, **kwargs)
        if cfg.algorithm.name not in ALGORITHMS:
            raise ValueError(f"algorithm.name must be one of {ALGORITHMS}")
        if cfg.train.strategy not in ("auto", "vmap", "loop"):
            raise ValueError("train.strategy must be auto, vmap or loop")
        return cfg


def typed_section(kind: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown fields in [{section}]: {sorted(unknown)}")
    out = {}
    for key, value in values.items():
        default = getattr(kind(), key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{section}.{key} must be true or false")
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        out[key] = value
    return kind(**out)


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = PRESET_DIR / f"{name}.toml"
    if not candidate.exists():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
        raise FileNotFoundError(f"no preset {name!r}; known presets: {known}")
    return candidate


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.iterations=500"`` -> (["train", "iterations"], 500)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def load_config(preset: str, overrides: list[str] | None = None) -> Config:
    """A preset with command-line overrides applied."""
    data = tomllib.loads(preset_path(preset).read_text())
    for text in overrides or []:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return Config.from_dict(data)
