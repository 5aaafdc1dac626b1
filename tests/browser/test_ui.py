"""The /ui page in a real headless Chromium against a real stack (API, Celery worker, Valkey, SeaweedFS).

The browser uploads a picture through the page's file input, waits for the crops, and the rectangles it
drew are read back from the DOM (their data-* values and their rendered geometry, scaled back to image
pixels) and checked against the API's own ``Croppings`` for the same job. Every request the page made must
stay on the test server's host, and nothing but the key may be stored in the browser.

``CROPQ_UPDATE_SCREENSHOTS=1`` also writes the README's screenshot, docs/ui.png.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from skimage import data as skimage_data

from tests.conftest import Stack
from tests.integration.helpers import jpeg
from tests.security.signatures_support import new_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]  # the first test may install Chromium

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "ui.png"
GEOMETRY_TOLERANCE_PX = 2.0
# Written out here rather than imported, so that a weakened policy fails this test.
POLICY = (
    "default-src 'self'; img-src 'self' blob: data: https:; connect-src 'self'; script-src 'self'; "
    "style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@dataclass
class UiSetup:
    stack: Stack
    project: str
    bucket: str
    out_bucket: str
    key_id: str
    secret: str

    def client(self, secret: str | None = None) -> httpx.Client:
        auth = f"Bearer {self.key_id}:{secret or self.secret}"
        return httpx.Client(base_url=self.stack.url, headers={"Authorization": auth}, timeout=30)

    def job_path(self, rid: str) -> str:
        return f"/v1/projects/{self.project}/crop-jobs/{rid}"


@pytest.fixture(scope="module")
def ui(make_stack: Any) -> UiSetup:
    stack: Stack = make_stack(workers=1)
    project, bucket, out_bucket = (
        f"ui{uuid.uuid4().hex[:10]}",
        f"b{uuid.uuid4().hex[:12]}",
        f"o{uuid.uuid4().hex[:12]}",
    )
    for b in (bucket, out_bucket):
        stack.s3.client().make_bucket(b)
    with stack.http() as c:
        body = {"Buckets": [bucket], "WritableBuckets": [out_bucket]}
        c.put(f"/v1/projects/{project}", json=body).raise_for_status()
    # A key of this project only, as a user would paste it.
    return UiSetup(stack, project, bucket, out_bucket, *new_key(stack, project))


# ---------------------------------------------------------------- driving the page


def open_page(browser: webdriver.Chrome, ui: UiSetup) -> None:
    requests_made(browser)  # forget the browser's start-up tab: from here on, the log is the page's
    browser.get(f"{ui.stack.url}/ui")
    WebDriverWait(browser, 15).until(
        lambda d: d.execute_script("return document.documentElement.dataset.ready === 'true'")
    )


def type_into(browser: webdriver.Chrome, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def choose_ratios(browser: webdriver.Chrome, ratios: list[str]) -> None:
    boxes = browser.find_elements(By.CSS_SELECTOR, "#ratio-grid input[name=ratio]")
    # Untick first: at most five may be ticked at once, the rest are disabled meanwhile.
    for box in boxes:
        if box.is_selected() and box.get_attribute("value") not in ratios:
            box.click()
    for box in boxes:
        if not box.is_selected() and box.get_attribute("value") in ratios:
            box.click()
    chosen = [b.get_attribute("value") or "" for b in boxes if b.is_selected()]
    assert sorted(chosen) == sorted(ratios)


def submit_and_wait(browser: webdriver.Chrome, timeout: float = 90) -> str:
    """Press Crop and wait for the page to say how it ended: "done" or "failed"."""
    browser.find_element(By.ID, "submit").click()
    WebDriverWait(browser, timeout, poll_frequency=0.2).until(
        lambda d: d.execute_script(
            "const s = document.getElementById('status').dataset.state;"
            "return (s === 'done' || s === 'failed') && !document.getElementById('submit').disabled;"
        )
    )
    state: str = browser.find_element(By.ID, "status").get_attribute("data-state") or ""
    return state


def submit_expecting_crops(browser: webdriver.Chrome) -> str:
    """Press Crop, wait for the crops, and return the job's RequestId (or fail with what the page said)."""
    state = submit_and_wait(browser)
    assert state == "done", browser.find_element(By.ID, "job-error").text
    rid = browser.find_element(By.ID, "stage").get_attribute("data-request-id")
    assert rid
    return rid


