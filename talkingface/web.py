"""``talkingface demo``: the web page, a thin Gradio client of the one pipeline the CLI uses.

    talkingface demo                          # http://127.0.0.1:7860

    import talkingface
    from talkingface.web import build_app, launch
    app = build_app(talkingface.load())       # the pipeline is built once and shared by every request
    launch(app)                               # blocks; launch(app, block=False) returns the URL

Three modes on one page: a photo speaking uploaded or recorded audio, a photo speaking typed text (through
``talkingface.tts``), and a video dubbed to new audio or text (``Pipeline.dub``). Requests go through
Gradio's queue one at a time (``concurrency_id="render"``, limit 1), so concurrent users wait in line instead
of running several renders on the same models at once; when ``Limits.queue_size`` requests are waiting, more
are turned away with a message.

API (``gradio_client``): ``/render`` (a photo speaking an audio file), ``/render_text`` (a photo speaking typed
text) and ``/dub`` (a video dubbed to an audio file or text), all three in the same one-at-a-time line as the
page's button. Every number is checked on the server against ``talkingface.checks.RANGES`` (an API caller is not
held to the page's sliders), so no request can ask for what the page would not offer, e.g. ``motion=1e309``.

Uploads: each file is capped by Gradio (``Limits.max_upload_mb``); ``UploadGuard`` in front of Gradio's upload
route also caps the temporary folder's total size (``Limits.max_total_mb``: new uploads are refused with a
message while it is full) and the uploads per visitor (client address) in ``Limits.keep_results_s``.

Files: Gradio's uploads and the results live under one temporary root made per process
(``GRADIO_TEMP_DIR``); results and uploads are deleted ``Limits.keep_results_s`` after they were made
(Gradio's ``delete_cache``), the per-request work folders (synthesized speech) as soon as the request ends,
and the whole root when the process exits.
"""
from __future__ import annotations

import atexit
import errno
import logging
import os
import re
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import checks, lipsync
from .checkpoints import shipped
from .errors import InputError, NoFaceError, TalkingFaceError
from .pipeline import Pipeline, RenderOptions

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # offline tool: no analytics, no version check

log = logging.getLogger(__name__)

EXAMPLE_PHOTO = shipped("demo") / "astronaut.jpg"  # NASA portrait, public domain
EXAMPLE_AUDIO = shipped("demo") / "grid_lwbsza.wav"  # GRID corpus, CC BY 4.0
EXAMPLE_DUB_VIDEO = shipped("fixtures") / "grid_lwbsza.mp4"  # GRID corpus, CC BY 4.0
EXAMPLE_DUB_AUDIO = shipped("demo") / "grid_sbwe5n.wav"  # another GRID sentence, for the dub example
EXAMPLE_TEXT = "Hello! I was a still photo a moment ago, and now I can talk to you."

