"""train -> eval through the CLI, determinism, and interrupt/resume."""

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from meta_core import algorithms
from meta_core.artifact import version_key
from meta_core.cli import main
from meta_core.config import load_config
from meta_core.train import train

TINY = [
    "train.iterations=40",
    "train.val_every=10",
    "train.val_tasks=20",
    "train.log_every=5",
    "train.checkpoint_every=10",
    "train.meta_batch=4",
    "train.compile=false",
    "algorithm.inner_steps=2",
]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "weights.safetensors"))


def test_train_then_eval_through_the_cli(tmp_path: Path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "sinusoid", "--out", str(out), "--no-progress"]
    assert main(args + [a for s in TINY for a in ("--set", s)]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["event"] == "val"] == [10, 20, 30, 40]
    assert all(r["tasks_per_s"] > 0 for r in rows if r["event"] == "train")
    assert main(["eval", str(out), "--set", "tasks=30", "--set", "baseline_iterations=20"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"maml", "pretrained", "random"}
    assert set(report["results"]["maml"]) == {"5", "10", "20"}
    assert set(report["results"]["maml"]["10"]) == {"0", "1", "5", "10"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["evaluation"]["results"] == report["results"]["maml"]
    for png in ("training_curves.png", "loss_vs_steps.png", "sinusoid_figure2.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "maml K=10" in capsys.readouterr().out


def test_a_fixed_seed_gives_identical_runs(tmp_path: Path):
    cfg = load_config("sinusoid", TINY)
    a = weights(train(cfg, tmp_path / "a", progress=False))
    b = weights(train(cfg, tmp_path / "b", progress=False))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_run_resumes_to_the_same_result(tmp_path: Path, monkeypatch):
    cfg = load_config("sinusoid", TINY + ["algorithm.lslr=true"])
    reference = weights(train(cfg, tmp_path / "straight", progress=False))

    real = algorithms.MetaLearner.meta_loss
    calls = {"n": 0}

    def ctrl_c_in_iteration_26(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 26:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(algorithms.MetaLearner, "meta_loss", ctrl_c_in_iteration_26)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", progress=False)
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 26  # the iteration under way when Ctrl-C came completes
    monkeypatch.setattr(algorithms.MetaLearner, "meta_loss", real)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train(cfg, tmp_path / "cut", progress=False)
    resumed = weights(train(cfg, tmp_path / "cut", resume=True, progress=False))
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    rows = [
        json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    ]
    iterations = [r["iteration"] for r in rows if r["event"] == "train"]
    assert iterations == sorted(set(iterations))


def test_warm_start_from_an_artifact(tmp_path: Path):
    first = train(load_config("sinusoid", TINY), tmp_path / "first", progress=False)
    # No iterations: the artifact is exactly the one it started from.
    again = load_config("sinusoid", TINY + ["train.iterations=0", f"train.init_from={first}"])
    same = train(again, tmp_path / "same", progress=False)
    a, b = weights(first), weights(same)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((same / "manifest.json").read_text())
    source = json.loads((first / "manifest.json").read_text())
    assert manifest["training"]["warm_start"]["content_hash"] == source["content_hash"]
    # A retrained meta-model is a newer version of its name (the UTC time it was written),
    # unless the preset names one.
    assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}\.\d{6}", source["version"])
    assert version_key(manifest["version"]) >= version_key(source["version"])
    assert version_key(source["version"]) > version_key("1.1.0")
    named = train(
        load_config(
            "sinusoid", TINY + ["train.iterations=0", "version=2.0.0", f"train.init_from={first}"]
        ),
        tmp_path / "named",
        progress=False,
    )
    assert json.loads((named / "manifest.json").read_text())["version"] == "2.0.0"
    # More iterations move on from there.
    more = load_config("sinusoid", TINY + [f"train.init_from={first}"])
    moved = weights(train(more, tmp_path / "more", progress=False))
    assert not torch.equal(moved["net.body.0.weight"], a["net.body.0.weight"])

    wider = load_config("sinusoid", TINY + ["model.hidden=[8, 8]", f"train.init_from={first}"])
    with pytest.raises(ValueError, match="architecture .* differs from this run's"):
        train(wider, tmp_path / "wider", progress=False)
    lslr = load_config("sinusoid", TINY + ["algorithm.lslr=true", f"train.init_from={first}"])
    with pytest.raises(ValueError, match="its lrs do not match this run's algorithm"):
        train(lslr, tmp_path / "lslr", progress=False)


def test_overrides_are_typed_and_unknown_fields_refused():
    cfg = load_config("sinusoid", ["train.iterations=7", "algorithm.name=anil", "train.outer_lr=1"])
    assert cfg.train.iterations == 7 and cfg.algorithm.name == "anil"
    assert cfg.train.outer_lr == 1.0
    with pytest.raises(ValueError, match="train.iteratoins: Extra inputs are not permitted"):
        load_config("sinusoid", ["train.iteratoins=7"])
    with pytest.raises(ValueError, match="train.compile: Input should be a valid boolean"):
        load_config("sinusoid", ["train.compile=1"])
    with pytest.raises(ValueError, match="family.omniglot.ways: Field required"):
        load_config("sinusoid", ["family.name=omniglot"])
    with pytest.raises(FileNotFoundError, match="no preset 'nope'"):
        load_config("nope")


@pytest.mark.parametrize("strategy", ["vmap", "loop"])
def test_bf16_autocast_keeps_the_meta_gradient_within_a_tolerance(strategy):
    from meta_core.algorithms import MetaLearner
    from meta_core.config import AlgorithmConfig, RandomImagesFamily
    from meta_core.networks import build_network
    from meta_core.tasks import build_family
    from meta_core.train import autocast

    torch.manual_seed(0)
    family = build_family(RandomImagesFamily(ways=5, shots=1, queries=3, classes=20))
    model = build_network(
        {"type": "conv4", "in_channels": 1, "image_size": 28, "hidden": 16, "out_features": 5}
    )
    learner = MetaLearner.create(
        model, "classification", AlgorithmConfig(inner_steps=2, inner_lr=0.4)
    )
    batch = family.sample(4, torch.Generator().manual_seed(1))

    def meta_grad(bf16: bool) -> tuple[float, torch.Tensor]:
        with autocast(torch.device("cpu"), bf16):
            loss, _ = learner.meta_loss(batch, strategy=strategy)
        grads = torch.autograd.grad(loss, learner.meta_parameters())
        assert all(g.dtype == torch.float32 for g in grads)  # the meta-parameters stay fp32
        return loss.item(), torch.cat([g.reshape(-1) for g in grads])

    (loss32, fp32), (loss16, bf16) = meta_grad(False), meta_grad(True)
    # Measured: loss within 0.5%, meta-gradient 0.29 relative error, cosine 0.973 (second
    # order through two inner steps compounds bf16's 8-bit mantissa); the bounds leave room.
    relative = ((bf16 - fp32).norm() / fp32.norm()).item()
    cosine = torch.nn.functional.cosine_similarity(bf16, fp32, dim=0).item()
    assert abs(loss16 - loss32) < 0.02 * abs(loss32)
    assert relative < 0.5 and cosine > 0.95, (relative, cosine)
    assert relative > 1e-4  # it did run in bf16


def tiny_conv_learner(algo_steps: int = 2):
    from meta_core.algorithms import MetaLearner
    from meta_core.config import AlgorithmConfig, RandomImagesFamily
    from meta_core.networks import build_network
    from meta_core.tasks import build_family

    torch.manual_seed(0)
    spec = {"type": "conv4", "in_channels": 1, "image_size": 28, "hidden": 8, "out_features": 5}
    algo = AlgorithmConfig(inner_steps=algo_steps, inner_lr=0.4)
    learner = MetaLearner.create(build_network(spec), "classification", algo)
    family = build_family(RandomImagesFamily(ways=5, shots=1, queries=2, classes=20))
    return learner, family.sample(3, torch.Generator().manual_seed(1))


def test_channels_last_gives_the_same_meta_gradient(tmp_path: Path):
    from meta_core.train import Run, channels_last

    strategy = "loop"  # vmap does not support the layout: a run asking for both is refused
    cfg = load_config(
        "omniglot-5w1s",
        ['family.name="random_images"', "train.channels_last=true", 'train.strategy="vmap"'],
    )
    with pytest.raises(ValueError, match="channels_last needs train.strategy"):
        Run(cfg, tmp_path / "run", resume=False)

    learner, batch = tiny_conv_learner()
    plain = torch.autograd.grad(
        learner.meta_loss(batch, strategy=strategy)[0], learner.meta_parameters()
    )
    channels_last(learner)
    nhwc = batch.channels_last()
    assert nhwc.support_x[0].is_contiguous(memory_format=torch.channels_last)
    conv = next(p for p in learner.params.values() if p.dim() == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.requires_grad
    fast = torch.autograd.grad(
        learner.meta_loss(nhwc, strategy=strategy)[0], learner.meta_parameters()
    )
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fused_adam_makes_the_same_update():
    results = []
    for fused in (False, True):
        learner, batch = tiny_conv_learner(1)
        opt = torch.optim.Adam(learner.meta_parameters(), lr=1e-3, fused=fused or None)
        for _ in range(3):
            opt.zero_grad()
            learner.meta_loss(batch, strategy="loop")[0].backward()
            opt.step()
        results.append([p.detach().clone() for p in learner.meta_parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_compile_mode_reaches_torch_compile(tmp_path: Path, monkeypatch):
    from meta_core.train import Run

    seen = {}

    def fake_compile(fn, **kwargs):
        seen.update(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = load_config(
        "sinusoid", TINY + ["train.compile=true", 'train.compile_mode="reduce-overhead"']
    )
    Run(cfg, tmp_path / "run", resume=False)
    assert seen == {"mode": "reduce-overhead"}
