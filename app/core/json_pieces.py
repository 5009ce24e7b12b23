"""JSON decoded in pieces, so that decoding a large document never holds the interpreter lock
for long: a C parser (``json.loads``, pydantic's) holds it for the whole call, and on a thread
beside the event loop that stalls the loop as surely as parsing on it.

The document's structure is read first with NumPy, whose array operations release the lock:
which bytes are inside strings, and the nesting depth after every byte. A container larger
than a piece is then cut at its own commas into runs of elements (or members) of at most
``piece`` bytes; each run is decoded by the given parser, wrapped in its container's brackets,
and a single element larger than a piece is decoded the same way, one level down. Between two
pieces the lock can pass to the event loop. The parser sees every byte of the document except
the brackets, commas and colons the cuts fall on, which are checked here: a document is
accepted exactly when it is valid JSON for that parser (UTF-8; a byte-order mark is refused).

The structure also says how many values the document holds, and a container cut so is counted
before any of its items is decoded, against a limit on its items (by its path, ``support.x``;
``x[]`` for the items of ``x``): millions of small rows cost the collector and the deallocator
as much as the parser, so a document over its limits is refused before they exist. Smaller
containers are left to validation."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

PIECE = 16 * 2**10
MAX_LEVELS = 64  # containers larger than a piece, nested; valid request bodies have a few

Parse = Callable[[bytes], Any]
_QUOTE, _BACKSLASH, _COMMA, _COLON = (ord(c) for c in '"\\,:')
_CLOSE = {ord("["): ord("]"), ord("{"): ord("}")}  # each opening bracket's closing one


class InvalidJSON(ValueError):
    """The document is not valid JSON (for the parser given)."""


class TooManyValues(ValueError):
    """The document holds more values than its limit allows."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the document holds {count} values; the limit is {limit}")
        self.count, self.limit = count, limit


class TooManyItems(ValueError):
    """A container holds more items than its limit allows."""

    def __init__(self, path: str, count: int, limit: int) -> None:
        super().__init__(f"{path or 'the document'} has {count} items; the limit is {limit}")
        self.path, self.count, self.limit = path, count, limit


def loads(
    data: bytes,
    parse: Parse = json.loads,
    piece: int = PIECE,
    limits: Mapping[str, int] | None = None,
    max_items: int | None = None,
    max_values: int | None = None,
) -> Any:
    """``parse(data)``, decoded in pieces of at most about ``piece`` bytes; InvalidJSON if the
    document is not valid JSON, TooManyValues if it holds more than ``max_values`` values
    (items of lists, members of objects: its commas, and one), TooManyItems if a container
    larger than a piece holds more items than ``limits`` allows at its path, or than
    ``max_items`` (None: no limit). The limits apply to documents larger than a piece."""
    try:
        if len(data) <= piece:
            return parse(data)
        document = _Document(data, parse, piece, limits or {}, max_items)
        if max_values is not None and document.values > max_values:
            raise TooManyValues(document.values, max_values)
        return document.value(0, len(data), "", 0)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError too
        if isinstance(exc, InvalidJSON | TooManyItems | TooManyValues):
            raise
        raise InvalidJSON(str(exc)) from None


