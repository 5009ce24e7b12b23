"""Sentences sent to a text meta-model, bounded and embedded by its frozen encoder exactly as in
training (the artifact's ``preprocessing``).

Encoding is the costly part, and its cost is in the tokens, not the characters: each sentence
is bounded in characters, then all of one request's sentences are tokenized (cheap) and their
tokens counted against the request's bound and the caller's cost budget before any is
encoded. Sentences longer than the encoder's ``max_tokens`` are truncated to it, as in
training (the model card's behaviour)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.core.config import Settings
from app.core.errors import InvalidInput
from app.services.limits import spend_request
from meta_core.encoders import TextEncoder


@dataclass
class TextLimits:
    """The bounds on one request's sentences, and the tokens they have spent so far: make
    one per request (:meth:`of`). ``cost``, if given, refuses (422) a request whose tokens,
    all of its sentences' so far, would put it over its cost budget."""

    max_chars: int  # one sentence
    max_request_tokens: int  # all of the request's sentences, after truncation
    cost: Callable[[int], None] | None = None
    tokens: int = 0

    @classmethod
    def of(cls, settings: Settings, cost: Callable[[int], None] | None = None) -> TextLimits:
        return cls(settings.max_text_chars, settings.max_request_tokens, cost)

    def spend(self, tokens: int, field: str) -> None:
        """Count ``field``'s sentences (``tokens``, to be encoded) against the request's."""
        self.tokens = spend_request(
            self.tokens,
            tokens,
            self.max_request_tokens,
            self.cost,
            field=field,
            rows="sentences",
            verb="are",
            unit="tokens",
        )


def check_text(value: object, where: str, max_chars: int) -> str:
    """One sentence: a non-empty string of at most ``max_chars`` characters, valid Unicode."""
    if not isinstance(value, str):
        raise InvalidInput(f"{where} must be a sentence (a string)")
    if len(value) > max_chars:
        raise InvalidInput(f"{where} has {len(value)} characters; the limit is {max_chars}")
    if not value.strip():
        raise InvalidInput(f"{where} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{where} is not valid Unicode (a lone surrogate)") from None
    return value


def texts_to_array(
    values: list[object], field: str, encoder: TextEncoder, limits: TextLimits
) -> np.ndarray:
    """A list of sentences -> their float32 ``[n, dim]`` embeddings; every sentence is checked,
    and the tokens of all of them counted, before any is encoded."""
    return encoder.encode_tokens(text_tokens(values, field, encoder, limits))


def text_tokens(
    values: list[object], field: str, encoder: TextEncoder, limits: TextLimits
) -> list[list[int]]:
    """A list of sentences -> their token ids (what ``encode_tokens`` takes), every sentence
    checked and the tokens of all of them counted against ``limits``: the part of
    :func:`texts_to_array` that can refuse a request, done before a predict joins a batch of
    other requests' sentences (:mod:`app.services.batching`)."""
    texts = [check_text(v, f"{field}[{i}]", limits.max_chars) for i, v in enumerate(values)]
    tokens = encoder.tokenize(texts)
    limits.spend(sum(len(t) for t in tokens), field)
    return tokens
