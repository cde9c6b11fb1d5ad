"""Mouth data for animators: per-frame mouth landmarks and a viseme track, as JSON or CSV/TSV.

    talkingface lipsync speech.wav --format json -o mouth.json           # audio -> data, no video
    talkingface lipsync --text "Hello there." --fps 24 -o mouth.tsv

    doc = lipsync.mouth_track_json(render_result, phonemes)            # a render's landmark track as a dict
    lipsync.write(doc, "mouth.csv")                                      # + mouth.visemes.csv

The format is documented in docs/LIPSYNC.md. Landmarks are the 59 mouth points the landmark model predicts
(face.MOUTH: 20 outer lip, 20 inner lip, 19 jaw points, MediaPipe FaceMesh ids), either in the
pose-normalized face space (``"canonical"``: centimetres, x to the face's left-to-right, y up, z towards the
viewer) or in image pixels (``"image"``: x right, y down). Visemes are Rhubarb Lip Sync's A-H and X.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import face
from .errors import InputError
from .phonemes import VISEMES, Phone, viseme_segments

FORMAT = "talkingface-lipsync"
VERSION = 1
FORMATS = ("json", "csv", "tsv")
MODEL_FPS = 25


def resample(track: np.ndarray, fps_in: float, fps_out: float, n_out: int | None = None) -> np.ndarray:
    """Linear resampling of a per-frame track in time; frame i stands for the middle of [i, i+1) / fps.
    (T, ...) -> (n_out, ...)."""
    track = np.asarray(track, dtype=np.float32)
    if fps_out == fps_in and (n_out is None or n_out == len(track)):
        return track
    if n_out is None:
        n_out = max(1, round(len(track) / fps_in * fps_out))
    src = ((np.arange(n_out) + 0.5) / fps_out) * fps_in - 0.5  # fractional source frame
    src = np.clip(src, 0, len(track) - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, len(track) - 1)
    a = (src - i0).reshape(-1, *([1] * (track.ndim - 1)))
    return (1 - a) * track[i0] + a * track[i1]


def _opening_width(points: np.ndarray, space: str) -> tuple[np.ndarray, np.ndarray]:
    """Inner-lip gap (13-14) and corner distance (61-291) per frame, in the document's units."""
    gap = face.lip_gap(points, y_down=space == "image")  # image y grows downwards
    return np.maximum(gap, 0.0), face.mouth_width(points, 1.0)


def mouth_data(points: np.ndarray, fps: float, *, phonemes: Sequence[Phone] | None = None,
               duration: float | None = None, out_fps: float | None = None, space: str = "image",
               source: dict | None = None, decimals: int | None = None) -> dict:
    """The export document for a mouth track.

    points: (T, 59, 2|3) per frame at ``fps`` in face.MOUTH order; phonemes: timing of the same audio (gives
    the viseme track); out_fps: resample to this frame rate (default: ``fps``); space: "image" (pixels) or
    "canonical" (cm).
    """
    if space not in ("image", "canonical"):
        raise ValueError(f"space must be 'image' or 'canonical', not {space!r}")
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 3 or points.shape[1] != len(face.MOUTH) or points.shape[2] not in (2, 3):
        raise InputError(f"mouth track must be (T, {len(face.MOUTH)}, 2|3), got {points.shape}")
    out_fps = float(out_fps or fps)
    if not (1 <= out_fps <= 240):
        raise InputError(f"frame rate {out_fps} is out of range (1 to 240)")
    duration = float(duration if duration is not None else len(points) / fps)
    n_out = max(1, round(duration * out_fps))
    pts = resample(points, fps, out_fps, n_out)  # (n_out, 59, D)
    opening, width = _opening_width(pts, space)
    decimals = decimals if decimals is not None else (2 if space == "image" else 4)
    segs = viseme_segments(phonemes, fps=out_fps, duration=duration) if phonemes else []
    frame_vis = ["X"] * n_out
    for s in segs:
        for i in range(round(s["start"] * out_fps), min(n_out, round(s["end"] * out_fps))):
            frame_vis[i] = s["viseme"]
    # frames without a mouth (a dubbed video's passed-through frames have NaN points) export as null
    found = np.isfinite(pts).all(axis=(1, 2))
    frames = [{"frame": i, "time": round(i / out_fps, 4), "viseme": frame_vis[i] if segs else None,
               "open": round(float(opening[i]), decimals) if found[i] else None,
               "width": round(float(width[i]), decimals) if found[i] else None,
               "points": np.round(pts[i], decimals).tolist() if found[i] else None} for i in range(n_out)]
    return {
        "format": FORMAT,
        "version": VERSION,
        "fps": out_fps,
        "n_frames": n_out,
        "duration": round(duration, 4),
        "space": space,
        "units": "px" if space == "image" else "cm",
        "axes": ("x right, y down (image pixels)" if space == "image"
                 else "x to the image's right for a frontal face, y up, z towards the viewer (face centre at 0)"),
        "points": {
            "count": len(face.MOUTH),
            "mediapipe_ids": list(face.MOUTH),
            "groups": {"lips_outer": [0, 20], "lips_inner": [20, 40], "jaw": [40, 59]},
        },
        "source": source or {},
        "viseme_set": dict(VISEMES),
        "visemes": [{"start": round(s["start"], 4), "end": round(s["end"], 4), "viseme": s["viseme"],
                     "phonemes": s["phonemes"]} for s in segs],
        "phonemes": [{"symbol": p.symbol, "start": round(p.start, 4), "end": round(p.end, 4)}
                     for p in (phonemes or [])],
        "frames": frames,
    }


