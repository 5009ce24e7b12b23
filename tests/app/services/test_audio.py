"""Recordings over HTTP: base64 WAV or FLAC (plain or as a data URL), preprocessed as in training
(meta_core.audio), every bound checked on the headers before a sample is decoded, on the
worker pools; and an audio task's examples, export, storage forms and versions, as for any
other meta-model."""

from __future__ import annotations

import base64
import io
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from fastapi.testclient import TestClient

from app.api import bodies
from app.core.config import Settings
from app.core.errors import InvalidInput
from app.main import create_app
from app.schemas import Examples, TaskCreate
from app.services import inputs, weights
from app.services.audio import MAX_FILTER, AudioLimits, filter_size, recordings_to_array
from app.services.inputs import check_cost, grow, prepare
from app.services.limits import Limits
from meta_core.artifact import load_artifact
from meta_core.audio import clips_to_array, read_audio, sinc_kernel
from tests.utils.meta_models import TONES, audio_meta_model, new_version
from tests.utils.problem import assert_problem
from tests.utils.recordings import encode, tone

PITCHES = {"low": 300.0, "mid": 1000.0, "high": 3000.0}


def recording(
    freq: float = 1000.0,
    seconds: float = 0.6,
    rate: int = 16000,
    *,
    channels: int = 1,
    fmt: str = "WAV",
    seed: int = 0,
) -> bytes:
    """A tone as a WAV or FLAC file's bytes."""
    rng = np.random.default_rng(seed)
    return encode(tone(freq, seconds, rate, rng=rng, channels=channels), rate, fmt)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wav(freq: float = 1000.0, seconds: float = 0.6, **kwargs: Any) -> str:
    return b64(recording(freq, seconds, **kwargs))


def support(classes: tuple[str, ...] = ("low", "mid", "high"), per_class: int = 2) -> Examples:
    x = [wav(PITCHES[c], 0.4 + 0.1 * i, seed=i) for c in classes for i in range(per_class)]
    return Examples(x=x, y=[c for c in classes for _ in range(per_class)])


def task_body(examples: Examples | None = None, **extra: Any) -> dict[str, Any]:
    examples = examples or support()
    return {"model": "tones", "support": examples.model_dump()} | extra


