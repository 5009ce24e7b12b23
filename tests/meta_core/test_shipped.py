"""The shipped artifacts load and meet their quality bars on fixed tasks."""

from pathlib import Path

import pytest
import torch

from meta_core.artifact import load_artifact
from meta_core.evaluate import adaptation_curve
from meta_core.tasks import Sinusoid

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_shipped_sinusoid_meets_the_k10_bar():
    art = load_artifact(MODELS / "sinusoid")
    assert art.name == "sinusoid" and art.task_kind == "regression"
    batch = Sinusoid().sample(100, torch.Generator().manual_seed(12345), split="test", shots=10)
    losses, _ = adaptation_curve(art.model, art.params, batch, kind="regression", steps=10, lr=0.01)
    assert losses[:, 10].mean().item() <= 0.08
    assert losses[:, 10].mean() < 0.1 * losses[:, 0].mean()


@pytest.mark.omniglot
@pytest.mark.parametrize(
    ("name", "ways", "tasks", "bar"),
    [("omniglot-5w1s", 5, 40, 0.97), ("omniglot-20w1s", 20, 15, 0.90)],
)
def test_shipped_omniglot_classifies_held_out_characters(name, ways, tasks, bar):
    from meta_core.tasks.omniglot import omniglot_family

    art = load_artifact(MODELS / name)
    assert art.manifest.n_outputs == ways
    family = omniglot_family(ways=ways, shots=1, queries=15)
    batch = family.sample(tasks, torch.Generator().manual_seed(7), split="test")
    steps = art.manifest.inner_loop.steps
    _, accuracy = adaptation_curve(
        art.model, art.params, batch, kind="classification", steps=steps, lr=art.learning_rate()
    )
    assert accuracy[:, 0].mean().item() < 1.5 / ways  # chance before adaptation
    assert accuracy[:, steps].mean().item() >= bar


def test_evaluation_does_not_depend_on_chunking_or_strategy():
    from meta_core.config import RandomImagesFamily
    from meta_core.tasks import build_family

    art = load_artifact(MODELS / "sinusoid")
    batch = Sinusoid().sample(30, torch.Generator().manual_seed(3), split="test", shots=5)
    args = (art.model, art.params, batch)
    whole = adaptation_curve(*args, kind="regression", steps=3, lr=0.01)
    pieces = adaptation_curve(*args, kind="regression", steps=3, lr=0.01, chunk_examples=45)
    assert torch.allclose(whole[0], pieces[0], rtol=1e-5, atol=1e-6)

    art = load_artifact(MODELS / "omniglot-5w1s")
    family = build_family(RandomImagesFamily(ways=5, shots=1, queries=3))
    batch = family.sample(6, torch.Generator().manual_seed(4))
    args = (art.model, art.params, batch)
    kw = {"kind": "classification", "steps": 2, "lr": 0.4}
    loop = adaptation_curve(*args, strategy="loop", **kw)
    vmapped = adaptation_curve(*args, strategy="vmap", chunk=4, **kw)
    for a, b in zip(loop, vmapped, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.text_encoder
@pytest.mark.wordnet
def test_shipped_text_model_classifies_held_out_hypernyms(tmp_path):
    """5-way 5-shot tasks over WordNet hypernyms it never saw in training (its manifest's
    test split), encoded here: at least 95% after its inner loop, chance before."""
    import csv

    from meta_core.data.wordnet import write_wordnet
    from meta_core.tasks.base import TaskBatch
    from tests.utils.text import TEXT_MODEL, require_wordnet

    art = load_artifact(MODELS / TEXT_MODEL)
    family = art.manifest.training.config.family
    assert art.manifest.n_outputs == 10 and art.encoder is not None
    test = art.manifest.training.family["split"]["test"]
    rows: dict[str, list[str]] = {}
    with write_wordnet(tmp_path, require_wordnet()).open(encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row[family.label_column], []).append(row[family.text_column])
    gen = torch.Generator().manual_seed(7)
    classes = [test[i] for i in torch.randperm(len(test), generator=gen)[:25].tolist()]
    shots, queries, ways, tasks = 5, 10, 5, 40
    vectors = {c: torch.from_numpy(art.embed(rows[c][: shots + queries])) for c in classes}
    support, query = [], []
    for _ in range(tasks):
        picked = [classes[i] for i in torch.randperm(len(classes), generator=gen)[:ways].tolist()]
        order = [torch.randperm(shots + queries, generator=gen) for _ in picked]
        support.append(
            torch.cat([vectors[c][o[:shots]] for c, o in zip(picked, order, strict=True)])
        )
        query.append(torch.cat([vectors[c][o[shots:]] for c, o in zip(picked, order, strict=True)]))
    labels = torch.arange(ways)
    batch = TaskBatch(
        torch.stack(support),
        labels.repeat_interleave(shots).expand(tasks, -1),
        torch.stack(query),
        labels.repeat_interleave(queries).expand(tasks, -1),
    )
    steps = art.manifest.inner_loop.steps
    _, accuracy = adaptation_curve(
        art.model,
        art.params,
        batch,
        kind="classification",
        steps=steps,
        lr=art.learning_rate(),
        adapt_names=art.adapt_names,
        n_classes=ways,
    )
    assert accuracy[:, 0].mean().item() < 1.5 / ways  # chance before adaptation
    assert accuracy[:, steps].mean().item() >= 0.95


@pytest.mark.espeak
def test_shipped_speech_model_recognises_held_out_words(tmp_path):
    """5-way 1-shot tasks over 10 of the words it never heard in training (its manifest's test
    split), synthesised here exactly as its training data was: well above chance (20%) after
    its inner step, by the voices it trained on and by the held-out ones."""
    from meta_core.audio import standardize
    from meta_core.config import AudioFolderFamily
    from meta_core.data.folders import AUDIO, find_classes, held_out_files, reader
    from meta_core.data.spoken import write_speech
    from meta_core.preprocessing import AudioPreprocessing
    from meta_core.tasks import NWayKShot

    art = load_artifact(MODELS / "speech-keywords")
    family = art.manifest.training.config.family
    assert isinstance(family, AudioFolderFamily) and art.manifest.n_outputs == 5
    test = art.manifest.training.family["split"]["test"]
    words = test[:: len(test) // 10][:10]
    write_speech(tmp_path / "words", only=words)
    assert sorted(p.name for p in (tmp_path / "words").iterdir() if p.is_dir()) == sorted(words)
    # Their clips, preprocessed as the artifact records, the held-out voices apart.
    spec = art.manifest.preprocessing
    assert isinstance(spec, AudioPreprocessing) and spec.input_shape == (1, 40, 51)
    found, _ = find_classes(tmp_path / "words", AUDIO)
    kept, held = held_out_files(found, family.held_out)
    assert all(len(held[w]) == 10 and len(kept[w]) == 20 for w in words)
    decode = reader(spec).decode
    pools = {
        split: torch.stack([standardize(torch.from_numpy(decode(clips[w])), spec) for w in words])
        for split, clips in (("test", kept), ("held_out", held))
    }
    tasks = NWayKShot(pools, ways=5, shots=1, queries=5)
    steps = art.manifest.inner_loop.steps
    for split, bar in (("test", 0.6), ("held_out", 0.5)):
        batch = tasks.sample(40, torch.Generator().manual_seed(5), split=split)
        _, accuracy = adaptation_curve(
            art.model,
            art.params,
            batch,
            kind="classification",
            steps=steps,
            lr=art.learning_rate(),
        )
        assert accuracy[:, steps].mean().item() >= bar, split
