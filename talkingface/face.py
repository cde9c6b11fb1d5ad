"""Face analysis: FaceMesh landmarks, head pose and the pose-normalized 3D face space.

Stage 3/4 of the design ("3D pose matching" in Suwajanakorn et al. 2017, *Synthesizing Obama*):

* ``FaceTracker`` runs MediaPipe FaceMesh (bundled in the mediapipe 0.10.21 wheel) and returns
  478 landmarks per face in image space, ``(478, 3)`` float32 as ``(x_px, y_px, z_px)`` with y down.
* ``head_pose`` solves the camera pose of the canonical face mesh (solvePnP) for yaw/pitch/roll.
* ``FaceFrame`` holds the 3D similarity that maps image space onto the canonical mesh
  (``canonical = s * R @ image_yup + t``), estimated by Umeyama's method on the rigid upper-face
  points only, so mouth and jaw motion does not move the frame.  In that *normalized space* mouth
  shapes of different people and head poses are comparable; units are the canonical mesh's (cm).
* ``FaceFrame.crop_affine`` maps a fixed square of the canonical face (nose to below the chin) into the
  image, giving the aligned mouth crop that the texture generator works in.

The canonical mesh is MediaPipe's ``canonical_face_model.obj`` (Apache-2.0, see ``assets/NOTICE``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np

from .errors import InputError, NoFaceError

log = logging.getLogger(__name__)

N_MESH = 468  # vertices of the canonical mesh; FaceMesh adds 10 iris points (478 in all)

# --- landmark index sets (MediaPipe FaceMesh topology) ------------------------------------------
LIPS_OUTER = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185]
LIPS_INNER = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191]
# lower half of the face oval, right ear to left ear via the chin
JAW = [323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93]
MOUTH = LIPS_OUTER + LIPS_INNER + JAW  # the 59 points the landmark model predicts
UPPER_LIP_IN, LOWER_LIP_IN = 13, 14
MOUTH_LEFT, MOUTH_RIGHT = 61, 291
EYE_OUTER_R, EYE_OUTER_L = 33, 263
NOSE_LINE = [98, 97, 2, 326, 327]  # under the nose, continuing JAW's order (jaw ends at 93, x < 0)

# Square crop of the canonical face that the texture generator sees: x in [-5, 5], y in [-0.6, -10.6] cm
# (nose tip at y=-1.1, chin at -9.4: a 1.2 cm margin lets the jaw drop), in the plane z = 5 (the lips).
CROP_CENTER = (0.0, -5.6, 5.0)
CROP_HALF = 5.0


@functools.lru_cache(maxsize=1)
def canonical_mesh() -> np.ndarray:
    """(468, 3) float64 vertices of MediaPipe's canonical face mesh, y up, z towards the viewer."""
    text = resources.files("talkingface.assets").joinpath("canonical_face_model.obj").read_text()
    verts = [[float(v) for v in line.split()[1:4]] for line in text.splitlines() if line.startswith("v ")]
    mesh = np.asarray(verts, dtype=np.float64)
    assert mesh.shape == (N_MESH, 3), mesh.shape
    return mesh


@functools.lru_cache(maxsize=1)
def rigid_indices() -> np.ndarray:
    """Mesh points above the nose bottom (and not on the mouth, jaw or under the nose): they move with the
    head, not with the mouth."""
    mesh = canonical_mesh()
    upper = np.flatnonzero(mesh[:, 1] > -1.5)
    return np.setdiff1d(upper, MOUTH + NOSE_LINE)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991). src, dst: (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)  # (3, 3)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    var_s = (xs**2).sum() / len(src)
    scale = float(np.trace(np.diag(d) @ sign) / var_s)
    t = mu_d - scale * rot @ mu_s
    return scale, rot, t


