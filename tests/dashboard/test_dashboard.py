"""The dashboard in Debian's headless chromium against a served embedded stack: log in
(and a wrong password), the tables the spec's list operations give, an API error on the
launch form, a launch whose boot-vm steps light up in the declared order, the server's
console log, its deletion, a past request id, logging out. Screenshots go to the test's
temporary directory (and to SPECSTACK_DASHBOARD_SHOTS when set)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from specstack_runtime.dashboard.listings import Catalogue
from specstack_runtime.stackinfo import StackInfo

from ..conftest import REPO
from .conftest import Served, browser, screenshot

#: What chromium logs when a page answers with an error status (a form refused: 4xx).
FAILED = "Failed to load resource: the server responded with a status of {} ({})"
INFO = StackInfo.load(REPO / "generated" / "ir.json")
BOOT = INFO.sequences["boot-vm"]


@dataclass
class Tab:
    page: Any
    context: Any
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def tab(tmp_path: Path, served: Served) -> Iterator[Tab]:
    """A fresh chromium profile at 1280 x 800, recording console errors and requests."""
    with browser(tmp_path / "profile") as ctx:
        page = ctx.new_page()
        page.set_viewport_size({"width": 1280, "height": 800})
        t = Tab(page, ctx)
        page.on("console", lambda m: t.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: t.errors.append(str(exc)))
        page.on("request", lambda r: t.requests.append(r.url))
        yield t


def log_in(t: Tab, served: Served, password: str | None = None) -> None:
    log_in_as(t.page, served, password)


def log_in_as(page: Any, served: Served, password: str | None = None) -> None:
    page.goto(f"{served.dashboard}/login")
    page.get_by_label("User name").fill("demo")
    page.get_by_label("Password").fill(password or served.password())
    page.get_by_label("Project").fill("demo")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def watch_launch(page: Any, name: str, volume: str | None) -> tuple[list[str], bool]:
    """Launch `name` from the form; when the live view says the flow ended, the main
    steps' statuses (after checking their labels, titles and order), and whether the
    flow page was served live (the boot still running as it loaded: it then streams)."""
    page.get_by_role("link", name="Launch instance").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Image").select_option(label="demo-image")
    page.get_by_label("Flavor").select_option(label="m1.tiny")
    page.get_by_label("Network").select_option(label="private")
    if volume:
        page.get_by_label("Volume to attach (optional)").select_option(label=volume)
    flow_page = re.compile(r".*/flows/req-[0-9a-f-]+$")
    with page.expect_response(lambda r: flow_page.match(r.url) is not None) as served:
        page.get_by_role("button", name="Create", exact=True).click()
    live = "sse-connect=" in served.value.text()
    page.wait_for_url(flow_page)
    # whatever the live view ends on (finished, failed, stopped watching), then what it said
    state = page.locator("#flow-state", has_text=re.compile(r"^(Finished|Failed|Stopped)"))
    state.wait_for(timeout=200_000)
    assert state.inner_text() == "Finished: all 15 steps recorded."
    mains = page.locator("table.flow tr.step:not(.sub)")
    labels = mains.evaluate_all("rows => rows.map(r => r.dataset.label)")
    assert labels == [str(s["label"]) for s in BOOT["steps"]] and len(labels) == 15
    assert mains.locator("td.title").all_inner_texts() == [s["title"] for s in BOOT["steps"]]
    # in the declared order: each step started no earlier than the one before it
    offsets = [float(t.strip("+ ms")) for t in mains.locator("td.offset").all_inner_texts()]
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    assert all(t.endswith(" ms") for t in mains.locator("td.time").all_inner_texts())
    statuses: list[str] = mains.evaluate_all("rows => rows.map(r => r.dataset.status)")
    return statuses, live


def test_a_wrong_password_is_refused_with_keystones_answer(tab: Tab, served: Served) -> None:
    log_in(tab, served, password="not-the-password")
    alert = tab.page.get_by_role("alert")
    assert alert.inner_text() == (
        "Wrong user name, password or project: The request you have made requires authentication."
    )
    assert tab.page.url == f"{served.dashboard}/login"
    assert tab.page.get_by_label("User name").input_value() == "demo"
    assert tab.context.cookies() == []  # no session
    # the page itself answered 401 (chromium logs that), and nothing else went wrong
    assert tab.errors == [FAILED.format(401, "Unauthorized")]


def test_keyboard_log_in_then_the_spec_s_tables(tab: Tab, served: Served, shots: Path) -> None:
    page = tab.page
    page.goto(f"{served.dashboard}/login")
    # by keyboard alone: the skip link, then the three labelled fields, then Enter
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type("demo")
    page.keyboard.press("Tab")
    page.keyboard.type(served.password())
    page.keyboard.press("Tab")
    page.keyboard.type("demo")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/r/compute/servers$"))

    (cookie,) = tab.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert len(cookie["value"]) >= 40  # an opaque random id, not the token
    assert cookie["value"] != served.token()[0]

    # every collection the spec's APIs list for a member, linked from the navigation
    catalogue = Catalogue(INFO, REPO / "generated" / "openapi")
    nav = page.get_by_role("navigation", name="Resources")
    hrefs = {a.get_attribute("href") for a in nav.get_by_role("link").all()}
    for collection in ("servers", "images", "flavors", "networks", "subnets", "ports", "volumes"):
        listing = next(x for x in catalogue.listings if x.collection == collection)
        assert listing.href in hrefs, collection
    assert "/r/identity/users" not in hrefs  # admin only: policy hides it from a member

    # the demo VM `specstack run` booted, with its status; the table refreshes itself
    row = page.locator("table.listing tbody tr", has_text="demo-vm")
    assert row.locator("td[data-column=status]").inner_text() == "ACTIVE"
    assert page.locator("table.listing tbody[hx-trigger^=every]").count() == 1
    screenshot(page, shots, "dashboard-servers")

    page.get_by_role("link", name="flavors").click()
    page.wait_for_url(re.compile(r".*/r/compute/flavors$"))
    names = page.locator("td[data-column=name]").all_inner_texts()
    assert {"m1.tiny", "m1.small", "m1.medium"} <= set(names)

    # a phone-sized viewport: no sideways scrolling of the page itself
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, shots, "dashboard-phone")
    assert tab.errors == []


def _volume(served: Served, name: str) -> str:
    """A new available volume of the demo project, through cinder's API."""
    token, body = served.token()
    cinder = next(e for e in body["catalog"] if e["type"] == "block-storage")
    url = next(ep["url"] for ep in cinder["endpoints"] if ep["interface"] == "public")
    headers = {"X-Auth-Token": token}
    resp = httpx.post(f"{url}/volumes", json={"volume": {"size": 1, "name": name}}, headers=headers)
    assert resp.status_code == 202, resp.text
    volume_id = str(resp.json()["volume"]["id"])
    for _ in range(500):
        got = httpx.get(f"{url}/volumes/{volume_id}", headers=headers).json()["volume"]
        if got["status"] == "available":
            return volume_id
        time.sleep(0.05)
    raise AssertionError(f"volume {volume_id} stayed {got['status']}")


