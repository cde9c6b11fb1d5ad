"""A face that lives (photo mode): head motion and blinks, planned from real clips and rendered by the mesh warp.

Stage between the mouth painter and the encoder of a photo render (``Pipeline.render``). Three parts:

* **Measures** on real footage (``eye_aspect_ratio``, ``detect_blinks``, ``clean_pose``, ``pose_measures``): used by
  ``scripts/measure_head_motion.py`` to build the shipped library ``assets/head_motion.npz`` (head-pose tracks of
  the training speakers' clips with their speech masks, and the mean eyelid-closure curve of real blinks) and by
  ``scripts/eval_liveliness.py`` to measure rendered videos the same way.
* **Planning** (``plan_motion``): the driving speech's voice activity is cut into speaking and pause segments;
  real head motion is replayed from the library, pieces of speech for speech and pauses for pauses, each piece
  starting where the last one ended (no jumps), with an envelope that lets the head settle towards its rest pose
  in pauses; angles are soft-limited to about +-8 deg yaw, +-6 pitch, +-4 roll (``natural``; ``subtle`` halves
  them). Blinks come at 15-26 per minute (about 20), more often in pauses, each 100-400 ms long (durations drawn
  from the real blinks) along the real closure curve, with the frame at the peak fully closed. A seed makes the
  plan, and so the render, reproducible.
* **Rendering** (``HeadAnimator``): the photo's 468 FaceMesh points are lifted into the pose-normalized space
  (``face.FaceFrame``), the upper eyelids are lowered onto the lower lids for a blink, the head is rotated about a
  point behind the ears and projected back; rings of points around the face oval follow that motion less and
  less (more above, for hair; less below, for the neck) down to a still torso; the frame is moved with the
  project's one piecewise-affine warp (``talkingface.warp``) at native resolution. The eyeball is a separate
  layer that follows the head only, so the lids slide over it. Background pixels that the moving head reveals
  or that the warp would drag show what is behind them: the photo's own pixels where the photo shows the scene,
  and where it showed the person a background plate (the person found with MediaPipe's bundled selfie
  segmentation and inpainted, OpenCV Telea), made once per photo.

Degrading safely: a face cut by the image border or turned far from the camera gets smaller (or no) head
motion, eyes that are not visible (closed in the photo, sunglasses) get no blinks; each case says so in the log.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib import resources

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter

from . import face, warp
from .face import facing_angles

log = logging.getLogger(__name__)

FPS = 25
LEVELS = {"natural": 1.0, "subtle": 0.5, "still": 0.0}
# the replayed real motion is amplified by this much before the soft limits: the pause envelope halves the motion
# of a clip with pauses, and a warped photo re-tracks with ~65% of the rotation it was given (the sides of the face
# that a real turn reveals or hides stay the photo's), so without it renders measure about half the real clips'
# motion (scripts/eval_liveliness.py)
REPLAY_GAIN = 1.8
LIMITS = np.array([8.0, 6.0, 4.0])  # soft limits of yaw, pitch, roll (degrees) at "natural"
BLINK_RATE = 20.0  # blinks per minute asked for; the plan stays within BLINK_RANGE
BLINK_RANGE = (15.0, 26.0)
PAUSE_BLINK_FACTOR = 2.5  # blinks come this much more often in pauses than while speaking
CURVE_SAMPLES = 21  # the closure curve over a blink's normalized duration

# --- eyelid points (MediaPipe FaceMesh), per eye: corners and lid margins, outer corner -> inner corner -----------
EYES = [
    dict(corners=(33, 133), upper=[246, 161, 160, 159, 158, 157, 173], lower=[7, 163, 144, 145, 153, 154, 155],
         upper2=[247, 30, 29, 27, 28, 56, 190], lower2=[25, 110, 24, 23, 22, 26, 112],
         upper3=[113, 225, 224, 223, 222, 221, 189]),
    dict(corners=(263, 362), upper=[466, 388, 387, 386, 385, 384, 398], lower=[249, 390, 373, 374, 380, 381, 382],
         upper2=[467, 260, 259, 257, 258, 286, 414], lower2=[255, 339, 254, 253, 252, 256, 341],
         upper3=[342, 445, 444, 443, 442, 441, 413]),
]
_EAR_PAIRS = [(161, 163), (160, 144), (159, 145), (158, 153), (157, 154),
              (388, 390), (387, 373), (386, 374), (385, 380), (384, 381)]

# rings around the face oval (multiples of its distance from the face centre) and how much of the head's motion
# each follows, above the face (hair) and below it (neck); the outermost is still (the torso, the scene)
RING_SCALES = (1.25, 1.6, 2.1, 2.8)
FOLLOW_UP = (1.0, 0.85, 0.45, 0.0)
FOLLOW_DOWN = (0.55, 0.1, 0.0, 0.0)
PIVOT = np.array([0.0, -2.0, -5.0])  # canonical cm: the head turns about a point behind the ears
# the largest poses a plan reaches: a photo's warp is checked for folds at these
_EXTREMES = [(s * LIMITS[0], 0, 0) for s in (-1, 1)] + [(0, s * LIMITS[1], 0) for s in (-1, 1)] + \
    [(0.7 * a * LIMITS[0], 0.7 * b * LIMITS[1], 0.7 * a * b * LIMITS[2]) for a in (-1, 1) for b in (-1, 1)]


# =============================================================================================== measures

def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """Mean lid gap / eye width of both eyes. points: (..., 468|478, >=2) -> (...)."""
    p = np.asarray(points, np.float64)[..., :2]
    gaps = [np.linalg.norm(p[..., u, :] - p[..., lo, :], axis=-1) for u, lo in _EAR_PAIRS]
    w_r = np.linalg.norm(p[..., 33, :] - p[..., 133, :], axis=-1)
    w_l = np.linalg.norm(p[..., 263, :] - p[..., 362, :], axis=-1)
    return (np.mean(gaps[:5], axis=0) / np.maximum(w_r, 1e-6) + np.mean(gaps[5:], axis=0) / np.maximum(w_l, 1e-6)) / 2


def _fill_invalid(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over invalid frames (per column), edges held."""
    x = np.array(x, np.float64, copy=True)
    idx = np.arange(len(x))
    if not valid.any():
        return np.zeros_like(x)
    flat = x.reshape(len(x), -1)
    for j in range(flat.shape[1]):
        flat[~valid, j] = np.interp(idx[~valid], idx[valid], flat[valid, j])
    return flat.reshape(x.shape)


