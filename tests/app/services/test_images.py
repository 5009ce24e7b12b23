"""Images over HTTP: base64 PNG/JPEG (plain or data URL), preprocessed as in training."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.services.images import ImageLimits, images_to_array
from meta_core.artifact import load_artifact
from meta_core.config import load_config
from meta_core.data.example import write_example
from meta_core.data.omniglot import read_set, read_split
from meta_core.preprocessing import image_to_array
from meta_core.train import train
from tests.utils.omniglot import real_omniglot
from tests.utils.overrides import override_services
from tests.utils.problem import assert_problem


@pytest.fixture(scope="module")
def drawings() -> dict[str, list[bytes]]:
    """The raw PNG bytes of every held-out character's 20 drawings, as a client has them."""
    chars = {}
    for name in ("images_background", "images_evaluation"):
        chars |= read_set(real_omniglot(), name)
    return {c: [data for _, data in sorted(chars[c])] for c in read_split("test")}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def http_accuracy(client, alice, drawings, model: str, ways: int, tasks: int, seed: int) -> float:
    """One PNG per class for ``ways`` held-out characters, then predict 3 other drawings each."""
    rng = random.Random(seed)
    correct = total = 0
    for _ in range(tasks):
        chars = rng.sample(sorted(drawings), ways)
        picks = [rng.sample(range(20), 4) for _ in chars]
        support = [b64(drawings[c][p[0]]) for c, p in zip(chars, picks, strict=True)]
        labels = [c.rsplit("/", 2)[-2] + "/" + c.rsplit("/", 1)[-1] for c in chars]
        r = client.post(
            "/tasks",
            headers=alice,
            json={"model": model, "support": {"x": support, "y": labels}},
        )
        assert r.status_code == 201, r.text
        query = [
            (b64(drawings[c][j]), label)
            for c, p, label in zip(chars, picks, labels, strict=True)
            for j in p[1:]
        ]
        p = client.post(
            f"/tasks/{r.json()['id']}/predict", headers=alice, json={"x": [q for q, _ in query]}
        )
        predicted = [row["label"] for row in p.json()["predictions"]]
        correct += sum(a == b for a, (_, b) in zip(predicted, query, strict=True))
        total += len(query)
    return correct / total


def test_one_png_per_class_then_predict_other_drawings(client, alice, drawings):
    assert http_accuracy(client, alice, drawings, "omniglot-5w1s", 5, tasks=20, seed=2017) >= 0.90


def test_twenty_way_one_shot_over_http(client, alice, drawings):
    # The shipped 20-way artifact measures 93.1% on 600 tasks; 5 tasks x 60 queries here.
    assert http_accuracy(client, alice, drawings, "omniglot-20w1s", 20, tasks=5, seed=20) >= 0.85


def test_data_urls_and_jpeg_are_accepted(client, alice, drawings):
    chars = sorted(drawings)[:2]
    png = drawings[chars[0]][0]
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("L").save(jpeg, format="JPEG", quality=95)
    support = [
        f"data:image/png;base64,{b64(png)}",
        f"data:image/jpeg;base64,{b64(jpeg.getvalue())}",
    ]
    r = client.post(
        "/tasks",
        headers=alice,
        json={"model": "omniglot-5w1s", "support": {"x": support, "y": ["a", "b"]}},
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/tasks/{r.json()['id']}/predict", headers=alice, json={"x": [b64(drawings[chars[0]][5])]}
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] in ("a", "b")


