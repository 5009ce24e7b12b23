"""The floor for predict: a bare FastAPI endpoint that parses the same body (``PredictIn``) and
returns the same ten floats, with no auth, database, cache or model. ``benchmarks/serve.py``
runs it with the service's uvicorn settings and reports predict's requests/s as a fraction of
this one's (``BARE_PREDICTIONS``: the JSON list to answer with)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from app.schemas import PredictIn, PredictOut

app = FastAPI()
PREDICTIONS: list[float] = json.loads(os.environ.get("BARE_PREDICTIONS", "[0.0]"))


@app.post("/tasks/{task_id}/predict", response_model=PredictOut)
async def predict(task_id: str, body: PredictIn) -> PredictOut:
    return PredictOut(task_id=task_id, labels=None, predictions=PREDICTIONS)
