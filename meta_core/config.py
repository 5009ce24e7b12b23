"""Training configuration: small TOML presets read into typed pydantic models.

Every field can be overridden on the command line with ``--set section.field=value`` (the value
is read as TOML, falling back to a plain string), e.g. ``--set train.iterations=500``. The
``[family]`` and ``[model]`` tables are tagged unions: ``family.name`` and ``model.type`` pick
the class that validates the rest of the table.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from meta_core.networks import Conv4Spec, MLPSpec, Norm, first_error

PRESET_DIR = Path(__file__).parent / "presets"
Algorithm = Literal["maml", "anil", "metasgd"]
Strategy = Literal["auto", "vmap", "loop"]
# "pretrained" and "random" adapt a network with the inner loop; "centroid" and "logreg" are
# fitted on a classification task's support rows (meta_core.evaluate); the default is the
# MAML paper's two.
Baseline = Literal["pretrained", "random", "centroid", "logreg"]
BASELINES: tuple[Baseline, ...] = ("pretrained", "random")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlgorithmConfig(Section):
    """Which meta-learner: MAML (second or first order), ANIL or Meta-SGD, with MAML++ options."""

    name: Algorithm = "maml"
    first_order: StrictBool = False
    inner_steps: int = Field(1, ge=1)
    inner_lr: float = Field(0.01, gt=0)
    lslr: StrictBool = False  # MAML++: a learned lr per parameter tensor and inner step
    multi_step_loss: StrictBool = False  # MAML++: query loss after every step, annealed weights
    msl_iterations: int = Field(10_000, ge=1)  # iterations over which those weights anneal
    # MAML++ derivative-order annealing: first order for this many iterations, then second
    # order (0: second order throughout, unless ``first_order``).
    first_order_iterations: int = Field(0, ge=0)
    # The zeroing trick (Kao et al., ICLR 2022): the head starts every task at zero instead of
    # at a meta-learned value, so a task's first inner step makes it a class-mean classifier
    # of the body's features, whatever order the task's labels come in.
    zero_head: StrictBool = False


class TrainConfig(Section):
    iterations: int = Field(70_000, ge=0)
    meta_batch: int = Field(25, ge=1)
    outer_lr: float = Field(1e-3, gt=0)
    cosine: StrictBool = False  # MAML++: cosine annealing of the outer lr down to min_outer_lr
    min_outer_lr: float = Field(1e-5, ge=0)
    grad_clip: float = Field(10.0, ge=0)  # max global norm of the meta-gradient (0 = off)
    val_every: int = Field(1000, ge=1)
    val_tasks: int = Field(200, ge=1)
    checkpoint_every: int = Field(1000, ge=1)
    log_every: int = Field(100, ge=1)
    seed: int = 0
    # Warm start: begin from this artifact's meta-parameters (same architecture) instead of a
    # random initialization, with a fresh optimizer and schedule (a new cosine cycle).
    init_from: str = ""
    device: str = "auto"  # auto | cpu | cuda[:N]
    bf16: StrictBool = False  # bf16 autocast of the meta-step (meant for CUDA)
    strategy: Strategy = "auto"  # how a meta-batch is executed
    compile: StrictBool = False  # torch.compile the meta-loss (and so its backward)
    # torch.compile's mode: "reduce-overhead" captures the static-shape meta-step in CUDA
    # graphs (on CUDA; elsewhere it compiles as "default").
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    fused_adam: StrictBool = False  # Adam's fused kernel (one launch for every parameter)
    # Images and convolution weights in channels-last memory layout (NHWC), for tensor cores;
    # with the per-task loop only (vmap does not support the layout).
    channels_last: StrictBool = False
    threads: int = Field(0, ge=0)  # torch CPU threads (0 = torch's default)
    # Stop this invocation after this wall time (0 = none), keeping the best; --resume
    # continues the schedule in another window.
    max_seconds: float = Field(0.0, ge=0)
    # Stop this invocation at this iteration (0 = run to the end); like max_seconds, a window
    # of a longer schedule, which ``--resume`` continues exactly.
    stop_after: int = Field(0, ge=0)


class EvalConfig(Section):
    tasks: int = Field(600, ge=1)
    steps: list[int] = Field(default_factory=lambda: [0, 1, 5, 10])
    inner_lr: float = Field(0.0, ge=0)  # 0 = the artifact's own inner-loop lr
    shots: list[int] = Field(default_factory=list)  # empty = the trained shots
    # N-way K-shot families only: test tasks of these many classes (at most the model's
    # outputs, of which the first ``ways`` count); empty = the family's own ways.
    ways: list[Annotated[int, Field(ge=2)]] = Field(default_factory=list)
    seed: int = 20170717
    chunk: int = Field(100, ge=1)  # at most this many tasks (and ~8,000 examples) at once
    baselines: list[Baseline] = Field(default_factory=lambda: list(BASELINES))
    baseline_iterations: int = Field(5000, ge=0)
    # "held_out": the test classes' held-out files (an audio folder's family.held_out), a
    # report of its own (report-held_out.json) beside the test split's.
    split: Literal["test", "held_out"] = "test"


class SinusoidFamily(Section):
    """W1: sinusoid regression; ``train_shots`` draws each meta-batch's K from a list."""

    name: Literal["sinusoid"] = "sinusoid"
    shots: int = Field(10, ge=1)
    queries: int = Field(10, ge=1)
    train_shots: list[int] = Field(default_factory=list)