def encoded(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return b64(buf.getvalue())


def cut_short(size: int) -> str:
    """A PNG of ``size`` x ``size`` whose data stops after its header: only a check made
    before decoding can say anything but 'not decodable' about it."""
    noise = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    return b64(buf.getvalue()[:200])


@pytest.mark.parametrize(
    ("x", "detail"),
    [
        (["not base64!"], "support.x[0] is not valid base64"),
        ([b64(b"plain text, not an image")], "support.x[0] is not a decodable PNG or JPEG image"),
        (
            [encoded(Image.new("L", (28, 28)), "GIF")],
            "support.x[0] is a GIF image; send PNG or JPEG",
        ),
        (
            [encoded(Image.new("1", (3000, 3000)), "PNG")],
            "support.x[0] is 3000x3000 pixels; the limit is 4000000 pixels",
        ),
        (["data:image/png,abc"], "support.x[0] is a data URL without base64 data"),
        (
            [encoded(Image.new("1", (1000, 1000)), "PNG")],
            "support.x[0] is 1000x1000 pixels; images for this model may be at most 896 "
            "pixels a side (32 times its 28x28 input): downscale it",
        ),
        (
            [cut_short(800)] * 4,
            "support.x's images decode to 2560000 pixels; the limit is 2000000 pixels per request",
        ),
        (
            [b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)],
            "support.x[0] is not a decodable PNG or JPEG image",
        ),
    ],
)
def test_bad_images_are_a_clear_422(client, settings, alice, x, detail):
    app: FastAPI = client.app
    smaller = settings.model_copy(
        update={"max_image_pixels": 2000 * 2000, "max_request_pixels": 2_000_000}
    )
    override_services(app, settings=smaller)
    r = client.post(
        "/tasks",
        headers=alice,
        json={"model": "omniglot-5w1s", "support": {"x": x, "y": [0] * len(x)}},
    )
    assert_problem(r, 422, detail)
    assert client.get("/tasks", headers=alice).json()["total"] == 0


def test_strings_for_a_numeric_model_and_mixed_rows_are_refused(client, alice):
    r = client.post(
        "/tasks", headers=alice, json={"model": "sinusoid", "support": {"x": ["abc"], "y": [1.0]}}
    )
    assert_problem(r, 422, "support.x holds strings, but model 'sinusoid' takes numbers")
    png = encoded(Image.new("L", (28, 28)), "PNG")
    r = client.post(
        "/tasks",
        headers=alice,
        json={"model": "omniglot-5w1s", "support": {"x": [png, [[0.0] * 28] * 28], "y": [0, 1]}},
    )
    assert_problem(r, 422, "support.x mixes images (strings) with other values")


@pytest.fixture(scope="module", params=["rgb", "grayscale"])
def users_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, str]:
    """A tiny meta-model (RGB 32x32 normalized, or grayscale 28x28) trained on ``meta-core
    data example``'s image folders (a few iterations: the point is the path from files to
    predictions), those folders, and the channels."""
    root = tmp_path_factory.mktemp("byo")
    write_example(root)
    rgb = request.param == "rgb"
    cfg = load_config(
        "image-folder",
        [
            f"family.root={root / 'images'}",
            f'family.channels="{request.param}"',
            f"family.image_size={32 if rgb else 28}",
            f"family.normalize={'true' if rgb else 'false'}",
            "family.queries=2",
            "model.hidden=8",
            "train.iterations=4",
            "train.meta_batch=4",
            "train.val_every=2",
            "train.val_tasks=4",
            "name=shapes",
            "version=1.0.0",
        ],
    )
    models = root / "models"
    train(cfg, models / "shapes", progress=False)
    return models, root / "images", request.param


