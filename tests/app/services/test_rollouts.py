"""A policy task over HTTP: created as the meta-policy, acting (mean or seeded samples, with
log-probabilities), one policy-gradient step per revision on the client's rollouts (the same
step meta-training takes), and every malformed or stale rollout refused with nothing stored."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from app.core.errors import InvalidInput
from app.schemas import Trajectory
from app.services.rollouts import check_counts, support_rows, to_rollouts
from meta_core.artifact import load_artifact
from meta_core.inner_loop import gaussian_log_prob
from meta_core.rl.rollouts import support_set
from tests.conftest import ROOT
from tests.utils.problem import assert_problem

MODEL = "navigation-2d"


def trajectories(n: int = 4, steps: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Rollouts towards (0.3, -0.2) by a noisy walk: observations, actions, rewards."""
    rng = np.random.default_rng(seed)
    goal, out = np.array([0.3, -0.2]), []
    for _ in range(n):
        pos, obs, acts, rews = np.zeros(2), [], [], []
        for _ in range(steps - int(rng.integers(0, 3))):
            action = rng.normal(0.0, 0.1, size=2)
            new = pos + np.clip(action, -0.1, 0.1)
            obs.append(pos.tolist()), acts.append(action.tolist())
            rews.append(-float(((new - goal) ** 2).sum()))
            pos = new
        out.append({"observations": obs, "actions": acts, "rewards": rews})
    return out


def create(client: TestClient, key: dict[str, str], **body: Any) -> dict[str, Any]:
    r = client.post("/tasks", json={"model": MODEL, **body}, headers=key)
    assert r.status_code == 201, r.text
    return r.json()


def act(client: TestClient, key: dict[str, str], task_id: str, **body: Any) -> list[Any]:
    r = client.post(f"/tasks/{task_id}/predict", json=body, headers=key)
    assert r.status_code == 200, r.text
    return r.json()["predictions"]


def test_a_task_without_rollouts_is_the_meta_policy(client, alice):
    task = create(client, alice)
    assert (task["revision"], task["inner_steps"], task["support_size"]) == (1, 0, 0)
    assert task["storage"] == "float32" and task["labels"] is None
    art = load_artifact(ROOT / "models" / MODEL)
    obs = [[0.0, 0.0], [0.2, -0.4]]
    got = act(client, alice, task["id"], x=obs)
    out = art.predict(art.params, torch.tensor(obs))
    mean = out[:, :2]
    for row, m, o in zip(got, mean, out, strict=True):
        np.testing.assert_allclose(row["action"], m.numpy(), rtol=1e-5, atol=1e-6)
        expected = gaussian_log_prob(o, m)
        assert row["log_prob"] == pytest.approx(float(expected), rel=1e-5)


def test_seeded_samples_repeat_and_each_row_is_its_own(client, alice):
    task = create(client, alice)
    obs = [[0.0, 0.0], [0.1, 0.1], [-0.3, 0.2]]
    a = act(client, alice, task["id"], x=obs, sample=True, seed=7)
    assert act(client, alice, task["id"], x=obs, sample=True, seed=7) == a
    assert act(client, alice, task["id"], x=obs, sample=True, seed=8) != a
    # Row 0's draw depends on the seed and its position, not on the rows after it.
    # (to float32 rounding: a matrix product of another batch size may round otherwise)
    alone = act(client, alice, task["id"], x=obs[:1], sample=True, seed=7)
    np.testing.assert_allclose(alone[0]["action"], a[0]["action"], rtol=1e-5, atol=1e-6)
    art = load_artifact(ROOT / "models" / MODEL)
    out = art.predict(art.params, torch.tensor(obs))
    logp = gaussian_log_prob(out, torch.tensor([r["action"] for r in a]))
    np.testing.assert_allclose([r["log_prob"] for r in a], logp.numpy(), rtol=1e-4)


