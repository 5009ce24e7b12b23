"""A thread-safe LRU cache of adapted models, so a predict reads the database only on a miss."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class AdaptedModel:
    client_id: int
    model_name: str
    params: dict[str, Tensor]  # the full parameter set: meta-parameters overlaid with the task's
    labels: list | None  # client label of each output unit (classification)


class LRUCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, AdaptedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> AdaptedModel | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: AdaptedModel) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
