"""What each way of storing a task costs and changes: bytes per task, the predictions' change
against float32, and the time to read a model back (decode, or re-adapt from the support set).

Tasks are drawn from each meta-model's own held-out split (its training config's family) and
adapted by the service's code (``app.services.adaptation.adapt``); each is then stored in
every format (``app.services.adaptation.record``, as the service stores it, with zlib) and
read back (``app.services.storage.stored_params``), and its query set predicted. One JSON
line per meta-model and format; nothing is asserted.

    OMNIGLOT_DIR=... python benchmarks/storage_formats.py --tasks 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from app.services import weights  # noqa: E402
from app.services.adaptation import adapt, record  # noqa: E402
from app.services.inputs import AdaptationRequest  # noqa: E402
from app.services.storage import StoredModel, stored_params  # noqa: E402
from meta_core.artifact import Artifact, load_artifact  # noqa: E402
from meta_core.tasks import build_family  # noqa: E402


def stored_model(state) -> StoredModel:  # noqa: ANN001
    return StoredModel(
        state.storage,
        state.weights,
        state.weights_sha256,
        state.support,
        state.support_sha256,
        state.support_size,
        state.inner_steps,
        state.inner_lr,
    )


def measure(meta_model: Artifact, n: int) -> None:
    family = build_family(meta_model.manifest.training.config.family)
    batch = family.sample(n, torch.Generator().manual_seed(0), split="test")
    classify = meta_model.task_kind == "classification"
    steps = meta_model.manifest.inner_loop.steps
    rows: dict[str, dict[str, list[float]]] = {f: {} for f in weights.FORMATS}
    exact = []
    for t in range(n):
        x, y = batch.support_x[t], batch.support_y[t]
        labels = sorted(set(y.tolist())) if classify else None
        request = AdaptationRequest(x, y, None, labels, steps, None)
        adapted = adapt(meta_model, request)
        kept = weights.serialize_support(x, y, weights.features(meta_model), packed=True)
        reference = meta_model.predict(adapted.params, batch.query_x[t])
        for form in weights.FORMATS:
            state = record(meta_model, request, adapted, kept, form, packed=True).state
            start = time.perf_counter()
            params = stored_params(meta_model, stored_model(state))
            read_ms = (time.perf_counter() - start) * 1000
            out = meta_model.predict(params, batch.query_x[t])
            row = rows[form]
            row.setdefault("bytes", []).append(len(state.weights) + len(state.support or b""))
            row.setdefault("read_ms", []).append(read_ms)
            if classify:
                probs, ref = out.softmax(-1), reference.softmax(-1)
                row.setdefault("max_prob_change", []).append(float((probs - ref).abs().max()))
                hit = (out.argmax(-1) == batch.query_y[t]).float().mean()
                row.setdefault("accuracy", []).append(float(hit))
            else:
                row.setdefault("max_change", []).append(float((out - reference).abs().max()))
                row.setdefault("mse", []).append(float(((out - batch.query_y[t]) ** 2).mean()))
            if form == "support":
                exact.append(all(torch.equal(params[k], adapted.params[k]) for k in params))
    for form, row in rows.items():
        summary = {"model": meta_model.name, "storage": form, "tasks": n}
        for key, values in row.items():
            summary[key] = round(statistics.fmean(values), 7)
            if key in ("read_ms", "max_prob_change", "max_change"):
                summary[f"{key}_max"] = round(max(values), 7)
        if form == "support":
            summary["re_adapted_bit_for_bit"] = f"{sum(exact)}/{len(exact)}"
        print(json.dumps(summary), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["sinusoid", "omniglot-5w1s"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the service's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in args.models:
        measure(load_artifact(ROOT / "models" / name), args.tasks)


if __name__ == "__main__":
    main()
