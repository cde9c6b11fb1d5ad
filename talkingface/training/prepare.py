"""Dataset preparation: a folder of talking-head clips -> one compact .npz per clip.

Each clip is decoded at a constant 25 fps, tracked with FaceMesh, and stored as arrays that the training
loops (torch + numpy only, so they also run on a GPU machine without mediapipe) can read:

==============  =====================  ===================================================================
key             shape                  what
==============  =====================  ===================================================================
landmarks       (T, 478, 3) float32    FaceMesh in image pixels
mouth_canon     (T, 59, 3) float32     face.MOUTH points in the pose-normalized canonical space (cm)
mouth_crop      (T, 59, 2) float32     the same points in mouth-crop pixels
crops           (T, S, S, 3) uint8     aligned mouth crops (face.FaceFrame.crop_affine)
valid           (T,) bool              a face was found
yaw, pitch      (T,) float32           head pose, degrees
whisper         (T, 384) float32       audio features (audio.WhisperEncoder)
whisper_stream  (T, 384) float32       streamable audio features (audio.StreamingWhisper); the array is named
_w100                                  by its window (audio.StreamWindow.key: whisper_stream_w100 for the 4 s
                                       audio.LIVE_WINDOW, whisper_stream for the first live models' 2 s);
                                       other windows go to side files <clip>.<key>.npy (``add_stream_features``)
logmel          (T, 320) float32       audio features (audio.logmel_features)
energy          (T,) float32           speech-band energy, dB
==============  =====================  ===================================================================
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import audio as audio_mod
from .. import face, media
from .speakers import speaker_of, split_of

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".mpg")


def track_clip(path: str, size: int, tracker: face.FaceTracker) -> dict[str, np.ndarray]:
    """Decode at 25 fps and track every frame. Returns the per-frame arrays of the module docstring."""
    keys = ("landmarks", "mouth_canon", "mouth_crop", "crops", "yaw", "pitch")
    rows: dict[str, list] = {k: [] for k in keys + ("valid",)}
    last = None
    for frame in media.iter_video_frames(path, fps=audio_mod.FPS):
        faces = tracker.detect(frame)
        if faces:
            lm = faces[0].landmarks
            ff = face.FaceFrame.fit(lm)
            aff = ff.crop_affine(size)
            crop = face.warp_crop(frame, aff, size)
            pts = face.apply_affine(lm[face.MOUTH], aff)
            pose = face.head_pose(lm, frame.shape[:2])
            last = (lm, ff.to_canonical(lm[face.MOUTH]), pts, crop, pose.yaw, pose.pitch)
            valid = True
        else:
            valid = False
            if last is None:
                last = (np.zeros((478, 3)), np.zeros((len(face.MOUTH), 3)), np.zeros((len(face.MOUTH), 2)),
                        np.zeros((size, size, 3), np.uint8), 0.0, 0.0)
        for key, value in zip(keys, last, strict=True):
            rows[key].append(value)
        rows["valid"].append(valid)
    out = {k: np.asarray(v) for k, v in rows.items()}
    for k in ("landmarks", "mouth_canon", "mouth_crop", "yaw", "pitch"):
        out[k] = out[k].astype(np.float32)
    return out


def prepare_folder(videos: str, out_dir: str, *, size: int = 128, limit: int | None = None,
                   window: audio_mod.StreamWindow = audio_mod.LIVE_WINDOW) -> list[dict]:
    """Prepare every clip of ``videos`` into ``out_dir`` (streamable features with ``window``); writes
    ``index.json`` and returns its entries."""
    paths = sorted(p for p in Path(videos).iterdir() if p.suffix.lower() in VIDEO_EXTS)[:limit]
    if not paths:
        raise FileNotFoundError(f"no video clips in '{videos}'")
    os.makedirs(out_dir, exist_ok=True)
    encoder = audio_mod.WhisperEncoder()
    stream = audio_mod.StreamingWhisper(encoder, window)
    index = []
    with face.FaceTracker(static=False, max_faces=1) as tracker:
        for p in tqdm(paths, desc="clips", unit="clip"):
            info = media.probe(str(p))
            if not info.has_audio:
                log.warning("skipping '%s': no audio track", p)
                continue
            wav = media.load_audio(str(p))
            arrays = track_clip(str(p), size, tracker)
            feats = {
                "whisper": encoder(wav),
                window.key: stream(wav),
                "logmel": audio_mod.logmel_features(wav),
                "energy": audio_mod.speech_energy(wav),
            }
            n = min(len(arrays["valid"]), len(feats["energy"]))
            arrays = {k: v[:n] for k, v in {**arrays, **feats}.items()}
            speaker = speaker_of(p.stem, str(videos))
            entry = {
                "clip": p.stem, "speaker": speaker, "split": split_of(speaker), "frames": int(n),
                "valid_ratio": float(arrays["valid"].mean()), "source": str(p),
            }
            tmp = os.path.join(out_dir, f".{p.stem}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, os.path.join(out_dir, f"{p.stem}.npz"))
            index.append(entry)
            log.info("%s: %d frames, %.0f%% with a face, speaker %s (%s)", p.stem, n, 100 * entry["valid_ratio"],
                     speaker, entry["split"])
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump({"crop_size": size, "fps": audio_mod.FPS, "clips": index}, f, indent=1)
    return index


def add_stream_features(out_dir: str, window: audio_mod.StreamWindow = audio_mod.LIVE_WINDOW) -> int:
    """Add streamable Whisper features with another ``window`` to a prepared dataset: a side file
    ``<clip>.<window.key>.npy`` beside each ``<clip>.npz`` (from the clip's source audio, the path in index.json)
    and beside each audio-only recording in ``<out_dir>/audio`` (``prepare_audio_folder``; its source is found in
    ``sources.json`` there); ``landmark_training.load_features`` reads them. Returns how many files were written
    (those that have the features already are skipped)."""
    with open(os.path.join(out_dir, "index.json")) as f:
        jobs = [(os.path.join(out_dir, e["clip"] + ".npz"), e["source"]) for e in json.load(f)["clips"]]
    audio_dir = os.path.join(out_dir, "audio")
    if os.path.exists(os.path.join(audio_dir, "sources.json")):
        with open(os.path.join(audio_dir, "sources.json")) as f:
            jobs += [(os.path.join(audio_dir, n + ".npz"), src) for n, src in sorted(json.load(f).items())]
    stream = None
    done = 0
    for npz, source in tqdm(jobs, desc=f"stream features ({window.key})", unit="file"):
        if not _lacks_features(npz, window.key):
            continue
        with np.load(npz) as d:
            n = len(d["energy"])
        stream = stream or audio_mod.StreamingWhisper(audio_mod.WhisperEncoder(), window)
        _save_side(npz, window.key, stream(media.load_audio(source)), n)
        done += 1
    return done


def _lacks_features(npz: str, key: str) -> bool:
    """Whether a prepared ``<name>.npz`` exists without features ``key``, inside it or as its side file."""
    if not os.path.exists(npz):
        return True
    with np.load(npz) as d:
        if key in d.files:
            return False
    return not os.path.exists(f"{npz[:-4]}.{key}.npy")


def _save_side(npz: str, key: str, feats: np.ndarray, n: int) -> None:
    """Features ``key`` of ``<name>.npz`` (n frames: the last row repeated or cut to fit) as the side file
    ``<name>.<key>.npy`` (landmark_training.load_features reads it), written whole or not at all."""
    feats = np.concatenate([feats, np.repeat(feats[-1:], max(0, n - len(feats)), axis=0)])[:n]
    side = f"{npz[:-4]}.{key}.npy"
    tmp = side + ".tmp.npy"
    np.save(tmp, feats)
    os.replace(tmp, side)


AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a")


def change_speed(wav: np.ndarray, speed: float) -> np.ndarray:
    """Speed perturbation (tempo and pitch together, as played faster or slower): ``speed`` 1.1 is 10 % faster
    and 1/1.1 as long. Resampled with a polyphase filter; the sample rate stays."""
    from fractions import Fraction

    from scipy.signal import resample_poly

    if not 0.5 <= speed <= 2.0:
        raise ValueError(f"speed {speed} is outside 0.5-2")
    if speed == 1.0:
        return wav
    f = Fraction(1 / speed).limit_denominator(100)
    return resample_poly(wav.astype(np.float64), f.numerator, f.denominator).astype(np.float32)


def prepare_audio_folder(folder: str, out_dir: str,
                         window: audio_mod.StreamWindow = audio_mod.LIVE_WINDOW, *,
                         speed: float = 1.0) -> list[str]:
    """Features of speech recordings without video (``../shared/data/audio``), for distilling a landmark model
    from another: ``<out_dir>/<name>.npz`` with the same feature arrays as a clip (whisper, streamable whisper
    with ``window``, logmel, energy) and no face, and ``sources.json`` (name -> recording). Files already there
    are kept; a file whose name mentions a validation speaker (``speakers.VALIDATION_NAME_HINTS``) is skipped.
    ``speed`` != 1: the recordings played that much faster (``change_speed``; a distillation student learns the
    teacher's predictions on them: more speech to learn from). Returns the names ready in ``out_dir``."""
    from .speakers import names_validation_speaker

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in AUDIO_EXTS)
    if not paths:
        raise FileNotFoundError(f"no audio files in '{folder}'")
    os.makedirs(out_dir, exist_ok=True)
    encoder = stream = None
    sources = {}
    for p in tqdm(paths, desc="audio features", unit="file"):
        if names_validation_speaker(p.stem):
            log.info("skipping %s: it names a validation speaker", p.name)
            continue
        path = os.path.join(out_dir, f"{p.stem}.npz")
        if _lacks_features(path, window.key):
            if encoder is None:
                encoder = audio_mod.WhisperEncoder()
                stream = audio_mod.StreamingWhisper(encoder, window)
            wav = change_speed(media.load_audio(str(p)), speed)
            if not os.path.exists(path):
                feats = {"whisper": encoder(wav), window.key: stream(wav),
                         "logmel": audio_mod.logmel_features(wav), "energy": audio_mod.speech_energy(wav)}
                n = min(len(v) for v in feats.values())
                tmp = os.path.join(out_dir, f".{p.stem}.tmp.npz")
                np.savez(tmp, **{k: v[:n] for k, v in feats.items()})
                os.replace(tmp, path)
            else:  # prepared for another window: this one as a side file
                with np.load(path) as d:
                    n = len(d["energy"])
                _save_side(path, window.key, stream(wav), n)
        sources[p.stem] = str(p)
    tmp = os.path.join(out_dir, ".sources.json.tmp")
    with open(tmp, "w") as f:
        json.dump(sources, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "sources.json"))
    return list(sources)
