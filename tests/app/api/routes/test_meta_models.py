"""GET /models and /models/{name}: the loaded meta-models."""

from __future__ import annotations

from tests.utils.problem import assert_problem


def test_models(client, alice):
    models = client.get("/models", headers=alice).json()
    assert [m["name"] for m in models] == ["omniglot-20w1s", "omniglot-5w1s", "sinusoid"]
    sin = client.get("/models/sinusoid", headers=alice).json()
    assert sin["task_kind"] == "regression" and sin["input_shape"] == [1]
    assert sin["n_classes"] is None and sin["inner_loop"]["lr"] == 0.01
    omni = client.get("/models/omniglot-5w1s", headers=alice).json()
    assert omni["n_classes"] == 5 and omni["input_shape"] == [1, 28, 28]
    assert omni["evaluation"]["results"]["1"]["1"]["accuracy"] > 0.98
    omni20 = client.get("/models/omniglot-20w1s", headers=alice).json()
    assert omni20["n_classes"] == 20 and omni20["inner_loop"]["steps"] == 5
    assert_problem(client.get("/models/nope", headers=alice), 404, "no model 'nope'")
    assert client.get("/models").status_code == 401