# output size: the longer side of the video in pixels (RenderOptions.max_size / DubOptions.max_size)
SIZES = [("1280 px (default)", 1280), ("960 px", 960), ("720 px", 720), ("512 px", 512)]
SPEECH_AUDIO, SPEECH_TEXT = "Audio file or recording", "Typed text"
STAGES = {"tracking": "Tracking the face through the video", "adapting": "Adapting to this person's mouth",
          "rendering": "Rendering frames"}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Uploads over ``max_upload_mb`` are refused by Gradio before any handler
    runs; the lengths are checked before rendering starts."""

    max_upload_mb: float = 50.0  # per uploaded file
    max_seconds: float = 120.0  # speech, and the video to dub (about 75 s of rendering on 2 CPU cores)
    max_text_chars: int = 2000  # typed text, about two minutes of speech
    queue_size: int = 16  # requests waiting in line; more are turned away until there is room
    keep_results_s: int = 3600  # results and uploads are deleted this long after they were made
    max_total_mb: float = 2048.0  # uploads + results on disk; new uploads are refused while they fill it
    max_uploads_per_visitor: int = 60  # uploads per client address within keep_results_s
    live_max_seconds: float = 300.0  # one live session (the Live tab, /live/ws); one session at a time

    def __post_init__(self):  # the command line's numbers (talkingface demo --max-...) in their ranges
        checks.fields(self, ("max_upload_mb", "max_seconds", "max_total_mb", "max_uploads_per_visitor"))


@dataclass
class Output:
    """One finished request: the video, its mouth track as JSON, and a line for the page."""

    video: str
    landmarks_json: str
    summary: str


Report = Callable[..., None]  # report(stage, done=None, total=None)


# --------------------------------------------------------------------------------------------- files


_TEMP_ROOT: Path | None = None


def temp_root() -> Path:
    """The process's temporary root; Gradio's cache (uploads, results) lives in its ``gradio/`` folder.

    Made on first use and removed when the process exits. Must run before gradio is imported, since Gradio
    reads ``GRADIO_TEMP_DIR`` when it is imported and when an app is built.
    """
    global _TEMP_ROOT
    if _TEMP_ROOT is None:
        _TEMP_ROOT = Path(tempfile.mkdtemp(prefix="talkingface-web-"))
        os.environ["GRADIO_TEMP_DIR"] = str(_TEMP_ROOT / "gradio")
        (_TEMP_ROOT / "work").mkdir()
        atexit.register(shutil.rmtree, _TEMP_ROOT, ignore_errors=True)
    return _TEMP_ROOT


def _friendly(message: str, root: Path) -> str:
    """Replace temporary paths (``/tmp/talkingface-web-x/gradio/<hash>/face.jpg``) by the file's own name."""
    return re.sub(re.escape(str(root)) + r"[^\s'\"]*", lambda m: Path(m.group()).name, message)


def _sweep(folder: Path, age: float) -> None:
    """Delete result folders older than ``age`` seconds (Gradio deletes the files, this the folders)."""
    now = time.time()
    for d in folder.iterdir() if folder.is_dir() else ():
        try:
            if d.is_dir() and now - d.stat().st_mtime > age:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


# ---------------------------------------------------------------------------------------- requests


