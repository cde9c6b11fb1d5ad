"""Face tracking over a video: one face followed through every frame, its pose smoothed without lag.

Pass 1 of dubbing (talkingface.dub). For every decoded frame it keeps only small per-frame numbers (the
face's similarity to the canonical face, its mouth and nose points, head pose and an 8x8 thumbnail used to
check frame identity when the video is decoded again), about 2 KB per frame, plus a bounded reservoir of
aligned mouth crops (the appearance bank: generator references and ``--adapt`` training data). Frames are
never kept, so memory does not grow with the video's length beyond those numbers.

Smoothing is zero-phase (a Gaussian applied forwards and backwards in time over each run of tracked
frames), so it removes landmark jitter without the lag of a causal filter.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from . import face, media, metrics, mouth
from .errors import NoFaceError

log = logging.getLogger(__name__)

THUMB = 8  # side of the per-frame fingerprint


def thumbnail(frame: np.ndarray) -> np.ndarray:
    """(THUMB, THUMB) uint8 grey fingerprint of a frame."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def read_ahead(frames: Iterable[np.ndarray], depth: int = 2) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(frame, thumbnail) for each of ``frames``, read and fingerprinted up to ``depth`` frames ahead by a
    background thread (``media.ahead``): the wait for the decoder and the thumbnail overlap the face mesh."""
    return media.ahead(frames, lambda fr: (fr, thumbnail(fr)), depth, "talkingface-track-read")


@dataclass
class BankEntry:
    frame: int  # source frame index
    crop: np.ndarray  # (S, S, 3) uint8 aligned crop
    mouth: np.ndarray  # (59, 2) mouth points in crop pixels
    opening: float  # inner-lip gap / iod
    interior: np.ndarray | None = None  # (mouth.INTERIOR_SIZE,)*2 + (3,) uint8 aligned mouth crop (mouth stage)
    interior_points: np.ndarray | None = None  # (478, 2) FaceMesh points in ``interior`` pixels


@dataclass
class VideoTrack:
    """Per-frame results of tracking one face through a video (N frames at the rate it was decoded at)."""

    width: int
    height: int
    valid: np.ndarray  # (N,) bool: the chosen face was found
    scale: np.ndarray  # (N,) FaceFrame.scale (smoothed)
    rot: np.ndarray  # (N, 3, 3) FaceFrame.rot (smoothed, orthonormal)
    trans: np.ndarray  # (N, 3) FaceFrame.t (smoothed)
    mouth_img: np.ndarray  # (N, 59, 2) the frame's own mouth, image pixels (smoothed)
    nose_img: np.ndarray  # (N, 5, 2) face.NOSE_LINE, image pixels (smoothed)
    mouth_canon: np.ndarray  # (N, 59, 3) the frame's own mouth in the canonical space
    points: np.ndarray  # (N, 478, 2) all FaceMesh points, image pixels, NOT smoothed: they are where the frame's
    #   pixels are, and the mouth stage's warp moves them by (target - mouth_canon), so their noise cancels
    yaw: np.ndarray  # (N,) degrees, against the face's line of sight (face.facing_angles)
    pitch: np.ndarray  # (N,) degrees, likewise
    thumbs: np.ndarray  # (N, THUMB, THUMB) uint8
    n_faces_max: int  # most faces seen in one frame
    first_box: tuple[int, int, int, int] | None  # the chosen face's box where it was first found
    bank: list[BankEntry]

    @property
    def n_frames(self) -> int:
        return len(self.valid)

    def frame(self, i: int) -> face.FaceFrame:
        return face.FaceFrame(float(self.scale[i]), self.rot[i], self.trans[i])


def _box_center(box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float64)


def choose_face(faces: list[face.DetectedFace], *, index: int | None, point: tuple[float, float] | None,
                previous: tuple[int, int, int, int] | None) -> face.DetectedFace | None:
    """The tracked face in one frame. Once a face was chosen, the one nearest its last position (within about
    a face width); before that, ``point`` (the face whose box contains it, else the nearest) or ``index``
    (0 = largest) or the largest."""
    if not faces:
        return None
    if previous is not None:
        c = _box_center(previous)
        size = max(previous[2] - previous[0], previous[3] - previous[1], 1)
        dists = [np.linalg.norm(_box_center(f.box) - c) for f in faces]
        best = int(np.argmin(dists))
        return faces[best] if dists[best] < 1.0 * size else None
    if point is not None:
        px, py = point
        inside = [f for f in faces if f.box[0] <= px <= f.box[2] and f.box[1] <= py <= f.box[3]]
        if inside:
            return inside[0]
        return min(faces, key=lambda f: float(np.linalg.norm(_box_center(f.box) - np.array(point))))
    if index is not None:
        return faces[index] if index < len(faces) else None
    return faces[0]


def _gauss_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing along axis 0 with reflected ends. x: (T, ...)."""
    if sigma <= 0 or len(x) < 2:
        return x
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    flat = x.reshape(len(x), -1)
    padded = np.pad(flat, ((r, r), (0, 0)), mode="reflect" if len(x) > r else "edge")
    out = np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(flat.shape[1])], axis=1)
    return out.reshape(x.shape)