class _Document:
    def __init__(
        self,
        data: bytes,
        parse: Parse,
        piece: int,
        limits: Mapping[str, int],
        max_items: int | None,
    ) -> None:
        self.data, self.parse, self.piece = data, parse, piece
        self.limits, self.max_items = limits, max_items
        b = np.frombuffer(data, dtype=np.uint8)
        quote = b == _QUOTE
        backslash = b == _BACKSLASH
        if backslash.any():  # a quote after an odd run of backslashes is escaped
            runs = np.flatnonzero(backslash[1:] & ~backslash[:-1]) + 1  # where runs start
            if backslash[0]:
                runs = np.concatenate(([0], runs))
            after = np.flatnonzero(quote[1:] & backslash[:-1]) + 1
            start = runs[np.searchsorted(runs, after - 1, side="right") - 1]
            quote[after[(after - start) % 2 == 1]] = False
        # Some accumulations hold the lock for as long as they take (one that allocates its
        # own result, or casts as it goes, or takes the maximum): these do neither.
        inside = np.empty_like(quote)
        np.logical_xor.accumulate(quote, out=inside)  # an opening quote counts as inside
        if inside[-1]:
            raise InvalidJSON("unterminated string")
        delta = ((b == ord("[")) | (b == ord("{"))).astype(np.int32)
        delta -= (b == ord("]")) | (b == ord("}"))
        delta *= ~inside  # brackets inside strings are text
        self.depth = np.empty_like(delta)  # after each byte
        np.cumsum(delta, out=self.depth)
        if self.depth.min() < 0 or self.depth[-1] != 0:
            raise InvalidJSON("unbalanced brackets")
        self.bytes, self.outside = b, ~inside
        self.values = int(np.count_nonzero((b == _COMMA) & self.outside)) + 1
        self.blank = (b == 0x20) | (b == 0x0A) | (b == 0x0D) | (b == 0x09)

    def value(self, start: int, stop: int, path: str, level: int) -> Any:
        """The one JSON value in ``data[start:stop]`` (whitespace around it allowed)."""
        if stop - start <= self.piece:
            return self.parse(self.data[start:stop])
        words = np.flatnonzero(~self.blank[start:stop])
        if not len(words):
            raise InvalidJSON("no value")
        first, last = start + int(words[0]), start + int(words[-1])
        close = _CLOSE.get(int(self.bytes[first]))
        if close is None:  # a long string or number: one parse
            return self.parse(self.data[first : last + 1])
        if level >= MAX_LEVELS:
            raise InvalidJSON("nested too deeply")
        depth = int(self.depth[first])
        inner = slice(first + 1, last)
        if self.bytes[last] != close or (last > first + 1 and self.depth[inner].min() < depth):
            raise InvalidJSON("mismatched brackets")
        commas = (self.bytes[inner] == _COMMA) & (self.depth[inner] == depth) & self.outside[inner]
        bounds = np.concatenate(([first], np.flatnonzero(commas) + first + 1, [last]))
        limit = self.limits.get(path, self.max_items)
        if limit is not None and len(bounds) - 1 > limit:  # an empty container counts 1
            raise TooManyItems(path, len(bounds) - 1, limit)
        if close == _CLOSE[ord("[")]:
            return self._array(bounds, path, level)
        return self._object(bounds, depth, path, level)

    def _runs(self, bounds: np.ndarray) -> Iterator[tuple[int, int, bool]]:
        """``(start, stop, single)``: runs of consecutive elements between ``bounds`` (the
        container's brackets and commas), each of at most ``piece`` bytes or one element."""
        i, n = 0, len(bounds) - 1
        while i < n:
            j = int(np.searchsorted(bounds, bounds[i] + 1 + self.piece, side="right")) - 1
            j = max(min(j, n), i + 1)
            start, stop = int(bounds[i]) + 1, int(bounds[j])
            if j == i + 1 and self.blank[start:stop].all():  # [] or {}, else [1,,2] or [1,]
                if n > 1:
                    raise InvalidJSON("an empty element")
                return
            yield start, stop, j == i + 1 and stop - start > self.piece
            i = j

    def _array(self, bounds: np.ndarray, path: str, level: int) -> list[Any]:
        out: list[Any] = []
        for start, stop, alone in self._runs(bounds):
            if alone:
                out.append(self.value(start, stop, f"{path}[]", level + 1))
            else:
                out.extend(self.parse(b"[" + self.data[start:stop] + b"]"))
        return out

    def _object(self, bounds: np.ndarray, depth: int, path: str, level: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for start, stop, alone in self._runs(bounds):
            if not alone:
                out.update(self.parse(b"{" + self.data[start:stop] + b"}"))
                continue
            member = slice(start, stop)
            colons = (self.bytes[member] == _COLON) & (self.depth[member] == depth)
            found = np.flatnonzero(colons & self.outside[member])
            if not len(found):
                raise InvalidJSON("a member without a colon")
            colon = start + int(found[0])
            key = self.parse(self.data[start:colon])
            if not isinstance(key, str):
                raise InvalidJSON("a key that is not a string")
            out[key] = self.value(colon + 1, stop, f"{path}.{key}" if path else key, level + 1)
        return out
