"""Evaluation of a policy meta-model: returns after 0..steps steps for MAML, the pretrained
and the random policy, on goals no run trained on; the report, the plot and the manifest."""

import json

import torch

from meta_core.artifact import InnerLoopSpec, load_artifact
from meta_core.rl.config import EvalConfig, load_policy_config
from meta_core.rl.evaluate import (
    adaptation_returns,
    evaluate_policy,
    log_scale,
    step_lrs,
    summary,
)
from meta_core.rl.navigation import Navigation2D
from meta_core.rl.train import meta_train, save_policy

SMALL = [
    "train.iterations=2",
    "train.meta_batch=4",
    "adaptation.trajectories=4",
    "env.horizon=10",
    "policy.hidden=[8]",
]


def test_evaluation_writes_the_report_the_plot_and_the_manifest(tmp_path):
    cfg = load_policy_config("navigation-2d", SMALL)
    directory = save_policy(cfg, tmp_path / "nav", meta_train(cfg))
    cfg = EvalConfig(tasks=5, steps=2, baseline_iterations=1, save_baselines=True)
    report = evaluate_policy(directory, cfg)
    assert set(report["results"]) == {"maml", "pretrained", "random"}
    for by_step in report["results"].values():
        assert list(by_step) == ["0", "1", "2"]
        assert all(v["return"] < 0 and v["return_ci95"] > 0 for v in by_step.values())
    assert report["protocol"]["tasks"] == 5 and report["protocol"]["baseline_iterations"] == 1
    assert json.loads((directory / "report.json").read_text()) == report
    assert (directory / "plots" / "returns.png").stat().st_size > 1000
    art = load_artifact(directory)  # re-hashed with its evaluation
    assert art.manifest.evaluation["results"] == report["results"]["maml"]
    baseline = load_artifact(directory / "baselines" / "pretrained")  # to serve beside it
    assert baseline.name == "navigation-2d-pretrained" and baseline.task_kind == "policy"
    assert baseline.manifest.training.iterations_done == 1


def test_each_step_rolls_out_the_policy_it_adapted_to(tmp_path):
    """Zero steps is the start itself, and the same seed gives the same returns."""
    cfg = load_policy_config("navigation-2d", SMALL)
    art = load_artifact(save_policy(cfg, tmp_path / "nav", meta_train(cfg)))
    env = Navigation2D.sample(cfg.env, 3, torch.Generator().manual_seed(5))
    net = art.network()
    returns = adaptation_returns(net, art.params, env, cfg, [0.1, 0.02], seed=7)
    assert returns.shape == (3, 3)
    assert returns.equal(adaptation_returns(net, art.params, env, cfg, [0.1, 0.02], seed=7))
    assert not returns.equal(adaptation_returns(net, art.params, env, cfg, [0.1, 0.1], seed=7))
    no_steps = adaptation_returns(net, art.params, env, cfg, [], seed=7)
    assert no_steps[0].equal(returns[0])
    assert summary(returns)["0"]["return"] == round(float(returns[0].mean()), 3)


def test_later_steps_take_the_later_lr():
    inner = InnerLoopSpec(steps=1, lr=0.1, later_lr=0.02)
    assert step_lrs(inner, 3) == [0.1, 0.02, 0.02]
    assert step_lrs(inner, 3, later_lr=0.05) == [0.1, 0.05, 0.05]
    assert step_lrs(InnerLoopSpec(steps=1, lr=0.1), 2) == [0.1, 0.1]
    assert step_lrs(inner, 0) == []


def test_the_plot_takes_a_log_scale_only_for_returns_ten_times_apart():
    def report(*returns):
        return {"results": {f"m{i}": {"0": {"return": r}} for i, r in enumerate(returns)}}

    assert log_scale(report(-256.6, -17.5, -3.4))  # navigation's random policy
    assert not log_scale(report(-284.2, -190.6, -183.2))  # half-cheetah's
    assert not log_scale(report(-0.5, -4.0))  # returns under 1 count as 1