def detect_blinks(ear: np.ndarray, valid: np.ndarray, *, max_frames: int = 12) -> list[dict]:
    """Blinks in an eye-aspect-ratio track at 25 fps: EAR below half its local open level (running median over
    2 s) for at most ``max_frames`` (0.5 s; longer closures and downward glances are not blinks).

    Each blink: ``start``/``stop`` frames, ``duration`` in frames (from the closure crossing 15% of its peak to
    crossing it again, interpolated), ``depth`` (peak closure 1 - EAR/level) and ``profile``, the closure over
    the blink's normalized duration (CURVE_SAMPLES points, peak 1)."""
    if len(ear) < 5 or not valid.any():
        return []
    e = _fill_invalid(ear, valid)
    level = median_filter(e, size=51, mode="nearest")
    c = np.clip(1.0 - e / np.maximum(level, 1e-6), 0.0, 1.0)
    c[~valid] = 0.0
    out = []
    core = c > 0.5
    i = 0
    n = len(c)
    while i < n:
        if not core[i]:
            i += 1
            continue
        j = i
        while j < n and core[j]:
            j += 1
        if j - i <= max_frames and valid[max(0, i - 2):min(n, j + 2)].all():
            peak = float(c[i:j].max())
            thr = 0.15 * peak
            a = i
            while a > 0 and c[a - 1] > thr:
                a -= 1
            b = j
            while b < n and c[b] > thr:
                b += 1
            # sub-frame crossings at both ends
            t0 = a - 1 + (thr - c[a - 1]) / max(c[a] - c[a - 1], 1e-9) if a > 0 else float(a)
            t1 = b - 1 + (c[b - 1] - thr) / max(c[b - 1] - c[b], 1e-9) if b < n else float(b - 1)
            dur = max(t1 - t0, 1.0)
            ts = np.linspace(t0, t1, CURVE_SAMPLES)
            prof = np.interp(ts, np.arange(n), c) / max(peak, 1e-9)
            out.append({"start": a, "stop": b, "duration": float(dur), "depth": peak, "profile": prof})
        i = j
    return out


