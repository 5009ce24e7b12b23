"""A table meta-model over HTTP: rows as lists in the manifest's column order or as objects
keyed by column name, standardized as in training; predictions in the target's units. And
an image request's decoding counted against its adaptation's cost."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.main import create_app
from app.schemas import Examples, TaskCreate
from app.services.inputs import check_cost, grow, prepare
from app.services.limits import Limits
from meta_core.artifact import load_artifact
from meta_core.config import load_config
from meta_core.data.example import write_table
from meta_core.train import train
from tests.conftest import ROOT
from tests.utils.problem import assert_problem


@pytest.fixture(scope="module")
def table_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("table")
    path = write_table(root)
    cfg = load_config(
        "table",
        [
            f"family.path={path}",
            "family.task_column=machine",
            "family.target_column=wear",
            "name=wear",
            "version=1.0.0",
            "train.iterations=30",
            "train.val_every=15",
            "train.val_tasks=10",
        ],
    )
    train(cfg, root / "models" / "wear", progress=False)
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r["machine"] == "m007"]
    return root / "models", rows


def test_rows_as_lists_or_objects_and_answers_in_the_targets_units(
    settings, db, alice, table_model
):
    models, rows = table_model
    art = load_artifact(models / "wear")
    spec = art.manifest.preprocessing
    assert spec is not None and spec.type == "table"
    columns = list(spec.columns)
    x = [[float(r[c]) for c in columns] for r in rows[:10]]
    y = [float(r["wear"]) for r in rows[:10]]
    ask = [{c: float(r[c]) for c in columns} for r in rows[10:15]]
    with TestClient(create_app(settings.model_copy(update={"model_dir": models}))) as c:
        shown = c.get("/models/wear", headers=alice).json()
        assert shown["preprocessing"]["columns"] == columns and shown["input_shape"] == [3]
        r = c.post("/tasks", headers=alice, json={"model": "wear", "support": {"x": x, "y": y}})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        by_name = c.post(f"/tasks/{tid}/predict", headers=alice, json={"x": ask}).json()
        as_lists = [[row[col] for col in columns] for row in ask]
        by_order = c.post(f"/tasks/{tid}/predict", headers=alice, json={"x": as_lists}).json()
        assert by_name["predictions"] == by_order["predictions"]
        # Offline, as training sees it: standardize, adapt, predict, back to wear's units.
        sx = torch.from_numpy(spec.inputs(np.array(x)))
        sy = torch.from_numpy(spec.targets(np.array(y))).view(-1, 1)
        params = art.adapt(sx, sy)
        out = art.predictor(params)(spec.inputs(np.array(as_lists)))
        expected = spec.outputs(out).reshape(-1).tolist()
        assert by_name["predictions"] == pytest.approx(expected, abs=1e-4)
        # In wear's units, not standardized ones: within the range of the machine's wear.
        assert min(y) - 3 < np.mean(by_name["predictions"]) < max(y) + 3

        bad = [
            (
                [{"temperature": 1.0, "load": 0.5}],
                "x[0] lacks column 'vibration'; columns: ['temperature', 'load', 'vibration']",
            ),
            (
                [{**ask[0], "colour": 1}],
                "x[0] has unknown column 'colour'; columns: ['temperature', 'load', 'vibration']",
            ),
            ([[1.0, 2.0]], "x has shape [1, 2]; model 'wear' takes [n, 3]"),
            (
                [{"temperature": "hot", "load": 0.5, "vibration": 0}],
                "x must be rows of numbers, or objects keyed by column name",
            ),
            ([[1.0, True, 2.0]], "x must hold numbers, not true or false"),
            ([ask[0], [1.0, 2.0, 3.0]], "x mixes objects with other rows"),
        ]
        for rows_sent, detail in bad:
            r = c.post(f"/tasks/{tid}/predict", headers=alice, json={"x": rows_sent})
            assert_problem(r, 422, detail)


def cut_short(size: int) -> str:
    """A PNG of ``size`` x ``size`` whose data stops after its header: it can only be
    refused by a check made before decoding, or else be 'not decodable'."""
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()[:200]).decode()


OMNIGLOT = load_artifact(ROOT / "models" / "omniglot-5w1s")


def test_decoding_counts_against_the_adaptations_cost_budget_before_any_pixel_is_decoded():
    body = TaskCreate.model_validate(
        {"model": "omniglot-5w1s", "support": {"x": [cut_short(800)] * 2, "y": [0, 1]}}
    )
    settings = Settings()
    tight = Limits.of(Settings(max_adapt_flops=3e8))
    check_cost(OMNIGLOT, body, tight, settings)  # the inner loop alone fits: 0.202 GFLOP
    with pytest.raises(InvalidInput) as refused:
        prepare(OMNIGLOT, body, settings, limits=tight)
    assert refused.value.detail == (
        "this adaptation would cost 0.458 GFLOP (2 support rows x 1 inner steps of model "
        "'omniglot-5w1s', 20162176 FLOPs per row, and 1280000 image pixels to decode at 200 "
        "FLOPs each); the limit is 0.3 GFLOP: send fewer rows, inner_steps or smaller images"
    )
    # With room for both, the images are decoded (and found cut short).
    with pytest.raises(InvalidInput, match=r"support.x\[0\] is not a decodable PNG or JPEG"):
        prepare(OMNIGLOT, body, settings, limits=Limits.of(Settings(max_adapt_flops=5e8)))


def test_examples_added_to_a_task_count_their_decoding_too():
    support = (torch.zeros(2, 1, 28, 28), torch.tensor([0, 1]))
    examples = Examples(x=[cut_short(800)] * 2, y=[0, 1])
    tight = Limits.of(Settings(max_adapt_flops=5e8))
    with pytest.raises(InvalidInput) as refused:
        grow(OMNIGLOT, support, [0, 1], examples, Settings(), limits=tight, steps=1)
    assert refused.value.detail == (
        "this adaptation would cost 0.659 GFLOP (4 support rows x 1 inner steps of model "
        "'omniglot-5w1s', 20162176 FLOPs per row, and 1280000 image pixels to decode at 200 "
        "FLOPs each); the limit is 0.5 GFLOP: send fewer rows, inner_steps or smaller images"
    )
