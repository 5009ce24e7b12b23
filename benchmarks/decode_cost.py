"""What decoding an image pixel costs against the inner loop's FLOPs, on one core: the basis of
``DECODE_FLOPS_PER_PIXEL`` (``app/services/inputs.py``), which counts a request's decoded
pixels in its adaptation's cost. Decoding and preprocessing (``images_to_array``, as the
service does it) in ms per megapixel for images that are cheap to send (1-bit and flat PNGs:
the costly case, many pixels per byte) and dear (noise); the inner loop's GFLOP/s on an
Omniglot adaptation; their ratio in FLOPs per pixel. With ``--audio``, likewise for
``DECODE_FLOPS_PER_SAMPLE``: decoding ten-second recordings and making their spectrograms
(``recordings_to_array``: mono, resampling, log-mel, for the audio-folder preset's 16 kHz,
40-band spectrograms) in ns per input sample, at common rates and at the dearest rate the
service accepts, and the inner loop on a Conv4 of the preset's size over those spectrograms.
One JSON line each.

    python -m benchmarks.decode_cost
    python -m benchmarks.decode_cost --audio
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.services.audio import MAX_FILTER, AudioLimits, filter_size, recordings_to_array
from app.services.images import ImageLimits, images_to_array
from meta_core.artifact import Artifact, load_artifact
from meta_core.preprocessing import AudioPreprocessing
from meta_core.scoring import adapt_and_score
from tests.utils.meta_models import audio_meta_model
from tests.utils.recordings import encode, tone

ROOT = Path(__file__).resolve().parents[1]
SIDE = 896  # the largest side an Omniglot model takes (32 x 28)


def encoded(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--audio", action="store_true", help="recordings, not images")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.audio:
        audio()
    else:
        images()


def images() -> None:
    meta_model = load_artifact(ROOT / "models" / "omniglot-5w1s")
    spec = meta_model.manifest.preprocessing
    assert spec is not None and spec.type == "image"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    ramp = (np.indices((SIDE, SIDE)).sum(0) // 8 % 256).astype(np.uint8)
    pictures = {
        "1-bit PNG, blank": encoded(Image.new("1", (SIDE, SIDE), 1), "PNG"),
        "1-bit PNG, noise": encoded(Image.fromarray(noise > 127), "PNG"),
        "8-bit PNG, ramp": encoded(Image.fromarray(ramp), "PNG"),
        "8-bit PNG, noise": encoded(Image.fromarray(noise), "PNG"),
        "JPEG, noise": encoded(Image.fromarray(noise), "JPEG"),
    }
    for name, text in pictures.items():
        reps = 10
        start = time.perf_counter()
        for _ in range(reps):
            images_to_array([text], "x", spec, ImageLimits(2**23, 2**25))
        ms_per_mpx = (time.perf_counter() - start) / reps / (SIDE * SIDE / 1e6) * 1e3
        row = {"measurement": "decode", "image": name, "base64_bytes": len(text)}
        print(json.dumps(row | {"ms_per_megapixel": round(ms_per_mpx, 2)}), flush=True)
    inner_loop(meta_model)


def inner_loop(meta_model: Artifact, rows: int = 100, steps: int = 5) -> None:
    """The inner loop's GFLOP/s on ``rows`` random rows, ``steps`` steps, scored twice."""
    x = torch.rand(rows, *meta_model.row_shape)
    y = torch.arange(rows) % meta_model.n_outputs
    loop = meta_model.inner_loop(steps=steps)
    start = time.perf_counter()
    with torch.no_grad():
        adapt_and_score(loop, meta_model.params, (x, y), [(x, y)], at=[0, steps])
    seconds = time.perf_counter() - start
    flops = meta_model.flops_per_example * (3 * rows * steps + 2 * rows)
    print(
        json.dumps(
            {
                "measurement": "inner_loop",
                "model": meta_model.name,
                "rows": rows,
                "steps": steps,
                "gflop_per_s": round(flops / seconds / 1e9, 1),
            }
        )
    )


def dearest_rate(spec: AudioPreprocessing, low: int = 8000, high: int = 96000) -> int:
    """The accepted rate (its filter within MAX_FILTER) whose resampling costs the most
    multiply-adds per input sample (filter entries / the rate's share of the ratio)."""

    def per_sample(rate: int) -> float:
        return filter_size(rate, spec) / (rate // math.gcd(rate, spec.sample_rate))

    return max(
        (r for r in range(low, high + 1) if filter_size(r, spec) <= MAX_FILTER), key=per_sample
    )


def audio() -> None:
    spec = AudioPreprocessing(mean=-5.0, std=4.0)  # the audio-folder preset's
    rng = np.random.default_rng(0)
    worst = dearest_rate(spec)
    cases = [
        ("WAV", 16000, 1),
        ("FLAC", 16000, 1),
        ("WAV", 8000, 1),
        ("WAV", 11025, 1),
        ("WAV", 22050, 1),
        ("WAV", 44100, 1),
        ("WAV", 44100, 2),
        ("WAV", 48000, 1),
        ("FLAC", 48000, 2),
        ("WAV", worst, 1),
    ]
    limits = AudioLimits(2**26, 1000, 192000, 60.0, 8, 2**30)
    for fmt, rate, channels in cases:
        text = base64.b64encode(
            encode(tone(440, 10.0, rate, rng=rng, channels=channels), rate, fmt)
        )
        rows = [text.decode()]
        recordings_to_array(rows, "x", spec, limits)  # the resampler's filter, made once
        reps = 5
        start = time.perf_counter()
        for _ in range(reps):
            recordings_to_array(rows, "x", spec, limits)
        samples = round(10.0 * rate) * channels
        ns = (time.perf_counter() - start) / reps / samples * 1e9
        row = {"measurement": "decode", "format": fmt, "rate": rate, "channels": channels}
        print(json.dumps(row | {"ns_per_sample": round(ns, 1)}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = audio_meta_model(Path(tmp) / "speech", spec=spec, ways=5, hidden=64)
        inner_loop(load_artifact(path))


if __name__ == "__main__":
    main()
