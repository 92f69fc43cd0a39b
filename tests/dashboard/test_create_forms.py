"""Create forms read from the API documents, against a served stack (no browser): a
volume made from its form, the API's own refusal shown on the form, a key pair whose
private key is shown once, and labelled fields."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

from .conftest import Served


@pytest.fixture
def browser_session(served: Served) -> Iterator[httpx.Client]:
    """A logged-in dashboard session (the cookie the login sets), as a browser keeps it."""
    with httpx.Client(base_url=served.dashboard, timeout=30) as client:
        resp = client.post(
            "/login",
            data={"username": "demo", "password": served.password(), "project": "demo"},
        )
        assert resp.status_code == 303, resp.text
        yield client


def test_every_field_of_a_create_form_is_labelled(browser_session: httpx.Client) -> None:
    page = browser_session.get("/r/block-storage/volumes/create")
    assert page.status_code == 200
    inputs = re.findall(r'<(?:input|select) id="(f-[^"]+)"', page.text)
    labels = set(re.findall(r'<label for="(f-[^"]+)"', page.text))
    assert inputs and set(inputs) == labels
    assert {"f-name", "f-size"} <= labels
    assert 'id="f-size"' in page.text and 'type="number"' in page.text
    # the volumes listing links to it; a listing with nothing to create does not
    assert (
        'href="/r/block-storage/volumes/create"'
        in browser_session.get("/r/block-storage/volumes").text
    )


def test_a_volume_made_from_its_form(browser_session: httpx.Client, served: Served) -> None:
    not_a_number = browser_session.post(
        "/r/block-storage/volumes/create", data={"name": "form-vol", "size": "two"}
    )
    assert not_a_number.status_code == 400
    assert "A whole number." in not_a_number.text
    assert 'value="form-vol"' in not_a_number.text  # what was typed stays
    refused = browser_session.post(
        "/r/block-storage/volumes/create", data={"name": "form-vol", "size": "-1"}
    )
    assert refused.status_code == 400  # the API's answer, its message on the form
    alert = re.search(r'role="alert" id="form-error">([^<]+)<', refused.text)
    assert alert is not None and "size" in html.unescape(alert.group(1)).lower()
    made = browser_session.post(
        "/r/block-storage/volumes/create", data={"name": "form-vol", "size": "1"}
    )
    assert made.status_code == 201, made.text
    volume_id = re.search(r'data-key="id">([0-9a-f-]{36})<', made.text)
    assert volume_id is not None
    token, _ = served.token()
    volumes = httpx.get(
        f"{served.identity.rsplit(':', 1)[0]}:{_port(served, 'block-storage')}/v3/"
        f"{_project(served)}/volumes/{volume_id.group(1)}",
        headers={"X-Auth-Token": token},
    )
    assert volumes.status_code == 200
    assert (volumes.json()["volume"]["name"], volumes.json()["volume"]["size"]) == ("form-vol", 1)


def test_a_key_pair_s_private_key_is_shown_once(browser_session: httpx.Client) -> None:
    made = browser_session.post("/r/compute/keypairs/create", data={"name": "form-key"})
    assert made.status_code == 201, made.text
    assert "The private key is shown this once" in made.text
    key = re.search(r'data-key="private_key">([^<]+)<', made.text)
    assert key is not None and "PRIVATE KEY-----" in html.unescape(key.group(1))
    shown = browser_session.get("/r/compute/keypairs/form-key")
    assert shown.status_code == 200 and "PRIVATE KEY" not in shown.text
    again = browser_session.post("/r/compute/keypairs/create", data={"name": "form-key"})
    assert again.status_code == 409 and "already exists" in html.unescape(again.text)


def _project(served: Served) -> str:
    return str(served.token()[1]["project"]["id"])


def _port(served: Served, catalog_type: str) -> str:
    _, token = served.token()
    entry = next(e for e in token["catalog"] if e["type"] == catalog_type)
    url = str(next(e["url"] for e in entry["endpoints"] if e["interface"] == "public"))
    return url.split(":")[2].split("/")[0]


def test_an_image_made_and_its_data_uploaded_from_the_browser(
    browser_session: httpx.Client, served: Served
) -> None:
    made = browser_session.post(
        "/r/image/images/create",
        data={"name": "form-image", "disk_format": "raw", "container_format": "bare"},
    )
    assert made.status_code == 201, made.text
    found = re.search(r'data-key="id">([0-9a-f-]{36})<', made.text)
    assert found is not None
    image_id = found.group(1)
    detail = browser_session.get(f"/r/image/images/{image_id}")
    assert f'action="/r/image/images/{image_id}/upload/file"' in detail.text
    assert 'enctype="multipart/form-data"' in detail.text
    data = bytes(range(256)) * 4096  # 1 MiB
    sent = browser_session.post(
        f"/r/image/images/{image_id}/upload/file",
        files={"data": ("disk.img", data, "application/octet-stream")},
    )
    assert (sent.status_code, sent.headers["location"]) == (303, f"/r/image/images/{image_id}")
    token, _ = served.token()
    glance = f"{served.identity.rsplit(':', 1)[0]}:{_port(served, 'image')}"
    image = httpx.get(f"{glance}/v2/images/{image_id}", headers={"X-Auth-Token": token}).json()
    assert (image["status"], image["size"]) == ("active", len(data))
    back = httpx.get(f"{glance}/v2/images/{image_id}/file", headers={"X-Auth-Token": token})
    assert back.content == data
    none = browser_session.post(f"/r/image/images/{image_id}/upload/file", data={"x": "y"})
    assert none.status_code == 400 and "Choose a file." in none.text


def test_create_and_delete_offered_as_the_spec_s_policy_allows(served: Served) -> None:
    """Flavors: made and deleted by an admin only (`rule:admin`), so a member is offered
    neither; the admin is offered both. Key pairs: the member's own, offered to it."""

    def log_in(client: httpx.Client, cloud: str) -> None:
        auth = served.clouds[cloud]["auth"]
        resp = client.post(
            "/login",
            data={
                "username": auth["username"],
                "password": auth["password"],
                "project": auth["project_name"],
            },
        )
        assert resp.status_code == 303, resp.text

    flavors = "/r/compute/flavors"
    with (
        httpx.Client(base_url=served.dashboard, timeout=30) as member,
        httpx.Client(base_url=served.dashboard, timeout=30) as admin,
    ):
        log_in(member, "specstack")
        log_in(admin, "specstack-admin")
        assert f'href="{flavors}/create"' not in member.get(flavors).text
        refused = member.get(f"{flavors}/create")
        assert refused.status_code == 403 and "may not create" in refused.text
        assert f'href="{flavors}/create"' in admin.get(flavors).text
        assert admin.get(f"{flavors}/create").status_code == 200
        assert 'href="/r/compute/keypairs/create"' in member.get("/r/compute/keypairs").text
        flavor_id = re.search(r'href="/r/compute/flavors/([^"/]+)"', member.get(flavors).text)
        assert flavor_id, "the member sees the public flavors"
        one = f"{flavors}/{flavor_id.group(1)}"
        assert "Delete</button>" not in member.get(one).text
        assert "Delete</button>" in admin.get(one).text
