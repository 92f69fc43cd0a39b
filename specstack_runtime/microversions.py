"""Microversions: which one a request asks for, and the headers that say which one it got.

An API that declares `x-specstack-microversion` (service, min, max, headers) serves every
version in [min, max], as nova and cinder do: no version header means the minimum, `latest`
the maximum, a version outside the range is a 406, and each answer names its version.
Operations (`x-specstack-since`) and resource fields (`since:`) that a version brings are
left out of older ones by the app and the resource engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from specstack_runtime.errors import ApiError, BadRequest

Version = tuple[int, int]

# MAJOR.MINOR; more digits than this is not a version (and would make int() refuse it
# past Python's 4,300-digit limit).
_VERSION = re.compile(r"(\d{1,9})\.(\d{1,9})")
GENERIC_HEADER = "openstack-api-version"


def parse(text: str) -> Version:
    """A spec's version string (validated at generate time) as a comparable pair."""
    major, _, minor = text.partition(".")
    return int(major), int(minor)


@dataclass
class Microversions:
    """One API's range, from its IR (`Api.microversion`)."""

    service: str
    minimum: str
    maximum: str
    headers: tuple[str, ...]
    _answers: dict[Version, dict[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mv: Mapping[str, Any]) -> Microversions:
        return cls(
            str(mv["service"]),
            str(mv["minimum"]),
            str(mv["maximum"]),
            tuple(str(h) for h in mv["headers"]),
        )

    @property
    def lowest(self) -> Version:
        return parse(self.minimum)

    @property
    def highest(self) -> Version:
        return parse(self.maximum)

    def requested(self, headers: Mapping[str, str]) -> str | None:
        """The version the request names: `OpenStack-API-Version: <service> X.Y` first."""
        for part in (headers.get(GENERIC_HEADER) or "").split(","):
            name, _, value = part.strip().partition(" ")
            if name.lower() == self.service.lower():
                return value.strip()
        for header in self.headers:  # Starlette's headers, keyed in lower case
            given = headers.get(header.lower())
            if header.lower() != GENERIC_HEADER and given:
                return given.strip()
        return None

    def negotiate(self, headers: Mapping[str, str]) -> Version:
        """The version to serve; BadRequest for a malformed one, 406 outside the range."""
        requested = self.requested(headers)
        if requested is None:
            return self.lowest
        if requested.lower() == "latest":
            return self.highest
        got = _VERSION.fullmatch(requested)
        if got is None:
            shown = requested if len(requested) <= 32 else requested[:32] + "..."
            raise BadRequest(
                f"API Version String {shown} is of invalid format. "
                "Must be of format MajorNum.MinorNum."
            )
        asked = (int(got[1]), int(got[2]))
        if not self.lowest <= asked <= self.highest:
            raise ApiError(
                f"Version {requested} is not supported by the API. "
                f"Minimum is {self.minimum} and maximum is {self.maximum}.",
                status=406,
            )
        return asked

    def answer_headers(self, version: Version | None) -> dict[str, str]:
        """The headers naming the answer's version (the minimum when none was negotiated)."""
        version = version or self.lowest
        found = self._answers.get(version)
        if found is None:
            text = f"{version[0]}.{version[1]}"
            found = {
                name: f"{self.service} {text}" if name.lower() == GENERIC_HEADER else text
                for name in self.headers
            }
            found["Vary"] = ", ".join(self.headers)
            self._answers[version] = found
        return found
