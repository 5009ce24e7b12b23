"""Artifacts round-trip exactly; corrupted or mismatched ones are refused with a clear error."""

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from meta_core.artifact import (
    ArtifactError,
    InnerLoopSpec,
    TrainingRecord,
    load_artifact,
    save_artifact,
)
from meta_core.config import load_config
from meta_core.networks import MLPSpec, build_network

SPEC = MLPSpec(in_features=1, hidden=[8, 8], out_features=1)
TRAINING = TrainingRecord(config=load_config("sinusoid"))


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    net = build_network(SPEC)
    params = dict(net.named_parameters())
    lrs = {k: torch.full((2,) + (1,) * v.dim(), 0.01) for k, v in params.items()}
    return save_artifact(
        tmp_path / "a",
        name="toy",
        version="1.2.3",
        architecture=SPEC,
        task_kind="regression",
        params=params,
        lrs=lrs,
        inner_loop=InnerLoopSpec(steps=2, lr=0.01, learned_lr="lslr"),
        preprocessing=None,
        training=TRAINING,
    )


def rewrite_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_round_trip_is_identical(artifact: Path):
    art = load_artifact(artifact)
    net = build_network(SPEC)
    torch.manual_seed(0)
    again = save_artifact(
        artifact.parent / "b",
        name=art.name,
        version=art.version,
        architecture=SPEC,
        task_kind="regression",
        params=art.params,
        lrs=art.lrs,
        inner_loop=art.manifest.inner_loop,
        preprocessing=None,
        training=TRAINING,
    )
    reloaded = load_artifact(again)
    assert set(reloaded.params) == {k for k, _ in net.named_parameters()}
    for k, v in art.params.items():
        assert torch.equal(v, reloaded.params[k])
    for k, v in art.lrs.items():
        assert torch.equal(v, reloaded.lrs[k])
    assert (artifact / "weights.safetensors").read_bytes() == (
        again / "weights.safetensors"
    ).read_bytes()
    assert reloaded.manifest.input_shape == [1] and reloaded.n_outputs == 1
    assert reloaded.manifest.inner_loop.steps == 2 and reloaded.version == "1.2.3"
    assert reloaded.manifest.training.config.family.name == "sinusoid"


def test_flipped_weight_byte_is_refused(artifact: Path):
    data = bytearray((artifact / "weights.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (artifact / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_artifact(artifact)


def test_edited_manifest_is_refused(artifact: Path):
    rewrite_manifest(artifact, version="9.9.9")
    with pytest.raises(ArtifactError, match="content hash mismatch"):
        load_artifact(artifact)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 7}, "schema_version 7 is not supported"),
        (
            {"task_kind": "ranking"},
            "manifest field task_kind: Input should be 'regression', 'classification' or 'policy'",
        ),
        ({"task_kind": "policy"}, "a policy meta-model .* has a gaussian_mlp architecture"),
        ({"n_outputs": 3}, "disagree with the architecture"),
        (
            {"inner_loop": {"steps": -1, "lr": 0.01, "learned_lr": "none", "adapt": "all"}},
            "manifest field inner_loop.steps: Input should be greater than or equal to 0",
        ),
        (
            {"inner_loop": {"steps": 1, "lr": float("inf"), "adapt": "all"}},
            "manifest field inner_loop.lr: Value error, must be finite",
        ),
    ],
)
def test_invalid_fields_are_refused(artifact: Path, change, message):
    rewrite_manifest(artifact, **change)
    with pytest.raises(ArtifactError, match=message):
        load_artifact(artifact)


def test_missing_field_and_missing_file_are_refused(artifact: Path):
    manifest = json.loads((artifact / "manifest.json").read_text())
    del manifest["architecture"]
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="lacks required field 'architecture'"):
        load_artifact(artifact)
    shutil.rmtree(artifact)
    with pytest.raises(ArtifactError, match="missing manifest.json"):
        load_artifact(artifact)


def test_weights_that_do_not_match_the_architecture_are_refused(tmp_path: Path):
    other = build_network(SPEC.model_copy(update={"hidden": [8, 9]}))
    with pytest.raises(
        ArtifactError,
        match=r"tensor net.body.2.bias is torch.float32 \[9\], "
        r"the architecture needs float32 \[8\]",
    ):
        load_artifact(
            save_artifact(
                tmp_path / "bad",
                name="x",
                version="1",
                architecture=SPEC,
                task_kind="regression",
                params=dict(other.named_parameters()),
                lrs={},
                inner_loop=InnerLoopSpec(steps=1, lr=0.01),
                preprocessing=None,
                training=TRAINING,
            )
        )


def test_threads_adapting_one_artifact_at_once_get_what_each_would_alone():
    art = load_artifact(Path(__file__).resolve().parents[2] / "models" / "omniglot-5w1s")
    tasks = [
        (torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(i)), i) for i in range(4)
    ]
    y = torch.arange(5)
    alone = [art.predict(art.adapt(x, y, steps=3), x) for x, _ in tasks]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def run(x: torch.Tensor, i: int) -> None:
        try:
            for _ in range(3):
                results[i] = art.predict(art.adapt(x, y, steps=3), x)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=task) for task in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, expected in enumerate(alone):
        torch.testing.assert_close(results[i], expected)
