"""What decoding an image pixel costs against the inner loop's FLOPs, on one core: the basis of
``DECODE_FLOPS_PER_PIXEL`` (``app/services/inputs.py``), which counts a request's decoded
pixels in its adaptation's cost. Decoding and preprocessing (``images_to_array``, as the
service does it) in ms per megapixel for images that are cheap to send (1-bit and flat PNGs:
the costly case, many pixels per byte) and dear (noise); the inner loop's GFLOP/s on an
Omniglot adaptation; their ratio in FLOPs per pixel. One JSON line each.

    python -m benchmarks.decode_cost
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from app.services.images import ImageLimits, images_to_array
from meta_core.artifact import load_artifact
from meta_core.scoring import adapt_and_score

ROOT = Path(__file__).resolve().parents[1]
SIDE = 896  # the largest side an Omniglot model takes (32 x 28)


def encoded(image: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def main() -> None:
    torch.set_num_threads(1)
    meta_model = load_artifact(ROOT / "models" / "omniglot-5w1s")
    spec = meta_model.manifest.preprocessing
    assert spec is not None and spec.type == "image"
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    ramp = (np.indices((SIDE, SIDE)).sum(0) // 8 % 256).astype(np.uint8)
    images = {
        "1-bit PNG, blank": encoded(Image.new("1", (SIDE, SIDE), 1), "PNG"),
        "1-bit PNG, noise": encoded(Image.fromarray(noise > 127), "PNG"),
        "8-bit PNG, ramp": encoded(Image.fromarray(ramp), "PNG"),
        "8-bit PNG, noise": encoded(Image.fromarray(noise), "PNG"),
        "JPEG, noise": encoded(Image.fromarray(noise), "JPEG"),
    }
    for name, text in images.items():
        reps = 10
        start = time.perf_counter()
        for _ in range(reps):
            images_to_array([text], "x", spec, ImageLimits(2**23, 2**25))
        ms_per_mpx = (time.perf_counter() - start) / reps / (SIDE * SIDE / 1e6) * 1e3
        row = {"measurement": "decode", "image": name, "base64_bytes": len(text)}
        print(json.dumps(row | {"ms_per_megapixel": round(ms_per_mpx, 2)}), flush=True)
    rows, steps = 100, 5
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


if __name__ == "__main__":
    main()