def spectrogram(data: bytes) -> list[Any]:
    """A recording's network input, made offline by meta_core as training makes it."""
    rows: list[Any] = clips_to_array([read_audio(data)], TONES)[0].tolist()
    return rows


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder serving the small audio meta-model ``tones`` 1.0.0."""
    root = tmp_path_factory.mktemp("audio") / "models"
    audio_meta_model(root / "tones")
    return root


@contextmanager
def serving(settings: Settings, models: Path, **changes: Any) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"model_dir": models} | changes))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def create(c: TestClient, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = c.post("/tasks", headers=headers, json=body)
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()
    return task


def predict(c: TestClient, headers: dict[str, str], tid: str, x: list[Any]) -> list[Any]:
    r = c.post(f"/tasks/{tid}/predict", headers=headers, json={"x": x})
    assert r.status_code == 200, r.text
    predictions: list[Any] = r.json()["predictions"]
    return predictions


def assert_same(a: list[Any], b: list[Any]) -> None:
    """The same predictions, to float32 rounding (the recordings ran on a pool thread)."""
    assert [p["label"] for p in a] == [p["label"] for p in b]
    for p, q in zip(a, b, strict=True):
        assert p["probabilities"] == pytest.approx(q["probabilities"], abs=1e-5)


def test_a_task_from_wav_recordings_predicts_wav_flac_and_data_urls_alike(
    settings, db, alice, models
):
    with serving(settings, models) as c:
        shown = c.get("/models/tones", headers=alice).json()
        assert shown["input_shape"] == [1, 16, 32] and shown["preprocessing"]["type"] == "audio"
        task = create(c, alice, task_body())
        assert task["labels"] == ["high", "low", "mid"] and task["support_size"] == 6
        metrics = task["metrics"]
        assert metrics["support_loss_after"] < metrics["support_loss_before"]
        data = recording(1000.0, 0.8, seed=7)
        flac = recording(1000.0, 0.8, seed=7, fmt="FLAC")
        rows = [
            b64(data),
            b64(flac),
            f"data:audio/wav;base64,{b64(data)}",
            f"data:audio/x-flac;base64,{b64(flac)}",
            f"data:application/octet-stream;base64,{b64(data)}",  # the bytes say what it is
        ]
        out = predict(c, alice, task["id"], rows)
        assert out[2] == out[4] == out[0] and out[3] == out[1]  # a data URL is its file
        # (libsndfile rounds a float to 16 bits a step apart for WAV and FLAC, at most.)
        assert_same(out[1:2], out[:1])
        # The service's preprocessing is meta_core's: the spectrogram as an array answers
        # the same.
        assert_same(predict(c, alice, task["id"], [spectrogram(data)]), out[:1])


def test_stereo_and_other_rates_are_mixed_down_and_resampled_as_in_training(
    settings, db, alice, models
):
    clips = [
        recording(1000.0, 0.7, 8000),
        recording(300.0, 0.7, 44100),
        recording(3000.0, 0.5, 16000, channels=2),
        recording(1000.0, 0.7, 48000, channels=2, fmt="FLAC"),
        recording(300.0, 1.5, 22050, channels=3),
        recording(3000.0, 0.3, 11025),
    ]
    with serving(settings, models) as c:
        tid = create(c, alice, task_body())["id"]
        out = predict(c, alice, tid, [b64(d) for d in clips])
        assert_same(out, predict(c, alice, tid, [spectrogram(d) for d in clips]))


def without_length(flac: bytes) -> bytes:
    """A FLAC whose STREAMINFO says 0 total samples (unknown), as a streaming encoder leaves
    it: the low 4 bits of byte 21 and bytes 22-25."""
    raw = bytearray(flac)
    raw[21] &= 0xF0
    raw[22:26] = bytes(4)
    return bytes(raw)


def written(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> str:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return b64(buf.getvalue())


SILENCE = np.zeros((1600, 1), dtype=np.float32)
LOUD_NAN = np.full((8000, 1), np.nan, dtype=np.float32)
# Smaller bounds for the refusals below: 50,000 bytes, 2 s and 40,000 samples.
SMALLER = {"max_audio_bytes": 50_000, "max_audio_seconds": 2.0, "max_request_samples": 40_000}


@pytest.mark.parametrize(
    ("x", "detail"),
    [
        (["not base64!"], "support.x[0] is not valid base64"),
        (["data:audio/wav,abc"], "support.x[0] is a data URL without base64 data"),
        (
            [b64(b"plain text, not a recording")],
            "support.x[0] is not a decodable WAV or FLAC recording",
        ),
        ([written(SILENCE, 16000, "OGG")], "support.x[0] is OGG audio; send WAV or FLAC"),
        ([written(SILENCE, 16000, "AIFF")], "support.x[0] is AIFF audio; send WAV or FLAC"),
        ([wav(seconds=1.9)], "support.x[0] is larger than 50000 bytes"),
        ([wav(seconds=2.5, rate=8000)], "support.x[0] is 2.5 s long; the limit is 2 s"),
        (
            [wav(seconds=0.05)],
            "support.x[0] is 0.05 s long, too short: this model takes recordings of at least 0.1 s",
        ),
        ([written(SILENCE[:0], 16000, "WAV")], "support.x[0] holds no samples"),
        (
            [wav(seconds=0.5, rate=4000)],
            "support.x[0] is recorded at 4000 Hz; recordings may be from 8000 to 96000 Hz",
        ),
        (
            [wav(seconds=0.1, rate=192000)],
            "support.x[0] is recorded at 192000 Hz; recordings may be from 8000 to 96000 Hz",
        ),
        (
            [wav(seconds=0.5, rate=44101)],
            "support.x[0] is recorded at 44101 Hz, which is in no simple ratio to this model's "
            "16000 Hz (44101:16000): send it at 16000 Hz or a common rate (8000, 11025, 22050, "
            "44100, 48000 Hz)",
        ),
        ([wav(seconds=0.15, channels=9)], "support.x[0] has 9 channels; the limit is 8"),
        (
            [wav(seconds=0.9, seed=i) for i in range(3)],
            "support.x's recordings count 43200 samples; the limit is 40000 samples per request",
        ),
        (  # 2 x 0.3 s at 44.1 kHz, and the 76,000 entries of its resampling filter
            [wav(seconds=0.3, rate=44100)] * 2,
            "support.x's recordings count 102460 samples; the limit is 40000 samples per request",
        ),
        (
            [b64(recording(seconds=1.0, fmt="FLAC")[:3000])],
            "support.x[0] is not a decodable WAV or FLAC recording",
        ),
        (
            [b64(without_length(recording(seconds=0.5, fmt="FLAC")))],
            "support.x[0] does not say how long it is (a stream written without its length): "
            "send it as a complete file",
        ),
        (
            [written(LOUD_NAN, 16000, "WAV", "FLOAT")],
            "support.x[0] holds samples that are NaN, infinite or too large for a spectrogram "
            "(a float WAV's samples belong in [-1, 1])",
        ),
        (
            [wav(seconds=0.5), [[[0.0] * 32] * 16]],
            "support.x mixes recordings (strings) with other values",
        ),
    ],
)
def test_bad_recordings_are_a_clear_422_and_store_nothing(settings, db, alice, models, x, detail):
    with serving(settings, models, **SMALLER) as c:
        r = c.post(
            "/tasks",
            headers=alice,
            json={"model": "tones", "support": {"x": x, "y": ["a"] * len(x)}},
        )
        assert_problem(r, 422, detail)
        assert c.get("/tasks", headers=alice).json()["total"] == 0


def test_the_query_sets_recordings_count_with_the_support_sets(settings, db, alice, models):
    body = task_body(
        Examples(x=[wav(300.0, 0.9), wav(3000.0, 0.9)], y=["low", "high"]),
        query={"x": [wav(300.0, 0.9, seed=1)], "y": ["low"]},
    )
    with serving(settings, models, **SMALLER) as c:
        assert_problem(
            c.post("/tasks", headers=alice, json=body),
            422,
            "query.x's recordings count 14400 samples, 43200 with the request's other "
            "recordings; the limit is 40000 samples per request",
        )
        assert c.get("/tasks", headers=alice).json()["total"] == 0


@pytest.fixture(scope="module")
def tones(models: Path):
    return load_artifact(models / "tones")


def test_decoding_counts_against_the_adaptations_cost_budget_before_any_sample_is_decoded(tones):
    # Two FLACs whose headers say 1 s each, but whose data stops short: only a check made
    # before decoding can say anything but 'not decodable' about them.
    flac = b64(recording(seconds=1.0, fmt="FLAC")[:3000])
    body = TaskCreate.model_validate(task_body(Examples(x=[flac, flac], y=[0, 1])))
    settings = Settings()
    tight = Limits.of(Settings(max_adapt_flops=5e7))
    check_cost(tones, body, tight, settings)  # the inner loop alone fits: 0.0106 GFLOP
    with pytest.raises(InvalidInput) as refused:
        prepare(tones, body, settings, limits=tight)
    assert refused.value.detail == (
        "this adaptation would cost 0.0906 GFLOP (2 support rows x 5 inner steps of model "
        "'tones', 310880 FLOPs per row, and 32000 audio samples to decode at 2500 FLOPs each); "
        "the limit is 0.05 GFLOP: send fewer rows, inner_steps or shorter recordings"
    )
    with pytest.raises(InvalidInput, match=r"support.x\[0\] is not a decodable WAV or FLAC"):
        prepare(tones, body, settings, limits=Limits.of(Settings(max_adapt_flops=1e8)))
    # Examples added to a task count theirs too, with the task's rows.
    rows = (torch.zeros(2, *tones.row_shape), torch.tensor([0, 1]))
    with pytest.raises(InvalidInput) as refused:
        grow(tones, rows, [0, 1], Examples(x=[flac], y=[0]), settings, limits=tight, steps=5)
    assert refused.value.detail == (
        "this adaptation would cost 0.0559 GFLOP (3 support rows x 5 inner steps of model "
        "'tones', 310880 FLOPs per row, and 16000 audio samples to decode at 2500 FLOPs each); "
        "the limit is 0.05 GFLOP: send fewer rows, inner_steps or shorter recordings"
    )


def test_an_adaptation_over_the_callers_budget_stores_nothing(settings, db, alice, models):
    with serving(settings, models, max_adapt_flops=5e7) as c:
        r = c.post("/tasks", headers=alice, json=task_body(support(per_class=1)))
        assert r.status_code == 422 and "audio samples to decode" in r.json()["detail"]
        assert c.get("/tasks", headers=alice).json()["total"] == 0


def test_the_filter_bound_is_the_size_of_meta_cores_filter():
    for rate in (8000, 8016, 11025, 22050, 44100, 48000, 12345):
        gcd = math.gcd(rate, TONES.sample_rate)
        kernel, _ = sinc_kernel(
            rate // gcd, TONES.sample_rate // gcd, TONES.resampler_zeros, TONES.resampler_rolloff
        )
        assert filter_size(rate, TONES) == kernel.numel(), rate
    assert filter_size(16000, TONES) == 0
    assert filter_size(11025, TONES) <= MAX_FILTER < filter_size(44101, TONES)


def test_recordings_are_decoded_one_rate_at_a_time_and_kept_in_order():
    clips = [recording(300.0, 0.5, 22050), recording(3000.0, 0.5), recording(1000.0, 0.5, 8000)]
    limits = AudioLimits(2**20, 8000, 96000, 10.0, 8, 2**24)
    out = recordings_to_array([b64(d) for d in clips], "x", TONES, limits)
    expected = np.stack([clips_to_array([read_audio(d)], TONES)[0] for d in clips])
    np.testing.assert_array_equal(out, expected)
    filters = filter_size(22050, TONES) + filter_size(8000, TONES)
    assert limits.decoded == 11025 + 8000 + 4000 + filters


class ThreadsSeen:
    """``recordings_to_array``, recording the thread each call runs on."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, *args: Any) -> Any:
        self.names.append(threading.current_thread().name)
        return recordings_to_array(*args)


