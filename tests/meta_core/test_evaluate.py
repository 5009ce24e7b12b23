"""evaluate_artifact scores the meta-learned start and each baseline on the same seeded test
tasks with the one inner loop (or, for the fitted baselines, a classifier fitted on the support
set, checked against a hand-written loop and scikit-learn), and records maml's rows in the
manifest."""

import json
import math
from pathlib import Path

import pytest
import torch

from meta_core.artifact import load_artifact
from meta_core.cli import main
from meta_core.config import EvalConfig, load_config
from meta_core.evaluate import (
    adaptation_curve,
    evaluate_artifact,
    fitted_curve,
    fresh_params,
    logreg_logits,
    mean_ci95,
)
from meta_core.tasks import TaskBatch, build_family
from meta_core.train import train

TINY = [
    "train.iterations=10",
    "train.val_every=5",
    "train.val_tasks=10",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.meta_batch=4",
    "train.compile=false",
    "algorithm.inner_steps=2",
]


def test_each_method_is_scored_on_the_same_test_tasks(tmp_path: Path):
    out = train(load_config("sinusoid", TINY), tmp_path / "run", progress=False)
    cfg = EvalConfig.model_validate(
        {"tasks": 20, "baselines": ["random"], "shots": [3], "steps": [0, 2], "inner_lr": 0.02}
    )
    report = evaluate_artifact(out, cfg, plots=False)

    assert report["protocol"]["inner_lr"] == 0.02
    assert report["baselines"] == {"pretrained_iterations": None}
    assert list(report["results"]) == ["maml", "random"]
    art = load_artifact(out)
    family = build_family(art.manifest.training.config.family)
    batch = family.sample(20, torch.Generator().manual_seed(cfg.seed), split="test", shots=3)
    for method, (params, names) in {
        "maml": (art.params, art.adapt_names),
        "random": (fresh_params(art.manifest.architecture, cfg.seed), None),
    }.items():
        losses, _ = adaptation_curve(
            art.model, params, batch, kind="regression", steps=2, lr=0.02, adapt_names=names
        )
        expected = {}
        for s in (0, 2):
            mean, ci = mean_ci95(losses[:, s])
            expected[str(s)] = {"loss": mean, "loss_ci95": ci}
        assert report["results"][method] == {"3": expected}
    assert json.loads((out / "report.json").read_text()) == report
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation"] == {
        "protocol": report["protocol"],
        "results": report["results"]["maml"],
    }
    assert not list(out.glob("*.png"))


# A 5-way 1-shot Conv4 on random images, at its initialization (no meta-training): every
# method, fitted baselines included, is at chance on it.
RANDOM_IMAGES = [
    'family.name="random_images"',
    "family.image_size=16",
    "family.queries=5",
    "model.hidden=8",
    "train.iterations=0",
    "train.val_tasks=10",
    "train.compile=false",
]


@pytest.fixture(scope="module")
def random_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("random_images") / "run"
    return train(load_config("omniglot-5w1s", RANDOM_IMAGES), out, progress=False)


