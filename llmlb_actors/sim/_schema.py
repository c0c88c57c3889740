"""A deterministic JSON value for a JSON Schema: the simulator's tool arguments and JSON answers.

Not a validator and not every keyword: enough of JSON Schema (types, objects,
arrays, enums, consts, ``$ref`` into ``$defs``, ``anyOf``/``oneOf``/``allOf``,
numeric and length bounds, common string formats) that the value validates
against the schemas clients send in practice, Pydantic's and the SDKs' included.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["sample"]

_MAX_DEPTH: Final = 12
_FORMATS: Final = {
    "date": "2025-01-01",
    "date-time": "2025-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "url": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
}


def sample(
    schema: object, *, root: dict[str, Any] | None = None, depth: int = 0, name: str = ""
) -> Any:
    """A value that validates against ``schema`` (best effort for exotic keywords).

    A string property is ``"sim-<property name>"`` (``{"city": "sim-city"}``).
    """
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if depth > _MAX_DEPTH else {}
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return sample(_resolve(ref, root), root=root, depth=depth + 1, name=name)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if _type_of(o) != "null"), options[0])
            return sample(chosen, root=root, depth=depth + 1, name=name)
    every = schema.get("allOf")
    if isinstance(every, list) and every:
        merged: dict[str, Any] = {}
        for part in every:
            if isinstance(part, dict):
                merged.update(_resolve(part["$ref"], root) if "$ref" in part else part)
        return sample(merged, root=root, depth=depth + 1, name=name)
    kind = _type_of(schema)
    if kind == "object":
        props = schema.get("properties")
        out: dict[str, Any] = {}
        if isinstance(props, dict):
            for prop, sub in props.items():
                out[prop] = sample(sub, root=root, depth=depth + 1, name=str(prop))
        return out
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        limit = schema.get("maxItems")
        if isinstance(limit, int):
            count = min(count, limit)
        items = schema.get("items", {})
        return [sample(items, root=root, depth=depth + 1, name=name) for _ in range(count)]
    if kind == "string":
        return _string(schema, name)
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "sim"


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local ``#/...`` reference; anything else samples as an empty schema."""
    if not ref.startswith("#"):
        return {}
    node: Any = root
    for piece in ref.lstrip("#").strip("/").split("/"):
        if not piece:
            continue
        if not isinstance(node, dict):
            return {}
        node = node.get(piece.replace("~1", "/").replace("~0", "~"), {})
    return node


def _type_of(schema: object) -> str | None:
    if not isinstance(schema, dict):
        return None
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), kind[0] if kind else None)
    if isinstance(kind, str):
        kind = kind.lower()  # Gemini's OpenAPI schemas say "STRING", "OBJECT"
    if kind is None and "properties" in schema:
        return "object"
    if kind is None and "items" in schema:
        return "array"
    return kind if isinstance(kind, str) else None


def _string(schema: dict[str, Any], name: str) -> str:
    text = _FORMATS.get(str(schema.get("format", "")), f"sim-{name}" if name else "sim")
    low = schema.get("minLength")
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    high = schema.get("maxLength")
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number(schema: dict[str, Any], kind: str) -> int | float:
    value: float = 1
    low = schema.get("minimum")
    low_ex = schema.get("exclusiveMinimum")
    high = schema.get("maximum")
    high_ex = schema.get("exclusiveMaximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(low_ex, int | float) and not isinstance(low_ex, bool) and value <= low_ex:
        value = low_ex + 1
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(high_ex, int | float) and not isinstance(high_ex, bool) and value >= high_ex:
        value = high_ex - 1
    return int(value) if kind == "integer" else float(value)
