"""The work pools: a client's share (429) and the pool's capacity (503); and, against a real
uvicorn process, probes that stay quick while the heaviest allowed requests run."""

from __future__ import annotations

import base64
import io
import os
import threading
import time

import anyio
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from app.core.config import Settings
from app.core.errors import Overloaded, TooManyRequests
from app.services.pool import WorkPool
from tests.conftest import ROOT
from tests.utils.database import make_key
from tests.utils.server import running_server


def rejected() -> Counter:
    return Counter("r", "r", ["pool", "reason"], registry=CollectorRegistry())


def test_a_client_over_its_share_gets_429_and_the_pool_over_capacity_503():
    pool = WorkPool("adaptations", 1, 2, 7, rejected())
    release = threading.Event()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(2):  # client 1 takes its share: one running, one queued
                tg.start_soon(pool.run, release.wait, 1, 2)
            await anyio.sleep(0.05)
            with pytest.raises(TooManyRequests, match=r"you have 2 adaptations in progress"):
                await pool.run(lambda: None, 1, 2)
            tg.start_soon(pool.run, release.wait, 2, 2)  # client 2 fills the last place
            await anyio.sleep(0.05)
            with pytest.raises(Overloaded, match=r"3 adaptations are in progress"):
                await pool.run(lambda: None, 3, 2)
            release.set()
        assert pool.in_flight == 0 and await pool.run(lambda: 5, 1) == 5

    anyio.run(main)
    pool.shutdown()


def png(size: int) -> str:
    """A large, cheaply compressed PNG: costly to decode and resize, small to send."""
    ramp = np.linspace(0, 255, size, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.add.outer(ramp, ramp) // 2).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_probes_answer_quickly_while_the_heaviest_requests_run(database_url, db):
    env = os.environ | {"DATABASE_URL": database_url, "MODEL_DIR": str(ROOT / "models")}
    # The largest images the model takes (32 x its 28-pixel side), as many as a request may
    # decode; two clients, as one may hold only one of each pool's two slots.
    big = png(896)
    clients = [{"Authorization": f"Bearer {make_key(db, name)}"} for name in ("one", "two")]
    with running_server(env) as base, httpx.Client(base_url=base, timeout=120) as http:
        support = {"x": [big] * 20, "y": list(range(20))}
        body = {"model": "omniglot-20w1s", "support": support}
        tasks = []
        for headers in clients:
            r = http.post("/tasks", headers=headers, json=body)
            assert r.status_code == 201, r.text
            tasks.append(r.json()["id"])
        stop = threading.Event()
        statuses: list[int] = []

        def heavy(kind: str, headers: dict[str, str], task: str) -> None:
            with httpx.Client(base_url=base, headers=headers, timeout=120) as mine:
                while not stop.is_set():
                    if kind == "predict":
                        r = mine.post(f"/tasks/{task}/predict", json={"x": [big] * 80})
                    else:
                        r = mine.post("/tasks", json=body | {"inner_steps": 5})
                    statuses.append(r.status_code)

        workers = [
            threading.Thread(target=heavy, args=(kind, headers, task))
            for kind in ("predict", "adapt")
            for headers, task in zip(clients, tasks, strict=True)
        ]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)  # the heavy requests are under way
            latencies = []
            for _ in range(40):
                for path in ("/healthz", "/readyz"):
                    start = time.perf_counter()
                    assert http.get(path).status_code == 200
                    latencies.append(time.perf_counter() - start)
                time.sleep(0.05)
        finally:
            stop.set()
            for w in workers:
                w.join()
    assert set(statuses) <= {200, 201, 429}, statuses
    assert statuses.count(200) and statuses.count(201)
    latencies.sort()
    print(f"probe latency: p50 {latencies[40] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 0.1, f"slowest probe {latencies[-1] * 1000:.0f} ms"


def test_by_default_no_client_holds_every_running_slot_of_a_pool():
    settings = Settings()
    assert settings.adapt_per_client < settings.adapt_concurrency
    assert settings.predict_per_client < settings.predict_concurrency
    for pool in ("adapt", "predict"):
        with pytest.raises(
            ValidationError,
            match=rf"{pool.upper()}_PER_CLIENT \(4\) must be below {pool.upper()}_CONCURRENCY "
            r"\(4\): one client could hold every running slot",
        ):
            Settings(**{f"{pool}_concurrency": 4, f"{pool}_per_client": 4})
    assert Settings(adapt_concurrency=8, adapt_per_client=7).adapt_per_client == 7
    # A pool of one slot: whoever runs holds it all, as any pool of one.
    assert Settings(adapt_concurrency=1, predict_concurrency=1).adapt_per_client == 1