def tiny_tasks(ways: int, shots: int, queries: int, dim: int, seed: int = 0) -> TaskBatch:
    """Three tasks of unit vectors clustered around one random direction per class."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, ways, 1, dim, generator=g, dtype=torch.float64)
    x = centres + 0.8 * torch.randn(3, ways, shots + queries, dim, generator=g, dtype=torch.float64)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.arange(ways).view(1, -1, 1).expand(3, ways, shots + queries)
    return TaskBatch(
        x[:, :, :shots].reshape(3, -1, dim),
        y[:, :, :shots].reshape(3, -1),
        x[:, :, shots:].reshape(3, -1, dim),
        y[:, :, shots:].reshape(3, -1),
    )


def test_centroid_is_the_nearest_normalised_class_mean_by_cosine():
    batch = tiny_tasks(ways=3, shots=4, queries=6, dim=5)
    losses, accuracies = fitted_curve("centroid", batch, 3)

    for t in range(3):
        rows = [v / v.norm() for v in batch.support_x[t]]
        centroids = []
        for c in range(3):
            members = [r for r, label in zip(rows, batch.support_y[t], strict=True) if label == c]
            mean = sum(members) / len(members)
            centroids.append(mean / mean.norm())
        correct, ce = 0, 0.0
        for q, label in zip(batch.query_x[t], batch.query_y[t], strict=True):
            cosines = [float(q @ centroid / q.norm()) for centroid in centroids]
            correct += max(range(3), key=lambda c: cosines[c]) == label
            ce += -10 * cosines[label] + math.log(sum(math.exp(10 * s) for s in cosines))
        n = len(batch.query_y[t])
        assert accuracies[t].item() == pytest.approx(correct / n)
        assert losses[t].item() == pytest.approx(ce / n, rel=1e-5)
    assert 0.3 < accuracies.mean() < 1  # clustered classes: better than chance, not trivial


@pytest.mark.parametrize(("ways", "sklearn_c"), [(3, 1.0), (5, 1.0), (2, 2.0)])
def test_logreg_fits_what_scikit_learn_fits(ways: int, sklearn_c: float):
    linear_model = pytest.importorskip("sklearn.linear_model")
    batch = tiny_tasks(ways=ways, shots=5, queries=7, dim=12, seed=ways)
    sx, qx = batch.support_x, batch.query_x
    logits = logreg_logits(sx, batch.support_y, qx, ways)
    _, accuracies = fitted_curve("logreg", batch, ways)

    for t in range(3):
        # scikit-learn's binary fit is one sigmoid: C=2 there is our two softmax rows at C=1.
        reference = linear_model.LogisticRegression(C=sklearn_c, tol=1e-10, max_iter=10_000)
        reference.fit(sx[t].numpy(), batch.support_y[t].numpy())
        expected = torch.from_numpy(reference.predict_proba(qx[t].numpy()))
        torch.testing.assert_close(logits[t].softmax(-1), expected, rtol=0, atol=1e-5)
        assert torch.equal(logits[t].argmax(-1), expected.argmax(-1))
        score = reference.score(qx[t].numpy(), batch.query_y[t].numpy())
        assert accuracies[t].item() == pytest.approx(score, abs=1e-6)


def test_adaptation_curve_counts_only_the_first_outputs_also_under_vmap(random_images: Path):
    art = load_artifact(random_images)
    family = build_family(art.manifest.training.config.family)
    batch = family.sample(4, torch.Generator().manual_seed(1), split="test", ways=2)
    curves = {
        (strategy, n): adaptation_curve(
            art.model,
            art.params,
            batch,
            kind="classification",
            steps=1,
            lr=0.4,
            strategy=strategy,
            n_classes=n,
        )  # fmt: skip
        for strategy in ("vmap", "loop")
        for n in (2, None)
    }

    for a, b in zip(curves["vmap", 2], curves["loop", 2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(curves["loop", 2][0], curves["loop", None][0])
    # Task 0, step 0 by hand: the cross-entropy of the first two logits.
    out = art.model(batch.query_x[0])[:, :2]
    expected = torch.nn.functional.cross_entropy(out, batch.query_y[0])
    assert curves["loop", 2][0][0, 0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_eval_with_fewer_ways_and_fitted_baselines_through_the_cli(random_images: Path, capsys):
    overrides = {
        "tasks": "60",
        "steps": "[0, 1]",
        "ways": "[2, 5]",
        "baselines": '["random", "centroid", "logreg"]',
    }
    args = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    assert main(["eval", str(random_images), *args]) == 0
    report = json.loads((random_images / "report.json").read_text())

    assert report["protocol"]["ways"] == [2, 5]
    assert report["baselines"] == {
        "pretrained_iterations": None,
        "centroid": {"similarity": "cosine", "loss_temperature": 10.0},
        "logreg": {"penalty": "l2", "C": 1.0, "bias_penalised": False},
    }
    results = report["results"]
    assert list(results) == ["maml", "random", "centroid", "logreg"]
    for method, by_key in results.items():
        assert list(by_key) == ["2-way 1-shot", "5-way 1-shot"]
        for key, chance in (("2-way 1-shot", 0.5), ("5-way 1-shot", 0.2)):
            rows = by_key[key]
            assert list(rows) == (["fit"] if method in ("centroid", "logreg") else ["0", "1"])
            for row in rows.values():
                assert 0 <= row["accuracy"] <= 1 and row["loss"] > 0
                # Random images: chance level, within a few of its 95% half-widths.
                assert abs(row["accuracy"] - chance) < 2.5 * row["accuracy_ci95"] + 0.02
    manifest = json.loads((random_images / "manifest.json").read_text())
    assert manifest["evaluation"]["results"] == results["maml"]
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  centroid 2-way 1-shot: fit: ") for line in printed)
    assert any(line.startswith("    random 5-way 1-shot: 0: ") for line in printed)
    assert (random_images / "loss_vs_steps.png").stat().st_size > 0

    # The same seeded 2-way tasks, scored by hand: the report's rows are these figures.
    cfg = EvalConfig.model_validate({"tasks": 60, "ways": [2]})
    family = build_family(load_artifact(random_images).manifest.training.config.family)
    batch = family.sample(60, torch.Generator().manual_seed(cfg.seed), split="test", ways=2)
    loss, accuracy = fitted_curve("logreg", batch, 2)
    assert results["logreg"]["2-way 1-shot"]["fit"]["loss"] == pytest.approx(loss.mean().item())
    assert results["logreg"]["2-way 1-shot"]["fit"]["accuracy"] == pytest.approx(
        accuracy.mean().item()
    )


def test_what_a_family_cannot_be_evaluated_on_is_refused_up_front(
    tmp_path: Path, random_images: Path
):
    sinusoid = train(load_config("sinusoid", TINY), tmp_path / "run", progress=False)
    for asked, detail in (
        (
            {"baselines": ["random", "centroid", "logreg"]},
            "eval.baselines ['centroid', 'logreg'] are classifiers; the sinusoid family's "
            "tasks are regression",
        ),
        (
            {"ways": [2]},
            "eval.ways is for N-way K-shot families; the sinusoid family's tasks have no "
            "number of ways to choose",
        ),
    ):
        cfg = EvalConfig.model_validate({"tasks": 5, **asked})
        with pytest.raises(ValueError) as caught:
            evaluate_artifact(sinusoid, cfg, plots=False)
        assert str(caught.value) == detail
    cfg = EvalConfig.model_validate({"tasks": 5, "ways": [2, 6], "baselines": ["pretrained"]})
    with pytest.raises(ValueError) as caught:
        evaluate_artifact(random_images, cfg, plots=False)
    assert str(caught.value) == "eval.ways 6: the artifact's model has 5 outputs"
    with pytest.raises(ValueError, match="greater than or equal to 2"):
        EvalConfig.model_validate({"ways": [1]})