def test_a_step_is_the_inner_step_of_meta_training(client, alice, tmp_path):
    """The service's step on posted rollouts equals meta_core's inner step on the same
    rollouts (padded, as meta-training batches them), and the next revision acts so."""
    task = create(client, alice)
    runs = trajectories()
    r = client.post(
        f"/tasks/{task['id']}/examples", json={"trajectories": runs, "revision": 1}, headers=alice
    )
    assert r.status_code == 200, r.text
    stepped = r.json()
    assert r.headers["ETag"] == '"2"'
    assert (stepped["revision"], stepped["inner_steps"]) == (2, 1)
    assert stepped["support_size"] == sum(len(t["rewards"]) for t in runs)
    returns = [sum(t["rewards"]) for t in runs]
    assert stepped["metrics"]["rollout_return"] == pytest.approx(np.mean(returns), rel=1e-5)
    assert stepped["metrics"]["trajectories"] == 4
    art = load_artifact(ROOT / "models" / MODEL)
    rollouts = to_rollouts(art, [Trajectory(**t) for t in runs], "trajectories")
    x, y = support_set(rollouts, art.manifest.preprocessing)
    expected = art.adapt(x, y, steps=1)
    obs = [[0.05, -0.1], [0.3, 0.3]]
    got = act(client, alice, task["id"], x=obs)
    mean = art.predict(expected, torch.tensor(obs))[:, :2]
    np.testing.assert_allclose([g["action"] for g in got], mean.numpy(), rtol=1e-5, atol=1e-6)
    # A second step starts from the first one's policy.
    r = client.post(
        f"/tasks/{task['id']}/examples",
        json={"trajectories": trajectories(seed=1), "revision": 2},
        headers=alice,
    )
    assert r.json()["inner_steps"] == 2 and r.json()["revision"] == 3
    assert stepped["inner_lr"] is None  # the first step: the model's inner_loop.lr
    assert r.json()["inner_lr"] == art.manifest.inner_loop.later_lr == 0.02
    export = client.get(f"/tasks/{task['id']}/model", headers=alice)
    assert export.status_code == 200 and export.headers["ETag"] == '"3"'
    with tarfile.open(fileobj=io.BytesIO(export.content)) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "weights.safetensors"]
    archive = tmp_path / "task.tar"
    archive.write_bytes(export.content)
    exported = load_artifact(archive)  # predicts offline exactly as the service does
    assert exported.manifest.task.revision == 3 and exported.manifest.task.inner_steps == 2
    offline = exported.predict(exported.params, torch.tensor(obs))[:, :2]
    served = act(client, alice, task["id"], x=obs)
    np.testing.assert_allclose([g["action"] for g in served], offline.numpy(), rtol=1e-5)


