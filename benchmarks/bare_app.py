"""The floor for predict: a bare FastAPI endpoint that parses the same body (``PredictIn``) and
returns the same ten floats, with no auth, database, cache or model. ``benchmarks/serve.py``
serves it as the service is served (``app.core.server.run``, the same uvicorn settings) and
reports predict's requests/s as a fraction of this one's (``BARE_PREDICTIONS``: the JSON list
to answer with).

    python -m benchmarks.bare_app --port 8001 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os

from fastapi import FastAPI

from app.core import server
from app.schemas import PredictIn, PredictOut

app = FastAPI()
PREDICTIONS: list[float] = json.loads(os.environ.get("BARE_PREDICTIONS", "[0.0]"))


@app.post("/tasks/{task_id}/predict", response_model=PredictOut)
async def predict(task_id: str, body: PredictIn) -> PredictOut:
    return PredictOut(task_id=task_id, labels=None, predictions=PREDICTIONS)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    server.run(
        "benchmarks.bare_app:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )
