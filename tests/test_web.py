"""The web page (talkingface.web), tested like a person would use it.

A real server (the shipped pipeline, built once) serves the page; headless Chromium, Debian's
/usr/bin/chromium driven by Playwright (Playwright's own browser download does not work offline), uploads a
photo and speech or types text, clicks Render, waits for the video, and the rendered file is fetched from the
page's own link and checked. The browser tests skip when Chromium or Playwright is missing (``.ci/run``
installs both); the checks of ``web.Renderer`` below them run without a browser.

Set TALKINGFACE_DEMO_SCREENSHOT=docs/demo.png to save the finished page of the photo test (the README's
screenshot).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")

from talkingface import media
from talkingface.errors import InputError, NoFaceError
from talkingface.web import Limits, Renderer, build_app, launch

CHROMIUM = os.environ.get("TALKINGFACE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RENDER_TIMEOUT_MS = 180_000  # a 3 s render takes about 6 s on 2 CPU cores; generous for a loaded machine
TEXT = "Good morning. The weather is lovely today."


@pytest.fixture
def no_face_png(tmp_path) -> str:
    """A real PNG without a face: a sky-to-ground gradient with texture (no detector fires on it)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    y = np.linspace(0, 1, 360)[:, None, None]
    img = (1 - y) * np.array([110, 160, 230]) + y * np.array([70, 120, 50]) + rng.normal(0, 12, (360, 480, 3))
    path = tmp_path / "landscape.png"
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return str(path)


# ------------------------------------------------------------------------------ Renderer, no browser


@pytest.fixture(scope="module")
def renderer(pipeline) -> Renderer:
    return Renderer(pipeline, Limits(max_seconds=10.0, max_text_chars=200))


def test_refusals_are_friendly_and_leave_no_files(renderer, astronaut_path, grid_wav_path, no_face_png):
    before = set(renderer.results.iterdir())
    cases = [
        ({"image": None, "audio": grid_wav_path}, "upload a photo"),
        ({"image": astronaut_path, "audio": None}, "upload or record some speech"),
        ({"image": astronaut_path, "text": "   "}, "text box is empty"),
        ({"image": astronaut_path, "text": "a" * 201}, "too long: 201 characters (limit 200)"),
        ({"image": no_face_png, "audio": grid_wav_path}, "no face found in"),
    ]
    for kwargs, words in cases:
        with pytest.raises(InputError, match=re.escape(words)):
            renderer.photo(**kwargs)
    with pytest.raises(NoFaceError):
        renderer.photo(no_face_png, audio=grid_wav_path)
    assert set(renderer.results.iterdir()) == before  # a refused request leaves no result folder


def test_length_limit(pipeline, astronaut_path, grid_wav_path, tmp_path):
    short = Renderer(pipeline, Limits(max_seconds=1.0))
    with pytest.raises(InputError, match=r"grid_lwbsza.wav' is 3 s long \(limit 1 s\)"):
        short.photo(astronaut_path, audio=grid_wav_path)


def test_demo_command_defaults():
    from talkingface.cli import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)  # local only unless asked
    assert args.max_upload_mb > 0 and args.max_seconds > 0


# ---------------------------------------------------------------------------------- in the browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(pipeline):
    """The page on a free local port, in this process, with the session's pipeline. Records when each
    render ran, to check that concurrent requests are served one after the other."""
    calls: list[tuple[float, float]] = []
    render = pipeline.render

    def recorded(*args, **kwargs):
        t0 = time.monotonic()
        try:
            return render(*args, **kwargs)
        finally:
            calls.append((t0, time.monotonic()))

    pipeline.render = recorded
    app = build_app(pipeline, Limits())
    url = launch(app, port=_free_port(), block=False)
    try:
        yield url, calls
    finally:
        app.close()
        del pipeline.render  # back to the class's method


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); the browser tests need it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    url, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    pg = context.new_page()
    outside: list[str] = []
    pg.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
    pg.goto(url)
    pg.wait_for_selector("#render")
    yield pg
    context.close()
    assert outside == []  # the page works offline: nothing is fetched from anywhere but the server


def _upload(page, elem_id: str, path: str) -> None:
    page.locator(f"#{elem_id} input[type=file]").set_input_files(path)


def _wait_for_video(page, timeout: float = RENDER_TIMEOUT_MS) -> str:
    """Wait until the result plays in the page; return its URL."""
    page.wait_for_function("() => { const v = document.querySelector('#result video');"
                           " return v && v.readyState >= 1 && v.duration > 0; }", timeout=timeout)
    return page.locator("#result video").get_attribute("src")


def _fetch(url: str, path: Path) -> Path:
    import httpx

    r = httpx.get(url, timeout=30)
    r.raise_for_status()
    path.write_bytes(r.content)
    return path


def _check_result(page, tmp_path, seconds: float | None) -> dict:
    """The video plays in the page, has an audio track and the speech's length (``seconds``; None: as long as
    the mouth track says); the landmark JSON has one frame per video frame."""
    src = _wait_for_video(page)
    link = page.locator("#landmarks a").first
    link.wait_for()
    doc = json.loads(_fetch(link.get_attribute("href"), tmp_path / "mouth.json").read_text())
    seconds = doc["duration"] if seconds is None else seconds
    in_page = page.evaluate("document.querySelector('#result video').duration")
    assert in_page == pytest.approx(seconds, abs=0.2)
    info = media.probe(_fetch(src, tmp_path / "result.mp4"))
    assert info.has_video and info.has_audio
    assert info.duration == pytest.approx(seconds, abs=0.2)
    assert info.fps == pytest.approx(25)
    assert doc["fps"] == 25 and doc["n_frames"] == pytest.approx(seconds * 25, abs=2)
    assert len(doc["frames"][0]["points"]) == 59
    assert "Done" in page.locator("#info").inner_text()
    assert "Labelled as AI-generated" in page.locator("#info").inner_text()
    from talkingface import provenance

    found = provenance.verify(tmp_path / "result.mp4")  # what the page served carries both labels
    assert found.manifest == "valid" and found.watermark.found, found.report()
    return doc


def test_photo_and_audio(page, tmp_path, astronaut_path, grid_wav_path):
    _upload(page, "photo", astronaut_path)
    _upload(page, "audio", grid_wav_path)
    page.locator("#audio audio").first.wait_for(state="attached")
    page.click("#render")
    _check_result(page, tmp_path, seconds=media.probe(grid_wav_path).duration)
    if shot := os.environ.get("TALKINGFACE_DEMO_SCREENSHOT"):
        page.wait_for_timeout(500)
        page.screenshot(path=shot, full_page=True)


def test_photo_and_text(page, tmp_path, astronaut_path):
    _upload(page, "photo", astronaut_path)
    page.get_by_label("Typed text").check()
    page.locator("#text textarea").fill(TEXT)
    page.click("#render")
    doc = _check_result(page, tmp_path, seconds=None)
    assert 1.5 < doc["duration"] < 6  # one short sentence of speech
    assert doc["phonemes"] and doc["visemes"]  # the TTS timings travel into the JSON


def test_no_face_shows_error_and_page_still_works(page, tmp_path, no_face_png, astronaut_path, grid_wav_path):
    _upload(page, "photo", no_face_png)
    _upload(page, "audio", grid_wav_path)
    page.click("#render")
    error = page.locator(".toast-body", has_text="no face found in 'landscape.png'")
    error.wait_for(timeout=60_000)
    assert "/tmp" not in error.inner_text()  # the file's name, not a server path
    # the same page renders the next request
    _upload(page, "photo", astronaut_path)
    page.click("#render")
    _check_result(page, tmp_path, seconds=media.probe(grid_wav_path).duration)


def test_dub_the_example_clip(page, tmp_path):
    """The dubbing example is one click away: a GRID clip and another GRID sentence, then Render."""
    from talkingface.web import EXAMPLE_DUB_AUDIO

    page.get_by_role("tab", name="Dub a video").click()
    page.get_by_text("GRID clip + another GRID sentence").click()
    page.locator("#video video").first.wait_for(state="attached")
    page.locator("#audio audio").first.wait_for(state="attached")
    page.click("#render")
    _check_result(page, tmp_path, seconds=media.probe(str(EXAMPLE_DUB_AUDIO)).duration)


def test_two_users_wait_in_line(browser, server, astronaut_path, grid_wav_path):
    """Two pages press Render at the same moment: both get their video, and the renders ran one after the
    other on the one shared pipeline."""
    url, calls = server
    n_before = len(calls)
    contexts = [browser.new_context() for _ in range(2)]
    pages = [c.new_page() for c in contexts]
    try:
        for pg in pages:
            pg.goto(url)
            pg.wait_for_selector("#render")
            _upload(pg, "photo", astronaut_path)
            _upload(pg, "audio", grid_wav_path)
            pg.locator("#audio audio").first.wait_for(state="attached")
        for pg in pages:
            pg.click("#render", no_wait_after=True)
        for pg in pages:
            _wait_for_video(pg)
    finally:
        for c in contexts:
            c.close()
    assert len(calls) == n_before + 2
    (_a0, a1), (b0, _b1) = sorted(calls[n_before:])
    assert b0 >= a1  # the second started after the first had finished
