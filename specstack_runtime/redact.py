"""Secrets out of what the stack records: which names are secret is read from the spec.

A name is secret when an API document says so: a property or parameter whose schema
has `format: password` (a password in a request, the id of the token a token request
renews, nova's `adminPass` in an answer, keystone's `X-Subject-Token` header), or the
header an `apiKey` security scheme names (`X-Auth-Token`). A property is secret inside
the object that has it (`{"token": {"id": ...}}`, not every `id`). The trace recorder passes every event's payloads through a
`Redactor`, which replaces each secret value by `"***"` and keeps everything else,
so a trace still shows the shape of what was sent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from specstack_runtime import jsoncodec

REDACTED = "***"


def _is_password(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    if schema.get("format") == "password":
        return True
    return any(_is_password(s) for key in ("anyOf", "oneOf") for s in (schema.get(key) or ()))


class _Document:
    """The secret names of one API document."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.schemas: Mapping[str, Any] = (doc.get("components") or {}).get("schemas") or {}
        self.plain: set[str] = set()  # secret wherever they occur (headers, body roots)
        self.pairs: set[tuple[str, str]] = set()  # (property, its secret property)
        self._walk(doc)

    def _resolve(self, schema: Any) -> Any:
        ref = schema.get("$ref") if isinstance(schema, Mapping) else None
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            return self.schemas.get(ref.rsplit("/", 1)[1])
        return schema

    def direct(self, schema: Any, depth: int = 0) -> set[str]:
        """The properties of the object `schema` describes that are secret."""
        schema = self._resolve(schema)
        if not isinstance(schema, Mapping) or depth > 8:
            return set()
        found = {str(n) for n, s in (schema.get("properties") or {}).items() if _is_password(s)}
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key) or ():
                found |= self.direct(sub, depth + 1)
        if "items" in schema:
            found |= self.direct(schema["items"], depth + 1)
        return found

    def _walk(self, node: Any) -> None:
        if isinstance(node, Mapping):
            props = node.get("properties")
            if isinstance(props, Mapping):
                for name, sub in props.items():
                    self.pairs.update((str(name), inner) for inner in self.direct(sub))
            # a parameter (`schema: {format: password}`) or an apiKey security scheme
            if (
                isinstance(node.get("name"), str)
                and "in" in node
                and (node.get("type") == "apiKey" or _is_password(node.get("schema")))
            ):
                self.plain.add(node["name"])
            headers = node.get("headers")
            if isinstance(headers, Mapping):
                self.plain.update(
                    str(name)
                    for name, h in headers.items()
                    if isinstance(h, Mapping) and _is_password(h.get("schema"))
                )
            content = node.get("content")
            if isinstance(content, Mapping):  # a request or response body: its own fields
                for media in content.values():
                    if isinstance(media, Mapping):
                        self.plain.update(self.direct(media.get("schema")))
            for value in node.values():
                self._walk(value)
        elif isinstance(node, list):
            for item in node:
                self._walk(item)


def secret_names(
    documents: Iterable[Mapping[str, Any]],
) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The names the API documents mark secret: those secret wherever they occur
    (headers, a body's own fields), and (property, field) pairs: `field` is secret
    inside `property` (`{"user": {"password": ...}}`, `{"token": {"id": ...}}`)."""
    plain: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    for doc in documents:
        found = _Document(doc)
        plain |= found.plain
        pairs |= found.pairs
    return frozenset(plain), frozenset(pairs)


def secret_names_in(
    openapi_dir: Path, apis: Iterable[str]
) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The secret names of the bundled API documents (`generated/openapi/<api>.json`)."""
    docs = []
    for api in apis:
        path = openapi_dir / f"{api}.json"
        if path.is_file():
            docs.append(json.loads(path.read_text("utf-8")))
    return secret_names(docs)


def _quoted(name: str) -> bytes:
    return f'"{name}"'.encode()


def _any_of(names: Iterable[str]) -> re.Pattern[bytes] | None:
    """One search for any of `names` as a JSON key (quoted), or None when there is none."""
    keys = sorted(names)
    if not keys:
        return None
    return re.compile(b"|".join(re.escape(_quoted(n)) for n in keys))


#: JSON's scalar types: nothing in one is walked (its secrecy is its key's).
_LEAVES = frozenset({str, int, float, bool, type(None)})


class Redactor:
    """Copies of payloads with every secret value replaced by REDACTED."""

    def __init__(self, names: Iterable[str] = (), pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.names = frozenset(n.lower() for n in names)
        self.pairs = frozenset((p.lower(), n.lower()) for p, n in pairs)
        # A payload needs walking only if its JSON has a secret name as a key, or both keys
        # of a (property, field) pair (`"token"` and `"id"`: an `"id"` alone is in nearly
        # every payload, a `"server"` in every answer about one): found in one pass in C.
        self._secret_keys = frozenset(_quoted(n) for n in self.names)
        parents: dict[bytes, set[bytes]] = {}
        for parent, name in self.pairs:
            parents.setdefault(_quoted(name), set()).add(_quoted(parent))
        self._parents = {k: frozenset(v) for k, v in parents.items()}
        self._keys = _any_of(self.names | {n for pair in self.pairs for n in pair})

    def __call__(self, value: Any) -> Any:
        """`value` with secrets replaced (the same object when it holds none)."""
        if isinstance(value, bytes | bytearray):
            return self._raw(bytes(value))
        if not isinstance(value, Mapping | list) or self._clean(value):
            return value
        return self._value(value)

    def _clean(self, value: Any) -> bool:
        """True when no key of `value` can be secret (False when its JSON cannot tell:
        a type JSON lacks, or text whose lower case is not plain ASCII)."""
        try:
            raw = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return False
        return raw.isascii() and not self._may_hold(raw.lower())

    def _may_hold(self, low: bytes) -> bool:
        """Whether the (lower-cased) JSON `low` has the keys a secret is found under."""
        if self._keys is None:
            return False
        found = set(self._keys.findall(low))
        for key in found:
            if key in self._secret_keys:
                return True
            parents = self._parents.get(key)
            if parents is not None and not parents.isdisjoint(found):
                return True
        return False

    def _raw(self, raw: bytes) -> Any:
        if not self._may_hold(raw.lower()):
            return raw
        try:
            decoded = jsoncodec.loads(raw)
        except ValueError:
            return REDACTED  # a secret name in something that is not JSON: keep nothing
        return self._value(decoded)

    def _value(self, value: Any, parent: str = "") -> Any:
        # a dict (nearly every value) is known without the Mapping ABC's slower check
        if type(value) is dict or isinstance(value, Mapping):
            out: dict[Any, Any] | None = None
            for key, item in value.items():
                low = key.lower() if isinstance(key, str) else ""
                if low in self.names or (parent, low) in self.pairs:
                    new = self._secret(item)
                elif type(item) in _LEAVES:
                    continue  # a plain value under a name that is not secret: kept
                else:
                    new = self._value(item, low)
                if new is not item:
                    if out is None:
                        out = dict(value)
                    out[key] = new
            return value if out is None else out
        if isinstance(value, list):
            items: list[Any] | None = None
            for i, v in enumerate(value):
                if type(v) in _LEAVES:
                    continue
                new = self._value(v, parent)
                if new is not v:
                    if items is None:
                        items = list(value)
                    items[i] = new
            return value if items is None else items
        return value

    def _secret(self, value: Any) -> Any:
        """The secret value's replacement: its shape is kept, not its content."""
        if value is None:
            return None
        if isinstance(value, Mapping):
            return {k: self._secret(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._secret(v) for v in value]
        return REDACTED