class OmniglotFamily(Section):
    """N-way K-shot over Omniglot's fixed character split (data read from ``data_dir``)."""

    name: Literal["omniglot"] = "omniglot"
    ways: int = Field(ge=2)
    shots: int = Field(ge=1)
    queries: int = Field(15, ge=1)
    data_dir: str = ""  # empty: OMNIGLOT_DIR, else ./data/omniglot
    cache_dir: str = ""  # empty: META_CORE_CACHE, else ~/.cache/meta_core


class RandomImagesFamily(Section):
    """Random images in Omniglot's shape: for throughput benchmarks and tests only."""

    name: Literal["random_images"] = "random_images"
    ways: int = Field(ge=2)
    shots: int = Field(ge=1)
    queries: int = Field(15, ge=1)
    image_size: int = Field(28, ge=16)
    classes: int = Field(64, ge=2)


class ImageFolderFamily(Section):
    """N-way K-shot over a user's image folders: ``root/<class>/*.png|jpg``, or
    ``root/<group>/<class>/...`` with each group kept within one split. Classes (or groups)
    are split into train / val / test by ``split`` fractions and ``split_seed``."""

    name: Literal["image_folder"] = "image_folder"
    root: str = Field(min_length=1)
    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    queries: int = Field(5, ge=1)
    image_size: int = Field(28, ge=16)  # 28 (Omniglot's) or 84 (miniImageNet's), or any
    channels: Literal["grayscale", "rgb"] = "grayscale"
    resample: Literal["lanczos", "bilinear", "nearest"] = "lanczos"
    invert: StrictBool = False  # dark strokes on light paper -> high strokes, as Omniglot
    normalize: StrictBool = False  # per-channel mean and std of the train split's pixels
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0


class AudioAugment(Section):
    """Meta-training only (never evaluation or serving): each sampled training clip's
    standardized log-mel spectrogram shifted in time by up to ``shift`` of its frames
    (circularly: a clip's padding is silence), with Gaussian ``noise`` of that standard
    deviation added, and SpecAugment's masks: ``time_masks`` runs of up to ``time_mask``
    frames and ``freq_masks`` runs of up to ``freq_mask`` mel bands set to the mean (0)."""

    shift: float = Field(0.0, ge=0, le=0.5)
    noise: float = Field(0.0, ge=0)
    time_masks: int = Field(0, ge=0)
    time_mask: int = Field(10, ge=1)
    freq_masks: int = Field(0, ge=0)
    freq_mask: int = Field(8, ge=1)

    @property
    def active(self) -> bool:
        return bool(self.shift or self.noise or self.time_masks or self.freq_masks)


class AudioFolderFamily(Section):
    """N-way K-shot over a user's recordings: ``root/<class>/*.wav|flac``, or
    ``root/<group>/<class>/...`` with each group (a speaker) kept within one split. Classes
    (or groups), never clips, are split into train / val / test by ``split`` fractions and
    ``split_seed``. Each clip: mono, resampled to ``sample_rate``, brought to ``duration``
    seconds as ``fit`` says, then a log-mel spectrogram (``window_ms``, ``hop_ms``,
    ``n_mels`` bands from ``f_min`` to ``f_max``, ``ln(max(mel, floor))``), standardized
    with the train split's mean and std (``normalize``). Clips whose file names match a
    ``held_out`` glob (a voice, a microphone) are kept out of training: evaluation can test
    the unseen classes in those conditions (``eval.split = "held_out"``)."""

    name: Literal["audio_folder"] = "audio_folder"
    root: str = Field(min_length=1)
    ways: int = Field(5, ge=2)
    shots: int = Field(1, ge=1)
    queries: int = Field(5, ge=1)
    sample_rate: int = Field(16000, ge=1000, le=192000)
    duration: float = Field(1.0, gt=0, le=60)
    fit: Literal["start", "center", "loudest"] = "loudest"
    min_duration: float = Field(0.1, ge=0)
    window_ms: float = Field(25.0, gt=0)
    hop_ms: float = Field(10.0, gt=0)
    n_mels: int = Field(40, ge=16)
    f_min: float = Field(20.0, ge=0)
    f_max: float = Field(0.0, ge=0)  # 0: the Nyquist frequency
    floor: float = Field(1e-6, gt=0)
    normalize: StrictBool = True
    held_out: list[str] = Field(default_factory=list)
    augment: AudioAugment = Field(default_factory=AudioAugment)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0