def mouth_track_json(result, phonemes: Sequence[Phone] | None = None, *, fps: float | None = None,
                     source: dict | None = None) -> dict:
    """A RenderResult-like object (``mouth_landmarks`` (T, 59, 2) image pixels, ``fps``, ``duration``) and
    optional phoneme timing -> the export document (image space) at ``fps`` (default: the render's)."""
    duration = getattr(result, "duration", None)
    return mouth_data(result.mouth_landmarks, result.fps, phonemes=phonemes, duration=duration, out_fps=fps,
                      space="image", source=source)


def write_mouth_json(path: str | os.PathLike, result, phonemes: Sequence[Phone] | None = None, *,
                     source: dict | None = None) -> None:
    """A render's or a dub's mouth track as the documented lip-sync JSON: the one writer the CLI's
    ``--landmarks-json`` and the web page use."""
    write(mouth_track_json(result, phonemes, source=source), path, "json")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.resolve().parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def format_of(path: str | os.PathLike, fmt: str | None = None) -> str:
    fmt = (fmt or Path(path).suffix.lstrip(".") or "json").lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown export format '{fmt}' for '{path}' (json, csv or tsv)")
    return fmt


def visemes_path(path: str | os.PathLike, fmt: str) -> Path | None:
    """The second file a CSV/TSV export writes (the viseme segments), None for JSON."""
    out = Path(path)
    return None if fmt == "json" else out.with_name(f"{out.stem}.visemes{out.suffix or '.' + fmt}")


def write(doc: dict, path: str | os.PathLike, fmt: str | None = None) -> list[str]:
    """Write the document as JSON, or as CSV/TSV (frames in ``path``, visemes in ``<stem>.visemes.<ext>``).
    Files are written to a temp name and renamed. Returns the paths written."""
    out = Path(path)
    fmt = format_of(out, fmt)
    if not out.resolve().parent.is_dir():
        raise InputError(f"output folder '{out.resolve().parent}' does not exist (for '{path}')")
    if fmt == "json":
        _atomic_write(out, lambda f: json.dump(doc, f, ensure_ascii=False, separators=(",", ":")))
        return [str(out)]
    delim = "," if fmt == "csv" else "\t"
    dims = "xyz" if doc["space"] == "canonical" else "xy"
    header = ["frame", "time", "viseme", "open", "width"] + [f"{d}{k}" for k in range(doc["points"]["count"])
                                                             for d in dims]

    def frames(f) -> None:
        w = csv.writer(f, delimiter=delim, lineterminator="\n")
        w.writerow(header)
        for fr in doc["frames"]:
            pts = [v for p in fr["points"] for v in p] if fr["points"] is not None else [""] * (len(header) - 5)
            w.writerow([fr["frame"], fr["time"], fr["viseme"] or "", "" if fr["open"] is None else fr["open"],
                        "" if fr["width"] is None else fr["width"]] + pts)

    def visemes(f) -> None:
        w = csv.writer(f, delimiter=delim, lineterminator="\n")
        w.writerow(["start", "end", "viseme", "phonemes"])
        for s in doc["visemes"]:
            w.writerow([s["start"], s["end"], s["viseme"], " ".join(s["phonemes"])])

    vis_path = visemes_path(out, fmt)
    _atomic_write(out, frames)
    _atomic_write(vis_path, visemes)
    return [str(out), str(vis_path)]


def default_neutral() -> np.ndarray:
    """A resting mouth for when there is no photo: MediaPipe's canonical face, lips closed. (59, 3) cm."""
    from .phonemes import close_lips

    mouth = face.canonical_mesh()[face.MOUTH].astype(np.float32)
    return close_lips(mouth[None], np.ones(1, np.float32), mouth)[0]


def mouth_track(pipe, wav: np.ndarray, *, phonemes: Sequence[Phone] | None = None, image=None,
                face_index: int | None = None, silence_gate: bool = True,
                motion_scale: float = 1.0) -> tuple[np.ndarray, str]:
    """Speech (n,) float32 16 kHz -> (mouth points (T, 59, D) at 25 fps, space). With ``image`` (path or RGB
    array) the track is the photo's own mouth in its pixels ("image"); without, a generic face's mouth in
    the canonical space (cm)."""
    from . import media

    if image is None:
        track = pipe.predict_mouth(wav, default_neutral(), motion_scale=motion_scale, silence_gate=silence_gate,
                                   phonemes=phonemes)
        return track.astype(np.float32), "canonical"
    name = str(image) if not isinstance(image, np.ndarray) else "<array>"
    img = media.load_image(image) if not isinstance(image, np.ndarray) else image
    det, _ = pipe.analyze_face(img, name, face_index)
    frame = face.FaceFrame.fit(det.landmarks)
    neutral = frame.to_canonical(det.landmarks[face.MOUTH])
    track = pipe.predict_mouth(wav, neutral, motion_scale=motion_scale, silence_gate=silence_gate,
                               phonemes=phonemes)  # (T, 59, 3)
    n = len(track)
    pts = frame.to_image(track.reshape(-1, 3)).reshape(n, -1, 3)[..., :2]
    return pts.astype(np.float32), "image"
