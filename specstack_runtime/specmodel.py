"""The base of the generated API and message models (`generated/models`).

A stack imports some five hundred models and validates with a few dozen of them (the
requests and messages its clients send). Each is built (pydantic's validator and
serializer) when first used, not at import: start-up does not pay for the rest, in
time or memory.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpecModel(BaseModel):
    model_config = ConfigDict(defer_build=True)