def test_a_users_image_model_adapts_and_predicts_uploaded_pngs(settings, db, alice, users_model):
    models, images, channels = users_model
    shape = [3, 32, 32] if channels == "rgb" else [1, 28, 28]
    art = load_artifact(models / "shapes")
    with TestClient(create_app(settings.model_copy(update={"model_dir": models}))) as c:
        shown = c.get("/models/shapes", headers=alice).json()
        assert shown["input_shape"] == shape
        assert shown["preprocessing"]["grayscale"] is (channels == "grayscale")
        assert (shown["preprocessing"]["mean"] is None) is (channels == "grayscale")
        classes = sorted(p.name for p in images.iterdir())[:3]
        support = [b64((images / c / "00.png").read_bytes()) for c in classes]
        r = c.post(
            "/tasks",
            headers=alice,
            json={"model": "shapes", "support": {"x": support, "y": classes}},
        )
        assert r.status_code == 201, r.text
        files = [images / c / "05.png" for c in classes]
        ask = [b64(f.read_bytes()) for f in files]
        out = c.post(f"/tasks/{r.json()['id']}/predict", headers=alice, json={"x": ask})
        assert out.status_code == 200 and out.json()["labels"] == classes
        # The service's preprocessing of an upload is meta_core's, normalization included:
        # the same rows as arrays give the same answer.
        spec = art.manifest.preprocessing
        assert spec is not None
        rows = [image_to_array(Image.open(f), spec).tolist() for f in files]
        same = c.post(f"/tasks/{r.json()['id']}/predict", headers=alice, json={"x": rows})
        # (To float32 rounding: the images ran on a pool thread, the arrays inline.)
        for a, b in zip(same.json()["predictions"], out.json()["predictions"], strict=True):
            assert a["label"] == b["label"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
        bad = c.post(f"/tasks/{r.json()['id']}/predict", headers=alice, json={"x": [[0.0] * 3]})
        expected = f"takes [n, {', '.join(map(str, shape))}]"
        assert bad.status_code == 422 and expected in bad.json()["detail"]


def test_the_query_sets_images_count_with_the_support_sets(client, settings, alice):
    fewer = settings.model_copy(update={"max_request_pixels": 2_000_000})
    override_services(client.app, settings=fewer)
    two = [encoded(Image.new("1", (800, 800), 1), "PNG")] * 2
    r = client.post(
        "/tasks",
        headers=alice,
        json={
            "model": "omniglot-5w1s",
            "support": {"x": two, "y": [0, 1]},
            "query": {"x": [cut_short(800)] * 3, "y": [0, 1, 0]},
        },
    )
    assert_problem(
        r,
        422,
        "query.x's images decode to 1920000 pixels, 3200000 with the request's other images; "
        "the limit is 2000000 pixels per request",
    )


OMNIGLOT = load_artifact(Path(__file__).parents[3] / "models" / "omniglot-5w1s")


def drawn(size: tuple[int, int]) -> Image.Image:
    """A character-like drawing (black strokes on white) of ``size`` (width, height)."""
    mask = np.zeros((28, 28), dtype=bool)
    mask[4:24, 12:15] = True
    mask[4:7, 15:22] = True
    image = Image.fromarray(np.where(mask, 0, 255).astype(np.uint8))
    return image.resize(size, Image.Resampling.NEAREST)


def test_a_phones_mpo_is_read_as_its_first_frame():
    spec = OMNIGLOT.manifest.preprocessing
    assert spec is not None and spec.type == "image"
    first, second = drawn((28, 28)).convert("RGB"), Image.new("RGB", (28, 28), "black")
    buf = io.BytesIO()
    first.save(buf, format="MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    out = images_to_array([b64(buf.getvalue())], "x", spec, ImageLimits(2**20, 2**24))
    jpeg = io.BytesIO()
    first.save(jpeg, format="JPEG", quality=95)  # the same first frame, as a plain JPEG
    np.testing.assert_array_equal(out[0], image_to_array(Image.open(jpeg), spec))


def test_a_large_jpeg_decodes_at_the_reduced_size_that_fits():
    spec = OMNIGLOT.manifest.preprocessing
    assert spec is not None and spec.type == "image"
    photo = io.BytesIO()
    drawn((4032, 3024)).save(photo, format="JPEG", quality=90)  # a 12-megapixel phone photo
    limits = ImageLimits(2**23, 2**24)
    out = images_to_array([b64(photo.getvalue())], "x", spec, limits)
    # Decoded at 1/8 (504x378, within 32 x 28 = 896 a side), not at 4032x3024 ...
    assert limits.decoded == 504 * 378
    # ... and preprocessed to nearly what the full decode gives.
    full = image_to_array(Image.open(photo), spec)
    assert np.abs(out[0] - full).max() < 0.1
