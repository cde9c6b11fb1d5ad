"""The photo + speech pipeline: one object built once, ``render`` called many times.

    pipe = talkingface.load()                       # shipped weights from checkpoints/
    result = pipe.render(image="face.jpg", audio="speech.wav", output="out.mp4")

Stages (one module each): audio.AudioEncoder -> landmarks.LandmarkModel -> face.FaceFrame (3D pose
matching: canonical space <-> image) -> texture.MouthGenerator -> composite.Compositor -> media.VideoWriter.
Components are injected through the constructor, so tests can pass tiny models.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from . import audio as audio_mod
from . import checkpoints, checks, face, media, motion, mouth, provenance
from .composite import Compositor
from .errors import InputError
from .landmarks import LandmarkConfig, LandmarkEnsemble, LandmarkModel, build
from .texture import MouthGenerator, TextureConfig, sketches, to_tensor, to_uint8

log = logging.getLogger(__name__)

DEFAULT_MODELS = {"landmarks": "landmarks-v2", "texture": "warp"}
# mouth texture methods load() accepts: the mouth stage warp-only (default: the person's own pixels warped at native
# resolution, the opening from real mouths; no weights), the same plus its refine network (needs a checkpoint named
# mouth-v2: one was trained and measured worse than warp-only, so none is shipped; docs/MOUTH.md), and the first
# version's 128 px generator (kept for comparison and for --adapt)
TEXTURE_METHODS = ("mouth-v2", "warp", "texture-v1")


@dataclass(frozen=True)
class RenderOptions:
    face_index: int | None = None  # which face when the photo has several (0 = largest); None: the largest
    max_size: int = 1280  # longer side of the output; larger photos are scaled down
    silence_gate: bool = True  # hold the mouth at rest where the audio is silent
    motion_scale: float = 1.0  # multiplies the predicted mouth motion
    keep_expression: float = 0.0  # resting mouth: 0 = neutral and closed, 1 = the photo's own (e.g. its smile)
    head_motion: str = "natural"  # head motion and blinks (photo mode): natural | subtle | still (talkingface.motion)
    seed: int = 0  # the head motion and blinks of a render; the same seed gives the same video
    batch_size: int = 16  # frames per generator call
    crf: int = 18  # H.264 quality (lower = better, bigger)
    max_audio_seconds: float = 3 * 3600.0
    # provenance (talkingface.provenance): the C2PA manifest on/off, a user's own signing key and certificate chain
    # (default: the local key), and whether the speech was synthesized from text (the manifest says so)
    credentials: bool = True
    sign_key: str | None = None
    sign_cert: str | None = None
    text: bool = False

    def __post_init__(self):  # every number in its documented range (talkingface.checks.RANGES)
        checks.fields(self, ("face_index", "max_size", "motion_scale", "keep_expression", "batch_size", "crf",
                             "max_audio_seconds"))
        if self.head_motion not in motion.LEVELS:
            raise InputError(f"head motion must be one of {', '.join(motion.LEVELS)}, got {self.head_motion!r}")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise InputError(f"seed must be a whole number, got {self.seed!r}")
        checks.number("seed", self.seed)  # 0 .. 2**31-1: numpy's generator refuses a negative seed mid-render


@dataclass
class RenderResult:
    output: str | None  # the mp4 written, or None when no output path was given
    fps: int
    n_frames: int
    duration: float  # seconds of audio
    mouth_landmarks: np.ndarray  # (T, 59, 2) image pixels of the output frames, face.MOUTH order
    mouth_canonical: np.ndarray  # (T, 59, 3) in the pose-normalized space (cm)
    face_box: tuple[int, int, int, int]
    n_faces: int
    frames: list[np.ndarray] | None = None  # (H, W, 3) uint8 per frame, only when return_frames=True
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    motion: motion.MotionPlan | None = None  # the head motion and blinks rendered (None when still)


def feature_config(cfg: LandmarkConfig) -> audio_mod.AudioFeatureConfig:
    """The audio features a landmark model was trained on (its checkpoint's config)."""
    return audio_mod.AudioFeatureConfig(kind=cfg.feature_kind, window=audio_mod.StreamWindow(
        cfg.stream_block, cfg.stream_window, cfg.stream_lookahead))


def check_output(output, inputs=()) -> None:
    """An output path is refused before any work (checks.output_file): a missing or read-only folder, an extension
    the encoder does not write, or one of the ``inputs`` ((kind, path or array)), which it would overwrite."""
    if output is not None:
        checks.output_file(output, inputs=inputs)


def load_speech(audio, *, max_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The speech input of render and dub: a path (any format ffmpeg reads) or a float array of 16 kHz mono ->
    (wav (n,) float32, speech_energy per frame), refused when empty, too short, not finite or silent
    (audio.check_speech)."""
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind != "f":  # int16 samples would play 32768 times too loud, bools and objects are not audio
            raise InputError(f"audio array must hold float samples in -1..1 (mono, 16 kHz), got {audio.dtype}; "
                             "for int16 samples pass a / 32768")
        if audio.ndim > 1 and sum(n > 1 for n in audio.shape) > 1:  # flattened, stereo would play twice as long
            raise InputError(f"audio array must be mono (n,) at 16 kHz, got shape {audio.shape}; for (n, 2) stereo "
                             "pass a.mean(axis=1)")
        wav = audio.astype(np.float32).reshape(-1)
        if wav.size == 0:
            raise InputError("audio array is empty")
        return wav, audio_mod.check_speech(wav, "<array>")
    wav = media.load_audio(audio, max_seconds=max_seconds)
    return wav, audio_mod.check_speech(wav, str(audio))


def _smooth_gate(active: np.ndarray, attack: int = 2, release: int = 4) -> np.ndarray:
    """Speech mask -> gate in [0, 1] that opens ``attack`` frames before speech and closes over ``release``."""
    g = active.astype(np.float32)
    dil = np.convolve(g, np.ones(2 * attack + 1), mode="same") > 0  # open slightly early (mouth leads sound)
    kernel = np.hanning(2 * release + 3)[1:-1]
    return np.clip(np.convolve(dil.astype(np.float32), kernel / kernel.max(), mode="same"), 0, 1)


def _exclusive(method):
    """Run a Pipeline method holding the pipeline's lock (see Pipeline: its parts are not thread-safe)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return locked


class Pipeline:
    """Photo + speech -> talking video. Holds the models; ``render`` is safe to call repeatedly.

    Thread safety: the parts are not thread-safe (MediaPipe's face graphs take one image at a time and keep
    tracking state; the Whisper encoder's CTranslate2 model and the torch modules are used from one thread).
    So ``render``, ``dub``, ``predict_mouth`` and
    ``analyze_face`` hold one lock per pipeline: calls from several threads run one after the other, never
    interleaved (the web page also queues its requests, one render at a time). For parallel work use one
    pipeline per process (``talkingface.dub_batch(workers=N)``).
    """

    def __init__(self, landmark_model: LandmarkModel | LandmarkEnsemble,
                 texture: MouthGenerator | mouth.MouthPainter, *,
                 audio_encoder: audio_mod.AudioEncoder | None = None, device: str = "cpu", sync_delay: int = 0,
                 texture_name: str | None = None):
        """texture: the mouth stage (``mouth.MouthPainter``, warp + refine) or the first version's generator."""
        self.device = torch.device(device)
        self.sync_delay = int(sync_delay)  # frames the landmark model's predictions are delayed by
        self.landmark_model = landmark_model.to(self.device).eval()
        if isinstance(texture, mouth.MouthPainter):
            self.painter: mouth.MouthPainter | None = texture
            self.generator = None
            self.crop_size = 128  # the appearance bank's crops (dubbing)
        else:
            self.painter = None
            self.generator = texture.to(self.device).eval()
            self.crop_size = texture.config.size
        self.texture_name = texture_name or ("texture-v1" if self.painter is None else
                                             "mouth-v2" if texture.refine is not None else "warp")
        cfg = landmark_model.config
        self.audio_encoder = audio_encoder or audio_mod.AudioEncoder(
            feature_config(cfg), device=device)
        self._lock = threading.RLock()
        self.checkpoint_dir = checkpoints.DEFAULT_DIR  # load() sets the folder it read (the live model is there)
        self._live = None
        self._tracker: face.FaceTracker | None = None
        self._donors: list[mouth.InteriorSource] | None = None

    # --- stages -------------------------------------------------------------------------------------
    @property
    def tracker(self) -> face.FaceTracker:
        if self._tracker is None:
            self._tracker = face.FaceTracker(static=True, max_faces=checks.MAX_FACES)
        return self._tracker

    @property
    def mean_motion_range(self) -> np.ndarray:
        """(59, 3) cm: the training speakers' mean range of mouth motion, by which the landmark model turns its
        speaker-normalized prediction into centimetres (``cm_per_unit``; see ``predict_mouth``'s motion_range)."""
        return self.landmark_model.cm_per_unit.detach().cpu().numpy().reshape(len(face.MOUTH), 3)

    @_exclusive
    def analyze_face(self, image: np.ndarray, source: str, face_index: int | None) -> tuple[face.DetectedFace, int]:
        """The photo's face to animate (and how many faces it has); refused, naming the photo, when it is turned
        too far from the camera for the mouth stage (``face.check_facing``)."""
        faces = self.tracker.detect(image)
        det = face.pick_face(faces, face_index, source)
        face.check_facing(det.landmarks, image.shape[:2], source)
        return det, len(faces)

    @_exclusive
    def predict_mouth(self, wav: np.ndarray, neutral: np.ndarray, *, motion_scale: float = 1.0,
                      silence_gate: bool = True, timings: dict[str, float] | None = None,
                      energy: np.ndarray | None = None, phonemes=None,
                      motion_range: np.ndarray | None = None, expression: np.ndarray | None = None,
                      bridge_pauses: int = 0) -> np.ndarray:
        """Audio (n,) 16 kHz + resting mouth (59, 3) canonical -> mouth track (T, 59, 3) canonical, T at 25 fps.

        energy: the audio's speech_energy when the caller has it already.
        motion_range: this person's range of mouth motion (59, 3) cm (``metrics.motion_range`` of a video of
        them): the model's speaker-normalized prediction is scaled by it instead of the training speakers' mean
        range (``cm_per_unit``); dubbing measures it on the video (``DubOptions.own_range``).
        expression: this person's speaking expression, the mean offset (59, 3) cm of their mouth from its resting
        shape while they speak: the prediction is shifted so that its mean over the speech frames is this (a
        talking smile, lips held apart that no audio predicts); dubbing measures it on the video
        (``dub.own_expression``).
        bridge_pauses: pauses in the speech shorter than this many frames count as speech for the gate and the
        expression (the mouth keeps talking through them instead of resting); dubbing uses ``dub.BRIDGE_PAUSES``.
        phonemes: optional phoneme timings (``talkingface.phonemes``) for the same audio; when given they
        correct the track (closed lips on bilabials, ...).
        """
        timings = {} if timings is None else timings
        t0 = time.perf_counter()
        feats = self.audio_encoder(wav)  # (T, F)
        timings["audio_features"] = timings.get("audio_features", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        x = torch.from_numpy(feats).to(self.device)
        offsets = self.landmark_model.predict(x).cpu().numpy() * motion_scale  # (T, 59, 3)
        if motion_range is not None:  # undo the training's per-speaker normalization with this person's range
            offsets = offsets * (np.asarray(motion_range, np.float32) / self.mean_motion_range)
        if self.sync_delay:  # out[t] = pred[t - delay]: the model leads the true clock (see load)
            offsets = offsets[np.clip(np.arange(len(offsets)) - self.sync_delay, 0, len(offsets) - 1)]
        if silence_gate or expression is not None:
            energy = audio_mod.speech_energy(wav) if energy is None else energy
            speech = audio_mod.speech_mask(wav, energy)[: len(offsets)]  # a voice, not noise
            speech = audio_mod.bridge_pauses(speech, bridge_pauses)
            if expression is not None and speech.any():
                offsets = offsets + (np.asarray(expression, np.float32) - offsets[speech].mean(axis=0))[None]
            if silence_gate:
                offsets *= _smooth_gate(speech)[:, None, None]
        track = neutral[None] + offsets
        if phonemes:
            from .phonemes import apply_phoneme_timing

            track = apply_phoneme_timing(track, neutral, phonemes, fps=audio_mod.FPS)
        timings["landmarks"] = timings.get("landmarks", 0.0) + time.perf_counter() - t0
        return track

    # --- public API ---------------------------------------------------------------------------------
    @_exclusive
    def render(self, image: str | os.PathLike | np.ndarray, audio: str | os.PathLike | np.ndarray, *,
               output: str | os.PathLike | None = None, options: RenderOptions = RenderOptions(),
               return_frames: bool = False, progress: Callable[[int, int], None] | None = None,
               phonemes=None) -> RenderResult:
        """Render ``image`` speaking ``audio``.

        image: path or RGB uint8 (H, W, 3); audio: path (any format ffmpeg reads) or float32 mono 16 kHz.
        output: mp4 path (written atomically), or None to only return frames/landmarks.
        progress: called as progress(frames_done, frames_total).
        phonemes: optional phoneme timings of ``audio`` (from TTS or forced alignment), see predict_mouth.
        """
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        check_output(output, [("image", image), ("audio", audio)])
        img, img_name, wav, energy, det, n_faces, frame, own, mouth_canon = self._track(
            image, audio, options, timings, phonemes)
        t0 = time.perf_counter()
        paint = (self._photo_painter(img, det, frame, own) if self.painter is not None
                 else self._photo_generator(img, det, frame))
        timings["face"] += time.perf_counter() - t0
        n = len(mouth_canon)
        mouth_img = frame.to_image(mouth_canon.reshape(-1, 3)).reshape(n, -1, 3)[..., :2].astype(np.float32)
        # head motion and blinks: a geometric step on each painted frame (the mouth is painted on the still photo
        # with the photo's own landmarks, then the whole head moves; the mouth track is moved the same way)
        animator, plan, mouth_out = None, None, mouth_img
        if options.head_motion != "still":
            t0 = time.perf_counter()
            animator = motion.HeadAnimator(img, det.landmarks, frame, source=img_name)
            vad = np.zeros(n, bool)
            act = audio_mod.speech_mask(wav, energy)[:n]
            vad[: len(act)] = act
            plan = motion.plan_motion(vad, level=options.head_motion, seed=options.seed, blinks=animator.blinks,
                                      head_scale=animator.head_scale)
            mouth_out = np.stack([animator.transform(mouth_canon[i], plan.pose[i]) for i in range(n)])
            mouth_out = mouth_out.astype(np.float32)
            timings["motion"] = time.perf_counter() - t0

        # 4-5. texture and compositing, streamed into the encoder batch by batch
        duration = len(wav) / audio_mod.SAMPLE_RATE
        timings.update(texture=0.0, composite=0.0, encode=0.0)
        frames_out: list[np.ndarray] | None = [] if return_frames else None
        writer = None
        if output is not None:
            h, w = img.shape[:2]
            writer = media.VideoWriter(output, audio_mod.FPS, w, h, audio=audio if not isinstance(audio, np.ndarray)
                                       else wav, audio_sr=audio_mod.SAMPLE_RATE, crf=options.crf, duration=duration,
                                       label=provenance.label_for(self, "text" if options.text else "photo", options))
            writer.open()
        try:
            for start in range(0, n, options.batch_size):
                stop = min(n, start + options.batch_size)
                for k, out in enumerate(paint(mouth_canon[start:stop], mouth_img[start:stop], timings)):
                    if animator is not None:
                        t0 = time.perf_counter()
                        out = animator.apply(out, plan.pose[start + k], plan.closure[start + k])
                        timings["motion"] += time.perf_counter() - t0
                    if writer is not None:
                        t0 = time.perf_counter()
                        writer.write(out)
                        timings["encode"] += time.perf_counter() - t0
                    if frames_out is not None:
                        frames_out.append(out)
                if progress is not None:
                    progress(stop, n)
            if writer is not None:
                t0 = time.perf_counter()
                writer.close()
                timings["encode"] += time.perf_counter() - t0
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        timings["total"] = time.perf_counter() - t_start
        return RenderResult(
            output=str(output) if output is not None else None, fps=audio_mod.FPS, n_frames=n, duration=duration,
            mouth_landmarks=mouth_out, mouth_canonical=mouth_canon.astype(np.float32), face_box=det.box,
            n_faces=n_faces, frames=frames_out, timings=timings, motion=plan,
        )

    @_exclusive
    def mouth_track(self, image: str | os.PathLike | np.ndarray, audio: str | os.PathLike | np.ndarray, *,
                    options: RenderOptions = RenderOptions(), phonemes=None) -> np.ndarray:
        """The mouth track ``render`` would paint for these inputs, (T, 59, 3) canonical cm (its
        ``mouth_canonical``), without painting a frame: for measuring lip sync (``benchmark --live``,
        scripts/eval_live_stream.py)."""
        return self._track(image, audio, options, {}, phonemes)[-1].astype(np.float32)

    def _track(self, image, audio, options: RenderOptions, timings: dict[str, float], phonemes):
        """render's steps 1-3: the inputs, the face and its resting mouth, the mouth track from the audio."""
        t_start = time.perf_counter()
        # 1. inputs
        img_name = str(image) if not isinstance(image, np.ndarray) else "<array>"
        img = media.load_image(image) if not isinstance(image, np.ndarray) else image
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"image {img_name} must be RGB uint8 (H, W, 3), got {img.shape} {img.dtype}")
        face.check_image_size(img.shape[1], img.shape[0], img_name)
        img = self._fit_size(img, options.max_size)
        wav, energy = load_speech(audio, max_seconds=options.max_audio_seconds)
        timings["load"] = time.perf_counter() - t_start

        # 2. the face: landmarks, pose, resting mouth
        t0 = time.perf_counter()
        det, n_faces = self.analyze_face(img, img_name, options.face_index)
        frame = face.FaceFrame.fit(det.landmarks)
        own = frame.to_canonical(det.landmarks[face.MOUTH])  # (59, 3) the photo's own mouth
        # the mouth stage rests on a neutral closed mouth (unless asked to keep the photo's expression)
        neutral = own if self.painter is None else mouth.neutral_rest(own, 1.0 - options.keep_expression)
        timings["face"] = time.perf_counter() - t0

        # 3. mouth landmarks from audio, placed into the image by the face's pose
        mouth_canon = self.predict_mouth(wav, neutral, motion_scale=options.motion_scale,
                                         silence_gate=options.silence_gate, timings=timings, energy=energy,
                                         phonemes=phonemes)  # (T, 59, 3)
        if self.painter is not None:  # the mouth stage's temporal smoothing of its targets (MouthOptions.smooth)
            mouth_canon = self.painter.smooth_track(mouth_canon)
        return img, img_name, wav, energy, det, n_faces, frame, own, mouth_canon

    def stream(self, image, chunks, **kwargs):
        """Live: frames as the audio ``chunks`` arrive (talkingface.live.stream: sample_rate, options (LiveOptions),
        realtime, stats). A generator; one stream at a time per pipeline (the face tracker and models are shared)."""
        from .live import stream

        return stream(self, image, chunks, **kwargs)

    def live_model(self):
        """(the live landmark model, its sync delay), loaded on first use from the checkpoint folder."""
        if self._live is None:
            from .live import load_live_model

            model, delay = load_live_model(self.checkpoint_dir)
            self._live = (model.to(self.device), delay)
        return self._live

    def whisper_encoder(self) -> audio_mod.WhisperEncoder:
        """The Whisper encoder, shared with the offline features when they are Whisper's too."""
        if getattr(self.audio_encoder, "_whisper", None) is None:
            self.audio_encoder._whisper = audio_mod.WhisperEncoder(device=str(self.device))
        return self.audio_encoder._whisper

    def donors(self) -> list[mouth.InteriorSource]:
        if self._donors is None:
            self._donors = mouth.load_donors()
        return self._donors

    def photo_interior(self, img: np.ndarray, det: face.DetectedFace, frame: face.FaceFrame
                       ) -> mouth.InteriorSource | None:
        """Where a photo's mouth interior comes from: the photo itself when its mouth is open (its own teeth),
        else a wide-open shipped donor showing its teeth, colour-matched (greyscale for a black-and-white photo)."""
        a_int = mouth.crop_affine(frame, mouth.INTERIOR_SIZE)
        crop = face.warp_crop(img, a_int, mouth.INTERIOR_SIZE)
        own = mouth.InteriorSource(crop, face.apply_affine(det.landmarks, a_int))
        if own.opening >= 0.04:  # about 3 mm of visible interior
            return own
        donors = self.donors()
        if not donors:
            return None
        # a wide-open donor that shows its upper teeth (not a tongue or a dark cavity)
        wide = [d for d in donors if d.opening >= 0.6 * max(d.opening for d in donors)]
        best = max(wide, key=mouth.teeth_score)
        return mouth.match_colour(best, crop, mouth.is_greyscale(img, det.box))

    def _photo_painter(self, img, det, frame, own):
        """paint(targets (b, 59, 3) canonical, targets in the image, timings) -> b frames, by the mouth stage."""
        painter = self.painter
        interior = self.photo_interior(img, det, frame)

        def paint(targets: np.ndarray, _img_pts: np.ndarray, timings: dict) -> list[np.ndarray]:
            t0 = time.perf_counter()
            jobs = [painter.prepare(img, det.landmarks, frame, t, own, interior) for t in targets]
            t1 = time.perf_counter()
            painter.refine_batch(jobs)
            t2 = time.perf_counter()
            frames = [painter.finish(img, j) for j in jobs]
            timings["texture"] += t2 - t1
            timings["composite"] += (t1 - t0) + time.perf_counter() - t2  # warp + interior + paste
            return frames

        return paint

    def _photo_generator(self, img, det, frame):
        """paint(...) for the first version's 128 px generator and compositor."""
        size = self.crop_size
        affine = frame.crop_affine(size)  # (2, 3) image -> crop
        crop = face.warp_crop(img, affine, size)
        compositor = Compositor(img.shape[:2], affine, size, face.apply_affine(det.landmarks[face.MOUTH], affine),
                                face.apply_affine(det.landmarks[face.NOSE_LINE], affine))
        ref = to_tensor(crop[None]).to(self.device)  # (1, 3, S, S)

        def paint(_targets: np.ndarray, img_pts: np.ndarray, timings: dict) -> list[np.ndarray]:
            t0 = time.perf_counter()
            pts = face.apply_affine(img_pts, affine)
            b = len(pts)
            with torch.no_grad():
                refs = ref.expand(b, -1, -1, -1)
                gen_np = to_uint8(self.generator.paint(refs, refs, sketches(pts, size).to(self.device)))  # (b, S, S, 3)
            timings["texture"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            frames = [compositor(img, gen_np[i], crop, pts[i]) for i in range(b)]
            timings["composite"] += time.perf_counter() - t0
            return frames

        return paint

    @_exclusive
    def dub(self, video, audio, *, output=None, options=None, phonemes=None, progress=None, stage=None,
            return_frames: bool = False, mouth_fn=None):
        """Dub ``video`` (path) with ``audio``: only the mouth region of the chosen face changes and the audio is
        replaced. See talkingface.dub.dub and DubOptions; returns a DubResult."""
        from .dub import DubOptions, dub

        return dub(self, video, audio, output=output, options=options or DubOptions(), phonemes=phonemes,
                   progress=progress, stage=stage, return_frames=return_frames, mouth_fn=mouth_fn)

    @staticmethod
    def _fit_size(img: np.ndarray, max_size: int) -> np.ndarray:
        """Scale down to ``max_size`` on the longer side, then crop to even dimensions (H.264 needs them)."""
        h, w = img.shape[:2]
        if max(h, w) > max_size:
            k = max_size / max(h, w)
            img = cv2.resize(img, (max(2, int(w * k)), max(2, int(h * k))), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        return np.ascontiguousarray(img[: h - h % 2, : w - w % 2])

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None


def load(checkpoint_dir: str | os.PathLike | None = None, *, device: str = "cpu",
         landmarks: str = DEFAULT_MODELS["landmarks"], texture: str = DEFAULT_MODELS["texture"],
         mouth_options: mouth.MouthOptions | None = None) -> Pipeline:
    """Build the pipeline from named, hash-verified checkpoints (default: the shipped ``checkpoints/``).

    mouth_options: the mouth stage's settings (``mouth.MouthOptions``; default: its defaults); ignored by
    texture-v1."""
    directory = Path(checkpoint_dir) if checkpoint_dir else checkpoints.DEFAULT_DIR
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but torch sees no CUDA device")
    lm, meta = checkpoints.load_module(checkpoints.resolve(landmarks, directory), build, LandmarkConfig,
                                       model="landmarks")
    if texture == "warp":  # the mouth stage without its refine network: no weights
        tex = mouth.MouthPainter(None, device, mouth_options)
    else:
        kind = checkpoints.read_manifest(directory).get(texture, {}).get("model", "texture")
        if kind == "mouth":
            net, _ = checkpoints.load_module(checkpoints.resolve(texture, directory), mouth.RefineNet,
                                             mouth.RefineConfig, model="mouth")
            tex = mouth.MouthPainter(net, device, mouth_options)
        else:
            tex, _ = checkpoints.load_module(checkpoints.resolve(texture, directory), MouthGenerator, TextureConfig,
                                             model="texture")
    # frames the predictions are delayed by, decided by cross-validation inside the training speakers and
    # stored with the weights (landmark_training.cross_validate_sync_delay); 0 for a checkpoint without it
    delay = int(meta.get("info", {}).get("sync_delay", 0))
    pipe = Pipeline(lm, tex, device=device, sync_delay=delay, texture_name=texture)
    pipe.checkpoint_dir = directory
    manifest = checkpoints.read_manifest(directory)  # the weights' hashes, for the outputs' content credentials
    pipe.model_hashes = {n: manifest.get(n, {}).get("sha256", "none") for n in (landmarks, texture)}
    return pipe