class Renderer:
    """The page's requests as plain calls (no Gradio in here): inputs checked against ``limits``, speech
    synthesized when text was typed, then the shared pipeline renders into a fresh result folder.

    Errors are TalkingFaceError with one friendly line; a failed request leaves no files behind.
    """

    def __init__(self, pipe: Pipeline, limits: Limits = Limits(), root: Path | None = None):
        self.pipe = pipe
        self.live = None  # the server's liveweb.LiveEndpoint: renders are refused while a live session runs
        self.limits = limits
        self.root = root or temp_root()
        self.work = self.root / "work"  # per-request folders, deleted when the request ends
        self.results = Path(os.environ.get("GRADIO_TEMP_DIR", self.root / "gradio")) / "results"
        self.work.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def voices() -> list[tuple[str, str]]:
        """(label, name) of every voice, the default first."""
        from . import tts

        return [(f"{v.description} [{v.name}]", v.name) for v in tts.list_voices()]

    # --- the two modes ----------------------------------------------------------------------------
    def photo(self, image: str | None, *, audio: str | None = None, text: str | None = None,
              voice: str | None = None, rate: float = 1.0, face_index: int | None = None, max_size: int = 1280,
              motion_scale: float = 1.0, silence_gate: bool = True, head_motion: str = "natural", seed: int = 0,
              keep_expression: float = 0.0, report: Report | None = None) -> Output:
        """A photo speaking ``audio`` (a file) or ``text`` (synthesized), exactly one of them."""
        report = report or _no_report
        if not image:
            raise InputError("upload a photo with a face first (or click the example photo below)")
        options = RenderOptions(face_index=face_index, max_size=int(max_size), motion_scale=float(motion_scale),
                                silence_gate=bool(silence_gate), max_audio_seconds=self.limits.max_seconds,
                                head_motion=str(head_motion or "natural"), seed=int(seed or 0),
                                keep_expression=float(keep_expression or 0.0), text=text is not None)
        return self._run("photo", image, audio, text, voice, rate, report,
                         lambda speech, phonemes, output, progress, stage: self.pipe.render(
                             image, speech, output=output, options=options, progress=progress, phonemes=phonemes))

    def dub(self, video: str | None, *, audio: str | None = None, text: str | None = None,
            voice: str | None = None, rate: float = 1.0, face_index: int | None = None, adapt: bool = False,
            max_size: int | None = None, report: Report | None = None) -> Output:
        """The person in ``video`` speaking ``audio`` or ``text`` instead: only the mouth region changes."""
        report = report or _no_report
        if not video:
            raise InputError("upload a video of a person first (or click the example clip below)")
        self._check_length(video, "video")
        from .dub import DubOptions

        options = DubOptions(face_index=face_index, adapt=bool(adapt), max_size=max_size,
                             max_seconds=self.limits.max_seconds)
        return self._run("dub", video, audio, text, voice, rate, report,
                         lambda speech, phonemes, output, progress, stage: self.pipe.dub(
                             video, speech, output=output, options=options, progress=progress, stage=stage,
                             phonemes=phonemes))

    # --- shared steps -----------------------------------------------------------------------------
    def _run(self, mode: str, face_src: str, audio, text, voice, rate, report: Report, call) -> Output:
        if self.live is not None and self.live.busy:
            raise InputError("a live session is running on this server (the Live tab); it shares the models: "
                             "render when it has ended")
        t0 = time.perf_counter()
        _sweep(self.results, self.limits.keep_results_s)
        out_dir = self.results / uuid.uuid4().hex
        out_dir.mkdir()
        stem = re.sub(r"[^\w-]+", "_", Path(face_src).stem)[:40] or mode
        output = out_dir / f"talkingface-{stem}.mp4"
        try:
            with tempfile.TemporaryDirectory(prefix="request-", dir=self.work) as work:
                speech, phonemes, spoken = self._speech(audio, text, voice, rate, Path(work), report)
                label = ["Analyzing the face and predicting the mouth"]
                report(label[0])

                def stage(name: str) -> None:  # the dubbing passes: tracking, adapting, rendering
                    label[0] = STAGES.get(name, name.capitalize())
                    report(label[0])

                def progress(done: int, total: int) -> None:
                    if mode == "photo":
                        label[0] = STAGES["rendering"]
                    report(label[0], done, total)

                result = call(speech, phonemes, str(output), progress, stage)
            report("Writing the mouth track")
            json_path = out_dir / f"talkingface-{stem}-mouth.json"
            lipsync.write_mouth_json(json_path, result, phonemes, source={"mode": mode, "face": Path(face_src).name})
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
        seconds = time.perf_counter() - t0
        n_faces = getattr(result, "n_faces", 1) or 1
        summary = (f"**Done:** {result.n_frames} frames at {result.fps:g} fps "
                   f"({result.duration:.1f} s of {spoken}) in {seconds:.1f} s.")
        passed = getattr(result, "frames_no_face", 0) + getattr(result, "frames_turned", 0)
        summary += (" Labelled as AI-generated: C2PA content credentials (signed on this computer) and an "
                    "invisible watermark.")
        if passed:
            summary += f" {passed} frames were left as they were (face not found or turned too far)."
        if n_faces > 1:
            summary += (f" The {'photo' if mode == 'photo' else 'video'} has {n_faces} faces; choose another with "
                        f"*Face* (0 = largest, up to {n_faces - 1}).")
        return Output(video=str(output), landmarks_json=str(json_path), summary=summary)

    def _speech(self, audio, text, voice, rate, work: Path, report: Report):
        """-> (audio path, phoneme timings or None, what was spoken for the summary)."""
        if text is not None:
            text = text.strip()
            if not text:
                raise InputError("the text box is empty: type what the face should say")
            if len(text) > self.limits.max_text_chars:
                raise InputError(f"the text is too long: {len(text)} characters "
                                 f"(limit {self.limits.max_text_chars})")
            from . import tts

            report("Synthesizing speech")
            speech = tts.synthesize_to_file(text, str(work / "speech.wav"), voice=voice or None, rate=float(rate),
                                            progress=lambda done, total: report("Synthesizing speech", done, total))
            if speech.duration > self.limits.max_seconds:
                raise InputError(f"the text makes {speech.duration:.0f} s of speech "
                                 f"(limit {self.limits.max_seconds:g} s); shorten it")
            return str(speech.path), speech.phonemes, "synthesized speech"
        if not audio:
            raise InputError("upload or record some speech first (or switch Speech to 'Typed text')")
        report("Checking the inputs")
        self._check_length(audio, "audio")
        return audio, None, "speech"

    def _check_length(self, path: str, kind: str) -> None:
        from . import media

        info = media.probe(path)
        if info.duration is not None and info.duration > self.limits.max_seconds:
            raise InputError(f"the {kind} '{Path(path).name}' is {info.duration:.0f} s long "
                             f"(limit {self.limits.max_seconds:g} s); upload a shorter one")


