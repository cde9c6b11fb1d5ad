"""Live in the browser: a WebSocket endpoint on the web page's own server (``/live/ws``) and the page's script.

Why a WebSocket (and not WebRTC): the page's server (Gradio on uvicorn) already speaks WebSocket once the
``websockets`` package is installed (uvicorn's own WebSocket implementation; part of the ``web`` extra), so the
live stream needs no second server, no STUN/ICE negotiation and no media codecs (aiortc, libvpx, ...). On one
machine or a LAN the transport is not where the latency is: a 512 px JPEG is ~30 KB, 25 of them a second is under
1 MB/s, and the browser draws them on a canvas and plays their audio through Web Audio. WebRTC would win over a
lossy long-distance link, which is not what an offline, 127.0.0.1-by-default tool serves.

Protocol (one session per socket; JSON text messages, binary for media):

browser -> server
  1. ``{"type": "start", "mode": "audio"|"text", "format": "f32"|"s16", "sample_rate": 16000,
     "photo": "example"|"upload", "head_motion": "natural"|"subtle"|"still", "echo": false,
     "text": "...", "voice": "...", "rate": 1.0}``; with ``"photo": "upload"`` the next message is the
     photo's bytes (jpg/png/webp, at most ``Limits.max_upload_mb``).
  2. audio mode: binary PCM chunks, 16 kHz mono, little-endian float32 (``f32``, in [-1, 1]) or int16 (``s16``),
     at most 200 ms each, at the pace they are recorded. Text mode: ``{"type": "say", "text": "..."}`` at any
     time: spoken by ``talkingface.tts`` sentence by sentence and fed into the stream at real-time pace while the
     face already talks.
  3. ``{"type": "stop"}`` or closing the socket ends the session.

server -> browser
  ``{"type": "busy", "message"}`` (another live session or a render runs: the socket closes),
  ``{"type": "ready", "width", "height", "fps"}`` (the face is analysed, frames follow),
  binary frames: uint32 LE header length, a JSON header ``{"i", "t", "lat", "rep", "sp", "na"}`` (index, stream
  seconds, latency ms from the arrival of the frame's audio, repeated, speech gate, audio samples that follow),
  ``na`` float32 samples of the frame's 40 ms of audio (text mode, or ``echo``), then the JPEG;
  ``{"type": "stats", ...}`` once a second (LiveStats: latency median and 95th percentile, rendered, repeated,
  fps sent), ``{"type": "error", "message"}`` and ``{"type": "end", "reason"}`` before the server closes.

One live session at a time per server: the pipeline's models and face tracker are shared, so the session holds
the pipeline's lock (a render waits; ``Renderer`` refuses new renders while a session runs). ``pipe.stream``
(realtime) runs in a worker thread fed from the socket; when the socket closes the stream ends, the thread is
joined and the photo's temporary copy deleted.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import queue
import shutil
import struct
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from . import audio as audio_mod
from .errors import InputError, TalkingFaceError

log = logging.getLogger(__name__)

WS_PATH = "/live/ws"
SCRIPT_PATH = "/live/live.js"
PAGE_PATH = "/live"
SCRIPT_FILE = Path(__file__).parent / "assets" / "live.js"
SR = audio_mod.SAMPLE_RATE
MAX_CHUNK_SECONDS = 0.2  # one audio message at most (the browser sends 100 ms)
MAX_JSON_BYTES = 64 * 1024
AHEAD_SECONDS = 2.0  # a client may send at most this much more audio than the wall clock allows
SEND_QUEUE = 25  # frames waiting for the socket; more are dropped (a slow link), counted in the stats
JPEG_QUALITY = 80
HEAD_MOTIONS = ("natural", "subtle", "still")


class Busy(TalkingFaceError):
    pass


def _pcm(data: bytes, fmt: str) -> np.ndarray:
    """A binary audio message -> float32 samples; InputError for a wrong sample format or size."""
    width = 4 if fmt == "f32" else 2
    n = len(data) // width
    if len(data) % width:
        raise InputError(f"audio message of {len(data)} bytes is not whole {fmt} samples ({width} bytes each)")
    if n > MAX_CHUNK_SECONDS * SR:
        raise InputError(f"audio message of {n} samples ({n / SR * 1000:.0f} ms): chunks must be at most "
                         f"{MAX_CHUNK_SECONDS * 1000:.0f} ms ({int(MAX_CHUNK_SECONDS * SR)} samples at 16 kHz)")
    if fmt == "s16":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    x = np.frombuffer(data, "<f4").astype(np.float32)
    if not np.isfinite(x).all() or (n and float(np.abs(x).max()) > 4.0):
        raise InputError("audio samples are not float32 in [-1, 1] (int16 sent as f32? then say format 's16')")
    return x


def _jpeg(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def frame_message(frame, with_audio: bool) -> bytes:
    """One frame for the socket: header length, JSON header, float32 audio (optional), JPEG."""
    audio = frame.audio.astype("<f4").tobytes() if with_audio else b""
    head = json.dumps({"i": frame.index, "t": round(frame.time, 3),
                       "lat": None if frame.latency is None else round(frame.latency * 1000, 1),
                       "rep": bool(frame.repeated), "sp": round(float(frame.speech), 3),
                       "na": len(audio) // 4}).encode()
    return struct.pack("<I", len(head)) + head + audio + _jpeg(frame.image)


def parse_frame(data: bytes) -> tuple[dict, np.ndarray, bytes]:
    """The inverse of ``frame_message`` (clients in Python, tests): (header, audio, JPEG bytes)."""
    (n,) = struct.unpack_from("<I", data)
    head = json.loads(data[4:4 + n])
    a0 = 4 + n
    audio = np.frombuffer(data[a0:a0 + 4 * head["na"]], "<f4")
    return head, audio, data[a0 + 4 * head["na"]:]


class _TextSpeaker:
    """Typed text -> 16 kHz speech, sentence by sentence, in a thread: each sentence goes to ``out`` as soon as
    it is synthesized, while the previous one is still being spoken."""

    def __init__(self, out: queue.Queue, voice: str | None, rate: float, on_error):
        self.out, self.voice, self.rate, self.on_error = out, voice, rate, on_error
        self.texts: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="talkingface-live-tts", daemon=True)
        self.thread.start()

    def say(self, text: str) -> None:
        self.texts.put(text)

    def close(self) -> None:
        self.texts.put(None)

    def _run(self) -> None:
        from scipy import signal

        from . import tts

        while (text := self.texts.get()) is not None:
            try:
                for speech, sr, _ in tts.synthesize(text, voice=self.voice, rate=self.rate):
                    if sr != SR:
                        g = np.gcd(SR, sr)
                        speech = signal.resample_poly(speech, SR // g, sr // g).astype(np.float32)
                    self.out.put(np.clip(speech, -1, 1))
            except TalkingFaceError as e:
                self.on_error(str(e))
            except Exception as e:
                log.exception("live text to speech failed")
                self.on_error(f"text to speech failed ({type(e).__name__}: {e})")


def _paced(source: queue.Queue, stop: threading.Event, chunk: int = 1600):
    """Speech arrays from ``source`` as 100 ms chunks at the wall clock's pace (a microphone's): each chunk is
    handed out when its last sample would have been spoken. Waits (the stream inserts silence) when no speech is
    queued; None ends it."""
    due = None
    pending = np.zeros(0, np.float32)
    while not stop.is_set():
        if len(pending) == 0:
            try:
                x = source.get(timeout=0.05)
            except queue.Empty:
                continue
            if x is None:
                return
            pending = x
            now = time.perf_counter()
            if due is None or due < now:  # after a pause the clock starts again from now
                due = now
        c, pending = pending[:chunk], pending[chunk:]
        due += len(c) / SR
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        yield c


def _unpaced(source: queue.Queue, stop: threading.Event):
    """Audio chunks as the socket delivers them (the browser paces them); None ends it."""
    while not stop.is_set():
        try:
            x = source.get(timeout=0.05)
        except queue.Empty:
            continue
        if x is None:
            return
        yield x


class LiveEndpoint:
    """The live sessions of one server. ``busy`` is True while a session runs."""

    def __init__(self, pipe, limits, work: Path | None = None):
        self.pipe = pipe
        self.limits = limits
        self.work = Path(work) if work else Path(tempfile.gettempdir())
        self._slot = threading.Lock()
        self.sessions = 0  # sessions served (tests, logs)
        self.last_stats: dict | None = None  # the last finished session's summary
        self.last_options = None  # the last session's live.LiveOptions
        self.unavailable: str | None = None  # why live cannot run here (no live model), else None

    def warm(self) -> None:
        """Load the live model and the Whisper encoder now, not in the first visitor's first seconds."""
        from .live import LiveOptions, LiveSession
        from .web import EXAMPLE_PHOTO

        try:  # a half-second session on the example: models, graphs and buffers made before a visitor waits
            t0 = time.perf_counter()
            session = LiveSession(self.pipe, str(EXAMPLE_PHOTO), options=LiveOptions(head_motion="subtle"))
            session.push(np.zeros(SR // 2, np.float32))
            session.flush()
            log.info("live streaming warmed up in %.1f s", time.perf_counter() - t0)
        except TalkingFaceError as e:
            self.unavailable = str(e)
            log.warning("live streaming is not available: %s", e)

    @property
    def busy(self) -> bool:
        return self._slot.locked()

    # ----------------------------------------------------------------------------------------- the socket
    async def serve(self, ws) -> None:
        """One WebSocket (a ``starlette.websockets.WebSocket``), from accept to close."""
        await ws.accept()
        if not self._slot.acquire(blocking=False):
            await _send_json(ws, type="busy", message="another live session is running on this server (one at a "
                                                       "time: the models are shared); try again when it has ended")
            await ws.close(code=1013)
            return
        if self.unavailable:
            await _send_json(ws, type="error", message=self.unavailable)
            await ws.close(code=1011)
            self._slot.release()
            return
        folder = Path(tempfile.mkdtemp(prefix="live-", dir=self.work))
        try:
            self.sessions += 1
            await self._session(ws, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            self._slot.release()

    async def _session(self, ws, folder: Path) -> None:
        from starlette.websockets import WebSocketDisconnect

        loop = asyncio.get_running_loop()
        outq: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        audio_q: queue.Queue = queue.Queue()
        pending = [0]  # frames posted, not yet sent
        worker = speaker = None
        t_start = time.monotonic()

        def post(item) -> None:  # from any thread
            loop.call_soon_threadsafe(outq.put_nowait, item)

        async def sender():
            while (item := await outq.get()) is not None:
                if isinstance(item, bytes):
                    pending[0] -= 1
                    await ws.send_bytes(item)
                else:
                    await ws.send_text(json.dumps(item))

        send_task = None
        try:
            try:
                start = await asyncio.wait_for(self._receive_json(ws), timeout=30)
                opts = self._start_options(start)
                photo = await self._photo(ws, opts, folder)
            except InputError as e:
                await _send_json(ws, type="error", message=str(e))
                await ws.close(code=1008)
                return
            except (asyncio.TimeoutError, WebSocketDisconnect):
                return
            send_task = asyncio.create_task(sender())
            if opts["mode"] == "text":
                speaker = _TextSpeaker(audio_q, opts["voice"], opts["rate"],
                                       lambda m: post({"type": "error", "message": m}))
                audio_q.put(np.zeros(SR // 10, np.float32))  # the face appears (at rest) while the TTS starts
                if opts["text"]:
                    speaker.say(opts["text"])
                chunks = _paced(audio_q, stop)
            else:
                chunks = _unpaced(audio_q, stop)
            worker = threading.Thread(target=self._work, args=(photo, chunks, opts, stop, post, pending),
                                      name="talkingface-live", daemon=True)
            worker.start()
            received = 0  # audio samples from the client
            limit = self.limits.live_max_seconds
            while True:
                left = limit - (time.monotonic() - t_start)
                if left <= 0:
                    post({"type": "end", "reason": f"the live session reached its limit of {limit:g} s"})
                    break
                try:
                    msg = await asyncio.wait_for(ws.receive(), timeout=min(left, 1.0))
                except asyncio.TimeoutError:
                    if not worker.is_alive():
                        break
                    continue
                if msg["type"] == "websocket.disconnect":
                    break
                if not worker.is_alive():
                    break
                try:
                    if msg.get("bytes") is not None:
                        if opts["mode"] != "audio":
                            raise InputError("audio messages in text mode: start with mode 'audio' to send audio")
                        x = _pcm(msg["bytes"], opts["format"])
                        received += len(x)
                        if received / SR > time.monotonic() - t_start + AHEAD_SECONDS:
                            raise InputError("audio arrives faster than real time: send it as it is recorded")
                        audio_q.put(x)
                    else:
                        m = _json(msg.get("text") or "")
                        if m.get("type") == "stop":
                            post({"type": "end", "reason": "stopped"})
                            break
                        if m.get("type") == "say" and speaker is not None:
                            speaker.say(self._text(m.get("text")))
                        elif m.get("type") != "say":
                            raise InputError(f"unknown message type {m.get('type')!r} (expected 'say' or 'stop')")
                        else:
                            raise InputError("'say' needs a session started with mode 'text'")
                except InputError as e:
                    post({"type": "error", "message": str(e)})
                    break
        finally:
            stop.set()
            audio_q.put(None)
            if speaker is not None:
                speaker.close()
            if worker is not None:
                await loop.run_in_executor(None, worker.join, 30)
            if send_task is not None:
                outq.put_nowait(None)
                try:
                    await asyncio.wait_for(send_task, timeout=5)
                except Exception:  # noqa: BLE001 - the client went away; nothing more to send
                    send_task.cancel()
            with contextlib.suppress(Exception):  # already closed by the client
                await ws.close()

    # ------------------------------------------------------------------------------------------ the worker
    def _work(self, photo: str, chunks, opts: dict, stop: threading.Event, post, pending: list) -> None:
        """The worker thread: the realtime stream, each frame posted to the socket as it comes."""
        from .live import LiveOptions, LiveStats

        pipe = self.pipe
        if not pipe._lock.acquire(blocking=False):  # a render runs on the shared models
            post({"type": "busy", "message": "a render is running on this server; try the live stream again "
                                             "when it has finished"})
            return
        stats = LiveStats()
        options = self.last_options = LiveOptions(head_motion=opts["head_motion"], max_size=opts["max_size"],
                                                  face_index=opts["face_index"])
        sent: list[float] = []
        dropped = 0
        last_stats = time.monotonic()
        try:
            ready = False
            for fr in pipe.stream(photo, chunks, realtime=True, options=options, stats=stats):
                if stop.is_set():
                    break
                if not ready:
                    h, w = fr.image.shape[:2]
                    post({"type": "ready", "width": w, "height": h, "fps": audio_mod.FPS})
                    ready = True
                now = time.monotonic()
                if pending[0] >= SEND_QUEUE:  # the socket is not keeping up: drop, stay live
                    dropped += 1
                else:
                    pending[0] += 1
                    post(frame_message(fr, opts["echo"] or opts["mode"] == "text"))
                    sent.append(now)
                if now - last_stats >= 1.0:
                    last_stats = now
                    post(self._stats(stats, sent, dropped))
            self.last_stats = self._stats(stats, sent, dropped)
        except TalkingFaceError as e:
            post({"type": "error", "message": str(e)})
        except Exception as e:
            log.exception("live session failed")
            post({"type": "error", "message": f"something went wrong inside talkingface ({type(e).__name__}: {e})"})
        finally:
            pipe._lock.release()
            post({"type": "end", "reason": "the stream ended"})

    @staticmethod
    def _stats(stats, sent: list[float], dropped: int) -> dict:
        now = time.monotonic()
        recent = [t for t in sent[-60:] if now - t <= 2.0]
        lat = np.array(stats.latencies[-50:]) * 1000
        out = {"type": "stats", "frames": stats.frames, "rendered": stats.rendered, "repeated": stats.repeated,
               "silence_inserted_s": round(stats.silence_inserted, 2), "dropped": dropped,
               "fps": round(len(recent) / 2.0, 1)}
        if len(lat):
            out.update(latency_ms_median=round(float(np.median(lat)), 1),
                       latency_ms_p95=round(float(np.percentile(lat, 95)), 1))
        return out

    # ------------------------------------------------------------------------------------------- inputs
    async def _receive_json(self, ws) -> dict:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            from starlette.websockets import WebSocketDisconnect

            raise WebSocketDisconnect(msg.get("code", 1000))
        if msg.get("text") is None:
            raise InputError("the first message must be the JSON start message, not binary data")
        return _json(msg["text"])

    def _text(self, text) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError("the text is empty: type what the face should say")
        if len(text) > self.limits.max_text_chars:
            raise InputError(f"the text is too long: {len(text)} characters (limit {self.limits.max_text_chars})")
        return text

    def _start_options(self, m: dict) -> dict:
        from . import checks

        if m.get("type") != "start":
            raise InputError(f"the first message must be {{'type': 'start', ...}}, got type {m.get('type')!r}")
        mode = m.get("mode", "audio")
        if mode not in ("audio", "text"):
            raise InputError(f"mode must be 'audio' or 'text', got {mode!r}")
        fmt = m.get("format", "f32")
        if fmt not in ("f32", "s16"):
            raise InputError(f"audio format must be 'f32' (float32) or 's16' (int16), little-endian; got {fmt!r}")
        sr = m.get("sample_rate", SR)
        if sr != SR:
            raise InputError(f"live audio must be 16 kHz mono (got sample_rate {sr!r}): resample it at the source "
                             f"(a browser: new AudioContext({{sampleRate: 16000}}))")
        head = m.get("head_motion", "natural")
        if head not in HEAD_MOTIONS:
            raise InputError(f"head_motion must be one of {', '.join(HEAD_MOTIONS)}, got {head!r}")
        photo = m.get("photo", "example")
        if photo not in ("example", "upload"):
            raise InputError(f"photo must be 'example' or 'upload', got {photo!r}")
        size = int(checks.number("max_size", m.get("max_size", 512), label="Live size"))
        face_index = int(checks.number("face_index", m.get("face", 0) or 0, label="Face"))
        text = m.get("text") or ""
        opts = {"mode": mode, "format": fmt, "head_motion": head, "photo": photo, "max_size": min(size, 512),
                "face_index": face_index, "echo": bool(m.get("echo", False)),
                "text": self._text(text) if (mode == "text" and text) else "", "voice": m.get("voice") or None,
                "rate": checks.number("rate", m.get("rate", 1.0), label="Speaking rate")}
        return opts

    async def _photo(self, ws, opts: dict, folder: Path) -> str:
        from .web import EXAMPLE_PHOTO

        if opts["photo"] == "example":
            return str(EXAMPLE_PHOTO)
        msg = await asyncio.wait_for(ws.receive(), timeout=30)
        data = msg.get("bytes")
        if data is None:
            raise InputError("with photo 'upload' the message after 'start' must be the photo's bytes")
        limit = self.limits.max_upload_mb * 2**20
        if len(data) > limit:
            raise InputError(f"the photo is {len(data) / 2**20:.1f} MB (limit {self.limits.max_upload_mb:g} MB)")
        path = folder / "photo"
        path.write_bytes(data)
        return str(path)


def _json(text: str) -> dict:
    if len(text.encode()) > MAX_JSON_BYTES:
        raise InputError(f"a text message of {len(text.encode())} bytes (limit {MAX_JSON_BYTES})")
    try:
        m = json.loads(text)
    except ValueError as e:
        raise InputError(f"a text message that is not JSON ({e})") from e
    if not isinstance(m, dict):
        raise InputError("a text message must be a JSON object")
    return m


async def _send_json(ws, **fields) -> None:
    await ws.send_text(json.dumps(fields))


class LiveRoutes:
    """ASGI middleware in front of the page's app: ``/live/ws`` (the WebSocket), ``/live/live.js`` (the page's
    script) and ``/live`` (a bare page with only the live player); everything else passes to Gradio."""

    def __init__(self, app, *, endpoint: LiveEndpoint):
        self.app = app
        self.endpoint = endpoint

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] == "websocket" and path == WS_PATH:
            from starlette.websockets import WebSocket

            await self.endpoint.serve(WebSocket(scope, receive, send))
            return
        if scope["type"] == "http" and path in (SCRIPT_PATH, PAGE_PATH):
            from starlette.responses import HTMLResponse, Response

            if path == SCRIPT_PATH:
                resp = Response(SCRIPT_FILE.read_text(), media_type="text/javascript",
                                headers={"Cache-Control": "no-cache"})
            else:
                resp = HTMLResponse(bare_page())
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


def player_html(limits) -> str:
    """The live player's markup (the page's Live tab and the bare ``/live`` page); live.js drives it."""
    return f"""
<div id="tf-live" data-max-seconds="{limits.live_max_seconds:g}">
  <div class="tf-live-row">
    <label><input type="radio" name="tf-live-source" value="audio" checked> Microphone</label>
    <label><input type="radio" name="tf-live-source" value="text"> Typed text</label>
    <label><input type="checkbox" id="tf-live-example"> Use the example photo (else the Photo tab's)</label>
  </div>
  <textarea id="tf-live-text" rows="2" maxlength="{limits.max_text_chars}"
    placeholder="Type, then Start (or Say while live)">Hello! I am talking to you live, right now.</textarea>
  <div class="tf-live-row">
    <button id="tf-live-start" type="button">Start</button>
    <button id="tf-live-say" type="button" disabled>Say</button>
    <button id="tf-live-stop" type="button" disabled>Stop</button>
    <span id="tf-live-status">Stopped.</span>
  </div>
  <canvas id="tf-live-canvas" width="512" height="512"></canvas>
  <div id="tf-live-stats">fps: - | latency: -</div>
</div>"""


LIVE_CSS = """
#tf-live canvas { max-width: 100%; background: #111; border-radius: 6px; display: block; margin-top: 8px; }
#tf-live textarea { width: 100%; margin: 6px 0; }
#tf-live .tf-live-row { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin: 4px 0; }
#tf-live button { padding: 4px 14px; border: 1px solid #888; border-radius: 4px; }
#tf-live-stats, #tf-live-status { font-family: monospace; }
"""


def bare_page(limits=None) -> str:
    from .web import Limits

    return (f"<!doctype html><html><head><meta charset='utf-8'><title>talkingface live</title>"
            f"<style>{LIVE_CSS}</style><script src='{SCRIPT_PATH}'></script></head><body>"
            f"<h2>talkingface: live</h2>{player_html(limits or Limits())}</body></html>")