def test_recordings_are_decoded_on_the_pools_never_on_the_event_loop(
    settings, db, alice, models, monkeypatch
):
    seen = ThreadsSeen()
    monkeypatch.setattr(inputs, "recordings_to_array", seen)
    with serving(settings, models) as c:
        tid = create(c, alice, task_body(support(per_class=1)))["id"]
        predict(c, alice, tid, [wav()])
        r = c.post(f"/tasks/{tid}/examples", headers=alice, json={"x": [wav()], "y": ["mid"]})
        assert r.status_code == 200, r.text
    assert [n.rsplit("_", 1)[0] for n in seen.names] == [
        "adaptations",
        "predictions",
        "adaptations",
    ]


def test_examples_etags_and_export_work_for_recordings(settings, db, alice, models, tmp_path):
    first = support(("low", "mid"), per_class=1)
    added = Examples(x=[wav(3000.0, seed=5), wav(300.0, seed=6)], y=["high", "low"])
    ask = [recording(f, 0.7, seed=9) for f in PITCHES.values()]
    with serving(settings, models) as c:
        task = create(c, alice, task_body(first))
        url = f"/tasks/{task['id']}/examples"
        r = c.post(url, headers=alice | {"If-Match": '"1"'}, json=added.model_dump())
        assert r.status_code == 200, r.text
        grown = r.json()
        assert r.headers["etag"] == '"2"' and grown["support_size"] == 4
        assert grown["labels"] == ["high", "low", "mid"]
        served = predict(c, alice, task["id"], [b64(d) for d in ask])
        # Exactly the task made from all four recordings at once.
        whole = Examples(x=first.x + added.x, y=first.y + added.y)
        assert (
            predict(c, alice, create(c, alice, task_body(whole))["id"], [b64(d) for d in ask])
            == served
        )
        # A bad recording changes nothing.
        ogg = written(SILENCE, 16000, "OGG")
        r = c.post(url, headers=alice, json={"x": [ogg], "y": ["low"]})
        assert_problem(r, 422, "x[0] is OGG audio; send WAV or FLAC")
        again = c.get(f"/tasks/{task['id']}", headers=alice)
        assert again.headers["etag"] == '"2"' and again.json()["support_size"] == 4
        # The export predicts offline, on meta_core's spectrograms, as the service does.
        r = c.get(f"/tasks/{task['id']}/model", headers=alice)
        assert r.status_code == 200 and r.headers["etag"] == '"2"'
        path = tmp_path / "task.tar"
        path.write_bytes(r.content)
        art = load_artifact(path)
        assert art.manifest.task is not None and art.manifest.task.labels == grown["labels"]
        assert art.manifest.preprocessing == TONES
        rows = np.array([spectrogram(d) for d in ask], dtype=np.float32)
        logits = art.predictor(art.params)(rows)[:, :3]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        for p, q in zip(served, probs.tolist(), strict=True):
            assert p["probabilities"] == pytest.approx(q, abs=1e-5)
        # Re-adapted on its stored spectrograms: the same model, one revision on.
        r = c.post(f"/tasks/{task['id']}/readapt", headers=alice | {"If-Match": '"2"'})
        assert r.status_code == 200 and r.headers["etag"] == '"3"'
        assert predict(c, alice, task["id"], [b64(d) for d in ask]) == served