class UploadGuard:
    """ASGI middleware in front of Gradio's upload route (``POST .../upload``): a request is refused, before a
    byte is stored, when it has no Content-Length (411), when the temporary folder would grow past
    ``max_total_bytes`` (507: "the server's upload space is full"), or when its client address has made
    ``max_uploads`` uploads within ``window_s`` (429). Other requests pass untouched.

    The visitor is the TCP client address; behind a reverse proxy all visitors share the proxy's address."""

    def __init__(self, app, *, folder: str | os.PathLike, max_total_bytes: int, max_uploads: int, window_s: float):
        import collections
        import threading

        self.app = app
        self.folder = Path(folder)
        self.max_total_bytes = int(max_total_bytes)
        self.max_uploads = int(max_uploads)
        self.window_s = float(window_s)
        self._uploads: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def used_bytes(self) -> int:
        total = 0
        for base, _dirs, files in os.walk(self.folder):
            for name in files:
                try:
                    total += os.stat(os.path.join(base, name)).st_size
                except OSError:  # deleted meanwhile
                    continue
        return total

    def refusal(self, client: str, length: int | None) -> tuple[int, str] | None:
        """(HTTP status, message) for an upload that must be refused, else None (and the upload is counted)."""
        if length is None:
            return 411, "uploads must say their size (Content-Length)"
        used = self.used_bytes()
        if used + length > self.max_total_bytes:
            return 507, (f"the server's upload space is full ({used / 2**20:.0f} of {self.max_total_bytes / 2**20:.0f}"
                         f" MB used by recent uploads and results); try again later")
        with self._lock:
            now = time.monotonic()
            times = self._uploads[client]
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) >= self.max_uploads:
                return 429, (f"too many uploads from your address ({len(times)} in the last "
                             f"{self.window_s / 60:g} minutes); try again later")
            times.append(now)
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].rstrip("/").endswith(
                "/upload"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            length = int(headers[b"content-length"]) if b"content-length" in headers else None
        except ValueError:
            length = None
        client = (scope.get("client") or ("?", 0))[0]
        refused = self.refusal(client, length)
        if refused is None:
            return await self.app(scope, receive, send)
        status, message = refused
        log.info("upload refused (%s): %s", client, message)
        body = message.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _no_report(stage: str, done: int | None = None, total: int | None = None) -> None:
    pass


def _upload_path(payload) -> str | None:
    """A Gradio file payload ({"path": ..., ...}, or a plain path) -> the uploaded file's path."""
    if payload is None or isinstance(payload, str):
        return payload or None
    return payload.get("path") or None


# -------------------------------------------------------------------------------------------- page


CSS = """
#info { min-height: 2em; }
footer { display: none !important; }
"""

INTRO = """# talkingface
Make a face talk: a **photo** speaking your audio or text, or a **video** dubbed to new speech.
Everything runs on this computer; nothing is uploaded anywhere else.
Every video made here is **labelled as AI-generated**: signed C2PA content credentials and an invisible watermark
that survives re-encoding (check any file with `talkingface verify FILE`)."""


def build_app(pipe: Pipeline, limits: Limits = Limits()):
    """The page, as a ``gradio.Blocks`` with its queue set up. ``pipe`` is shared by every request."""
    renderer = Renderer(pipe, limits)
    import gradio as gr  # after temp_root(): Gradio reads GRADIO_TEMP_DIR

    from . import liveweb

    live = renderer.live = liveweb.LiveEndpoint(pipe, limits, work=renderer.work)
    live.warm()

    voices = renderer.voices()

    def run(fn: Callable[..., Output], progress: gr.Progress, **kwargs):
        def report(stage: str, done: int | None = None, total: int | None = None) -> None:
            if done is not None and total:
                progress((done, total), desc=stage, unit="frames" if stage.startswith("Rendering") else "steps")
            else:
                progress(0.0, desc=stage)

        try:
            out = fn(report=report, **kwargs)
        except TalkingFaceError as e:
            log.info("request refused: %s", e)
            message = _friendly(str(e), renderer.root)
            if isinstance(e, NoFaceError):
                message += ". Try one where a face is clearly visible and turned towards the camera."
            raise gr.Error(message, title="Could not render", duration=None, print_exception=False) from e
        except Exception as e:  # a bug: say so, keep serving
            log.exception("render failed")
            raise gr.Error(f"something went wrong inside talkingface ({type(e).__name__}: "
                           f"{_friendly(str(e), renderer.root)}). The page still works; the server log has the "
                           f"details.", title="Internal error", duration=None, print_exception=False) from e
        return out.video, out.landmarks_json, out.summary

    def speech_kwargs(speech_from, audio, text, voice, rate) -> dict:
        if speech_from == SPEECH_TEXT:
            return {"text": text or "", "voice": voice, "rate": checks.number("rate", rate, label="Speaking rate")}
        return {"audio": audio}

    def numbers(face, size, motion=1.0) -> dict:
        """The page's numbers, checked on the server: an API caller is not held to the page's widgets."""
        return {"face_index": checks.number("face_index", 0 if face is None else face, label="Face"),
                "max_size": checks.number("max_size", SIZES[0][1] if size is None else size, label="Output size"),
                "motion_scale": checks.number("motion_scale", motion, label="Mouth motion")}

    def render(mode, photo, video, speech_from, audio, text, voice, rate, face, size, adapt, motion, gate,
               head="natural", seed=0, keep=0.0,
               progress=gr.Progress()):  # noqa: B008 (how Gradio injects its progress bar)
        # the event has preprocess=False: uploads arrive as Gradio's file payloads (paths already checked to be
        # uploads) and go to talkingface's own readers as they are, which handle EXIF rotation and alpha and
        # turn an unreadable file into a friendly error (Gradio's Pillow step would fail with a raw one)
        photo, video, audio = _upload_path(photo), _upload_path(video), _upload_path(audio)

        def go(**kw):
            n = numbers(face, size, motion)
            speech = speech_kwargs(speech_from, audio, text, voice, rate)
            if mode == "dub":
                return renderer.dub(video=video, face_index=n["face_index"], adapt=bool(adapt),
                                    max_size=n["max_size"], **speech, **kw)
            return renderer.photo(image=photo, silence_gate=bool(gate), head_motion=head,
                                  seed=checks.number("seed", seed, label="Seed"),
                                  keep_expression=checks.number("keep_expression", keep, label="Keep expression"),
                                  **n, **speech, **kw)

        return run(go, progress)

    def render_text(photo, text, voice, rate, face, size, motion, gate,
                    progress=gr.Progress()):  # noqa: B008
        """API: a photo speaking typed text."""
        return render("photo", photo, None, SPEECH_TEXT, None, text, voice, rate, face, size, False, motion, gate,
                      progress=progress)

    def render_dub(video, audio, text, voice, rate, face, size, adapt, progress=gr.Progress()):  # noqa: B008
        """API: a video dubbed to an audio file, or to typed text when no audio is given."""
        speech_from = SPEECH_AUDIO if audio else SPEECH_TEXT
        return render("dub", None, video, speech_from, audio, text, voice, rate, face, size, adapt, 1.0, True,
                      progress=progress)

    with gr.Blocks(title="talkingface", delete_cache=(min(600, limits.keep_results_s), limits.keep_results_s),
                   analytics_enabled=False) as app:
        mode = gr.State("photo")
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                with gr.Tabs(elem_id="mode"):
                    with gr.Tab("Photo", id="photo", elem_id="tab-photo") as tab_photo:
                        photo = gr.Image(label="Photo with a face (jpg, png, webp)", type="filepath",
                                         image_mode=None, sources=["upload", "clipboard"], elem_id="photo",
                                         height=320)
                        head = gr.Radio(["natural", "subtle", "still"], value="natural",
                                        label="Head motion and blinks", elem_id="head-motion")
                    with gr.Tab("Dub a video", id="dub", elem_id="tab-dub") as tab_dub:
                        video = gr.Video(label="Video of a person speaking", sources=["upload"], elem_id="video",
                                         height=320)
                        # adaptation fine-tunes the first version's generator; the mouth stage copies the
                        # video's own pixels and has nothing to adapt
                        adapt = gr.Checkbox(label="Adapt to this person's mouth (slower, better likeness)",
                                            value=False, elem_id="adapt", visible=pipe.painter is None)
                    with gr.Tab("Live", id="live", elem_id="tab-live") as tab_live:
                        gr.Markdown("Live: the photo of the *Photo* tab (or the example), with that tab's head "
                                    "motion, talks as you speak into the microphone or as typed text is spoken, "
                                    "frame by frame at 25 fps. One live session at a time, up to "
                                    f"{limits.live_max_seconds:g} s.")
                        gr.HTML(liveweb.player_html(limits), elem_id="live-player")
                # the render controls: hidden in the Live tab, which has its own (liveweb.player_html)
                with gr.Column(elem_id="render-controls") as controls:
                    speech_from = gr.Radio([SPEECH_AUDIO, SPEECH_TEXT], value=SPEECH_AUDIO, label="Speech",
                                           elem_id="speech-from")
                    with gr.Group(visible=True) as audio_box:
                        audio = gr.Audio(label=f"Speech (upload or record; up to {limits.max_seconds:g} s)",
                                         sources=["upload", "microphone"], type="filepath", elem_id="audio")
                    with gr.Group(visible=False) as text_box:
                        text = gr.Textbox(label="Text to say", lines=3, max_length=limits.max_text_chars,
                                          placeholder=EXAMPLE_TEXT, elem_id="text")
                        with gr.Row():
                            voice = gr.Dropdown(voices, value=voices[0][1] if voices else None, label="Voice",
                                                elem_id="voice")
                            rate = gr.Slider(0.5, 2.0, value=1.0, step=0.05, label="Speaking rate (1 = normal)",
                                             elem_id="rate")
                    with gr.Row():
                        face = gr.Number(value=0, precision=0, minimum=0, maximum=checks.MAX_FACES - 1,
                                         label="Face (0 = largest)", elem_id="face")
                        size = gr.Dropdown(SIZES, value=SIZES[0][1], label="Output size (longer side)",
                                           elem_id="size")
                    with gr.Accordion("Advanced", open=False):
                        motion = gr.Slider(0.5, 1.5, value=1.0, step=0.05, label="Mouth motion (photo)",
                                           elem_id="motion")
                        gate = gr.Checkbox(value=True, label="Rest the mouth in silence (photo)", elem_id="gate")
                        keep = gr.Slider(0.0, 1.0, value=0.0, step=0.05, elem_id="keep-expression",
                                         label="Keep the photo's own mouth expression at rest (photo; 0 = neutral)")
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed of the head motion (photo)",
                                         elem_id="seed")
                    button = gr.Button("Render", variant="primary", elem_id="render")
            with gr.Column(scale=1) as results:
                result = gr.Video(label="Result", interactive=False, elem_id="result", height=400,
                                  buttons=["download"])
                track = gr.File(label="Mouth landmarks (JSON)", interactive=False, elem_id="landmarks")
                info = gr.Markdown(elem_id="info")
        # examples, one click away, in the tab they belong to
        photo_rows, photo_labels = [], []
        if EXAMPLE_PHOTO.is_file() and EXAMPLE_AUDIO.is_file():
            photo_rows.append([str(EXAMPLE_PHOTO), SPEECH_AUDIO, str(EXAMPLE_AUDIO), None])
            photo_labels.append("NASA portrait + a GRID sentence (audio)")
        if EXAMPLE_PHOTO.is_file():
            photo_rows.append([str(EXAMPLE_PHOTO), SPEECH_TEXT, None, EXAMPLE_TEXT])
            photo_labels.append("NASA portrait + typed text")
        if photo_rows:
            with tab_photo:
                gr.Examples(photo_rows, [photo, speech_from, audio, text], example_labels=photo_labels,
                            label="Examples (photo: public domain; GRID corpus: CC BY 4.0)")
        if EXAMPLE_DUB_VIDEO.is_file() and EXAMPLE_DUB_AUDIO.is_file():
            with tab_dub:
                gr.Examples([[str(EXAMPLE_DUB_VIDEO), SPEECH_AUDIO, str(EXAMPLE_DUB_AUDIO)]],
                            [video, speech_from, audio], example_labels=["GRID clip + another GRID sentence"],
                            label="Example (GRID corpus: CC BY 4.0)")
        gr.Markdown(f"Limits: uploads up to {limits.max_upload_mb:g} MB, speech and videos up to "
                    f"{limits.max_seconds:g} s, text up to {limits.max_text_chars} characters. Results are kept "
                    f"for {limits.keep_results_s // 60} minutes. Renders run one at a time; others wait in line.")

        # which face source is used: the open tab
        tab_photo.select(lambda: ("photo", gr.update(visible=True), gr.update(visible=True)), None,
                         [mode, controls, results], queue=False, show_progress="hidden")
        tab_dub.select(lambda: ("dub", gr.update(visible=True), gr.update(visible=True)), None,
                       [mode, controls, results], queue=False, show_progress="hidden")
        # Live streams into its own player: the render controls and the result column would only mislead
        tab_live.select(lambda: (gr.update(visible=False), gr.update(visible=False)), None, [controls, results],
                        queue=False, show_progress="hidden")
        speech_from.change(lambda s: (gr.update(visible=s == SPEECH_AUDIO), gr.update(visible=s == SPEECH_TEXT)),
                           speech_from, [audio_box, text_box], queue=False, show_progress="hidden")
        button.click(render, [mode, photo, video, speech_from, audio, text, voice, rate, face, size, adapt, motion,
                              gate, head, seed, keep], [result, track, info], api_name="render",
                     concurrency_id="render",
                     concurrency_limit=1, preprocess=False)
        # API-only endpoints (gradio_client): the same renders, in the same line (concurrency_id "render")
        api_text = gr.Button(visible=False)
        api_text.click(render_text, [photo, text, voice, rate, face, size, motion, gate], [result, track, info],
                       api_name="render_text", concurrency_id="render", concurrency_limit=1, preprocess=False)
        api_dub = gr.Button(visible=False)
        api_dub.click(render_dub, [video, audio, text, voice, rate, face, size, adapt], [result, track, info],
                      api_name="dub", concurrency_id="render", concurrency_limit=1, preprocess=False)
    app.queue(default_concurrency_limit=1, max_size=limits.queue_size)
    app.talkingface_limits = limits  # read by launch()
    app.talkingface_live = live  # launch() routes /live/ws to it
    return app