def _to_yup(points: np.ndarray) -> np.ndarray:
    """Image space (x right, y down, z away) -> right-handed y-up space of the canonical mesh."""
    return points * np.array([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class FaceFrame:
    """The similarity between one face in one image and the canonical face.

    ``to_canonical(p) = scale * rot @ yup(p) + t`` for image-space points p (N, 3).
    """

    scale: float
    rot: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)

    @classmethod
    def fit(cls, landmarks: np.ndarray) -> "FaceFrame":
        idx = rigid_indices()
        s, r, t = umeyama(_to_yup(landmarks[idx].astype(np.float64)), canonical_mesh()[idx])
        return cls(s, r, t)

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        return (self.scale * _to_yup(points.astype(np.float64)) @ self.rot.T) + self.t

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Inverse of ``to_canonical``: canonical (N, 3) -> image space (N, 3)."""
        yup = (points - self.t) @ self.rot / self.scale
        return _to_yup(yup)

    def crop_affine(self, size: int, center: tuple[float, float, float] = CROP_CENTER,
                    half: float = CROP_HALF) -> np.ndarray:
        """(2, 3) affine taking image pixels to the ``size`` x ``size`` crop of the canonical square around
        ``center`` with half side ``half`` cm (default: the mouth crop; for cv2.warpAffine)."""
        cx, cy, cz = center
        h = half
        corners = np.array([[cx - h, cy + h, cz], [cx + h, cy + h, cz], [cx - h, cy - h, cz]])  # TL, TR, BL
        img = self.to_image(corners)[:, :2].astype(np.float32)
        dst = np.array([[0, 0], [size, 0], [0, size]], dtype=np.float32)
        return cv2.getAffineTransform(img, dst)


def apply_affine(points: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """(..., >=2) points -> (..., 2) through a (2, 3) affine (e.g. ``FaceFrame.crop_affine``)."""
    return points[..., :2] @ affine[:, :2].T + affine[:, 2]


def warp_crop(image: np.ndarray, affine: np.ndarray, size: int, *, replicate_border: bool = True) -> np.ndarray:
    """The ``size`` x ``size`` aligned crop of ``image`` (H, W, 3) under ``affine``, anti-aliased.

    ``cv2.warpAffine`` samples bilinearly whatever the scale (it ignores ``INTER_AREA``), so a large face
    shrunk into the crop aliased (fine hair, stubble, textile turned into moire). When the affine shrinks the
    image (scale < 0.8) the region the crop reads is first blurred with a Gaussian of sigma 0.45 / scale (about
    the pixel footprint of the smaller grid), then sampled."""
    border = cv2.BORDER_REPLICATE if replicate_border else cv2.BORDER_CONSTANT
    scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))
    if scale < 0.8:
        inv = cv2.invertAffineTransform(affine)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        h, w = image.shape[:2]
        sigma = 0.45 / scale
        pad = int(3 * sigma) + 2
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - pad, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + pad, (w, h))
        if x1 > x0 and y1 > y0:
            roi = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma)
            shifted = affine.astype(np.float64).copy()
            shifted[:, 2] += affine[:, :2] @ np.array([x0, y0], np.float64)
            return cv2.warpAffine(roi, shifted, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


# The mouth measures, one home (talkingface.metrics and the lip-sync export use these): each takes either all
# FaceMesh points (..., 478|468, >=2) or the mouth alone (..., 59, >=2) in MOUTH order.


def _mouth_index(points: np.ndarray, mesh_index: int) -> int:
    return MOUTH.index(mesh_index) if points.shape[-2] == len(MOUTH) else mesh_index


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """Outer eye-corner distance of FaceMesh points (..., 478|468, >=2) -> (...)."""
    return np.linalg.norm(points[..., EYE_OUTER_R, :2] - points[..., EYE_OUTER_L, :2], axis=-1)


def mouth_opening(points: np.ndarray, iod=None) -> np.ndarray:
    """Inner-lip gap (points 13-14, a 2D distance) / inter-ocular distance. points: FaceMesh points (their own eyes
    give the iod) or the 59 mouth points with ``iod`` given. (...) per frame."""
    up, lo = _mouth_index(points, UPPER_LIP_IN), _mouth_index(points, LOWER_LIP_IN)
    gap = np.linalg.norm(points[..., up, :2] - points[..., lo, :2], axis=-1)
    return gap / (inter_ocular(points) if iod is None else iod)


def mouth_width(points: np.ndarray, iod=None) -> np.ndarray:
    """Mouth-corner distance (61-291) / inter-ocular distance; points and ``iod`` as :func:`mouth_opening`."""
    left, right = _mouth_index(points, MOUTH_LEFT), _mouth_index(points, MOUTH_RIGHT)
    w = np.linalg.norm(points[..., left, :2] - points[..., right, :2], axis=-1)
    return w / (inter_ocular(points) if iod is None else iod)


def lip_gap(points: np.ndarray, *, y_down: bool) -> np.ndarray:
    """Signed vertical inner-lip gap (upper lip 13 above lower lip 14 is positive; crossed lips negative), in the
    points' own units: y_down for image pixels, False for the canonical space (y up). The lip-sync export (clamped
    at 0) and the phoneme-timing measurement use it where "closed" must not read as a small opening."""
    up, lo = _mouth_index(points, UPPER_LIP_IN), _mouth_index(points, LOWER_LIP_IN)
    gap = points[..., up, 1] - points[..., lo, 1]
    return -gap if y_down else gap


@dataclass(frozen=True)
class HeadPose:
    yaw: float  # degrees, + = face turned to the image's right
    pitch: float  # degrees
    roll: float  # degrees


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> HeadPose:
    """Camera pose of the canonical mesh by solvePnP on the 468 mesh points.

    landmarks: (478|468, 3) image-space; image_size: (height, width). The mesh is y-up / z-out, OpenCV's
    camera is y-down / z-in, hence the diag(1, -1, -1) flip before the angles are read off.
    """
    h, w = image_size
    cam = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(
        canonical_mesh(), landmarks[:N_MESH, :2].astype(np.float64), cam, None, flags=cv2.SOLVEPNP_SQPNP
    )
    if not ok:
        raise NoFaceError("head pose could not be solved for the detected face")
    rmat = cv2.Rodrigues(rvec)[0] @ np.diag([1.0, -1.0, -1.0])
    # R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in the camera's y-down frame
    pitch = np.degrees(np.arctan2(-rmat[1, 2], rmat[2, 2]))
    yaw = np.degrees(np.arcsin(np.clip(rmat[0, 2], -1, 1)))
    roll = np.degrees(np.arctan2(-rmat[0, 1], rmat[0, 0]))
    return HeadPose(float(yaw), float(pitch), float(roll))



def facing_angles(landmarks: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float]:
    """Yaw and pitch (degrees) of the face against its own line of sight, which is what the camera shows of it
    (and what a warp or a dub can work with). ``head_pose`` measures against the camera's axis (focal length =
    image width), so a frontal face off the image's centre reads as turned: the astronaut padded to 512 x 1212
    with her face at the top, 58 deg of pitch; the GRID clip padded to 360 x 988, 51 deg, which made dubbing pass
    every frame through as turned. The ray to the face's centre is taken out."""
    h, w = image_size
    pose = head_pose(landmarks, image_size)
    cx, cy = np.asarray(landmarks, np.float64)[:N_MESH, :2].mean(0)
    ray_x = np.degrees(np.arctan((cx - w / 2) / w))
    ray_y = np.degrees(np.arctan((cy - h / 2) / w))
    return float(pose.yaw - ray_x), float(pose.pitch + ray_y)


