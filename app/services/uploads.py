"""Files sent as rows of JSON (images, recordings): base64, plain or as a data URL
(``data:<type>;base64,...``), bounded in bytes before they are decoded. The data URL's media
type is not trusted: the bytes say what the file is."""

from __future__ import annotations

import base64
import binascii

from app.core.errors import InvalidInput


def file_bytes(text: str, where: str, max_bytes: int) -> bytes:
    """The bytes of one base64 file (``where`` names it in a 422), at most about
    ``max_bytes`` of them: the base64's length is checked before it is decoded."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidInput(f"{where} is a data URL without base64 data")
    if len(text) > max_bytes * 4 // 3 + 4:
        raise InvalidInput(f"{where} is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64") from None