def check_listen(host: str, port: int) -> None:
    """Refuse, before the models load, an address the server could not listen on: a host name that does not resolve
    or is not this machine's, a port in use or not allowed. (Gradio said "the port is in use" for all of these,
    after the models had loaded.)"""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise InputError(f"cannot listen on {host}:{port}: the host name does not resolve "
                               f"({getattr(e, 'strerror', None) or e}); use an address of this machine, e.g. 127.0.0.1 "
                               "or 0.0.0.0") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: a closed socket's wait is fine
        try:
            s.bind(address)
        except OSError as e:
            why = "the port is in use (another server?)" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise InputError(f"cannot listen on {host}:{port}: {why}; choose another --port or --host") from None


def launch(app, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False, block: bool = True) -> str:
    """Serve ``app``; returns the local URL (after the server stopped, when ``block``)."""
    limits: Limits = getattr(app, "talkingface_limits", Limits())
    examples = [str(p) for p in (EXAMPLE_PHOTO, EXAMPLE_AUDIO, EXAMPLE_DUB_VIDEO, EXAMPLE_DUB_AUDIO) if p.is_file()]
    try:
        from starlette.middleware import Middleware

        guard = Middleware(UploadGuard, folder=os.environ.get("GRADIO_TEMP_DIR", temp_root() / "gradio"),
                           max_total_bytes=int(limits.max_total_mb * 2**20),
                           max_uploads=limits.max_uploads_per_visitor, window_s=limits.keep_results_s)
        from . import liveweb

        middleware = [guard]
        if getattr(app, "talkingface_live", None) is not None:  # the Live tab's WebSocket and script
            middleware.insert(0, Middleware(liveweb.LiveRoutes, endpoint=app.talkingface_live))
        _, url, share_url = app.launch(
            server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
            app_kwargs={"middleware": middleware}, head=f'<script src="{liveweb.SCRIPT_PATH}"></script>',
            max_file_size=int(limits.max_upload_mb * 1024 * 1024), allowed_paths=examples, ssr_mode=False,
            show_error=True, inbrowser=False, css=CSS + liveweb.LIVE_CSS, footer_links=[])
    except OSError as e:
        why = "the port is in use (another server?)" if "empty port" in str(e) else str(e)
        raise TalkingFaceError(f"cannot listen on {host}:{port}: {why}; choose another with --port") from e
    print(f"talkingface demo: {url}" + (f"  (public link: {share_url})" if share_url else ""), flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return url


def main(args) -> int:
    """``talkingface demo``: build the pipeline once, then serve the page until Ctrl+C."""
    from .pipeline import load

    limits = Limits(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                    max_total_mb=getattr(args, "max_total_mb", Limits.max_total_mb),
                    max_uploads_per_visitor=getattr(args, "max_uploads", Limits.max_uploads_per_visitor))
    check_listen(args.host, args.port)
    temp_root()
    try:
        import gradio  # noqa: F401
    except ImportError as e:
        raise TalkingFaceError("the web page needs Gradio: pip install 'talkingface[web]'") from e
    print("talkingface demo: loading the models ...", flush=True)
    pipe = load(args.checkpoints, device=args.device)

    def stop(signum, frame):  # `kill` stops the server like Ctrl+C does: queue closed, temporary files deleted
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        app = build_app(pipe, limits)
        launch(app, host=args.host, port=args.port, share=args.share)
    finally:
        pipe.close()
    return 0