# degrees of yaw or pitch (against the line of sight) a photo's face may be turned: a 3/4 view renders well (the most
# turned of the 79 shared portraits, 48 deg), a near-profile hides half of the mouth
PHOTO_MAX_ANGLE = 60.0


def check_facing(landmarks: np.ndarray, image_size: tuple[int, int], source: str,
                 max_angle: float = PHOTO_MAX_ANGLE) -> None:
    """Refuse a photo whose face is turned beyond ``max_angle`` (a near-profile): the mouth stage warps the face's
    own pixels in its own plane, and beyond that the far half of the mouth is hidden and a warp would tear it.
    (Dubbing passes such frames through instead: ``DubOptions.max_angle``.)"""
    yaw, pitch = facing_angles(landmarks, image_size)
    for name, v, side in (("yaw", yaw, "to the side"), ("pitch", pitch, "up or down")):
        if abs(v) > max_angle:
            raise InputError(f"the face in '{source}' is turned {abs(v):.0f} degrees {side} ({name}); a photo needs "
                             f"a face within {max_angle:.0f} degrees of facing the camera: use a more frontal photo")


@dataclass(frozen=True)
class DetectedFace:
    landmarks: np.ndarray  # (478, 3) float32, image pixels (z scaled like x)
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the landmarks

    @property
    def area(self) -> int:
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