@pytest.mark.parametrize("form", ["float32", "float16", "support"])
def test_every_storage_form_serves_an_audio_task_after_a_cache_miss(
    settings, db, alice, models, form
):
    ask = [wav(f, 0.7, seed=9) for f in PITCHES.values()]
    with serving(settings, models, task_storage=form) as c:
        task = create(c, alice, task_body())
        assert task["storage"] == form
        warm = predict(c, alice, task["id"], ask)
        c.app.state.services.cache.clear()
        assert predict(c, alice, task["id"], ask) == warm


def test_a_task_moves_only_to_a_version_with_the_same_preprocessing(settings, db, alice, tmp_path):
    folder = tmp_path / "models"
    audio_meta_model(folder / "tones")
    new_version(folder / "tones", folder / "tones-1.1.0", "1.1.0", nudge=0.01)
    restandardized = TONES.model_copy(update={"mean": 0.5})
    audio_meta_model(folder / "tones-2", version="2.0.0", spec=restandardized)
    with serving(settings, folder) as c:
        task = create(c, alice, task_body(model_version="1.0.0"))
        url = f"/tasks/{task['id']}/readapt"
        r = c.post(url, headers=alice, json={"model_version": "latest"})
        wanted = weights.features(load_artifact(folder / "tones-2"))
        held = weights.features(load_artifact(folder / "tones"))
        assert wanted != held and held == weights.features(load_artifact(folder / "tones-1.1.0"))
        assert_problem(
            r,
            422,
            f"version 2.0.0 of 'tones' takes {wanted}; the task's support set holds {held}, "
            "which it cannot adapt from: adapt a new task from its examples (POST /tasks)",
        )
        r = c.post(url, headers=alice, json={"model_version": "1.1.0"})
        assert r.status_code == 200 and r.json()["model_version"] == "1.1.0"