def clean_pose(pose: np.ndarray, valid: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """(T, 3) yaw/pitch/roll with invalid frames interpolated and FaceMesh jitter smoothed (Gaussian)."""
    p = _fill_invalid(pose, valid)
    return gaussian_filter1d(p, sigma, axis=0, mode="nearest") if len(p) > 1 and sigma > 0 else p


def pose_measures(pose: np.ndarray, valid: np.ndarray) -> dict:
    """Range (|deviation from the median| at the 50th and 95th percentile, per axis, degrees) and angular speed
    (norm of the per-frame change of the three angles, degrees per second, median and 95th percentile)."""
    v = valid.astype(bool)
    if v.sum() < 3:
        return {"range_p50": [0.0] * 3, "range_p95": [0.0] * 3, "speed_median": 0.0, "speed_p95": 0.0}
    dev = np.abs(pose[v] - np.median(pose[v], axis=0))
    both = v[1:] & v[:-1]
    speed = np.linalg.norm(np.diff(pose, axis=0), axis=1)[both] * FPS
    return {"range_p50": np.percentile(dev, 50, axis=0).round(2).tolist(),
            "range_p95": np.percentile(dev, 95, axis=0).round(2).tolist(),
            "speed_median": float(np.median(speed)) if len(speed) else 0.0,
            "speed_p95": float(np.percentile(speed, 95)) if len(speed) else 0.0}


# =============================================================================================== planning

@dataclass(frozen=True)
class Library:
    """Real head motion and blinks (``assets/head_motion.npz``, made by scripts/measure_head_motion.py)."""

    pose: np.ndarray  # (N, 3) yaw, pitch, roll in degrees, centred per clip, 25 fps
    speech: np.ndarray  # (N,) bool voice activity of the same frames
    clip_start: np.ndarray  # (C,) first frame of each clip
    blink_curve: np.ndarray  # (CURVE_SAMPLES,) mean closure over a blink's normalized duration, peak 1
    blink_frames: np.ndarray  # (B,) durations of the real blinks, frames at 25 fps

    def pieces(self, speaking: bool) -> list[tuple[int, int]]:
        """[start, stop) runs of the library's frames of one kind (speech or pause), within clips."""
        bounds = list(self.clip_start) + [len(self.pose)]
        out = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            for s, e in _runs(_clean_vad(self.speech[a:b]) == speaking):
                if e - s >= 6:
                    out.append((a + s, a + e))
        return out


@functools.lru_cache(maxsize=1)
def load_library() -> Library:
    ref = resources.files("talkingface.assets").joinpath("head_motion.npz")
    with ref.open("rb") as f:
        d = np.load(f)
        return Library(d["pose"].astype(np.float64), d["speech"].astype(bool), d["clip_start"].astype(np.int64),
                       d["blink_curve"].astype(np.float64), d["blink_frames"].astype(np.float64))


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[0::2].tolist(), d[1::2].tolist(), strict=True))


def _clean_vad(vad: np.ndarray, min_gap: int = 6, min_speech: int = 3) -> np.ndarray:
    """Frame voice activity -> speaking segments: gaps shorter than ``min_gap`` frames (within a phrase) are
    speech, bursts shorter than ``min_speech`` are not."""
    v = np.asarray(vad, bool).copy()
    for a, b in _runs(~v):
        if b - a < min_gap and a > 0 and b < len(v):
            v[a:b] = True
    for a, b in _runs(v):
        if b - a < min_speech:
            v[a:b] = False
    return v


@dataclass(frozen=True)
class MotionPlan:
    pose: np.ndarray  # (T, 3) yaw, pitch, roll offsets in degrees
    closure: np.ndarray  # (T,) eyelid closure in [0, 1] (1 = fully closed)
    blinks: list[tuple[int, float]]  # (peak frame, duration in frames) of each blink
    level: str
    seed: int

    @property
    def n_frames(self) -> int:
        return len(self.closure)


def _head_track(speaking: np.ndarray, lib: Library, rng: np.random.Generator) -> np.ndarray:
    """Real motion re-timed to the speech: for each speaking / pause segment, library pieces of the same kind
    chained in order; each piece is shifted to start where the previous one ended (the shift fades out over
    ~0.5 s), so the track has no jumps; then lightly smoothed."""
    n = len(speaking)
    out = np.zeros((n, 3))
    pieces = {True: lib.pieces(True), False: lib.pieces(False)}
    if not pieces[False]:
        pieces[False] = pieces[True]
    last = np.zeros(3)
    t = 0
    tau = 12.0
    segs = _runs(speaking) + _runs(~speaking)
    segs.sort()
    for a, b in segs:
        kind = bool(speaking[a])
        t = a
        while t < b:
            s, e = pieces[kind][int(rng.integers(len(pieces[kind])))]
            length = e - s
            off = int(rng.integers(0, max(1, length - 8)))  # start anywhere in the piece
            take = min(b - t, length - off, 75)  # at most 3 s from one place
            seg = lib.pose[s + off:s + off + take]
            shift = last - seg[0]
            decay = np.exp(-np.arange(take) / tau)[:, None]
            out[t:t + take] = seg + shift * decay
            last = out[t + take - 1]
            t += take
    return gaussian_filter1d(out, 1.5, axis=0, mode="nearest") if n > 1 else out


