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
