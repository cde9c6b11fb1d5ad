"""The web page's API as a ``gradio_client`` user drives it, its server-side checks and its upload caps."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")

from talkingface import checks, media
from talkingface.web import Limits, UploadGuard, build_app, launch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- upload caps


def _guarded(tmp_path, **kw):
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    store = tmp_path / "gradio"
    store.mkdir()

    async def upload(request):
        (store / f"{time.monotonic_ns()}.bin").write_bytes(await request.body())
        return PlainTextResponse("stored")

    async def other(request):
        return PlainTextResponse("page")

    inner = Starlette(routes=[Route("/gradio_api/upload", upload, methods=["POST"]), Route("/", other)])
    return TestClient(UploadGuard(inner, folder=store, **kw)), store


def test_upload_space_is_capped_in_total(tmp_path):
    client, store = _guarded(tmp_path, max_total_bytes=1000, max_uploads=100, window_s=3600)
    assert client.post("/gradio_api/upload", content=b"x" * 400).text == "stored"
    assert client.post("/gradio_api/upload", content=b"x" * 400).text == "stored"
    r = client.post("/gradio_api/upload", content=b"x" * 400)
    assert r.status_code == 507 and "upload space is full" in r.text
    assert sum(p.stat().st_size for p in store.iterdir()) == 800  # the refused one stored nothing
    assert client.get("/").text == "page"  # the page itself is not affected
    for p in store.iterdir():  # results expire: room again
        p.unlink()
    assert client.post("/gradio_api/upload", content=b"x" * 400).status_code == 200


def test_uploads_per_visitor_are_capped(tmp_path):
    client, store = _guarded(tmp_path, max_total_bytes=10**9, max_uploads=3, window_s=0.5)
    assert [client.post("/gradio_api/upload", content=b"x").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert "too many uploads from your address" in client.post("/gradio_api/upload", content=b"x").text
    time.sleep(0.6)  # the window slides
    assert client.post("/gradio_api/upload", content=b"x").status_code == 200
    assert len(list(store.iterdir())) == 4


def test_thread_safety_is_guarded(pipeline, grid_wav):
    """Two threads calling one pipeline run one after the other (its lock), not interleaved."""
    spans = []
    inner = type(pipeline).predict_mouth.__wrapped__

    def slow(self, *a, **k):
        t0 = time.monotonic()
        time.sleep(0.2)
        out = inner(self, *a, **k)
        spans.append((t0, time.monotonic()))
        return out

    neutral = np.zeros((59, 3))
    orig = type(pipeline).predict_mouth
    try:
        from talkingface.pipeline import _exclusive

        type(pipeline).predict_mouth = _exclusive(slow)
        threads = [threading.Thread(target=pipeline.predict_mouth, args=(grid_wav[:16000], neutral)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        type(pipeline).predict_mouth = orig
    (a0, a1), (b0, b1) = sorted(spans)
    assert b0 >= a1  # the second started after the first ended


# ------------------------------------------------------------------------------ the served page's API


@pytest.fixture(scope="module")
def api(pipeline):
    gradio_client = pytest.importorskip("gradio_client")
    app = build_app(pipeline, Limits(max_seconds=10.0, max_uploads_per_visitor=20))
    url = launch(app, port=_free_port(), block=False)
    try:
        yield gradio_client, gradio_client.Client(url, verbose=False)
    finally:
        app.close()


def test_api_text_and_dub_endpoints(api, astronaut_path, grid_video_path, grid_wav_path, tmp_path):
    gc, client = api
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/render", "/render_text", "/dub"} <= names
    video, track, summary = client.predict(gc.handle_file(astronaut_path), "Good morning.", "joe", 1.0, 0, 512,
                                           1.0, True, api_name="/render_text")
    info = media.probe(video["video"] if isinstance(video, dict) else video)
    assert info.has_audio and 0.5 < info.duration < 4 and max(info.width, info.height) <= 512
    assert "synthesized speech" in summary
    video, track, summary = client.predict(gc.handle_file(grid_video_path), gc.handle_file(grid_wav_path), None,
                                           None, 1.0, 0, 1280, False, api_name="/dub")
    path = video["video"] if isinstance(video, dict) else video
    info = media.probe(path)
    assert info.has_audio and abs(info.duration - 2.98) < 0.1 and (info.width, info.height) == (360, 288)


def _raw_call(url: str, api_name: str, body: str) -> str:
    """A request as any HTTP client can send it (JSON literals such as 1e309 or NaN included) -> the event
    stream's text (``event: error`` / ``event: complete`` lines)."""
    import httpx

    base = url.rstrip("/") + "/gradio_api"
    r = httpx.post(f"{base}/call/{api_name}", content=body, headers={"content-type": "application/json"},
                   timeout=60)
    r.raise_for_status()
    with httpx.stream("GET", f"{base}/call/{api_name}/{r.json()['event_id']}", timeout=300) as s:
        return "".join(s.iter_text())


def _upload(url: str, path: str) -> dict:
    import httpx

    with open(path, "rb") as f:
        r = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": (Path(path).name, f)}, timeout=60)
    r.raise_for_status()
    return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("motion,face", [("1e309", "0"), ("NaN", "0"), ("1.0", "10"), ("1.0", "-1"), ("-Infinity", "0")])
def test_api_refuses_numbers_out_of_range_and_frees_the_slot(api, astronaut_path, motion, face):
    """motion=1e309 used to hang the only render slot (cv2.fillPoly with INT_MIN points); now every number is
    checked on the server and the request ends at once with one clear line."""
    gc, client = api
    import json

    photo = json.dumps(_upload(client.src, astronaut_path))
    t0 = time.monotonic()
    out = _raw_call(client.src, "render_text",
                    f'{{"data": [{photo}, "Hello.", "joe", 1.0, {face}, 512, {motion}, true]}}')
    assert "event: error" in out and "must be" in out, out
    assert time.monotonic() - t0 < 60  # refused at once, nothing held