def _project_rotations(m: np.ndarray) -> np.ndarray:
    """Nearest rotation matrices to (T, 3, 3) matrices (polar decomposition by SVD)."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u[:, :, 2] *= d[:, None]
    return u @ vt


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a boolean array."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[0::2].tolist(), d[1::2].tolist(), strict=True))


def smooth_track(track: VideoTrack, sigma: float) -> None:
    """Smooth the pose and the mouth/nose points in place, within each run of tracked frames."""
    for a, b in runs(track.valid):
        track.scale[a:b] = _gauss_smooth(track.scale[a:b], sigma)
        track.trans[a:b] = _gauss_smooth(track.trans[a:b], sigma)
        track.rot[a:b] = _project_rotations(_gauss_smooth(track.rot[a:b], sigma))
        track.mouth_img[a:b] = _gauss_smooth(track.mouth_img[a:b], sigma)
        track.nose_img[a:b] = _gauss_smooth(track.nose_img[a:b], sigma)


def track_video(frames: Iterable[np.ndarray], *, video_tracker: face.FaceTracker,
                photo_tracker: face.FaceTracker | None = None, face_index: int | None = None,
                face_point: tuple[float, float] | None = None, crop_size: int = 128, bank_size: int = 256,
                smooth_sigma: float = 1.0, source: str = "video", seed: int = 0,
                progress: Callable[[int], None] | None = None, timings: dict | None = None) -> VideoTrack:
    """Track one face through ``frames`` (an iterator of RGB uint8 frames, consumed once).

    ``video_tracker`` is a FaceTracker(static=False); where it finds nothing, ``photo_tracker`` (the
    full-range detector, slower) is tried every 5th frame, so small faces and faces that re-enter are found.
    Raises NoFaceError when the chosen face is found in no frame at all. ``frames`` are read ahead by a
    background thread (``read_ahead``). ``timings`` receives the seconds spent waiting for frames
    ("decode_track") and tracking ("tracking").
    """
    rng = np.random.default_rng(seed)
    rigid: list = []
    valid, thumbs, mouths, noses, canon, yaws, pitches, allpts = [], [], [], [], [], [], [], []
    bank: list[BankEntry] = []
    seen_valid = 0
    n_faces_max = 0
    previous: tuple[int, int, int, int] | None = None
    first_box = None
    lost = 0
    width = height = 0
    iod = None
    t_decode = t_track = 0.0
    i = -1
    with contextlib.closing(read_ahead(frames)) as items:
        while True:
            t0 = time.perf_counter()
            item = next(items, None)
            t1 = time.perf_counter()
            t_decode += t1 - t0
            if item is None:
                break
            frame, thumb = item
            i += 1
            height, width = frame.shape[:2]
            thumbs.append(thumb)
            faces = video_tracker.detect(frame)
            if not faces and photo_tracker is not None and lost % 5 == 0:
                faces = photo_tracker.detect(frame, tiles=False)  # fast: every 5th lost frame
            n_faces_max = max(n_faces_max, len(faces))
            chosen = choose_face(faces, index=face_index, point=face_point, previous=previous)
            if chosen is None:
                lost += 1
                valid.append(False)
                rigid.append(np.zeros(13))
                mouths.append(np.zeros((len(face.MOUTH), 2), np.float32))
                noses.append(np.zeros((len(face.NOSE_LINE), 2), np.float32))
                canon.append(np.zeros((len(face.MOUTH), 3), np.float32))
                allpts.append(np.zeros((478, 2), np.float32))
                yaws.append(np.nan)
                pitches.append(np.nan)
            else:
                lost = 0
                lm = chosen.landmarks
                previous = chosen.box
                first_box = first_box or chosen.box
                ff = face.FaceFrame.fit(lm)
                yaw, pitch = face.facing_angles(lm, frame.shape[:2])  # an off-centre face is not turned
                valid.append(True)
                rigid.append(np.concatenate([[ff.scale], ff.rot.ravel(), ff.t]))
                mouths.append(lm[face.MOUTH, :2].astype(np.float32))
                noses.append(lm[face.NOSE_LINE, :2].astype(np.float32))
                allpts.append(lm[:, :2].astype(np.float32))
                mc = ff.to_canonical(lm[face.MOUTH]).astype(np.float32)
                canon.append(mc)
                yaws.append(yaw)
                pitches.append(pitch)
                if iod is None:
                    iod = metrics.canonical_iod()
                # reservoir sample of aligned crops (near-frontal frames only): the appearance bank
                if abs(yaw) < 25 and abs(pitch) < 25:
                    seen_valid += 1
                    slot = len(bank) if len(bank) < bank_size else int(rng.integers(seen_valid))
                    if slot < bank_size:
                        affine = ff.crop_affine(crop_size)
                        a_int = mouth.crop_affine(ff, mouth.INTERIOR_SIZE)
                        entry = BankEntry(i, face.warp_crop(frame, affine, crop_size),
                                          face.apply_affine(lm[face.MOUTH], affine).astype(np.float32),
                                          float(metrics.opening(mc[None], iod)[0]),
                                          face.warp_crop(frame, a_int, mouth.INTERIOR_SIZE),
                                          face.apply_affine(lm, a_int).astype(np.float32))
                        if slot == len(bank):
                            bank.append(entry)
                        else:
                            bank[slot] = entry
            t_track += time.perf_counter() - t1
            if progress is not None:
                progress(i + 1)
    if timings is not None:
        timings["decode_track"] = timings.get("decode_track", 0.0) + t_decode
        timings["tracking"] = timings.get("tracking", 0.0) + t_track
    n = len(valid)
    if n == 0:
        raise NoFaceError(f"'{source}' has no video frames")
    valid_a = np.array(valid, bool)
    if n_faces_max == 0:
        raise NoFaceError(f"no face found in any of the {n} frames of '{source}'")
    if face_index is not None and face_index >= n_faces_max:
        raise NoFaceError(f"face index {face_index} requested but '{source}' shows at most {n_faces_max} face(s)")
    if not valid_a.any():
        what = "no face found" if n_faces_max == 0 else "the chosen face was not found"
        raise NoFaceError(f"{what} in any of the {n} frames of '{source}'")
    rig = np.array(rigid)
    track = VideoTrack(
        width=width, height=height, valid=valid_a, scale=rig[:, 0].copy(),
        rot=rig[:, 1:10].reshape(n, 3, 3).copy(), trans=rig[:, 10:13].copy(),
        mouth_img=np.array(mouths, np.float32), nose_img=np.array(noses, np.float32),
        mouth_canon=np.array(canon, np.float32), points=np.array(allpts, np.float32), yaw=np.array(yaws), pitch=np.array(pitches),
        thumbs=np.array(thumbs, np.uint8), n_faces_max=n_faces_max, first_box=first_box, bank=bank,
    )
    smooth_track(track, smooth_sigma)
    return track


def edge_weights(ok: np.ndarray, ramp: int = 3) -> np.ndarray:
    """Per-frame blend weight in [0, 1]: 1 inside runs of dubbed frames, fading to 0 over ``ramp`` frames at
    either end of a run, so the change between a dubbed frame and a passed-through one is not a jump."""
    w = np.zeros(len(ok), np.float32)
    for a, b in runs(ok):
        idx = np.arange(a, b)
        # distance to the nearest passed-through frame; the video's own start and end need no fade
        left = idx - a + 1 if a > 0 else np.full(len(idx), np.inf)
        right = b - idx if b < len(ok) else np.full(len(idx), np.inf)
        w[a:b] = np.clip(np.minimum(left, right) / (ramp + 1), 0, 1)
    return w
