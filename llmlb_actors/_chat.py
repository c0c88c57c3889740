"""The richer pieces of a conversation: content parts, tools, tool calls, JSON schemas.

Each is a frozen msgspec Struct checked when built (``ValueError`` naming the
field), so a request that carries one is known to be sendable before any
provider sees it. `TextPart` and `ImagePart` are tagged (``"type": "text"`` /
``"image"``), so conversations round-trip through JSON (batch files) and dicts.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

import msgspec

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "ImagePart",
    "JSONSchema",
    "Part",
    "TextPart",
    "Tool",
    "ToolCall",
    "check_json",
    "check_unicode",
    "image_base64",
    "image_url",
]

IMAGE_MEDIA_TYPES: Final = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The image types every built-in protocol accepts."""

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_DATA_URI = re.compile(r"^data:([a-z]+/[a-z0-9.+-]+);base64,(.*)$", re.S)
_ENCODER = msgspec.json.Encoder()


def check_unicode(owner: str, value: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate cannot be sent as JSON)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{owner}: is not valid Unicode: a lone surrogate at index {exc.start}"
            ) from None


def check_json(owner: str, value: object) -> None:
    """Refuse a value the JSON encoder cannot encode, here rather than inside a provider."""
    try:
        _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{owner}: is not JSON-encodable: {exc}") from None


def _check_name(owner: str, value: object) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(f"{owner}: must match ^[a-zA-Z0-9_-]{{1,64}}$, got {value!r}")


def _check_dict(owner: str, value: object) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{owner}: expected a dict with string keys, got {type(value).__name__}")
    check_json(owner, value)


class TextPart(msgspec.Struct, frozen=True, kw_only=True, tag="text", tag_field="type"):
    """Text inside a message whose content is a list of parts."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"TextPart.text: expected a string, got {type(self.text).__name__}")
        check_unicode("TextPart.text", self.text)


class ImagePart(msgspec.Struct, frozen=True, kw_only=True, tag="image", tag_field="type"):
    """An image in a user message: exactly one of ``url`` and ``data``.

    Attributes:
        url: an ``https://`` URL or a ``data:image/...;base64,...`` URI.
        data: the image bytes; ``media_type`` is then required.
        media_type: ``image/png``, ``image/jpeg``, ``image/gif`` or ``image/webp``.
    """

    url: str | None = None
    data: bytes | None = None
    media_type: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.data is None):
            raise ValueError("ImagePart.url: give exactly one of url and data")
        if self.media_type is not None and self.media_type not in IMAGE_MEDIA_TYPES:
            raise ValueError(
                f"ImagePart.media_type: expected one of {', '.join(IMAGE_MEDIA_TYPES)}, "
                f"got {self.media_type!r}"
            )
        if self.data is not None:
            if isinstance(self.data, bytearray | memoryview):
                msgspec.structs.force_setattr(self, "data", bytes(self.data))
            if not isinstance(self.data, bytes) or not self.data:
                raise ValueError("ImagePart.data: expected non-empty bytes")
            if self.media_type is None:
                raise ValueError("ImagePart.media_type: required with data")
            return
        url = self.url
        if not isinstance(url, str):
            raise ValueError(f"ImagePart.url: expected a string, got {type(url).__name__}")
        if url.startswith("data:"):
            match = _DATA_URI.match(url)
            if match is None:
                raise ValueError("ImagePart.url: a data: URI must be data:<type>;base64,<data>")
            media = match.group(1)
            if media not in IMAGE_MEDIA_TYPES:
                raise ValueError(
                    f"ImagePart.url: expected an image of type {', '.join(IMAGE_MEDIA_TYPES)}, "
                    f"got {media!r}"
                )
            if self.media_type is not None and self.media_type != media:
                raise ValueError(
                    f"ImagePart.media_type: {self.media_type!r} contradicts the URI's {media!r}"
                )
            try:
                base64.b64decode(match.group(2), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("ImagePart.url: the data: URI is not valid base64") from None
        elif not url.startswith("https://") or len(url) <= len("https://"):
            raise ValueError("ImagePart.url: expected an https:// URL or a data: URI")
        elif any(c in url for c in " \r\n\t\0"):
            raise ValueError("ImagePart.url: must not contain whitespace or NUL")

    def __repr__(self) -> str:
        if self.data is not None:
            return f"ImagePart(<{len(self.data)} bytes {self.media_type}>)"
        url = self.url or ""
        return f"ImagePart(url={url if len(url) <= 60 else url[:57] + '...'!r})"


Part = TextPart | ImagePart
"""One element of a message's content list."""


def image_base64(image: ImagePart) -> tuple[str, str] | None:
    """``(media_type, base64 text)`` for inline images; ``None`` for an https URL."""
    if image.data is not None:
        return image.media_type or "", base64.b64encode(image.data).decode("ascii")
    url = image.url or ""
    if url.startswith("data:"):
        match = _DATA_URI.match(url)
        assert match is not None  # checked when the part was built
        return match.group(1), match.group(2)
    return None


def image_url(image: ImagePart) -> str:
    """The image as a URL: the https URL, or a data: URI made from the bytes."""
    if image.data is not None:
        return f"data:{image.media_type};base64,{base64.b64encode(image.data).decode('ascii')}"
    return image.url or ""


class Tool(msgspec.Struct, frozen=True, kw_only=True):
    """A function the model may call.

    Attributes:
        name: ``^[a-zA-Z0-9_-]{1,64}$`` (what every provider accepts).
        parameters: a JSON Schema object describing the arguments.
        description: what the tool does, for the model.
    """

    name: str
    parameters: dict[str, Any]
    description: str = ""

    def __post_init__(self) -> None:
        _check_name("Tool.name", self.name)
        _check_dict("Tool.parameters", self.parameters)
        if not isinstance(self.description, str):
            raise ValueError("Tool.description: expected a string")
        check_unicode("Tool.description", self.description)


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A call the model asked for: run ``name`` with ``arguments`` and answer with ``id``.

    ``arguments`` is always the parsed object, never a JSON string.
    """

    id: str
    name: str
    arguments: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("ToolCall.id: expected a non-empty string")
        check_unicode("ToolCall.id", self.id)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("ToolCall.name: expected a non-empty string")
        check_unicode("ToolCall.name", self.name)
        _check_dict("ToolCall.arguments", self.arguments)


class JSONSchema(msgspec.Struct, frozen=True, kw_only=True):
    """Structured output: the answer is JSON that validates against ``schema``.

    Attributes:
        name: ``^[a-zA-Z0-9_-]{1,64}$``, a label some providers require.
        schema: a JSON Schema (a dict).
        strict: ask for exact adherence where the provider can enforce it.
    """

    name: str
    schema: dict[str, Any]
    strict: bool = True

    def __post_init__(self) -> None:
        _check_name("JSONSchema.name", self.name)
        _check_dict("JSONSchema.schema", self.schema)
        if not isinstance(self.strict, bool):
            raise ValueError("JSONSchema.strict: expected a boolean")