def test_launch_watch_the_boot_open_the_console_delete(
    tab: Tab, served: Served, shots: Path
) -> None:
    page = tab.page
    volume_id = _volume(served, "dash-vol")
    log_in(tab, served)
    page.get_by_role("link", name="Launch instance").click()

    # the API's own validation error, shown on the form, the choices kept
    page.get_by_label("Name").fill("x" * 300)
    page.get_by_label("Image").select_option(label="demo-image")
    page.get_by_label("Flavor").select_option(label="m1.tiny")
    page.get_by_label("Network").select_option(label="private")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_load_state()
    alert = page.get_by_role("alert").inner_text()
    assert alert == (  # nova's message, as the API answered it
        "Invalid input for field/attribute server/name: String should have at most 255 characters"
    )
    assert page.get_by_label("Flavor").evaluate("s => s.selectedOptions[0].text") == "m1.tiny"
    assert tab.errors == [FAILED.format(400, "Bad Request")]
    tab.errors.clear()

    statuses, live = watch_launch(page, "web-1", volume="dash-vol")
    assert statuses == ["ok"] * 15
    flow_id = page.url.rsplit("/", 1)[1]
    # a boot still running as the page loaded is followed by SSE; one already over (a
    # fast machine) is served whole. test_live_flow.py shows streaming without the race.
    streamed = any(u.endswith(f"/flows/{flow_id}/events") for u in tab.requests)
    assert streamed == live
    assert page.locator("tr.step.sub[data-label='15.3']").get_attribute("data-status") == "ok"
    screenshot(page, shots, "dashboard-flow")

    # the server: its detail, console log, deletion
    page.get_by_role("link", name="servers").click()
    page.get_by_role("link", name="web-1").click()
    page.wait_for_selector("dd[data-field=status]:text-is('ACTIVE')", timeout=120_000)
    # the server's own collections, from the compute API: its volume and its port
    volumes = page.locator("section[data-part=volumeAttachments] tbody tr")
    assert volumes.locator("td[data-column=volumeId]").all_inner_texts() == [volume_id]
    assert volumes.locator("td[data-column=device]").all_inner_texts() == ["/dev/vdb"]
    # detach the volume, then attach it again, from the server's page
    page.get_by_role("button", name=f"Remove {volume_id}").click()
    page.wait_for_load_state()
    assert volumes.locator("td.empty").inner_text() == "None."
    page.get_by_label("volumes").select_option(label="dash-vol")  # available again
    page.get_by_role("button", name="Add", exact=True).click()
    page.wait_for_load_state()
    assert volumes.locator("td[data-column=volumeId]").all_inner_texts() == [volume_id]
    ports = page.locator("section[data-part=interfaceAttachments] tbody tr")
    assert (
        ports.count() == 1 and ports.locator("td[data-column=port_state]").inner_text() == "ACTIVE"
    )
    page.get_by_role("button", name="Get console output").click()
    output = page.locator("#result pre.output[data-key=output]")
    output.wait_for()
    console = output.inner_text()  # the guest's console, as nova's API gave it
    assert "fake-guest web-1: booted" in console and "attached vdb" in console, console
    screenshot(page, shots, "dashboard-server")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete", exact=True).click()
    page.wait_for_url(re.compile(r".*/r/compute/servers$"))
    page.locator("table.listing tbody tr", has_text="web-1").wait_for(
        state="detached", timeout=120_000
    )
    assert tab.errors == []


