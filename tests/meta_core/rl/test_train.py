"""A few meta-iterations of 2D navigation: the adapted policies' return rises, each TRPO step
stays in its trust region, and the artifact is a policy meta-model that loads."""

import pytest

from meta_core.artifact import load_artifact
from meta_core.networks import GaussianMLPSpec
from meta_core.preprocessing import RolloutPreprocessing
from meta_core.rl.config import PolicyRunConfig, load_policy_config
from meta_core.rl.train import meta_train, save_policy

SMALL = [
    "train.iterations=6",
    "train.meta_batch=6",
    "adaptation.trajectories=8",
    "env.horizon=20",
    "policy.hidden=[16, 16]",
    "train.version=1.0.0",
]


@pytest.fixture(scope="module")
def small_run():
    cfg = load_policy_config("navigation-2d", SMALL)
    return cfg, meta_train(cfg)


def test_meta_training_raises_the_adapted_return(small_run):
    _, run = small_run
    first, last = run.history[0], run.history[-1]
    assert last["return_after"] > first["return_after"] + 1.0
    assert all(0 < row["kl"] < 0.01 for row in run.history)
    assert all(row["return_after"] > row["return_before"] for row in run.history[-3:])
    assert run.env_steps > 6 * 6 * 8 * 2 * 10  # pre- and post-adaptation rollouts, most steps


def test_the_artifact_is_a_policy_meta_model(small_run, tmp_path):
    cfg, run = small_run
    art = load_artifact(save_policy(cfg, tmp_path / "nav", run))
    m = art.manifest
    assert m.task_kind == "policy" and m.version == "1.0.0" and m.name == "navigation-2d"
    assert m.architecture == GaussianMLPSpec(in_features=2, hidden=[16, 16], out_features=2)
    assert m.input_shape == [2] and m.n_outputs == 2
    assert m.inner_loop.steps == 1 and m.inner_loop.lr == 0.1
    assert m.preprocessing == RolloutPreprocessing(gamma=0.99, horizon=20)
    assert isinstance(m.training.config, PolicyRunConfig)
    assert m.training.iterations_done == 6
    assert m.training.family["env_steps"] == run.env_steps
    for k, v in run.params.items():
        assert art.params[k].equal(v.detach())


def test_half_cheetah_meta_trains_and_saves_its_sizes_and_action_box(tmp_path):
    """Two meta-iterations on MuJoCo's half-cheetah, every copy stepped at once."""
    small = ["train.iterations=2", "train.meta_batch=2", "adaptation.trajectories=3"]
    small += ["env.horizon=10", "policy.hidden=[8]", "train.version=1.0.0"]
    cfg = load_policy_config("half-cheetah-vel", small)
    run = meta_train(cfg)
    assert run.env_steps == 2 * 2 * 2 * 3 * 10  # no episode ends early
    assert all(0 < row["kl"] < 0.01 for row in run.history)
    assert all(row["return_after"] < 0 for row in run.history)  # -|v - goal| - cost
    m = load_artifact(save_policy(cfg, tmp_path / "cheetah", run)).manifest
    assert m.architecture == GaussianMLPSpec(in_features=17, hidden=[8], out_features=6)
    expected = RolloutPreprocessing(gamma=0.99, horizon=10, action_low=-1, action_high=1)
    assert m.preprocessing == expected
    assert m.training.family["env"]["goal"] == "velocity"
