"""The adapted-model cache: revisions never go backwards, drops hold against reads in flight,
and its bytes are bounded and shared fairly between clients."""

from __future__ import annotations

import time

import numpy as np

from app.services.cache import GONE, AdaptedModel, ModelCache
from meta_core.artifact import Artifact, load_artifact
from tests.utils.tasks import MODELS

SINUSOID: Artifact = load_artifact(MODELS / "sinusoid")


def model(client_id: int = 1, revision: int = 1, nbytes: int = 10) -> AdaptedModel:
    return AdaptedModel(
        client_id=client_id,
        meta_model=SINUSOID,
        predict=lambda x: np.asarray(x),
        expires_at=None,
        labels=None,
        revision=revision,
        nbytes=nbytes,
    )


def test_a_slower_update_of_an_older_revision_never_replaces_a_newer_one():
    cache = ModelCache(8)
    # Two updates of one task: revision 3 stores and caches first, then the slower revision 2.
    cache.drop("t", 3)
    assert cache.put("t", model(revision=3))
    cache.drop("t", 2)  # the slower update's own drop does not lower the floor
    assert not cache.put("t", model(revision=2))
    assert cache.get("t")[0] is None  # dropped: the next read loads revision 3
    assert cache.put("t", model(revision=3), read_at=time.monotonic())
    assert not cache.put("t", model(revision=2))
    entry = cache.get("t")[0]
    assert entry is not None and entry.revision == 3


def test_a_model_read_before_a_drop_is_not_cached():
    cache = ModelCache(8)
    read_at = time.monotonic()
    cache.drop("t")  # another process changed it meanwhile (revision unknown)
    assert not cache.put("t", model(), read_at)
    assert cache.put("t", model(), time.monotonic())
    cache.drop("t", GONE)  # deleted: no revision of it comes back
    assert not cache.put("t", model(revision=5))
    read_at = time.monotonic()
    cache.clear()
    assert not cache.put("u", model(), read_at)
    assert not cache.put("t", model(revision=6)), "a clear keeps the revisions dropped"


def test_touch_only_refreshes_the_revision_checked():
    cache = ModelCache(8, ttl=0)
    cache.put("t", model(revision=1))
    assert cache.get("t")[1] is False
    cache.ttl = 3600
    cache.touch("t", 2)
    cache.ttl = 0.0
    assert cache.get("t")[1] is False


def test_bytes_are_bounded_and_a_heavy_client_evicts_its_own_models():
    cache = ModelCache(1000, max_bytes=100)
    for i in range(3):
        cache.put(f"b{i}", model(client_id=2, nbytes=10))  # a light client: 30 bytes
    for i in range(50):  # a heavy one cycling through many tasks
        cache.put(f"a{i}", model(client_id=1, nbytes=10))
        assert cache.nbytes <= 100
    assert all(cache.get(f"b{i}")[0] is not None for i in range(3))
    assert cache.client_bytes(2) == 30 and cache.client_bytes(1) == 70
    assert [cache.get(f"a{i}")[0] is not None for i in range(43, 50)] == [True] * 7
    assert cache.get("a42")[0] is None
    assert not cache.put("huge", model(nbytes=101)), "a model larger than the cache is not kept"
    cache.put("b0", model(client_id=2, revision=2, nbytes=20))  # replaced: counted once
    assert cache.client_bytes(2) == 40 and cache.nbytes <= 100


def test_the_heaviest_client_is_spared_the_entry_it_adds():
    cache = ModelCache(1000, max_bytes=100)
    cache.put("b", model(client_id=2, nbytes=40))
    cache.put("c", model(client_id=3, nbytes=40))
    assert cache.put("a", model(client_id=1, nbytes=60))  # heaviest, with one entry: its own
    assert cache.get("a")[0] is not None and cache.nbytes <= 100
    assert len(cache) == 2


def test_entries_are_bounded_by_count_too():
    cache = ModelCache(2)
    for key in "xyz":
        cache.put(key, model())
    assert len(cache) == 2 and cache.get("x")[0] is None
    assert not ModelCache(0).put("x", model())
