"""The shipped artifacts load and meet their quality bars on fixed tasks."""

from pathlib import Path

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


def test_shipped_omniglot_5w1s_classifies_held_out_characters():
    from meta_core.data.omniglot import omniglot_family

    art = load_artifact(MODELS / "omniglot-5w1s")
    family = omniglot_family(ways=5, shots=1, queries=15)
    batch = family.sample(40, torch.Generator().manual_seed(7), split="test")
    _, accuracy = adaptation_curve(
        art.model, art.params, batch, kind="classification", steps=art.inner_steps, lr=art.inner_lr
    )
    assert accuracy[:, 0].mean().item() < 0.3  # chance before adaptation
    assert accuracy[:, art.inner_steps].mean().item() >= 0.97