def test_an_audio_models_bodies_are_held_to_max_body_bytes_alone(tones):
    assert bodies.row_bytes(tones) is None  # a row may be a recording, of any length


def test_a_users_recordings_train_evaluate_and_serve(settings, db, alice, tmp_path):
    """The whole path without code: folders of WAV and FLAC files -> ``meta-core train
    --preset audio-folder`` (a few iterations) -> ``meta-core eval`` -> the service adapts to
    uploaded files and predicts others, exactly as meta_core preprocesses them."""
    from meta_core.cli import main
    from tests.utils.recordings import tone_folder

    root = tone_folder(tmp_path / "recordings", classes=20, per_class=8)
    out = tmp_path / "models" / "my-tones"
    tiny = [
        f"family.root={root}",
        "family.ways=3",
        "family.queries=2",
        "family.duration=0.5",
        "family.n_mels=16",
        "model.hidden=8",
        "train.iterations=4",
        "train.meta_batch=4",
        "train.val_every=2",
        "train.val_tasks=4",
        "name=my-tones",
        "version=1.0.0",
    ]
    args = ["train", "--preset", "audio-folder", "--out", str(out), "--no-progress"]
    assert main(args + [a for s in tiny for a in ("--set", s)]) == 0
    assert main(["eval", str(out), "--set", "tasks=4", "--set", "steps=[0, 1]", "--no-plots"]) == 0
    art = load_artifact(out)
    spec = art.manifest.preprocessing
    with serving(settings, tmp_path / "models") as c:
        shown = c.get("/models/my-tones", headers=alice).json()
        assert shown["input_shape"] == [1, 16, 51] and shown["preprocessing"]["type"] == "audio"
        classes = art.manifest.training.family["split"]["test"][:3]
        support = [b64((root / w / "00.wav").read_bytes()) for w in classes]
        task = create(c, alice, {"model": "my-tones", "support": {"x": support, "y": classes}})
        files = [root / w / "03.flac" for w in classes]  # FLAC, stereo, at 16 kHz
        out_json = predict(c, alice, task["id"], [b64(f.read_bytes()) for f in files])
        assert len(out_json) == 3
        # The same clips preprocessed by meta_core, sent as arrays: the same answer.
        assert spec is not None and spec.type == "audio"
        rows = clips_to_array([read_audio(f.read_bytes()) for f in files], spec)
        assert_same(predict(c, alice, task["id"], rows.tolist()), out_json)
