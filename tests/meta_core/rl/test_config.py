"""The policy presets: the MAML paper's settings, overridable, validated."""

import pytest

from meta_core.rl.config import HalfCheetahConfig, is_policy_preset, load_policy_config


def test_the_preset_has_the_papers_settings():
    cfg = load_policy_config("navigation-2d")
    assert (cfg.env.goal_low, cfg.env.goal_high, cfg.env.max_action) == (-0.5, 0.5, 0.1)
    assert (cfg.env.horizon, cfg.env.success_radius) == (100, 0.01)
    assert cfg.policy.hidden == [100, 100]
    a, t = cfg.adaptation, cfg.trpo
    assert (a.inner_lr, a.trajectories, cfg.train.meta_batch) == (0.1, 20, 20)
    assert (t.max_kl, t.cg_iterations, t.cg_damping) == (0.01, 10, 1e-5)
    assert (t.line_search_steps, t.line_search_backtrack) == (15, 0.8)


def test_overrides_and_their_errors():
    cfg = load_policy_config("navigation-2d", ["env.horizon=20", "policy.hidden=[8]"])
    assert cfg.env.horizon == 20 and cfg.policy.hidden == [8]
    with pytest.raises(ValueError, match="env.navigation-2d.horizon: Input should be greater"):
        load_policy_config("navigation-2d", ["env.horizon=0"])
    with pytest.raises(ValueError, match="env.navigation-2d: Value error, goal_low must be"):
        load_policy_config("navigation-2d", ["env.goal_low=1"])
    with pytest.raises(ValueError, match="trpo.max_kll"):
        load_policy_config("navigation-2d", ["trpo.max_kll=1"])


def test_the_half_cheetah_presets_have_the_papers_settings():
    vel, direction = load_policy_config("half-cheetah-vel"), load_policy_config("half-cheetah-dir")
    assert isinstance(vel.env, HalfCheetahConfig) and isinstance(direction.env, HalfCheetahConfig)
    assert (vel.env.goal, vel.env.velocity_low, vel.env.velocity_high) == ("velocity", 0.0, 2.0)
    assert direction.env.goal == "direction"
    for cfg in (vel, direction):
        assert (cfg.env.horizon, cfg.env.ctrl_cost, cfg.env.action_box) == (200, 0.05, (-1, 1))
        a = cfg.adaptation
        assert (a.inner_lr, a.trajectories, cfg.train.meta_batch) == (0.1, 20, 40)
        assert cfg.policy.hidden == [100, 100] and cfg.trpo.max_kl == 0.01
    with pytest.raises(ValueError, match="velocity_low must not be above velocity_high"):
        load_policy_config("half-cheetah-vel", ["env.velocity_low=3"])
    with pytest.raises(ValueError, match="env: Input tag 'ant' found using 'name'"):
        load_policy_config("half-cheetah-vel", ["env.name=ant"])


def test_policy_presets_are_told_apart():
    assert is_policy_preset("navigation-2d") and is_policy_preset("half-cheetah-dir")
    assert not is_policy_preset("sinusoid")
