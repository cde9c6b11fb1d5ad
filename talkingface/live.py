"""Live: speech that arrives in chunks -> a talking face at 25 fps, each frame as soon as the audio it shows is in.

    pipe = talkingface.load()
    for frame in pipe.stream("face.jpg", chunks):          # chunks: any iterator of float32 16 kHz arrays
        show(frame.image, frame.audio, frame.time)          # (H, W, 3) RGB, its 40 ms of audio, stream seconds

The offline renderer reads the whole utterance (its landmark model is bidirectional); this path is causal from end
to end, on the same stages:

1. ``audio.StreamingWhisper``: Whisper's encoder on 4 s windows, one pass per 2 frames (80 ms), each window
   ending 1 frame after its block (window, block and lookahead are part of the live model's config). A file gets
   exactly the features its live stream gets.
2. ``landmarks.open_stream``: a unidirectional landmark model (``landmarks-live-v7``: three students trained on
   those features, averaged) run frame by frame with its LSTM state; it sees 4 frames of features ahead.
3. The speech gate (``LiveGate``): the offline gate's formula over speech-band energy against the loudest frame
   heard and Silero VAD's voice probability, both streamed, from the audio each frame waits for anyway (3-4
   frames past it with ``landmarks-live-v7``); the mouth rests where nobody speaks.
4. The mouth stage (talkingface.mouth, as in ``render``) and the head motion and blinks (talkingface.motion: an
   idle-level plan, since the coming speech is unknown), per frame.

Output frame t shows the prediction for frame t - sync_delay (the delay the landmark model's training chose),
so the frame needs features up to t - delay + kernel // 2 (t + 2 for ``landmarks-live-v7``) and the audio up to
the end of their encoder block plus the window's lookahead (``LiveSession.gate_last``).

``LiveSession`` is the push interface (``push(samples) -> frames``, ``flush()``); ``stream`` wraps it for an
iterator of chunks and, with ``realtime=True``, paces it by the wall clock: a producer that stalls gets
silence inserted (the face rests and the stream stays live instead of waiting), and when rendering falls
behind, frames are repeated instead of rendered until it catches up. ``LiveStats`` counts both.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch

from . import audio as audio_mod
from . import checkpoints, face, media, mouth
from .errors import InputError
from .landmarks import LandmarkConfig, LandmarkEnsemble, LandmarkModel, build, open_stream
from .pipeline import _smooth_gate

log = logging.getLogger(__name__)

LIVE_MODEL = "landmarks-live-v7"
SPF = audio_mod.SAMPLES_PER_FRAME  # 640 samples per video frame at 25 fps


@dataclass(frozen=True)
class LiveOptions:
    face_index: int | None = None
    max_size: int = 512  # longer side of the frames (live work must fit the frame budget: 40 ms)
    head_motion: str = "natural"  # natural | subtle | still: idle-level head motion and blinks
    seed: int = 0
    motion_scale: float = 1.0
    keep_expression: float = 0.0
    silence_gate: bool = True
    # realtime pacing (stream(realtime=True))
    stall_seconds: float = 0.25  # audio this late counts as a pause: silence is inserted
    max_latency: float = 0.35  # frames later than this are repeated, not rendered, until rendering catches up


@dataclass
class LiveFrame:
    index: int
    time: float  # stream seconds at the frame's start (index / 25)
    image: np.ndarray  # (H, W, 3) uint8 RGB
    audio: np.ndarray  # (640,) float32: the 40 ms of audio this frame shows
    speech: float  # the speech gate, 0 (rest) .. 1
    mouth: np.ndarray | None = None  # (59, 3) the mouth shown, canonical cm (face.MOUTH order)
    repeated: bool = False  # the machine fell behind: the previous image again
    latency: float | None = None  # seconds from the arrival of this frame's audio to the frame (realtime)


@dataclass
class LiveStats:
    frames: int = 0
    rendered: int = 0
    repeated: int = 0
    silence_inserted: float = 0.0  # seconds of silence inserted for a stalled producer
    stage_seconds: dict[str, float] = field(default_factory=dict)  # features, landmarks, gate, mouth, motion
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.array(self.latencies) * 1000
        out = {"frames": self.frames, "rendered": self.rendered, "repeated": self.repeated,
               "silence_inserted_s": round(self.silence_inserted, 3)}
        if len(lat):
            out.update(latency_ms_median=round(float(np.median(lat)), 1),
                       latency_ms_p95=round(float(np.percentile(lat, 95)), 1))
        if self.frames:  # the mouth and the motion per rendered frame, the rest per frame
            out["ms_per_frame"] = {k: round(1000 * v / max(1, self.rendered if k in ("mouth", "motion")
                                                            else self.frames), 2)
                                   for k, v in self.stage_seconds.items()}
        return out


class LiveGate:
    """The speech gate of ``Pipeline.predict_mouth`` computed from the audio heard so far. A frame is speech when
    its speech-band energy is above -60 dB and within 30 dB of the loudest frame heard (offline: of the clip's
    99th percentile) and Silero VAD's voice probability of a frame within 3 of it is above 0.5 (offline the same,
    ``audio.speech_mask``). Frame t's gate is the offline formula (``pipeline._smooth_gate``: the speech widened by
    2 frames, then a Hann ramp of 4, clipped at 1) over the speech up to frame ``last``, the audio a live frame
    waits for anyway (its mouth needs features of an encoder block that ends past it: ``LiveSession.gate_last``);
    later frames count as silence. With ``REACH`` (6) frames ahead it is the offline gate exactly (opening 4 frames
    before the speech, with a ramp of 2 more); with fewer it opens later (with 2, at 2 frames before the speech)
    and closes the same. The values do not depend on how the audio was chunked."""

    REACH = 6  # frames after t that the offline gate of frame t depends on (attack 2 + release 4)

    def __init__(self):
        from scipy import signal

        self._sos = signal.butter(4, [300, 3400], btype="band", fs=audio_mod.SAMPLE_RATE, output="sos")
        self._zi = np.zeros((self._sos.shape[0], 2))
        self._session = audio_mod._silero_session()
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, audio_mod.SILERO_CONTEXT), np.float32)
        self._pending = np.zeros(0, np.float32)  # samples not yet in a whole frame
        self._vad_pending = np.zeros(0, np.float32)  # samples not yet in a whole Silero chunk
        self._vad_probs: list[float] = []  # one per 512-sample chunk
        self._energy: list[float] = []  # speech-band energy per frame, dB
        self._peaks: list[float] = []  # the loudest frame up to each frame, dB
        self._voiced_frames: list[bool] = []  # _voiced of the frames whose Silero chunks are all in
        self._gate: dict[int, float] = {}

    def push(self, samples: np.ndarray) -> None:
        from scipy import signal

        x = np.concatenate([self._pending, samples])
        n = len(x) // SPF
        if n:
            band, self._zi = signal.sosfilt(self._sos, x[: n * SPF].astype(np.float64), zi=self._zi)
            e = 10 * np.log10(np.mean(band.reshape(n, SPF) ** 2, axis=1) + 1e-10)
            for v in e:
                self._energy.append(float(v))
                self._peaks.append(max(self._peaks[-1] if self._peaks else -np.inf, float(v)))
        self._pending = x[n * SPF:]
        if self._session is not None:
            y = np.concatenate([self._vad_pending, samples])
            m = len(y) // audio_mod.SILERO_CHUNK
            sr = np.array(audio_mod.SAMPLE_RATE, np.int64)
            for i in range(m):
                c = y[None, i * audio_mod.SILERO_CHUNK:(i + 1) * audio_mod.SILERO_CHUNK].astype(np.float32)
                out, self._state = self._session.run(None, {"input": np.concatenate([self._context, c], 1),
                                                            "state": self._state, "sr": sr})
                self._context = c[:, -audio_mod.SILERO_CONTEXT:]
                self._vad_probs.append(float(np.asarray(out).ravel()[0]))
            self._vad_pending = y[m * audio_mod.SILERO_CHUNK:]

    def _voiced(self, k: int, last: int) -> bool:
        """Silero's voice probability of frame k above 0.5: the mean over the frame's samples of the probabilities
        of the chunks covering it (as ``audio.voice_probability``), over the chunks that end inside frame ``last``
        (what is in then does not depend on how the audio was chunked); False if none does yet."""
        chunk = audio_mod.SILERO_CHUNK
        c0, c1 = k * SPF // chunk, ((k + 1) * SPF - 1) // chunk
        complete = (c1 + 1) * chunk <= (last + 1) * SPF
        if complete and k < len(self._voiced_frames):
            return self._voiced_frames[k]
        c1 = c1 if complete else (last + 1) * SPF // chunk - 1
        total = weight = 0.0
        for c in range(c0, c1 + 1):  # at most 3 chunks overlap a frame
            w = min((c + 1) * chunk, (k + 1) * SPF) - max(c * chunk, k * SPF)
            total += w * self._vad_probs[c]
            weight += w
        voiced = weight > 0 and total / weight > 0.5
        if complete and k == len(self._voiced_frames):  # final: kept (frames complete in order)
            self._voiced_frames.append(voiced)
        return voiced

    def _speech(self, j: int, last: int) -> bool:
        """Frame j is speech, decided from the audio up to frame ``last``: loud (above -60 dB and within 30 dB of
        the loudest frame up to ``last``), and a voice within 3 frames."""
        e = self._energy[j]
        if not (e > -60.0 and e > self._peaks[last] - 30.0):
            return False
        if self._session is None:
            return True
        return any(self._voiced(k, last) for k in range(max(0, j - 3), min(j + 3, last) + 1))

    def heard(self) -> int:
        """Whole frames of audio heard so far."""
        return len(self._energy)

    def value(self, t: int, last: int) -> float:
        """Gate of frame t from the audio up to frame ``last`` (>= t; the frames up to it must have been heard)."""
        if t not in self._gate:
            last = min(last, t + self.REACH)
            lo = t - self.REACH
            speech = np.zeros(2 * self.REACH + 1, bool)  # frames t - REACH .. t + REACH
            for j in range(max(0, lo), last + 1):
                speech[j - lo] = self._speech(j, last)
            self._gate[t] = float(_smooth_gate(speech)[self.REACH])
            self._gate.pop(t - 4 * self.REACH, None)  # frames are asked for in order: keep the cache small
        return self._gate[t]


def load_live_model(directory) -> tuple[LandmarkModel | LandmarkEnsemble, int]:
    """The live landmark model and its sync delay, from the checkpoint directory."""
    try:
        path = checkpoints.resolve(LIVE_MODEL, directory)
    except checkpoints.CheckpointError as e:
        raise InputError(f"live streaming needs the {LIVE_MODEL} checkpoint: {e}") from e
    model, meta = checkpoints.load_module(path, build, LandmarkConfig, model="landmarks")
    if model.config.bidirectional or model.config.feature_kind != "whisper_stream":
        raise InputError(f"checkpoint {LIVE_MODEL} is not a live model (it needs a unidirectional model on "
                         f"whisper_stream features)")
    return model.eval(), int(meta.get("info", {}).get("sync_delay", 0))


class LiveSession:
    """One live stream of one photo. ``push(samples)`` -> the frames the new audio completes; ``flush()`` at the
    end of the speech -> the rest. Not thread-safe; one session per stream (they share the pipeline's models)."""

    def __init__(self, pipe, image, *, options: LiveOptions = LiveOptions(), stats: LiveStats | None = None):
        from . import motion

        if pipe.painter is None:
            raise InputError("live streaming needs the mouth stage (texture 'warp' or 'mouth-v2'), not texture-v1")
        self.options = o = options
        self.pipe = pipe
        model, self.delay = pipe.live_model()
        self.model_config = model.config
        self.features = audio_mod.StreamingWhisper(pipe.whisper_encoder(), audio_mod.StreamWindow(
            model.config.stream_block, model.config.stream_window, model.config.stream_lookahead))
        self.landmarks = open_stream(model)
        self.gate = LiveGate()
        name = str(image) if not isinstance(image, np.ndarray) else "<array>"
        img = media.load_image(image) if not isinstance(image, np.ndarray) else image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"image {name} must be RGB uint8 (H, W, 3), got {img.shape} {img.dtype}")
        face.check_image_size(img.shape[1], img.shape[0], name)
        self.image = img = pipe._fit_size(img, o.max_size)
        det, _ = pipe.analyze_face(img, name, o.face_index)
        self.frame = frame = face.FaceFrame.fit(det.landmarks)
        own = frame.to_canonical(det.landmarks[face.MOUTH])
        self.neutral = mouth.neutral_rest(own, 1.0 - o.keep_expression)
        self._paint = pipe._photo_painter(img, det, frame, own)
        self.animator, self._plan = None, None
        self._mark = None  # the watermark embedder, made for the first rendered frame's size
        if o.head_motion != "still":
            self.animator = motion.HeadAnimator(img, det.landmarks, frame, source=name)
        self._motion = motion
        self.stats = stats if stats is not None else LiveStats()
        for k in ("features", "landmarks", "gate", "mouth", "motion"):
            self.stats.stage_seconds.setdefault(k, 0.0)
        self._audio = np.zeros(0, np.float32)  # stream audio not yet handed out with a frame
        self._audio_start = 0  # stream sample index of self._audio[0]
        self._n_samples = 0
        self._preds: list[np.ndarray] = []  # offsets (59, 3) cm per frame, prediction index order
        self._next = 0  # next output frame
        self._last: np.ndarray | None = None
        self._ended = False
        self._lock = threading.RLock()  # the state feed() and take() share (stream(realtime=True): two threads)

    # --- inputs ---------------------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """More audio (float32 16 kHz mono), without rendering. The analysis (features, landmarks) runs outside the
        session's lock, so another thread can take and render frames meanwhile (stream(realtime=True))."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise InputError("live audio has samples that are not finite numbers (NaN or infinity)")
        if self._ended:
            raise InputError("this live session has ended (flush was called)")
        if not len(x):
            return
        t0 = time.perf_counter()
        feats = self.features.push(x)
        t1 = time.perf_counter()
        preds = self.landmarks.push(feats)
        t2 = time.perf_counter()
        with self._lock:
            self._audio = np.concatenate([self._audio, x])
            self._n_samples += len(x)
            self._add_preds(preds)
            self.gate.push(x)
        st = self.stats.stage_seconds
        st["features"] += t1 - t0
        st["landmarks"] += t2 - t1
        st["gate"] += time.perf_counter() - t2

    def end(self) -> None:
        """No more audio: the remaining frames become ready (the audio after the end counts as silence)."""
        if self._ended:
            return
        preds = torch.cat([self.landmarks.push(self.features.flush()), self.landmarks.flush()])
        with self._lock:
            self._add_preds(preds)
            pad = (-self._n_samples) % SPF
            # completes the last frame, and the ones after it that decide its gate
            # (n_video_frames rounds up: an empty stream still has one frame, with REACH frames after it)
            self.gate.push(np.zeros(pad + (LiveGate.REACH + 1) * SPF, np.float32))
            self._ended = True

    def _add_preds(self, preds: torch.Tensor) -> None:
        self._preds.extend(preds.numpy() * self.options.motion_scale)

    # --- outputs --------------------------------------------------------------------------------------
    def n_frames(self) -> int:
        return audio_mod.n_video_frames(self._n_samples)

    def ready(self) -> int:
        """How many frames can be made now."""
        with self._lock:
            return self._ready()

    def _ready(self) -> int:
        if self._ended:
            upto = self.n_frames()
        else:  # frame t shows prediction t - delay and needs its own audio (and gate_last(t)'s, for the gate)
            upto = min(len(self._preds) + self.delay, self._n_samples // SPF)
            while upto > self._next and self.gate_last(upto - 1) >= self.gate.heard():
                upto -= 1
        return max(0, upto - self._next)

    def gate_last(self, t: int) -> int:
        """The last frame of audio that frame t waits for anyway: frame t shows the prediction for t - delay, which
        needs features up to kernel // 2 frames after it, which come with their encoder block plus the window's
        lookahead (``audio.StreamWindow``). The gate of frame t may look that far ahead at no cost in latency:
        3-4 frames with 2-frame blocks, 4 frames ahead and 1 of lookahead (``landmarks-live-v7``; 2-5 with the
        4-frame blocks and 3 ahead of v6); at most ``LiveGate.REACH``, all the gate can use."""
        c = self.model_config
        f = max(t - self.delay, 0) + c.conv_kernel // 2
        return min(t + LiveGate.REACH, max(t, (f // c.stream_block + 1) * c.stream_block + c.stream_lookahead - 1))

    def next_frame(self, *, render: bool = True) -> LiveFrame:
        """The next frame (``ready()`` must be > 0); render=False repeats the previous image (catching up)."""
        return self.make(self.take(), render=render)

    def take(self) -> tuple[int, float, np.ndarray, np.ndarray]:
        """The next frame's index, gate, mouth target and audio (the session's state moves on)."""
        with self._lock:
            return self._take()

    def _take(self) -> tuple[int, float, np.ndarray, np.ndarray]:
        t = self._next
        gate = self.gate.value(t, self.gate_last(t)) if self.options.silence_gate else 1.0
        off = self._preds[min(max(t - self.delay, 0), len(self._preds) - 1)] if self._preds else 0.0
        clip = self._audio[:SPF]
        clip = np.pad(clip, (0, SPF - len(clip)))
        self._audio = self._audio[SPF:]
        self._audio_start += SPF
        self._next += 1
        return t, gate, (self.neutral + gate * off).astype(np.float32), clip

    def make(self, spec: tuple, *, render: bool = True) -> LiveFrame:
        """The frame of a ``take()``: rendered, or the previous image again (render=False, catching up). Frames
        must be made in the order they were taken."""
        t, gate, target, clip = spec
        repeated = not render and self._last is not None
        if repeated:
            img = self._last
            self.stats.repeated += 1
        else:
            img = self._watermark(self._render(t, target))
            self.stats.rendered += 1
        self._last = img
        self.stats.frames += 1
        return LiveFrame(t, t / audio_mod.FPS, img, clip, gate, target, repeated)

    def _watermark(self, img: np.ndarray) -> np.ndarray:
        """The invisible watermark every written video carries (docs/PROVENANCE.md): a screen recording of a live
        stream is labelled too. About 0.06 ms a 512 px frame."""
        from . import watermark

        if self._mark is None or self._mark.shape != img.shape:
            self._mark = watermark.Embedder(img.shape[0], img.shape[1])
        return self._mark(np.ascontiguousarray(img))

    def _render(self, t: int, target: np.ndarray) -> np.ndarray:
        st = self.stats.stage_seconds
        t0 = time.perf_counter()
        timings = {"texture": 0.0, "composite": 0.0}
        out = self._paint(target[None], None, timings)[0]
        t1 = time.perf_counter()
        st["mouth"] += t1 - t0
        if self.animator is not None:
            pose, closure = self._pose(t)
            out = self.animator.apply(out, pose, closure)
            st["motion"] += time.perf_counter() - t1
        return out

    PLAN_FRAMES = 60 * audio_mod.FPS  # head motion is planned a minute at a time
    BLEND = audio_mod.FPS  # frames over which one plan's pose fades into the next

    def _pose(self, t: int) -> tuple[np.ndarray, float]:
        """Head pose and eyelid closure of frame t from idle-level plans a minute long, each fading into the next
        (the coming speech is unknown, so the head moves as in a pause; blinks keep their rate)."""
        k, i = divmod(t, self.PLAN_FRAMES)
        if self._plan is None or self._plan[0] != k:
            prev = self._plan
            n = self.PLAN_FRAMES + self.BLEND
            plan = self._motion.plan_motion(np.zeros(n, bool), level=self.options.head_motion,
                                            seed=self.options.seed * 1000 + k, blinks=self.animator.blinks,
                                            head_scale=self.animator.head_scale)
            self._plan = (k, plan, prev[1] if prev is not None and prev[0] == k - 1 else None)
        _, plan, prev = self._plan
        pose = plan.pose[i]
        if prev is not None and i < self.BLEND:  # fade from the end of the previous minute's plan
            w = 0.5 - 0.5 * np.cos(np.pi * i / self.BLEND)
            pose = (1 - w) * prev.pose[self.PLAN_FRAMES + i] + w * pose
        return pose, float(plan.closure[i])

    def push(self, samples: np.ndarray) -> list[LiveFrame]:
        """Feed audio and make every frame it completes."""
        self.feed(samples)
        return [self.next_frame() for _ in range(self.ready())]

    def flush(self) -> list[LiveFrame]:
        """End of the speech: the remaining frames."""
        self.end()
        return [self.next_frame() for _ in range(self.ready())]


def speech_chunks(text: str, *, voice=None, rate: float = 1.0, chunk_ms: float = 40.0,
                  realtime: bool = False) -> Iterator[np.ndarray]:
    """Typed text as live audio: talkingface.tts speaks it sentence by sentence (the next sentence is synthesized
    while the current one plays), resampled to 16 kHz and cut into ``chunk_ms`` chunks, so the face starts
    talking after the first sentence instead of after the whole text. realtime=True hands the chunks out at the
    pace they play (a live speaker; ``stream(realtime=True)`` then shows each as it comes). The text is checked
    before the first chunk (errors come at once)."""
    from math import gcd

    from scipy.signal import resample_poly

    from . import tts

    sentences = tts.synthesize(text, voice=voice, rate=rate)  # checks the text, the voice and the rate now
    step = max(1, int(round(chunk_ms * audio_mod.SAMPLE_RATE / 1000)))

    def to_16k(sentence) -> np.ndarray:
        wav, sr, _phones = sentence
        if sr != audio_mod.SAMPLE_RATE:
            g = gcd(sr, audio_mod.SAMPLE_RATE)
            wav = resample_poly(wav, audio_mod.SAMPLE_RATE // g, sr // g).astype(np.float32)
        return wav

    def gen():
        t_start, sent = None, 0
        for wav in media.ahead(sentences, to_16k, 2, "talkingface-live-tts"):  # the next sentence synthesized
            for i in range(0, len(wav), step):
                x = wav[i:i + step]
                if realtime:
                    now = time.perf_counter()
                    t_start = now if t_start is None else t_start
                    wait = t_start + (sent + len(x)) / audio_mod.SAMPLE_RATE - now
                    if wait > 0:
                        time.sleep(wait)
                sent += len(x)
                yield x

    return gen()


def _as_chunks(chunks: Iterable, sample_rate: int) -> Iterator[np.ndarray]:
    if sample_rate != audio_mod.SAMPLE_RATE:  # resampling chunk by chunk would click at every boundary
        raise InputError(f"live audio must be 16 kHz mono float32 (got {sample_rate} Hz): resample it at the source "
                         f"(a browser: AudioContext({{sampleRate: 16000}}))")
    for c in chunks:
        yield np.asarray(c, np.float32).reshape(-1)


def stream(pipe, image, chunks: Iterable, *, sample_rate: int = audio_mod.SAMPLE_RATE,
           options: LiveOptions = LiveOptions(), realtime: bool = False,
           stats: LiveStats | None = None) -> Iterator[LiveFrame]:
    """Frames for audio ``chunks`` (any iterable of float32 mono arrays at ``sample_rate``).

    realtime=False: frames as fast as they can be made, the same for any chunking (tests, files). realtime=True:
    the chunks are read by a thread as they come (a microphone, a TTS engine, a socket) and paced by the wall clock:
    see the module's docstring. ``stats`` (optional) is filled as the stream runs."""
    session = LiveSession(pipe, image, options=options, stats=stats)
    if not realtime:
        for x in _as_chunks(chunks, sample_rate):
            yield from session.push(x)
        yield from session.flush()
        return
    yield from _realtime(session, _as_chunks(chunks, sample_rate), options)


def _realtime(session: LiveSession, chunks: Iterator[np.ndarray], o: LiveOptions) -> Iterator[LiveFrame]:
    """Three threads: a pump takes the chunks from the producer as they come; an analyser feeds everything that
    has arrived to the session at once (features, landmarks, gate; a backlog is encoded in one batch, and the
    Whisper encoder and torch release the GIL, so this runs beside the rendering on the second core) and inserts
    silence for a stalled producer; the caller's thread renders and yields frames, repeating the previous image
    for frames already later than ``max_latency``."""
    q: queue.Queue = queue.Queue()
    stop = threading.Event()
    cond = threading.Condition()
    st = {"waiting": None, "ended": False, "error": None}
    arrivals: list[tuple[int, float]] = []  # (stream samples after a feed, arrival time of its last chunk)

    def pump():
        try:
            it = iter(chunks)
            while not stop.is_set():
                st["waiting"] = time.perf_counter()
                try:
                    x = next(it)
                except StopIteration:
                    q.put((time.perf_counter(), None))
                    return
                st["waiting"] = None
                q.put((time.perf_counter(), x))
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            q.put((time.perf_counter(), e))

    def analyse():
        t0 = None
        try:
            while not stop.is_set():
                try:
                    items = [q.get(timeout=0.02)]
                except queue.Empty:
                    items = []
                while True:
                    try:
                        items.append(q.get_nowait())
                    except queue.Empty:
                        break
                parts, last, done = [], None, False
                for arrived, x in items:
                    if isinstance(x, BaseException):
                        raise x
                    if x is None:
                        done = True
                        break
                    if t0 is None:
                        t0 = arrived - len(x) / audio_mod.SAMPLE_RATE  # the stream's clock: its first sample
                    parts.append(x)
                    last = arrived
                if parts:
                    session.feed(np.concatenate(parts))
                    with cond:
                        arrivals.append((session._n_samples, last))
                        cond.notify_all()
                if done:
                    session.end()
                    with cond:
                        st["ended"] = True
                        arrivals.append((session._n_samples + 2 * SPF, time.perf_counter()))
                        cond.notify_all()
                    return
                # a producer that keeps the pump waiting past the stall time: silence up to the clock
                waiting, now = st["waiting"], time.perf_counter()
                if t0 is not None and waiting is not None and now - waiting > o.stall_seconds and q.empty():
                    behind = (now - t0 - o.stall_seconds) * audio_mod.SAMPLE_RATE - session._n_samples
                    if behind >= SPF:
                        n = int(behind // SPF) * SPF
                        session.feed(np.zeros(n, np.float32))
                        session.stats.silence_inserted += n / audio_mod.SAMPLE_RATE
                        with cond:
                            arrivals.append((session._n_samples, now))
                            cond.notify_all()
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread
            with cond:
                st["error"] = e
                cond.notify_all()

    threads = [threading.Thread(target=pump, name="talkingface-live-pump", daemon=True),
               threading.Thread(target=analyse, name="talkingface-live-analyse", daemon=True)]
    for th in threads:
        th.start()
    try:
        while True:
            with cond:
                while True:
                    if st["error"] is not None:
                        raise st["error"]
                    n_ready = session.ready()
                    if n_ready:
                        break
                    if st["ended"]:
                        return
                    cond.wait(timeout=0.05)
                need = (session._next + 1) * SPF  # the frame's own audio: when did its last sample come
                while len(arrivals) > 1 and arrivals[0][0] < need:
                    arrivals.pop(0)
                came = arrivals[0][1] if arrivals else time.perf_counter()
            late = time.perf_counter() - came > o.max_latency and n_ready > 1
            fr = session.make(session.take(), render=not late)  # rendering, outside the locks
            fr.latency = time.perf_counter() - came
            session.stats.latencies.append(fr.latency)
            yield fr
    finally:
        stop.set()