class TableFamily(Section):
    """Tasks from a table (CSV or Parquet): each value of ``task_column`` is a task, the
    numeric ``features`` (default: every numeric column but the task and the target) its
    input, ``target_column`` regressed or classified. Tasks are split into train / val /
    test by ``split`` fractions and ``split_seed``."""

    name: Literal["table"] = "table"
    path: str = Field(min_length=1)
    task_column: str = Field(min_length=1)
    target_column: str = Field(min_length=1)
    features: list[str] = Field(default_factory=list)
    kind: Literal["regression", "classification"] = "regression"
    shots: int = Field(10, ge=1)  # rows per task (per class, for classification)
    queries: int = Field(10, ge=1)
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0


class TextFamily(Section):
    """N-way K-shot over a user's labelled sentences (CSV, JSONL or Parquet): ``text_column``
    the sentence, ``label_column`` its class. Classes, never examples, are split into train /
    val / test by ``split`` fractions and ``split_seed``; with ``group_column`` (a customer, a
    source), groups are split instead, a class is a (group, label) pair, and each group's
    classes stay within one split. The sentences are embedded once by the frozen ``encoder``;
    the network on top is meta-trained."""

    name: Literal["text"] = "text"
    path: str = Field(min_length=1)
    text_column: str = Field("text", min_length=1)
    label_column: str = Field("label", min_length=1)
    group_column: str = ""
    encoder: str = "all-MiniLM-L6-v2"  # meta_core.encoders.ENCODERS
    ways: int = Field(5, ge=2)
    shots: int = Field(5, ge=1)
    queries: int = Field(15, ge=1)
    # A class with fewer than shots + queries examples, or a row without a label: "error"
    # (one line naming it) or "drop" (left out, with one warning saying how many).
    small_classes: Literal["error", "drop"] = "error"
    unlabelled: Literal["error", "drop"] = "error"
    max_per_class: int = Field(100, ge=2)  # a larger class keeps a seeded sample of this many
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    split_seed: int = 0
    cache_dir: str = ""  # the embeddings' cache; empty: META_CORE_CACHE, else ~/.cache/meta_core


FamilyConfig = Annotated[
    SinusoidFamily
    | OmniglotFamily
    | RandomImagesFamily
    | ImageFolderFamily
    | AudioFolderFamily
    | TableFamily
    | TextFamily,
    Field(discriminator="name"),
]


class MLPModel(Section):
    type: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [40, 40])
    skip: StrictBool = False  # the head also sees the input (meta_core.networks.MLPSpec)


class Conv4Model(Section):
    type: Literal["conv4"] = "conv4"
    hidden: int = Field(64, ge=1)
    norm: Norm = "layer"


ModelConfig = Annotated[MLPModel | Conv4Model, Field(discriminator="type")]


def architecture(
    model: MLPModel | Conv4Model, input_shape: tuple[int, ...], n_outputs: int
) -> MLPSpec | Conv4Spec:
    """The full architecture spec: the preset's model table plus the task family's shapes."""
    if isinstance(model, MLPModel):
        return MLPSpec(
            in_features=input_shape[0],
            hidden=model.hidden,
            out_features=n_outputs,
            skip=model.skip,
        )
    return Conv4Spec(
        in_channels=input_shape[0],
        image_size=input_shape[1],
        image_width=input_shape[2] if input_shape[2] != input_shape[1] else None,
        hidden=model.hidden,
        out_features=n_outputs,
        norm=model.norm,
    )


class Config(Section):
    name: str
    family: FamilyConfig
    model: ModelConfig
    # None: the UTC time the artifact is written (YYYY.MM.DD.HHMMSS), so retraining a
    # meta-model gives a newer version of its name, which a service serves beside the old.
    version: str | None = None
    description: str = ""
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """A validated config, or a ``ValueError`` naming the first bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"bad configuration: {first_error(exc)}") from None


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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``data`` with each ``section.field=value`` set (nested tables created as needed)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return data


def load_config(preset: str, overrides: list[str] | None = None) -> Config:
    """A preset with command-line overrides applied."""
    data = tomllib.loads(preset_path(preset).read_text())
    return Config.from_dict(apply_overrides(data, overrides or []))


EvalT = TypeVar("EvalT", bound=BaseModel)


def eval_config(recorded: EvalT, overrides: list[str]) -> EvalT:
    """The ``[eval]`` table a run recorded (a supervised run's, or a policy's), with
    ``field=value`` or ``eval.field=value`` overrides; a key of another section is refused
    rather than dropped."""
    data = recorded.model_dump()
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "eval":
            keys = keys[1:]
        if len(keys) != 1:
            raise ValueError(f"override {text!r}: eval takes [eval] fields, e.g. tasks=100")
        data[keys[0]] = value
    try:
        return type(recorded).model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"bad eval setting: eval.{first_error(exc)}") from None