def stored_state(client: TestClient, key: dict[str, str], task_id: str) -> tuple[Any, ...]:
    task = client.get(f"/tasks/{task_id}", headers=key).json()
    return task["revision"], task["inner_steps"], act(client, key, task_id, x=[[0.1, 0.2]])


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        (
            {"revision": 1},
            409,
            "these rollouts were collected with revision 1 of task '{id}', an older revision; it "
            "is at revision 2: roll out its current policy (predict) and send those with that "
            "revision",
        ),
        (
            {"trajectories": [{"observations": [[0, 0, 0]], "actions": [[0, 0]], "rewards": [0]}]},
            422,
            "trajectories[0].observations has shape [1, 3]; model 'navigation-2d' observes "
            "[steps, 2]",
        ),
        (
            {
                "trajectories": [
                    {"observations": [[0, 0]], "actions": [[0, 0], [1, 1]], "rewards": [0]}
                ]
            },
            422,
            "trajectories[0].actions has shape [2, 2]; expected [1, 2] (one action per "
            "observation)",
        ),
        (
            {"trajectories": [{"observations": [[0, 0]], "actions": [[0, 0]], "rewards": [0, 1]}]},
            422,
            "trajectories[0].rewards has shape [2]; expected [1] (one reward per step)",
        ),
        (
            {
                "trajectories": [
                    {
                        "observations": [[0, 0]] * 3,
                        "actions": [[0, 0]] * 3,
                        "rewards": [0] * 3,
                        "dones": [False, True, False],
                    }
                ]
            },
            422,
            "trajectories[0].dones says the episode ended at step 1 of 3: a trajectory ends at "
            "its first done; send what follows as another trajectory",
        ),
        (
            {"trajectories": [{"observations": [[0, 0]], "actions": [[0, 0]], "rewards": [1e39]}]},
            422,
            "trajectories[0].rewards contains NaN or Inf, or a number beyond float32's range",
        ),
        (
            {"trajectories": []},
            422,
            "trajectories is empty: send at least one trajectory, or "
            "leave it out to start from the meta-policy",
        ),
        ({"x": [[0, 0]], "y": [0]}, 422, "send trajectories (a policy task) or x and y, not both"),
        ({"revision": None}, 422, "a policy task's step needs both trajectories and revision"),
    ],
)
def test_bad_or_stale_rollouts_are_refused_and_change_nothing(
    client, alice, change, status, detail
):
    task = create(client, alice, trajectories=trajectories())  # revision 1, one step
    body = {"trajectories": trajectories(seed=2), "revision": 1}
    assert client.post(f"/tasks/{task['id']}/examples", json=body, headers=alice).status_code == 200
    before = stored_state(client, alice, task["id"])
    body = {"trajectories": trajectories(seed=3), "revision": 2} | change
    body = {k: v for k, v in body.items() if v is not None}
    r = client.post(f"/tasks/{task['id']}/examples", json=body, headers=alice)
    assert_problem(r, status, detail.format(id=task["id"]))
    assert stored_state(client, alice, task["id"]) == before


def test_what_a_policy_task_refuses_and_what_others_refuse(client, alice):
    task = create(client, alice)
    r = client.post(f"/tasks/{task['id']}/examples", json={"x": [[0, 0]], "y": [0]}, headers=alice)
    assert_problem(
        r, 422,
        f"task {task['id']!r} is a policy's: send trajectories and the revision that collected "
        "them, not x and y",
    )  # fmt: skip
    r = client.post(f"/tasks/{task['id']}/readapt", headers=alice)
    assert_problem(
        r, 409,
        f"task {task['id']!r} is a policy's, adapted step by step on rollouts of its own "
        "policies: it cannot be re-adapted from the meta-policy; create a new task "
        "(POST /tasks) and collect its rollouts",
    )  # fmt: skip
    r = client.post(
        "/tasks", json={"model": MODEL, "support": {"x": [[0, 0]], "y": [0]}}, headers=alice
    )
    assert_problem(
        r, 422,
        "model 'navigation-2d' is a policy: send trajectories (rollouts of its meta-policy), or "
        "nothing to start from the meta-policy; not support or query",
    )  # fmt: skip
    r = client.post(
        "/tasks", json={"model": "sinusoid", "trajectories": trajectories()}, headers=alice
    )
    assert_problem(
        r, 422, "model 'sinusoid' is not a policy: send support (x and y), not trajectories"
    )
    r = client.post("/tasks", json={"model": "sinusoid"}, headers=alice)
    assert_problem(r, 422, "support is required: model 'sinusoid' adapts to examples")
    sine = client.post(
        "/tasks",
        json={"model": "sinusoid", "support": {"x": [0.0, 1.0], "y": [0.0, 1.0]}},
        headers=alice,
    ).json()
    r = client.post(
        f"/tasks/{sine['id']}/predict", json={"x": [0.5], "sample": True}, headers=alice
    )
    assert_problem(r, 422, "sample and seed are a policy's; model 'sinusoid' is not one")
    r = client.post(
        f"/tasks/{sine['id']}/examples",
        json={"trajectories": trajectories(), "revision": 1},
        headers=alice,
    )
    assert_problem(
        r, 422, f"task {sine['id']!r} is not a policy's: send examples as x and y, not trajectories"
    )
    assert client.post(f"/tasks/{task['id']}/predict", json={"x": [[0, 0]]}).status_code == 401