def test_a_past_request_id_and_logging_out(tab: Tab, served: Served) -> None:
    page = tab.page
    m = re.search(r"specstack trace (\S+)", (served.data_dir / "run.out").read_text())
    assert m
    log_in(tab, served)
    page.get_by_label("Request id").fill(m.group(1))
    page.get_by_label("Request id").press("Enter")
    page.wait_for_url(re.compile(rf".*/flows/{m.group(1)}$"))
    mains = page.locator("table.flow tr.step:not(.sub)")
    assert mains.evaluate_all("rows => rows.map(r => r.dataset.status)") == ["ok"] * 15
    assert page.locator("#flow-state").inner_text() == "Finished: all 15 steps recorded."

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r".*/login$"))
    assert tab.context.cookies() == []
    page.goto(f"{served.dashboard}/r/compute/servers")
    assert page.url == f"{served.dashboard}/login"
    assert tab.errors == []


def test_a_failing_step_is_shown_red_with_its_error(tab: Tab, served: Served, shots: Path) -> None:
    """A flavor no compute host can hold: scheduling (step 7) fails, and the view says so."""
    admin, body = served.token("specstack-admin")
    nova = next(e for e in body["catalog"] if e["type"] == "compute")
    url = next(ep["url"] for ep in nova["endpoints"] if ep["interface"] == "public")
    flavor = {"flavor": {"name": "m1.enormous", "ram": 64 * 1024 * 1024, "vcpus": 1, "disk": 1}}
    made = httpx.post(f"{url}/flavors", json=flavor, headers={"X-Auth-Token": admin})
    assert made.status_code == 200, made.text

    page = tab.page
    log_in(tab, served)
    page.get_by_role("link", name="Launch instance").click()
    page.get_by_label("Name").fill("too-big")
    page.get_by_label("Image").select_option(label="demo-image")
    page.get_by_label("Flavor").select_option(label="m1.enormous")
    page.get_by_label("Network").select_option(label="private")
    page.get_by_role("button", name="Create", exact=True).click()
    page.wait_for_url(re.compile(r".*/flows/req-[0-9a-f-]+$"))
    state = page.locator("#flow-state", has_text="Failed at step")
    state.wait_for(timeout=180_000)
    failed = page.locator("table.flow tr.step.error")
    label = failed.first.get_attribute("data-label")
    assert label is not None and label.split(".")[0] == "7"  # scheduling
    error = failed.first.locator("td.err").inner_text()
    assert error and error in state.inner_text()
    # red: the row's colour is the failure's, not the pending or done one
    colour = failed.first.evaluate("r => getComputedStyle(r).backgroundColor")
    assert colour == "rgb(251, 228, 226)"
    assert page.locator("tr.step[data-label='8']").get_attribute("data-status") == "pending"
    screenshot(page, shots, "dashboard-failed")
    assert tab.errors == []