def _envelope(speaking: np.ndarray, rest: float = 0.35, tau_frames: float = 10.0) -> np.ndarray:
    """Gain per frame: 1 while speaking, easing to ``rest`` in pauses (first-order, both ways)."""
    g = np.empty(len(speaking))
    x = 1.0 if len(speaking) and speaking[0] else rest
    k = 1.0 - np.exp(-1.0 / tau_frames)
    for i, s in enumerate(speaking):
        x += k * ((1.0 if s else rest) - x)
        g[i] = x
    return g


def _blink_times(speaking: np.ndarray, lib: Library, rng: np.random.Generator, rate: float) -> list[tuple[int, float]]:
    """(peak frame, duration) of each blink. A 'blink clock' runs PAUSE_BLINK_FACTOR times faster in pauses;
    intervals on that clock are gamma-distributed (shape 4: neither regular nor bursty), scaled so the whole
    render gets ``rate`` per minute; a blink falling within 0.4 s of a pause onset moves onto it."""
    n = len(speaking)
    if n < 8:
        return []
    speed = np.where(speaking, 1.0, PAUSE_BLINK_FACTOR)
    clock = np.cumsum(speed)
    minutes = n / FPS / 60.0
    mean_iv = clock[-1] / max(rate * minutes, 1e-6)
    onsets = [a for a, b in _runs(~speaking) if a > 0 and b - a >= 8]
    times, c = [], float(rng.uniform(0.2, 1.0)) * mean_iv
    while c < clock[-1]:
        f = int(np.searchsorted(clock, c))
        near = [o for o in onsets if abs(o - f) <= 10]
        if near:
            f = near[0] + 2
        # at least 0.6 s apart, and whole: no render starts or ends with the eyes closed
        if (not times or f - times[-1] >= 15) and 3 <= f < n - 7:
            times.append(f)
        c += rng.gamma(4.0, mean_iv / 4.0)
    durs = lib.blink_frames[(lib.blink_frames >= 2.5) & (lib.blink_frames <= 10.0)]
    if len(durs) == 0:
        durs = np.array([5.0])
    return [(t, float(rng.choice(durs))) for t in times]


def blink_closure(n: int, blinks: list[tuple[int, float]], curve: np.ndarray) -> np.ndarray:
    """(n,) closure from blinks (peak frame, duration in frames) along ``curve``; the peak frame is 1."""
    out = np.zeros(n)
    s = np.linspace(0.0, 1.0, len(curve))
    peak_s = s[int(np.argmax(curve))]
    for t, dur in blinks:
        start = t - peak_s * dur
        frames = np.arange(max(0, int(np.floor(start))), min(n, int(np.ceil(start + dur)) + 1))
        u = (frames - start) / dur
        val = np.where((u >= 0) & (u <= 1), np.interp(u, s, curve), 0.0)
        out[frames] = np.maximum(out[frames], val)
        if 0 <= t < n:
            out[t] = 1.0
    return np.clip(out, 0.0, 1.0)


def blink_count_range(n_frames: int) -> tuple[int, int]:
    """The numbers of blinks a render of ``n_frames`` may have: those within BLINK_RANGE per minute, or, when no
    whole number lies within (renders of a few seconds), the two around it."""
    minutes = n_frames / FPS / 60.0
    lo, hi = BLINK_RANGE[0] * minutes, BLINK_RANGE[1] * minutes
    if int(np.ceil(lo)) <= int(np.floor(hi)):
        return int(np.ceil(lo)), int(np.floor(hi))
    return int(np.floor(lo)), int(np.ceil(hi))


def plan_motion(vad: np.ndarray, *, level: str = "natural", seed: int = 0, blinks: bool = True,
                head_scale: float = 1.0, library: Library | None = None) -> MotionPlan:
    """Head pose and eyelid closure per frame (25 fps) for speech with voice activity ``vad`` (T,) bool.

    level: natural | subtle | still; seed: the same seed and speech give the same plan; blinks=False and
    head_scale < 1 are the safe fall-backs of HeadAnimator (face near the border, eyes not visible, ...)."""
    if level not in LEVELS:
        raise ValueError(f"head motion must be one of {', '.join(LEVELS)}, got {level!r}")
    n = len(vad)
    amount = LEVELS[level] * float(np.clip(head_scale, 0.0, 1.0))
    if level == "still" or n == 0:
        return MotionPlan(np.zeros((n, 3)), np.zeros(n), [], level, seed)
    lib = library or load_library()
    rng = np.random.default_rng(seed)
    speaking = _clean_vad(vad)
    raw = REPLAY_GAIN * _head_track(speaking, lib, rng) * _envelope(speaking)[:, None]
    lim = LIMITS * max(amount, 1e-9)
    pose = lim * np.tanh(raw * amount / lim) if amount > 0 else np.zeros((n, 3))
    blink_list: list[tuple[int, float]] = []
    if blinks:
        # the count over the render stays within BLINK_RANGE: the whole counts it allows (a short render, where
        # none lies within, gets the nearest: a 6 s render 2 blinks, not the 4 that chance gave one before)
        lo, hi = blink_count_range(n)
        for _ in range(50):
            blink_list = _blink_times(speaking, lib, rng, BLINK_RATE)
            if lo <= len(blink_list) <= hi:
                break
    closure = blink_closure(n, blink_list, lib.blink_curve)
    return MotionPlan(pose, closure, blink_list, level, seed)


