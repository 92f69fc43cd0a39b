"""The generated clients take the operations' request models and answer their success
models (`ApiResponse.parsed`), as openapi-python-client's do."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from generated.clients.identity import IdentityClient
from generated.clients.image import ImageClient
from generated.models import image
from specstack_runtime.apiresponse import ApiResponse
from tests.aio import arun
from tests.runtime.fakes import Stack


@arun
async def test_a_request_model_goes_out_and_the_success_model_comes_back(
    tmp_path: Path,
) -> None:
    stack = await Stack(tmp_path).start()
    admin = await stack.login()
    client = ImageClient(stack.runtimes["image"])
    body = image.ImageCreate(name="typed", disk_format="raw", container_format="bare", tags=["t"])
    created = await client.create_image(body=body, token=admin.token)
    assert created.status_code == 201
    assert isinstance(created.parsed, image.Image)
    assert created.parsed.name == "typed" and created.parsed.tags == ["t"]
    assert created.parsed.status.root == "queued"  # what the API set, not what was sent
    image_id = str(created.parsed.id)

    shown = await client.show_image(image_id, token=admin.token)
    assert shown.parsed is not None and shown.parsed.name == "typed"
    listed = await client.list_images(token=admin.token)
    assert listed.parsed is not None
    assert image_id in {str(i.id) for i in listed.parsed.images}
    # plain data is accepted too
    again = await client.create_image(body={"name": "plain"}, token=admin.token)
    assert again.parsed is not None and again.parsed.name == "plain"


@arun
async def test_an_error_answer_has_no_parsed_body_but_keeps_its_json(tmp_path: Path) -> None:
    stack = await Stack(tmp_path).start()
    admin = await stack.login()
    missing = await ImageClient(stack.runtimes["image"]).show_image(
        "00000000-0000-4000-8000-000000000000", token=admin.token
    )
    assert missing.status_code == 404 and missing.parsed is None
    assert "00000000-0000-4000-8000-000000000000" in missing.response.text
    # read as a flow step reads an answer (its bytes, then JSON): an on_failure step's
    assert missing.content == missing.response.content and missing.json() == missing.response.json()
    versions = await IdentityClient(stack.runtimes["identity"]).get_identity_versions()
    assert versions.status_code == 300 and versions.parsed is not None


def test_a_body_that_breaks_the_document_is_an_error_not_a_wrong_object() -> None:
    bad = httpx.Response(200, json={"images": [{"id": "not-a-uuid"}]})
    with pytest.raises(ValidationError):
        _ = ApiResponse(bad, image.ImageList, 200).parsed