def test_the_spec_s_diagrams(tab: Tab, served: Served) -> None:
    page = tab.page
    log_in(tab, served)
    page.get_by_role("link", name="Diagrams and conformance").click()
    shown = page.locator("section.diagram").evaluate_all("s => s.map(x => x.dataset.diagram)")
    drawn = sorted(p.stem for p in (REPO / "generated" / "diagrams").glob("*.svg"))
    assert sorted(shown) == drawn and "topology" in shown and "boot-vm" in shown
    for name in shown:  # each image loaded: an SVG of its own size
        img = page.locator(f"section[data-diagram='{name}'] img")
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), name
    assert "No conformance report yet" in page.locator("main").inner_text()
    assert tab.context.request.get(f"{served.dashboard}/diagrams/..%2Fir.svg").status == 404
    assert tab.errors == []


def test_the_server_page_lists_its_actions_each_linking_to_its_flow(
    tab: Tab, served: Served
) -> None:
    """issue 18: a server's instance actions (nova's os-instance-actions) on its page, the
    create's request id (the one the POST answered) a link to the live view of its flow."""
    token, body = served.token()

    def endpoint(kind: str) -> str:
        entry = next(e for e in body["catalog"] if e["type"] == kind)
        return str(next(ep["url"] for ep in entry["endpoints"] if ep["interface"] == "public"))

    url, headers = endpoint("compute"), {"X-Auth-Token": token}
    flavors = httpx.get(f"{url}/flavors", headers=headers).json()["flavors"]
    images = httpx.get(f"{endpoint('image')}/v2/images?name=demo-image", headers=headers)
    nets = httpx.get(f"{endpoint('network')}/v2.0/networks?name=private", headers=headers)
    server = {
        "server": {
            "name": "dash-acts",
            "imageRef": images.json()["images"][0]["id"],
            "flavorRef": next(f["id"] for f in flavors if f["name"] == "m1.tiny"),
            "networks": [{"uuid": nets.json()["networks"][0]["id"]}],
        }
    }
    posted = httpx.post(f"{url}/servers", json=server, headers=headers)
    assert posted.status_code == 202, posted.text
    request_id = posted.headers["x-openstack-request-id"]
    server_id = posted.json()["server"]["id"]

    page = tab.page
    log_in(tab, served)
    page.goto(f"{served.dashboard}/r/compute/servers/{server_id}")
    page.wait_for_selector("dd[data-field=status]:text-is('ACTIVE')", timeout=120_000)
    page.reload()
    rows = page.locator("section[data-part=instanceActions] tbody tr")
    assert rows.locator("td[data-column=action]").all_inner_texts() == ["create"]
    cell = rows.locator("td[data-column=request_id]")
    assert cell.inner_text() == request_id
    assert rows.locator("td[data-column=start_time]").inner_text().startswith("20")
    assert rows.locator("td[data-column=message]").inner_text() == ""  # no event failed
    cell.get_by_role("link", name=request_id).click()
    page.wait_for_url(re.compile(rf".*/flows/{request_id}$"))
    # the flow the request started: nova-compute's build (step 9) among its recorded steps
    page.locator("tr.step[data-label='9'][data-status=ok]").wait_for(timeout=120_000)
    deleted = httpx.delete(f"{url}/servers/{server_id}", headers=headers)
    assert deleted.status_code == 204
    assert tab.errors == []
