"""Stable ids: a `fields:` resource's row id from the values of its fields."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

#: Namespace of the stable ids of `id: fields:...` resources (uuid5 of the field values).
STABLE_IDS = uuid.UUID("6f1c2b9e-4d3a-5b7c-8e9f-0a1b2c3d4e60")


def stable_id(resource: str, values: Iterable[Any]) -> str:
    """The id a `fields:` resource gives a row with these field values (32 hex digits)."""
    return _stable("|".join([resource, *map(str, values)]))


@lru_cache(maxsize=256)
def _stable(name: str) -> str:
    # one flow asks for the same id again (each component recording a boot's action)
    return uuid.uuid5(STABLE_IDS, name).hex
