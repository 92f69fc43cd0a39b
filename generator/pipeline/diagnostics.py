"""Problems found in a spec, reported as `FILE:LINE:COL: message`."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Location:
    """A 1-based position in a spec file; `file` is as the user should see it."""

    file: str
    line: int = 1
    col: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, order=True)
class Diagnostic:
    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class SpecError(Exception):
    """Raised when a spec cannot be used; carries every problem found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(d) for d in self.diagnostics)


def sort_diagnostics(diags: list[Diagnostic]) -> list[Diagnostic]:
    """Stable, de-duplicated order: by file, line, column, then message."""
    return sorted(set(diags))