# =============================================================================================== rendering

def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The rotation, in the canonical (y-up) space, that changes face.head_pose's yaw, pitch and roll by about the
    given degrees (Rz @ Ry @ Rx)."""
    y, p, r = np.radians([-yaw, pitch, -roll])  # signs as face.head_pose measures them (image y is down)
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


@functools.lru_cache(maxsize=1)
def _eye_triangles() -> tuple[np.ndarray, np.ndarray]:
    """(the mesh's triangles without the two eye openings, the eye-opening triangles)."""
    tris = warp._obj_triangles()
    contour = set()
    for e in EYES:
        contour |= set(e["corners"]) | set(e["upper"]) | set(e["lower"])
    inside = []
    for e in EYES:
        s = set(e["corners"]) | set(e["upper"]) | set(e["lower"])
        inside.append(np.array([set(t) <= s for t in tris.tolist()]))
    opening = inside[0] | inside[1]
    return tris[~opening], tris[opening]


def _strips(inner: np.ndarray, n_rings: int, first: int, m: int) -> np.ndarray:
    """Triangle strips between a closed loop of point indices and ``n_rings`` rings of m points each."""
    rows = []
    for k in range(n_rings):
        outer = first + k * m + np.arange(m)
        for i in range(m):
            j = (i + 1) % m
            rows.append([inner[i], inner[j], outer[i]])
            rows.append([inner[j], outer[j], outer[i]])
        inner = outer
    return np.asarray(rows, np.int32)


def selfie_mask(image: np.ndarray) -> np.ndarray | None:
    """(H, W) float32 person probability by MediaPipe's bundled selfie segmentation (None if unavailable)."""
    try:
        import mediapipe as mp

        with face.native_stderr_silenced():
            seg = face.QuietGraph(mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0))
        try:
            res = seg.process(np.ascontiguousarray(image))
        finally:
            seg.close()
    except Exception as exc:  # noqa: BLE001 - the plate then comes from the face hull only
        log.info("selfie segmentation unavailable (%s): the background plate uses the face region only", exc)
        return None
    m = getattr(res, "segmentation_mask", None)
    return None if m is None else np.clip(np.asarray(m, np.float32), 0.0, 1.0)


def background_plate(image: np.ndarray, person: np.ndarray, dilate_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo without the person: inpainted (Telea, at <= 192 px, upsampled) inside the dilated person mask,
    the photo's own pixels elsewhere. Returns (plate uint8 (H, W, 3), the inpainted region (H, W) bool)."""
    h, w = image.shape[:2]
    hard = (person > 0.5).astype(np.uint8)
    k = max(3, 2 * dilate_px + 1)
    region = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    if not region.any():
        return image.copy(), region
    s = min(1.0, 192.0 / max(h, w))
    sw, sh = max(8, int(round(w * s))), max(8, int(round(h * s)))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(region.astype(np.uint8) * 255, (sw, sh), interpolation=cv2.INTER_NEAREST)
    small_mask = cv2.dilate(small_mask, np.ones((3, 3), np.uint8))
    filled = cv2.inpaint(small, small_mask, 5, cv2.INPAINT_TELEA)
    big = cv2.resize(filled, (w, h), interpolation=cv2.INTER_CUBIC)
    plate = image.copy()
    plate[region] = big[region]
    return plate, region


def eyes_visible(image: np.ndarray, landmarks: np.ndarray) -> tuple[bool, str]:
    """Whether blinks can be drawn: the eyes open in the photo (eye aspect ratio) and the eye openings not
    uniformly dark (sunglasses): their luminance spread compared with the skin below the eyes."""
    ear = float(eye_aspect_ratio(landmarks))
    if ear < 0.12:
        return False, f"eyes closed or hidden in the photo (eye aspect ratio {ear:.2f})"
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    h, w = grey.shape
    stds, means, skin = [], [], []
    for e in EYES:
        poly = np.asarray(landmarks)[[e["corners"][0], *e["upper"], e["corners"][1], *e["lower"][::-1]], :2]
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1)
        vals = grey[m > 0]
        if vals.size < 6:
            return False, "eyes too small or outside the image"
        stds.append(vals.std())
        means.append(vals.mean())
        cheek = np.asarray(landmarks)[e["lower2"], :2]
        down = cheek + (cheek - np.asarray(landmarks)[e["lower"], :2]) * 2.0
        pts = np.clip(np.round(down).astype(int), 0, [w - 1, h - 1])
        skin.append(grey[pts[:, 1], pts[:, 0]].mean())
    if np.mean(means) < 0.35 * np.mean(skin) and np.mean(stds) < 12.0:
        return False, "the eyes look covered (dark and flat, e.g. sunglasses)"
    return True, ""


