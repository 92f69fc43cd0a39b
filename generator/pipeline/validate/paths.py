"""Human-readable names for places inside a spec file."""

from __future__ import annotations

from collections.abc import Sequence

from generator.pipeline.load import PathElem


def dotted(path: Sequence[PathElem]) -> str:
    out = ""
    for elem in path:
        if isinstance(elem, int):
            out += f"[{elem}]"
        else:
            out += ("." if out else "") + str(elem)
    return out or "(top level)"