def wait_image_shown(browser: webdriver.Chrome) -> None:
    WebDriverWait(browser, 15).until(
        lambda d: d.execute_script(
            "const i = document.getElementById('image'); return i.complete && i.naturalWidth > 0;"
        )
    )


DRAWN_BOXES_JS = """
const img = document.getElementById('image').getBoundingClientRect();
const read = (sel) => [...document.querySelectorAll(sel)].map((e) => {
  const r = e.getBoundingClientRect();
  return {
    id: e.id, ratio: e.dataset.ratio || null, type: e.dataset.type || null,
    data: {Left: +e.dataset.left, Top: +e.dataset.top, Width: +e.dataset.width, Height: +e.dataset.height},
    rect: {left: r.left - img.left, top: r.top - img.top, width: r.width, height: r.height},
    label: e.querySelector('.crop-label, .det-label').textContent,
  };
});
return {img: {width: img.width, height: img.height},
        crops: read('#crops-layer .crop'), detections: read('#detections-layer .det')};
"""


def check_drawn_crops(browser: webdriver.Chrome, job: dict[str, Any]) -> dict[str, Any]:
    """The drawn crops are the API's Croppings: the same data-* pixels, and on screen within 2 px."""
    drawn: dict[str, Any] = browser.execute_script(DRAWN_BOXES_JS)
    crops = job["Croppings"]
    assert len(drawn["crops"]) == len(crops) > 0
    sx = job["ImageWidth"] / drawn["img"]["width"]
    sy = job["ImageHeight"] / drawn["img"]["height"]
    for i, (dom, api) in enumerate(zip(drawn["crops"], crops, strict=True)):
        b = api["Boundary"]
        assert dom["id"] == f"crop-{i}"
        assert dom["ratio"] == api["AspectRatio"]
        assert dom["data"] == {k: b[k] for k in ("Left", "Top", "Width", "Height")}
        r = dom["rect"]
        on_screen = {
            "Left": r["left"] * sx,
            "Top": r["top"] * sy,
            "Width": r["width"] * sx,
            "Height": r["height"] * sy,
        }
        for k, v in on_screen.items():
            assert abs(v - b[k]) <= GEOMETRY_TOLERANCE_PX, (i, k, v, b[k])
        ratio, conf = dom["label"].split(" · ")
        assert ratio == api["AspectRatio"]
        assert abs(float(conf) - api["Confidence"]) <= 0.005 + 1e-9
    return drawn


def requests_made(browser: webdriver.Chrome) -> list[str]:
    """Every URL the page requested since the last call (Chrome's performance log)."""
    urls = []
    for entry in browser.get_log("performance"):  # type: ignore[no-untyped-call]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def assert_no_request_left_the_host(browser: webdriver.Chrome, ui: UiSetup) -> list[str]:
    urls = requests_made(browser)
    host = urlsplit(ui.stack.url).netloc
    outside = [u for u in urls if not u.startswith(("data:", "blob:")) and urlsplit(u).netloc != host]
    assert outside == [], outside
    return urls


