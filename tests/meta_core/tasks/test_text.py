"""Text tasks on a frozen encoder: each sentence embedded once (cached), N-way K-shot tasks over
held-out classes, the encoder recorded in the artifact; ``meta-core train --preset text`` and
``meta-core eval`` run on ``meta-core data example``'s sentences."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from meta_core.artifact import ArtifactError, load_artifact
from meta_core.cli import main
from meta_core.config import TextFamily
from meta_core.data.example import write_sentences
from meta_core.encoders import MINILM, load_encoder
from meta_core.tasks.text import embeddings, text_family
from tests.utils.text import train_tiny_text

pytestmark = pytest.mark.text_encoder


def test_tasks_are_embeddings_of_held_out_classes(tmp_path: Path):
    path = write_sentences(tmp_path, per_class=6)
    cfg = TextFamily(
        path=str(path), label_column="intent", ways=3, shots=2, queries=3, cache_dir=str(tmp_path)
    )
    family = text_family(cfg)
    assert family.input_shape == (384,) and family.n_outputs == 3
    assert family.preprocessing is not None and family.preprocessing.encoder == MINILM
    split = family.describe()["split"]
    assert not set(split["train"]) & set(split["test"])
    batch = family.sample(5, torch.Generator().manual_seed(0), split="test")
    assert batch.support_x.shape == (5, 6, 384) and batch.query_x.shape == (5, 9, 384)
    norms = batch.support_x.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # real embeddings, no padding
    # Each row is the embedding of one of its class's sentences.
    encoder = load_encoder(MINILM)
    test_texts = [t for c in split["test"] for t in _sentences(path, c)]
    known = torch.from_numpy(encoder.encode(test_texts))
    nearest = (batch.query_x.reshape(-1, 384) @ known.T).max(dim=1).values
    assert bool((nearest > 0.9999).all())


def _sentences(path: Path, intent: str) -> list[str]:
    import csv

    with path.open(encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f) if row["intent"] == intent]


def test_each_sentence_is_embedded_once_per_encoder(tmp_path: Path, monkeypatch):
    encoder = load_encoder(MINILM)
    first = embeddings(MINILM, ["one sentence", "another one"], tmp_path)
    assert len(list((tmp_path / "text-embeddings").iterdir())) == 1
    encoded, real = [], encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda texts: encoded.append(texts) or real(texts))
    again = embeddings(MINILM, ["another one", "a third", "one sentence"], tmp_path)
    assert encoded == [["a third"]]  # the others come from the cache
    np.testing.assert_array_equal(again[[0, 2]], first[[1, 0]])
    np.testing.assert_allclose(again[1], real(["a third"])[0], atol=1e-5)
    broken = next((tmp_path / "text-embeddings").iterdir())
    broken.write_bytes(b"not a cache")
    assert np.allclose(embeddings(MINILM, ["one sentence"], tmp_path), first[:1], atol=1e-5)


def test_a_csv_trains_evaluates_and_records_its_encoder(tmp_path: Path, capsys):
    out = train_tiny_text(tmp_path)
    art = load_artifact(out)
    spec = art.manifest.preprocessing
    assert spec is not None and spec.type == "text" and spec.encoder == MINILM
    assert art.encoder is load_encoder(MINILM) and art.input_shape == [384]
    family = art.manifest.training.family
    assert family["family"] == "text" and family["split_seed"] == 0
    assert not (out / "model.safetensors").exists()  # the encoder's weights are not copied
    assert (out / "weights.safetensors").stat().st_size < 100_000
    code = main(["eval", str(out), "--set", "tasks=20", "--set", "steps=[0, 5]", "--no-plots"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "maml" in printed and "random" in printed
    report = json.loads((out / "report.json").read_text())
    after = report["results"]["maml"]["2"]["5"]["accuracy"]
    assert after > 0.5  # 3-way: chance is 1/3


def test_an_artifact_naming_another_encoder_hash_is_refused(tmp_path: Path):
    from meta_core.artifact import MANIFEST, WEIGHTS, content_hash

    out = train_tiny_text(tmp_path)
    raw = json.loads((out / MANIFEST).read_text())
    raw["preprocessing"]["encoder"]["sha256"] = "0" * 64
    raw["content_hash"] = content_hash((out / WEIGHTS).read_bytes(), raw)
    (out / MANIFEST).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError) as info:
        load_artifact(out)
    assert "0000000000" in str(info.value) and str(out) in str(info.value)