@contextlib.contextmanager
def native_stderr_silenced():
    """MediaPipe's C++ side prints TFLite/absl start-up chatter straight to file descriptor 2 when its graphs
    start; hide exactly that (Python exceptions are unaffected: they are raised, not printed, here)."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class QuietGraph:
    """A MediaPipe solution whose first runs are silenced on file descriptor 2: its calculators start (and log
    TFLite/absl chatter from their own threads) on the first frame that reaches them, which for the landmark
    model is the first frame with a face, and for tracking the frame after. ``runs``: how many calls that gave a
    result are silenced."""

    def __init__(self, graph, runs: int = 3):
        self.graph = graph
        self.left = runs

    def process(self, image: np.ndarray):
        if self.left <= 0:
            return self.graph.process(image)
        with native_stderr_silenced():
            res = self.graph.process(image)
        if any(getattr(res, k, None) is not None
               for k in ("multi_face_landmarks", "detections", "segmentation_mask")):
            self.left -= 1
        return res

    def close(self) -> None:
        self.graph.close()


class FaceTracker:
    """MediaPipe face detection + FaceMesh (478 points with iris refinement).

    ``static=True`` (photos): face detection finds every face (up to ``max_faces``, largest first), then
    FaceMesh runs on a square crop around each one (FaceMesh alone letterboxes the whole image to its small
    input, and loses faces that fill little of a wide photo). The detectors see a downscaled image too, so
    besides the full-range detector on the whole image the short-range one looks at overlapping square tiles
    (sides: the image's shorter side, then half and a quarter of it, at least ``MIN_TILE`` px, 96 tiles at
    most), and a face only a tile saw counts once the full-range detector confirms it on a crop around it
    (the tiles also fire on suit collars, hair, badges). So five or ten people side by side in a wide photo are
    all found (faces from about 50 px across; see tests/test_inputs.py). ``static=False`` (consecutive video
    frames): FaceMesh's own tracking, which is faster.

    ``max_faces`` defaults to ``checks.MAX_FACES``, the limit the command line and the web page share.
    """

    MIN_TILE = 128  # px: tiles smaller than this add no face the larger ones miss

    def __init__(self, *, static: bool = True, max_faces: int | None = None, min_confidence: float = 0.5):
        import mediapipe as mp  # imported lazily: it costs ~1 s and logs to stderr

        from .checks import MAX_FACES

        self.static = static
        self.max_faces = MAX_FACES if max_faces is None else int(max_faces)
        max_faces = self.max_faces
        with native_stderr_silenced():  # graph construction logs to fd 2 as well
            self._mesh = QuietGraph(mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=1 if static else max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            ))
            self._detector = (
                QuietGraph(mp.solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=min_confidence))
                if static else None
            )
            self._tile_detector = (  # short range: for faces that fill a good part of its (tile's) input
                QuietGraph(mp.solutions.face_detection.FaceDetection(
                    model_selection=0, min_detection_confidence=min_confidence))
                if static else None
            )

    def _mesh_points(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        res = self._mesh.process(np.ascontiguousarray(image))
        return [np.array([(p.x * w, p.y * h, p.z * w) for p in lm.landmark], dtype=np.float32)
                for lm in res.multi_face_landmarks or []]

    def _detections(self, detector, image: np.ndarray, x0: int = 0, y0: int = 0) -> list[tuple[float, tuple]]:
        """(score, (x0, y0, x1, y1)) of one detector's faces in ``image`` (a tile at x0, y0), image pixels."""
        th, tw = image.shape[:2]
        out = []
        for det in detector.process(np.ascontiguousarray(image)).detections or []:
            bb = det.location_data.relative_bounding_box
            out.append((float(det.score[0]) if det.score else 0.0,
                        (x0 + bb.xmin * tw, y0 + bb.ymin * th, x0 + (bb.xmin + bb.width) * tw,
                         y0 + (bb.ymin + bb.height) * th)))
        return out

    def _mesh_in_box(self, image: np.ndarray, box, verify: bool = False) -> np.ndarray | None:
        """FaceMesh on a square crop around a detector box (the face with margin) -> (478, 3) or None.

        verify: first ask the full-range detector whether the crop (the candidate at half its side) shows a
        face: on 79 portraits and synthetic group photos it fired on every real face and on none of the tile
        detector's false ones (a suit's neck ring, hair, an ear)."""
        h, w = image.shape[:2]
        bx0, by0, bx1, by1 = box
        cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
        side = 2.0 * max(bx1 - bx0, by1 - by0)  # FaceMesh wants the face with margin around it
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        x1, y1 = int(round(cx + side / 2)), int(round(cy + side / 2))
        pad = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
        crop = np.pad(image[max(0, y0):y1, max(0, x0):x1], pad, mode="edge")
        scale = 1.0
        if crop.shape[0] > 512:  # FaceMesh sees 192 px anyway; keep the crop small
            scale = 512 / crop.shape[0]
            crop = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA)
        if verify and not self._detections(self._detector, cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)):
            return None
        for pts in self._mesh_points(crop)[:1]:
            pts = pts / scale
            pts[:, 0] += x0
            pts[:, 1] += y0
            return pts
        return None

    def _detect_static(self, image: np.ndarray, tiles: bool = True) -> list[np.ndarray]:
        h, w = image.shape[:2]
        if min(h, w) < 2:
            return []
        found: list[np.ndarray] = []
        # 1. the full-range detector on the whole image (as trusted as before the tiles)
        for _score, box in merge_boxes(self._detections(self._detector, image))[: self.max_faces]:
            pts = self._mesh_in_box(image, box)
            if pts is not None:
                found.append(pts)
        found = _dedupe_meshes(found)
        # 2. faces the downscaled whole image hides: the short-range detector on overlapping tiles
        if tiles and len(found) < self.max_faces:
            cands = [d for side in tile_sides(h, w, self.MIN_TILE) for y0, x0 in tile_origins(h, w, side)
                     for d in self._detections(self._tile_detector, image[y0:y0 + side, x0:x0 + side], x0, y0)]
            boxes = [_mesh_box(p) for p in found]
            for _score, box in merge_boxes(cands):
                if len(found) >= self.max_faces:
                    break
                if any(_iou(box, b)[1] > 0.2 for b in boxes):  # a part of a face found already
                    continue
                pts = self._mesh_in_box(image, box, verify=True)  # the tiles also fire on badges, hair, ...
                if pts is None:
                    continue
                mb = _mesh_box(pts)
                if all(_iou(mb, b)[1] < 0.2 for b in boxes):
                    found.append(pts)
                    boxes.append(mb)
        if not found:  # the detectors missed: let FaceMesh look at the whole image
            found = self._mesh_points(image)
        return found

    def detect(self, image: np.ndarray, *, tiles: bool = True) -> list[DetectedFace]:
        """All faces in an RGB uint8 image (up to ``max_faces``), largest first. An image too small to hold a
        face (see ``check_image_size``) has none. ``tiles=False``: the whole-image detector only (faster, for
        re-finding a lost face in a video; misses faces much smaller than the frame)."""
        if min(image.shape[:2]) < 2:
            return []
        points = self._detect_static(image, tiles) if self.static else self._mesh_points(image)
        faces = []
        for pts in points:
            x0, y0 = np.floor(pts[:, :2].min(0)).astype(int)
            x1, y1 = np.ceil(pts[:, :2].max(0)).astype(int)
            faces.append(DetectedFace(pts, (int(x0), int(y0), int(x1), int(y1))))
        faces.sort(key=lambda f: -f.area)
        return faces

    def close(self) -> None:
        self._mesh.close()
        for d in (self._detector, self._tile_detector):
            if d is not None:
                d.close()

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_image_size(width: int, height: int, source: str) -> None:
    """Refuse an image (or video frame size) too small to hold a face, naming its size."""
    from .checks import MIN_IMAGE_SIDE

    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(f"'{source}' is {width}x{height} px: too small to hold a face (each side needs at least "
                         f"{MIN_IMAGE_SIDE} px)")


