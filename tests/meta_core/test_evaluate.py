"""evaluate_artifact scores the meta-learned start and each baseline on the same seeded test
tasks with the one inner loop, and records maml's rows in the manifest."""

import json
from pathlib import Path

import torch

from meta_core.artifact import load_artifact
from meta_core.config import EvalConfig, load_config
from meta_core.evaluate import adaptation_curve, evaluate_artifact, fresh_params, mean_ci95
from meta_core.tasks import build_family
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
