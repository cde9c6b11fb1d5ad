"""Measures for mouth motion and image sharpness, shared by training, evaluation and tests.

Mouth shapes here are ``(T, 59, >=2)`` arrays in face.MOUTH order (lips outer, lips inner, jaw), either in
the canonical normalized space or in image pixels; each measure is divided by the inter-ocular distance
``iod`` of the same space, so numbers are comparable across faces and resolutions.
"""
from __future__ import annotations

import cv2
import numpy as np

from . import face

_IDX = {v: i for i, v in enumerate(face.MOUTH)}
I_UP, I_LO = _IDX[face.UPPER_LIP_IN], _IDX[face.LOWER_LIP_IN]
I_LEFT, I_RIGHT = _IDX[face.MOUTH_LEFT], _IDX[face.MOUTH_RIGHT]
N_LIPS = len(face.LIPS_OUTER) + len(face.LIPS_INNER)  # the first 40 points of face.MOUTH


def canonical_iod() -> float:
    m = face.canonical_mesh()
    return float(np.linalg.norm(m[face.EYE_OUTER_R] - m[face.EYE_OUTER_L]))


def opening(mouth: np.ndarray, iod: float) -> np.ndarray:
    """Inner-lip gap per frame / iod (face.mouth_opening). mouth: (T, 59, >=2) -> (T,)."""
    return face.mouth_opening(mouth, iod)


def width(mouth: np.ndarray, iod: float) -> np.ndarray:
    """Mouth-corner distance per frame / iod (face.mouth_width). (T, 59, >=2) -> (T,)."""
    return face.mouth_width(mouth, iod)


def lip_distance(pred: np.ndarray, real: np.ndarray, iod: float) -> float:
    """Mean 2D distance over the 40 lip points and all frames / iod."""
    return float(np.linalg.norm(pred[:, :N_LIPS, :2] - real[:, :N_LIPS, :2], axis=-1).mean() / iod)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; 0.0 when either side is constant (a static mouth carries no signal)."""
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def pearson_lagged(pred: np.ndarray, real: np.ndarray, max_lag: int = 2) -> tuple[float, int]:
    """Best Pearson r over lags -max_lag..max_lag (pred shifted against real) and that lag.

    lag > 0 means the prediction comes *late*: pred[t + lag] is compared with real[t].
    """
    best, best_lag = -2.0, 0
    n = min(len(pred), len(real))
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            p, r = pred[lag:n], real[: n - lag]
        else:
            p, r = pred[: n + lag], real[-lag:n]
        if len(p) < 3:
            continue
        c = pearson(p, r)
        if c > best:
            best, best_lag = c, lag
    return (best if best > -2 else 0.0), best_lag


def sharpness(images: np.ndarray, masks: np.ndarray | None = None) -> float:
    """Mean variance of the Laplacian of images (N, H, W, 3) uint8 in grey; with ``masks`` (N, H, W) bool, only
    over each image's mask shrunk by one pixel, so no pixel next to the mask's edge (a black border, an
    unpainted area) enters the 3x3 Laplacian. Images whose shrunk mask holds fewer than 16 pixels are skipped."""
    vals = []
    kernel = np.ones((3, 3), np.uint8)
    for i, img in enumerate(images):
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
        lap = cv2.Laplacian(grey, cv2.CV_64F)
        if masks is None:
            vals.append(lap[1:-1, 1:-1].var())
            continue
        inner = cv2.erode(masks[i].astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
        if inner.sum() >= 16:
            vals.append(lap[inner].var())
    return float(np.mean(vals)) if vals else float("nan")


def sharpness_ratio(out: np.ndarray, real: np.ndarray, masks: np.ndarray) -> float:
    """sharpness(out) / sharpness(real) over the same per-image masks (N, H, W): the pixels a method changed,
    measured with the same border handling on both sides. 1.0 = as sharp as the real frames."""
    keep = np.array([m.sum() > 0 for m in masks], bool)
    if not keep.any():
        return float("nan")
    den = sharpness(real[keep], masks[keep])
    return sharpness(out[keep], masks[keep]) / den if den > 1e-9 else float("nan")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004: 11-tap Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two grey
    uint8 images (H, W), mean over the valid window positions."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def delta_e(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean CIELAB colour difference (CIE76 Delta E) of two RGB uint8 images (H, W, 3), over ``mask`` (H, W)."""
    la = cv2.cvtColor(a.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    lb = cv2.cvtColor(b.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    d = np.linalg.norm(la - lb, axis=-1)
    return float(d[mask > 0].mean() if mask is not None else d.mean())


def mean_colour_delta_e(a: np.ndarray, mask_a: np.ndarray, b: np.ndarray, mask_b: np.ndarray) -> float:
    """CIE76 Delta E between the mean CIELAB colour of ``a`` over ``mask_a`` and of ``b`` over ``mask_b`` (RGB
    uint8 images, (H, W) masks): a colour error that a shape or position difference between the masks does not
    enter (lipstick turned pink counts, lips drawn 2 px lower do not)."""
    la = cv2.cvtColor(a.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[mask_a > 0].mean(0)
    lb = cv2.cvtColor(b.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[mask_b > 0].mean(0)
    return float(np.linalg.norm(la - lb))


def neutral_mouth(mouth: np.ndarray, valid: np.ndarray, quantile: float = 0.15) -> np.ndarray:
    """A person's resting mouth: the median shape (T, 59, D) -> (59, D) over the most closed valid frames."""
    iod = canonical_iod()
    op = opening(mouth, iod)
    ok = np.flatnonzero(valid) if valid.any() else np.arange(len(mouth))
    thr = np.quantile(op[ok], quantile)
    rest = ok[op[ok] <= thr]
    return np.median(mouth[rest], axis=0)


MOTION_RANGE_FLOOR = 0.02  # cm (0.2 mm): a coordinate that barely moves is not scaled up from its noise


def motion_range(mouth: np.ndarray, neutral: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """A person's range of mouth motion: the standard deviation of each coordinate's offset from the resting
    mouth over the valid frames, (T, P, D) -> (P, D), floored at ``MOTION_RANGE_FLOOR``. The landmark model
    learns motion divided by this, per training speaker (``landmark_training.speaker_scales``)."""
    off = np.asarray(mouth) - neutral
    if valid is not None:
        off = off[np.asarray(valid, bool)]
    if len(off) < 2:
        raise ValueError("the range of motion needs at least two valid frames")
    return np.maximum(off.std(axis=0), MOTION_RANGE_FLOOR)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