class HeadAnimator:
    """Moves one photo's head and eyelids per frame (see the module doc). Built once per render."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray, frame: face.FaceFrame, *,
                 segment: bool = True, source: str = "photo"):
        self.shape = image.shape[:2]
        h, w = self.shape
        lm = np.asarray(landmarks, np.float64)
        self.frame = frame
        self.src468 = lm[: face.N_MESH, :2].copy()
        self.canon = frame.to_canonical(lm[: face.N_MESH])  # (468, 3) the photo's face, pose-normalized
        # rings around the face oval: source positions in the image, 3D positions for their rigid motion
        oval_img = self.src468[warp.FACE_OVAL]
        c_img = oval_img.mean(0)
        oval_c = self.canon[warp.FACE_OVAL]
        c_c = oval_c.mean(0)
        up = np.clip((oval_c[:, 1] - c_c[1]) / np.maximum(np.linalg.norm((oval_c - c_c)[:, :2], axis=1), 1e-6),
                     -1, 1)
        u = (1 + up) / 2  # 1 at the top of the oval, 0 at the chin
        self.ring_src, self.ring_canon, follow = [], [], []
        for s, fu, fd in zip(RING_SCALES, FOLLOW_UP, FOLLOW_DOWN, strict=True):
            self.ring_src.append(c_img + s * (oval_img - c_img))
            rc = oval_c.copy()
            rc[:, :2] = c_c[:2] + s * (oval_c[:, :2] - c_c[:2])
            self.ring_canon.append(rc)
            follow.append(u * fu + (1 - u) * fd)
        self.ring_src = np.concatenate(self.ring_src)
        self.ring_canon = np.concatenate(self.ring_canon)
        self.follow = np.concatenate(follow)[:, None]
        m = len(warp.FACE_OVAL)
        n_main = face.N_MESH + len(RING_SCALES) * m
        body, eye_open = _eye_triangles()
        # the eyeball layer: the eye-opening triangles on duplicated points that follow the head only
        self.eye_idx = np.unique(eye_open)
        remap = {int(v): n_main + i for i, v in enumerate(self.eye_idx)}
        eyeball = np.vectorize(remap.get)(eye_open).astype(np.int32)
        self.src = np.concatenate([self.src468, self.ring_src, self.src468[self.eye_idx]])
        main = np.concatenate([body, _strips(np.asarray(warp.FACE_OVAL), len(RING_SCALES), face.N_MESH, m)])
        # triangles that face the camera in the photo; those already folded or edge-on there (the silhouette of a
        # turned face, the nostrils) may unfold when the head turns: they are drawn first and not fold-checked
        area = warp.signed_areas(self.src, main)
        flat = np.concatenate([self.canon[:, :2], self.ring_canon[:, :2]])  # canonical, seen from the front
        area_c = np.abs(warp.signed_areas(flat, main)) * (1.0 / frame.scale) ** 2  # in pixels, face-on
        front = (np.sign(area) == np.sign(np.median(area))) & (np.abs(area) > 0.5) & (np.abs(area) > 0.35 * area_c)
        # where a turning head occludes itself (the cheek beyond the nose wings, the sides of the face, the eye
        # corners), triangles may fold: drawn first, the triangles around them cover them, as in a real turn.
        # Everywhere else (eyes, mouth, the middle of the face) the warp must not fold (checked per frame).
        cx, cy = np.abs(self.canon[:, 0]), self.canon[:, 1]
        may_fold = np.zeros(len(self.src), bool)
        may_fold[: face.N_MESH] = (cx > 5.0) | ((cy > -3.4) & (cy < 0.2) & (cx < 2.9))
        may_fold[[c for e in EYES for c in e["corners"]]] = True
        may_fold[face.N_MESH:] = True
        self.checked = main[front & ~may_fold[main].any(1)]
        self.tris_main = main[front]
        self.tris_back = main[~front]
        self.eyeball = eyeball
        self.tris = np.concatenate([main[~front], eyeball, self.tris_main])  # later triangles cover earlier ones
        self.n_main = n_main
        # depth: a 3D rotation of the full-depth mesh folds the face where it turns away from the camera (the
        # sides, the nose wings): the warp cannot hide what turns out of view. The face's depth is flattened as
        # little as needed for the largest poses to move without a fold (0: a flat face, which never folds).
        full, ring_full = self.canon, self.ring_canon
        z0 = float(np.median(full[:, 2]))
        self.depth = 0.0
        for depth in (1.0, 0.8, 0.6, 0.45, 0.3, 0.15, 0.0):
            self.canon, self.ring_canon = full.copy(), ring_full.copy()
            self.canon[:, 2] = z0 + depth * (full[:, 2] - z0)
            self.ring_canon[:, 2] = z0 + depth * (ring_full[:, 2] - z0)
            self.depth = depth
            if not any(warp.flipped(self.src[:n_main], self.points(np.array(p, float), 1.0)[:n_main],
                                    self.checked).any() for p in _EXTREMES):
                break
        log.debug("'%s': head motion with %.0f%% of the face's depth", source, 100 * self.depth)
        # safety: how much motion this photo allows, and whether it can blink
        self.head_scale, self.blinks = 1.0, True
        yaw, pitch = facing_angles(lm, self.shape)
        turn = max(abs(yaw) / 30.0, abs(pitch) / 25.0)
        if turn > 1.0:
            self.head_scale = float(np.clip(2.0 - turn, 0.0, 0.5))
            log.info("'%s': the face is turned (yaw %.0f, pitch %.0f deg): head motion reduced to %.0f%%",
                     source, yaw, pitch, 100 * self.head_scale)
        margin = min(oval_img[:, 0].min(), oval_img[:, 1].min(), w - 1 - oval_img[:, 0].max(),
                     h - 1 - oval_img[:, 1].max())
        face_w = np.ptp(oval_img[:, 0])
        if margin < 0.03 * face_w:
            self.head_scale = min(self.head_scale, 0.35 if margin > -0.15 * face_w else 0.0)
            log.info("'%s': the face touches the image border: head motion reduced to %.0f%%", source,
                     100 * self.head_scale)
        ok, why = eyes_visible(image, lm)
        if not ok:
            self.blinks = False
            log.info("'%s': %s: no blinks", source, why)
        # background plate (person segmented out, inpainted)
        face_w = max(face_w, 8.0)
        person = selfie_mask(image) if segment else None
        hull = np.zeros(self.shape, np.uint8)
        cv2.fillConvexPoly(hull, np.round(self.ring_src[:m]).astype(np.int32), 1)  # the head, to the first ring
        if person is None or person.shape != self.shape:
            person = hull.astype(np.float32)
        else:
            person = np.maximum(person, hull.astype(np.float32))
        # the person's opacity: segmentation noise in the scene -> exactly 0, and 1 from a probability of 0.5 up
        # (the segmentation is unsure inside clothes at the image border: there the person must stay opaque)
        self.person = np.clip((person - 0.15) / 0.35, 0.0, 1.0)
        plate, self.plate_region = background_plate(image, person, int(0.06 * face_w))
        # what lies behind each pixel: the plate where the photo shows the person, the photo's own pixels where it
        # shows the scene (the plate's inpainted band around the person would erase scene detail there and cut
        # whatever the segmentation missed, e.g. a collar: only what the person uncovers comes from the plate)
        a = self.person[..., None]
        self.plate = (image * (1.0 - a) + plate * a + 0.5).astype(np.uint8)
        # the box the warp may touch: every triangle at the largest motion, plus a margin
        self.box = warp.triangles_box(self.src, self.tris, self.shape, pad=int(0.1 * face_w) + 4)
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            self._grid = tuple(np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)))

    def points(self, pose: np.ndarray, closure: float) -> np.ndarray:
        """Target positions (same order as ``self.src``) for head pose offsets (yaw, pitch, roll) and a closure."""
        c = self.canon
        rot = rotation(*pose)
        base = self.frame.to_image(c)[:, :2]
        moved = (close_eyes(c, closure) if closure > 0 else c) - PIVOT
        dst468 = self.src468 + self.frame.to_image(moved @ rot.T + PIVOT)[:, :2] - base
        ring_moved = (self.ring_canon - PIVOT) @ rot.T + PIVOT
        d = self.frame.to_image(ring_moved)[:, :2] - self.frame.to_image(self.ring_canon)[:, :2]
        ring_dst = self.ring_src + self.follow * d
        eye = self.canon[self.eye_idx]
        eye_moved = self.frame.to_image((eye - PIVOT) @ rot.T + PIVOT)[:, :2]
        eye_dst = self.src468[self.eye_idx] + eye_moved - base[self.eye_idx]
        return np.concatenate([dst468, ring_dst, eye_dst])

    def transform(self, canon_points: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Canonical points (..., 3) of the face -> image (x, y) after the head moved by ``pose``."""
        p = np.asarray(canon_points, np.float64)
        moved = (p.reshape(-1, 3) - PIVOT) @ rotation(*pose).T + PIVOT
        return self.frame.to_image(moved)[:, :2].reshape(p.shape[:-1] + (2,))

    def maps(self, pose: np.ndarray, closure: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Backward maps over ``self.box`` (warp.piecewise_affine_maps) for a pose and an eyelid closure."""
        dst = self.points(pose, closure)
        main_src, main_dst = self.src[: self.n_main], dst[: self.n_main]
        safe, _ = warp.safe_target(main_src, main_dst, self.checked)
        dst[: self.n_main] = safe
        folded = warp.flipped(main_src, safe, self.tris_main)
        tris = self.tris
        if folded.any():  # folds where the head occludes itself: drawn first, so their neighbours cover them
            tris = np.concatenate([self.tris_back, self.tris_main[folded], self.eyeball, self.tris_main[~folded]])
        # a triangle squeezed to a line (an eye corner at full closure) has no inverse worth sampling: leave it
        # out, its neighbours meet over it
        collapsed = np.abs(warp.signed_areas(dst, tris)) < 0.25
        if collapsed.any():
            tris = tris[~collapsed]
        self.last_tris = tris  # the rows ``tri`` of the returned maps index
        return warp.piecewise_affine_maps(self.src, dst, tris, self.box)

    def apply(self, image: np.ndarray, pose: np.ndarray, closure: float = 0.0) -> np.ndarray:
        """The frame (the photo with its mouth painted) with the head moved and the lids closed by ``closure``."""
        pose = np.asarray(pose, np.float64)
        if self.box is None or (not np.any(np.abs(pose) > 1e-4) and closure <= 1e-4):
            return image
        map_x, map_y, tri = self.maps(pose, closure)
        x0, y0, x1, y1 = self.box
        warped = cv2.remap(image, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.remap(self.person, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        xs, ys = self._grid
        # where the source moved (by 0.02 px or more) and the (moved) person is not: the background plate, so the
        # scene behind the head neither smears nor tears
        wgt = np.clip(np.sqrt((map_x - xs) ** 2 + (map_y - ys) ** 2) * 50.0, 0.0, 1.0) * (1.0 - alpha)
        keep = tri < 0
        wgt[keep] = 0.0
        idx = wgt > 1.0 / 512
        if idx.any():
            w = wgt[idx][:, None]
            warped[idx] = (warped[idx] * (1.0 - w) + self.plate[y0:y1, x0:x1][idx] * w + 0.5).astype(np.uint8)
        warped[keep] = image[y0:y1, x0:x1][keep]  # uncovered pixels: exactly the input
        out = image.copy()
        out[y0:y1, x0:x1] = warped
        return out


def close_eyes(canon: np.ndarray, closure: float) -> np.ndarray:
    """Canonical face points (468, 3) with both eyes closed by ``closure`` in [0, 1]: the upper lid margin comes
    down to a line a tenth of the way up from the lower lid, the lower lid rises to it, the lid's skin up to its
    crease comes down with it and the skin towards the brow part of the way (the lid unfolds). Chosen so that FaceMesh
    re-tracks rendered blinks about as closed as real ones (scripts/eval_liveliness.py)."""
    c = np.array(canon, np.float64, copy=True)
    k = float(np.clip(closure, 0.0, 1.0))
    for e in EYES:
        up, lo = np.asarray(e["upper"]), np.asarray(e["lower"])
        meet = canon[lo] + 0.1 * (canon[up] - canon[lo])
        d_up = k * (meet - canon[up])
        d_lo = k * (meet - canon[lo])
        c[up] += d_up
        c[lo] += d_lo
        c[np.asarray(e["upper2"])] += 1.0 * d_up
        c[np.asarray(e["upper3"])] += 0.3 * d_up
        c[np.asarray(e["lower2"])] += 0.3 * d_lo
    return c