def test_another_clients_policy_task_is_none_of_theirs(client, alice, bob):
    task = create(client, alice)
    step = {"trajectories": trajectories(), "revision": 1}
    for r in (
        client.post(f"/tasks/{task['id']}/predict", json={"x": [[0, 0]]}, headers=bob),
        client.post(f"/tasks/{task['id']}/examples", json=step, headers=bob),
    ):
        assert_problem(r, 404, f"no task {task['id']!r}")
    assert client.get(f"/tasks/{task['id']}", headers=alice).json()["revision"] == 1


def test_rollout_limits(settings):
    settings = settings.model_copy(update={"max_trajectories": 3, "max_trajectory_steps": 5})
    runs = [Trajectory(**t) for t in trajectories(n=4, steps=4)]
    with pytest.raises(InvalidInput, match=r"^trajectories has 4 trajectories; the limit is 3$"):
        check_counts(runs, "trajectories", settings)
    long = [Trajectory(**t) for t in trajectories(n=1, steps=8)]
    with pytest.raises(InvalidInput, match=r"^trajectories\[0\] has \d steps; the limit is 5$"):
        check_counts(long, "trajectories", settings)
    assert check_counts(runs[:3], "trajectories", settings) == sum(len(t.rewards) for t in runs[:3])


def test_padding_rows_are_dropped_from_the_support_set():
    art = load_artifact(ROOT / "models" / MODEL)
    runs = [Trajectory(**t) for t in trajectories()]
    rollouts = to_rollouts(art, runs, "trajectories")
    x, y = support_rows(art, rollouts)
    assert len(x) == sum(len(t.rewards) for t in runs) < rollouts.mask.numel()
    full_x, full_y = support_set(rollouts, art.manifest.preprocessing)
    kept = rollouts.mask.reshape(-1) > 0
    assert torch.equal(x, full_x[kept]) and torch.equal(y, full_y[kept])
    assert full_y[~kept, -1].abs().sum() == 0


def test_a_half_cheetah_meta_models_rollouts_are_its_own_sizes(tmp_path):
    """The service knows no environment: a half-cheetah meta-model's 17-number observations
    and 6-number actions, as MuJoCo produced them, make the rows meta-training's inner step
    takes; its navigation-sized rollouts are refused."""
    from meta_core.rl.config import load_policy_config
    from meta_core.rl.environments import sample_environment
    from meta_core.rl.rollouts import policy_of, sample
    from meta_core.rl.train import meta_train, save_policy

    small = ["train.iterations=0", "env.horizon=6", "policy.hidden=[8]", "train.version=1.0.0"]
    cfg = load_policy_config("half-cheetah-dir", small)
    art = load_artifact(save_policy(cfg, tmp_path / "cheetah", meta_train(cfg)))
    g = torch.Generator().manual_seed(0)
    env = sample_environment(cfg.env, 1, g)
    made = sample(policy_of(art.network(), art.params, False), env, 3, 6, g)
    runs = [
        Trajectory(observations=o.tolist(), actions=a.tolist(), rewards=r.tolist())
        for o, a, r in zip(made.observations[0], made.actions[0], made.rewards[0], strict=True)
    ]
    rollouts = to_rollouts(art, runs, "trajectories")
    x, y = support_rows(art, rollouts)
    expected_x, expected_y = support_set(made, art.manifest.preprocessing)
    assert x.shape == (18, 17) and y.shape == (18, 7)
    torch.testing.assert_close(x, expected_x[0])
    torch.testing.assert_close(y, expected_y[0])
    with pytest.raises(InvalidInput, match=r"observes \[steps, 17\]$"):
        to_rollouts(art, [Trajectory(**t) for t in trajectories()], "trajectories")
