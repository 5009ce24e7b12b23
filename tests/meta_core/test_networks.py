"""A prediction never depends on the other rows sent with it; the serving predictor computes
what the module does; bad specs are refused."""

import numpy as np
import pytest
import torch

from meta_core.inner_loop import InnerLoop, forward
from meta_core.networks import build_network, parse_architecture, predictor

CONV = {
    "type": "conv4",
    "in_channels": 1,
    "image_size": 28,
    "hidden": 16,
    "out_features": 5,
    "norm": "layer",
}
MLP = {"type": "mlp", "in_features": 3, "hidden": [16, 16], "out_features": 2}


@pytest.mark.parametrize("spec", [CONV, MLP, MLP | {"skip": True}])
def test_predictions_are_row_independent(spec):
    net = build_network(spec)
    params = dict(net.named_parameters())
    shape = [1, 28, 28] if spec["type"] == "conv4" else [3]
    x = torch.randn(6, *shape)
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    fast = InnerLoop(net, "classification", 2, 0.1).adapt(params, x, y)
    batch = forward(net, fast, x)
    alone = torch.cat([forward(net, fast, x[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, alone, rtol=1e-5, atol=1e-6)
    # Changing other rows (scale, batch size) leaves row 0's prediction unchanged.
    other = torch.cat([x[:1], 100 * torch.randn(9, *shape)])
    torch.testing.assert_close(forward(net, fast, other)[:1], batch[:1], rtol=1e-5, atol=1e-6)


def test_build_network_refuses_bad_specs():
    with pytest.raises(ValueError, match="bad architecture: Input tag 'resnet' found using 'type'"):
        build_network({"type": "resnet"})
    with pytest.raises(ValueError, match="bad architecture: mlp.hidden: Field required"):
        build_network({"type": "mlp", "in_features": 1, "out_features": 1})
    with pytest.raises(ValueError, match="mlp.dropout: Extra inputs are not permitted"):
        build_network(MLP | {"dropout": 0.5})
    with pytest.raises(ValueError, match="conv4.norm: Input should be 'layer' or 'none'"):
        build_network(CONV | {"norm": "batch"})


@pytest.mark.parametrize(
    "spec",
    [
        CONV,
        MLP,
        MLP | {"hidden": []},
        MLP | {"hidden": [64, 8, 32]},
        MLP | {"hidden": [64, 8], "skip": True},
    ],
)
def test_the_serving_predictor_computes_the_modules_forward(spec):
    torch.manual_seed(0)
    net = build_network(spec).requires_grad_(False).eval()
    shape = [1, 28, 28] if spec["type"] == "conv4" else [spec["in_features"]]
    x = torch.randn(7, *shape)
    x_np = x.numpy().copy()
    out = predictor(net)(x_np)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(out), net(x), rtol=1e-5, atol=1e-6)
    assert np.array_equal(x_np, x.numpy()), "the caller's array must not be written"
    one = predictor(net)(x_np[:1])
    np.testing.assert_allclose(one, out[:1], rtol=1e-5, atol=1e-6)


def test_the_mlp_keeps_the_parameter_names_artifacts_carry_and_computes_a_relu_network():
    torch.manual_seed(0)
    net = build_network(MLP | {"hidden": [16, 8]})
    p = dict(net.named_parameters())
    assert [(k, tuple(v.shape)) for k, v in p.items()] == [
        ("body.0.weight", (16, 3)),
        ("body.0.bias", (16,)),
        ("body.2.weight", (8, 16)),
        ("body.2.bias", (8,)),
        ("head.weight", (2, 8)),
        ("head.bias", (2,)),
    ]
    x = torch.randn(5, 3)
    h = torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])
    h = torch.relu(h @ p["body.2.weight"].T + p["body.2.bias"])
    torch.testing.assert_close(net(x), h @ p["head.weight"].T + p["head.bias"])
    # functional_call swaps the parameters the forward pass reads.
    doubled = {k: 2 * v.detach() for k, v in p.items()}
    h = torch.relu(x @ doubled["body.0.weight"].T + doubled["body.0.bias"])
    h = torch.relu(h @ doubled["body.2.weight"].T + doubled["body.2.bias"])
    expected = h @ doubled["head.weight"].T + doubled["head.bias"]
    torch.testing.assert_close(forward(net, doubled, x), expected)


def test_a_skip_mlps_head_sees_the_input_beside_the_last_hidden_layer():
    spec = MLP | {"hidden": [16], "skip": True}
    net = build_network(spec)
    p = dict(net.named_parameters())
    assert p["head.weight"].shape == (2, 16 + 3)
    x = torch.randn(5, 3)
    h = torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])
    expected = torch.cat([x, h], 1) @ p["head.weight"].T + p["head.bias"]
    torch.testing.assert_close(net(x), expected)
    # FLOPs: the hidden layer, then the head over 16 + 3 features.
    assert parse_architecture(spec).flops == (2 * 3 * 16 + 16) + (2 * 19 * 2 + 2)


def test_a_large_request_is_predicted_in_chunks_with_the_same_answer(monkeypatch):
    torch.manual_seed(0)
    net = build_network(CONV).requires_grad_(False).eval()
    x = torch.randn(150, 1, 28, 28).numpy()
    whole = net(torch.from_numpy(x)).numpy()
    seen: list[int] = []
    forward = net.forward
    monkeypatch.setattr(net, "forward", lambda batch: seen.append(len(batch)) or forward(batch))
    out = predictor(net)(x)
    assert seen == [64, 64, 22]  # at most PREDICT_CHUNK rows' activations at once
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)


def test_gaussian_policy_outputs_its_mean_and_log_std():
    from meta_core.networks import GaussianMLP, GaussianMLPSpec

    spec = GaussianMLPSpec(in_features=2, hidden=[100, 100], out_features=2, init_log_std=-0.5)
    net = build_network(spec.model_dump())
    assert isinstance(net, GaussianMLP)
    assert sorted(dict(net.named_parameters())) == [
        "body.0.bias", "body.0.weight", "body.2.bias", "body.2.weight",
        "head.bias", "head.weight", "log_std",
    ]  # fmt: skip
    x = torch.randn(7, 2)
    out = net(x)
    h = torch.tanh(net.body["2"](torch.tanh(net.body["0"](x))))
    torch.testing.assert_close(out[:, :2], net.head(h))
    torch.testing.assert_close(out[:, 2:], torch.full((7, 2), -0.5))
    assert spec.flops == 2 * (2 * 100 + 100 + 100 * 100 + 100 + 100 * 2 + 2)
