"""The references a token request names rows by (a user, its domain, a scope's project or
domain, an application credential): the spec's token rules refuse what is not text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from specstack_runtime.errors import BadRequest
from tests.aio import arun
from tests.runtime.test_identity import password_auth, started


@arun
async def test_a_reference_that_is_not_text_is_400_naming_its_field(tmp_path: Path) -> None:
    stack, _, _ = await started(tmp_path)
    cred = {"secret": "s", "name": "n", "user": {"name": "demo", "domain": 5}}
    cases: list[tuple[str, dict[str, Any]]] = [
        (
            "Invalid input for field 'user.id': expected a string.",
            password_auth("a", "p", None, id=7),
        ),
        ("Invalid input for field 'user.name': must not be empty.", password_auth(" ", "p", None)),
        (
            "Invalid input for field 'user.name': not valid UTF-8.",
            password_auth("a\ud800", "p", None),
        ),
        (
            "Invalid input for field 'domain.name': must not be empty.",
            password_auth("a", "p", None, name="a", domain={"name": ""}),
        ),
        (
            "Expecting to find id or name in domain.",
            password_auth("a", "p", None, name="a", domain={}),
        ),
        (
            "Invalid input for field 'domain': expected an object with id or name.",
            {
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": cred,
                    }
                }
            },
        ),
        (
            "Invalid input for field 'application_credential.id': expected a string.",
            {
                "auth": {
                    "identity": {
                        "methods": ["application_credential"],
                        "application_credential": {"secret": "s", "id": 3},
                    }
                }
            },
        ),
    ]
    admin = password_auth("admin", "admin", None)["auth"]
    for scope, message in (
        (
            {"project": {"id": ["x"]}},
            "Invalid input for field 'scope.project.id': expected a string.",
        ),
        ({"domain": {"name": 1}}, "Invalid input for field 'domain.name': expected a string."),
        ({"domain": None}, "Invalid input for field 'domain': expected an object with id or name."),
    ):
        cases.append((message, {"auth": {**admin, "scope": scope}}))
    for message, body in cases:
        with pytest.raises(BadRequest, match=re.escape(message)):
            await stack.invoke("identity", "issueToken", body=body)
