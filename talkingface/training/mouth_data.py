"""Training data for the mouth refine network (talkingface.mouth): aligned mouth crops with the full mesh.

Each clip is decoded at 25 fps and tracked with FaceMesh; every near-frontal frame gives a ``mouth.CROP_SIZE``
crop of the canonical mouth square (``mouth.crop_affine``, anti-aliased) and its 478 landmarks in crop
pixels. The refine network never needs audio, so the silent clips (../shared/data/videos_silent: open mouths,
teeth, expressions) are used as well as the training speakers of ../shared/data/videos; validation speakers
(talkingface.training.speakers) are left out.

One ``.npz`` per clip: crops (T, S, S, 3) uint8, points (T, 478, 2) float32, frame (T,) int32, yaw (T,) float32.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import face, media, mouth
from .prepare import VIDEO_EXTS
from .speakers import VALIDATION_SPEAKERS, speaker_of

log = logging.getLogger(__name__)


def prepare_clip(path: str, tracker: face.FaceTracker, size: int, max_angle: float = 30.0) -> dict[str, np.ndarray]:
    crops, points, frames, yaws = [], [], [], []
    for i, frame in enumerate(media.iter_video_frames(path, fps=25.0)):
        faces = tracker.detect(frame)
        if not faces:
            continue
        lm = faces[0].landmarks
        pose = face.head_pose(lm, frame.shape[:2])
        if abs(pose.yaw) > max_angle or abs(pose.pitch) > max_angle:
            continue
        ff = face.FaceFrame.fit(lm)
        aff = mouth.crop_affine(ff, size)
        crops.append(face.warp_crop(frame, aff, size))
        points.append(face.apply_affine(lm, aff).astype(np.float32))
        frames.append(i)
        yaws.append(pose.yaw)
    return {"crops": np.asarray(crops, np.uint8).reshape(-1, size, size, 3),
            "points": np.asarray(points, np.float32).reshape(-1, 478, 2),
            "frame": np.asarray(frames, np.int32), "yaw": np.asarray(yaws, np.float32)}


def prepare(folders: list[str], out_dir: str, size: int = mouth.CROP_SIZE) -> list[dict]:
    paths = []
    for folder in folders:
        for p in sorted(Path(folder).iterdir()):
            if p.suffix.lower() not in VIDEO_EXTS:
                continue
            speaker = speaker_of(p.stem, folder)
            if speaker in VALIDATION_SPEAKERS:
                continue
            paths.append((p, speaker))
    os.makedirs(out_dir, exist_ok=True)
    index = []
    with face.FaceTracker(static=False, max_faces=1) as tracker:
        for p, speaker in tqdm(paths, desc="clips", unit="clip"):
            out = os.path.join(out_dir, p.stem + ".npz")
            if not os.path.exists(out):
                arrays = prepare_clip(str(p), tracker, size)
                tmp = os.path.join(out_dir, f".{p.stem}.tmp.npz")
                np.savez(tmp, **arrays)
                os.replace(tmp, out)
                n = len(arrays["frame"])
            else:
                n = len(np.load(out)["frame"])
            index.append({"clip": p.stem, "speaker": speaker, "frames": int(n), "source": str(p)})
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump({"crop_size": size, "clips": index}, f, indent=1)
    return index