def tile_sides(h: int, w: int, min_tile: int, max_tiles: int = 96) -> list[int]:
    """Sides of the square detection tiles for an h x w image: the shorter side (only when the image is not
    square enough for one look), then half and a quarter of it, none below ``min_tile``, and no finer level
    once ``max_tiles`` tiles in all would be exceeded (time: a few ms per tile)."""
    short = min(h, w)
    sides, total = [], 0
    for s in ([short] if max(h, w) > 1.25 * short else []) + [short // 2, short // 4]:
        n = len(tile_origins(h, w, s)) if s >= min_tile else max_tiles + 1
        if total + n > max_tiles:
            break
        sides.append(s)
        total += n
    return sides


def tile_origins(h: int, w: int, side: int) -> list[tuple[int, int]]:
    """(y0, x0) of square tiles of ``side`` covering the image with half a tile of overlap (the last tile of a
    row or column is flush with the edge), so every face smaller than half a tile lies whole in one tile."""
    def starts(n: int) -> list[int]:
        if n <= side:
            return [0]
        pos = list(range(0, n - side, max(1, side // 2)))
        return pos + [n - side]

    return [(y, x) for y in starts(h) for x in starts(w)]


def _iou(a, b) -> tuple[float, float]:
    """(intersection over union, intersection over the smaller box) of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(1e-9, (a[2] - a[0]) * (a[3] - a[1]))
    area_b = max(1e-9, (b[2] - b[0]) * (b[3] - b[1]))
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def merge_boxes(found: list[tuple[float, tuple[float, float, float, float]]]) -> list[tuple[float, tuple]]:
    """Non-maximum suppression of (score, box), most confident first: one box per face. Of two boxes that
    overlap (IoU over 0.4, or one mostly inside the other: a face cut by a tile's edge, or an eye of a big
    face), the larger one stays, with the better score."""
    kept: list[tuple[float, tuple]] = []
    for score, box in sorted(found, key=lambda sb: -sb[0]):
        for i, (kscore, k) in enumerate(kept):
            iou, inside = _iou(box, k)
            if iou >= 0.4 or inside >= 0.7:
                if _area(box) > _area(k):
                    kept[i] = (kscore, box)
                break
        else:
            kept.append((score, box))
    return kept


def _area(b) -> float:
    return (b[2] - b[0]) * (b[3] - b[1])


def _mesh_box(pts: np.ndarray) -> tuple[float, float, float, float]:
    (x0, y0), (x1, y1) = pts[:, :2].min(0), pts[:, :2].max(0)
    return float(x0), float(y0), float(x1), float(y1)


def _dedupe_meshes(points: list[np.ndarray]) -> list[np.ndarray]:
    """Drop a FaceMesh result that overlaps an earlier one: two detector boxes led to the same face."""
    kept: list[np.ndarray] = []
    boxes: list[tuple[float, float, float, float]] = []
    for pts in points:
        box = _mesh_box(pts)
        if all(_iou(box, b)[0] < 0.5 for b in boxes):
            kept.append(pts)
            boxes.append(box)
    return kept


def pick_face(faces: list[DetectedFace], index: int | None, source: str) -> DetectedFace:
    """Choose one face: the largest by default, or ``index`` (0 = largest) when several are present."""
    if not faces:
        raise NoFaceError(f"no face found in '{source}'")
    if index is None:
        if len(faces) > 1:
            log.info("%d faces in '%s': using the largest (choose another with face index 0..%d)",
                        len(faces), source, len(faces) - 1)
        return faces[0]
    if not 0 <= index < len(faces):
        raise NoFaceError(f"face index {index} requested but '{source}' has {len(faces)} face(s)")
    return faces[index]