STORAGE_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const session = Object.fromEntries(Object.keys(sessionStorage).map((k) => [k, sessionStorage.getItem(k)]));
  const databases = indexedDB.databases ? (await indexedDB.databases()).map((d) => d.name) : [];
  const cacheNames = typeof caches === 'undefined' ? [] : await caches.keys();
  done({session, local: localStorage.length, cookie: document.cookie, databases, cacheNames});
})();
"""


def photo() -> bytes:
    """A real photograph that ships with scikit-image (NASA, public domain): a face and a person."""
    rgb = skimage_data.astronaut()  # type: ignore[no-untyped-call]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return bytes(buf)


def full_page_png(browser: webdriver.Chrome) -> bytes:
    width, height = browser.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    out = io.BytesIO()
    Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB").save(out, "PNG", optimize=True)
    return out.getvalue()


# ---------------------------------------------------------------- tests


def test_the_page_is_public_and_served_with_a_strict_policy(ui: UiSetup) -> None:
    with httpx.Client(base_url=ui.stack.url, timeout=10) as c:  # no key: the page itself is public
        for path, media in (
            ("/ui", "text/html"),
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/style.css", "text/css"),
        ):
            r = c.get(path)
            assert r.status_code == 200, path
            assert r.headers["content-type"].startswith(media)
            assert r.headers["content-security-policy"] == POLICY
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert "set-cookie" not in r.headers
            again = c.get(path, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304
        missing = c.get("/ui/secrets.txt")
        assert missing.status_code == 404 and missing.json()["Code"] == "ResourceNotFound"


def test_the_page_draws_the_crops_the_api_returned(
    browser: webdriver.Chrome, ui: UiSetup, tmp_path: Path
) -> None:
    picture = tmp_path / "salient.jpg"
    picture.write_bytes(jpeg(1200, 800, patch=(900, 220), seed=3))
    open_page(browser, ui)
    type_into(browser, "key-id", ui.key_id)
    type_into(browser, "key-secret", "not-the-secret")
    type_into(browser, "project", ui.project)
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait_image_shown(browser)
    choose_ratios(browser, ["16:9", "1:1"])

    # A wrong secret: the page shows the API's own Code and Message.
    with ui.client("not-the-secret") as c:
        refused = c.post(
            f"/v1/projects/{ui.project}/crop-jobs", json={"SourceURI": f"oss://{ui.bucket}/x.jpg"}
        )
    assert 400 <= refused.status_code < 500 and refused.json()["Code"]
    assert submit_and_wait(browser) == "failed"
    shown = browser.find_element(By.ID, "job-error")
    assert shown.is_displayed()
    assert f"{refused.json()['Code']}:" in shown.text and refused.json()["Message"] in shown.text

    type_into(browser, "key-secret", ui.secret)
    rid = submit_expecting_crops(browser)
    with ui.client() as c:
        job = c.get(ui.job_path(rid)).json()
    assert job["Status"] == "Succeeded"
    assert [c["AspectRatio"] for c in job["Croppings"]] == ["1:1", "16:9"]  # the page sends them in its order
    assert (job["ImageWidth"], job["ImageHeight"]) == (1200, 800)
    check_drawn_crops(browser, job)
    assert not browser.find_element(By.ID, "job-error").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#crop-list .card")) == 2

    # The drawing follows the picture when the window changes size.
    browser.set_window_size(1000, 900)
    WebDriverWait(browser, 5).until(
        lambda d: d.execute_script(
            "return document.getElementById('image').getBoundingClientRect().width < 700"
        )
    )
    check_drawn_crops(browser, job)
    browser.set_window_size(1400, 1000)

    # Nothing is stored in the browser but the key, and only in this tab's session storage.
    stored = browser.execute_async_script(STORAGE_JS)
    assert stored["session"].keys() == {"cropq.session"}
    assert json.loads(stored["session"]["cropq.session"]) == {
        "AccessKeyId": ui.key_id,
        "AccessKeySecret": ui.secret,
        "Project": ui.project,
    }
    assert stored["local"] == 0
    assert stored["cookie"] == "" and browser.get_cookies() == []
    assert stored["databases"] == [] and stored["cacheNames"] == []

    urls = assert_no_request_left_the_host(browser, ui)
    paths = {urlsplit(u).path for u in urls}
    assert {"/ui", "/ui/app.js", "/ui/style.css", f"/v1/projects/{ui.project}/crop-jobs"} <= paths

    (tmp_path / "ui.png").write_bytes(full_page_png(browser))

    # "Forget it now" empties the tab's storage too.
    browser.find_element(By.ID, "forget").click()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_detections_toggle_downloads_and_the_screenshot(
    browser: webdriver.Chrome, ui: UiSetup, tmp_path: Path, download_dir: Path
) -> None:
    picture = tmp_path / "astronaut.jpg"
    picture.write_bytes(photo())
    open_page(browser, ui)
    type_into(browser, "key-id", ui.key_id)
    type_into(browser, "key-secret", ui.secret)
    type_into(browser, "project", ui.project)
    browser.find_element(By.ID, "file").send_keys(str(picture))
    wait_image_shown(browser)
    choose_ratios(browser, ["1:1", "4:3", "16:9", "9:16"])
    type_into(browser, "hint", "face")
    browser.find_element(By.CSS_SELECTOR, "#render-details summary").click()
    type_into(browser, "target-uri", f"oss://{ui.out_bucket}/{{Stem}}/{{Ratio}}.webp")
    assert browser.find_element(By.ID, "format").get_attribute("value") == "webp"

    rid = submit_expecting_crops(browser)
    with ui.client() as c:
        job = c.get(ui.job_path(rid)).json()
    drawn = check_drawn_crops(browser, job)
    assert all(c.get("Output") for c in job["Croppings"])

    # The detections: drawn as the API reported them, hidden and shown by the switch (mouse, then keyboard).
    assert len(drawn["detections"]) == len(job["Detections"]) > 0
    for dom, api in zip(drawn["detections"], job["Detections"], strict=True):
        assert dom["type"] == api["Type"]
        assert dom["data"] == {k: api["Boundary"][k] for k in ("Left", "Top", "Width", "Height")}
    boxes = browser.find_elements(By.CSS_SELECTOR, "#detections-layer .det")
    assert all(b.is_displayed() for b in boxes)
    browser.find_element(By.CSS_SELECTOR, "label[for=toggle-detections]").click()
    assert not any(b.is_displayed() for b in boxes)
    browser.find_element(By.ID, "toggle-detections").send_keys(Keys.SPACE)
    assert all(b.is_displayed() for b in boxes)
    assert browser.find_element(By.ID, "toggle-detections").is_selected()

    # A rendered crop downloads with the bytes the API serves for it.
    with ui.client() as c:
        served = c.get(f"{ui.job_path(rid)}/outputs/0")
    assert served.status_code == 200
    name = re.search(r'filename="?([^";]+)"?', served.headers.get("content-disposition", ""))
    before = set(download_dir.iterdir())
    browser.find_element(By.ID, "download-0").click()
    deadline = time.monotonic() + 15
    new: list[Path] = []
    while time.monotonic() < deadline:
        new = [p for p in set(download_dir.iterdir()) - before if not p.name.endswith(".crdownload")]
        if new and new[0].stat().st_size == len(served.content):
            break
        time.sleep(0.1)
    assert len(new) == 1, new
    assert new[0].read_bytes() == served.content
    if name:
        assert new[0].name == name.group(1)

    assert_no_request_left_the_host(browser, ui)

    # The screenshot: the top of the page, no focus ring, nothing hovered.
    ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, ".topbar")).perform()
    browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0);")
    png = full_page_png(browser)
    (tmp_path / "ui.png").write_bytes(png)
    if os.environ.get("CROPQ_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.write_bytes(png)


def test_a_pasted_source_uri_is_shown_through_the_api(browser: webdriver.Chrome, ui: UiSetup) -> None:
    open_page(browser, ui)
    browser.execute_script("sessionStorage.clear()")  # the tab remembers the key of the tests before
    open_page(browser, ui)
    # An incomplete form is refused in the page, naming what is missing, and nothing is sent.
    browser.find_element(By.ID, "submit").click()
    errors = browser.find_element(By.ID, "form-error")
    assert errors.is_displayed()
    assert "AccessKeyId" in errors.text and "SourceURI" in errors.text
    assert browser.find_element(By.ID, "key-id").get_attribute("aria-invalid") == "true"
    assert not [u for u in requests_made(browser) if "/crop-jobs" in u]

    uri = ui.stack.put(ui.bucket, "photos/pasted.jpg", jpeg(900, 1200, patch=(300, 900), seed=5))
    type_into(browser, "key-id", ui.key_id)
    type_into(browser, "key-secret", ui.secret)
    type_into(browser, "project", ui.project)
    type_into(browser, "source-uri", uri)
    choose_ratios(browser, ["auto"])
    rid = submit_expecting_crops(browser)
    wait_image_shown(browser)
    # The picture came through the API (GET .../source, shown from a blob: URL).
    assert (browser.find_element(By.ID, "image").get_attribute("src") or "").startswith("blob:")
    with ui.client() as c:
        job = c.get(ui.job_path(rid)).json()
    assert job["SourceURI"] == uri and (job["ImageWidth"], job["ImageHeight"]) == (900, 1200)
    check_drawn_crops(browser, job)
    assert f"/v1/projects/{ui.project}/crop-jobs/{rid}/source" in {
        urlsplit(u).path for u in assert_no_request_left_the_host(browser, ui)
    }
