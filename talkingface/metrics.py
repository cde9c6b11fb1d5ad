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
    """Inner-lip gap per frame / iod. mouth: (T, 59, >=2) -> (T,)."""
    return np.linalg.norm(mouth[:, I_UP, :2] - mouth[:, I_LO, :2], axis=-1) / iod


def width(mouth: np.ndarray, iod: float) -> np.ndarray:
    """Mouth-corner distance per frame / iod. (T, 59, >=2) -> (T,)."""
    return np.linalg.norm(mouth[:, I_LEFT, :2] - mouth[:, I_RIGHT, :2], axis=-1) / iod


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


def sharpness(images: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean variance of the Laplacian of grey images (N, H, W, 3) uint8, inside an optional (H, W) mask."""
    vals = []
    for img in images:
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float64)
        lap = cv2.Laplacian(grey, cv2.CV_64F)
        vals.append(lap[mask > 0].var() if mask is not None else lap.var())
    return float(np.mean(vals)) if vals else 0.0


def neutral_mouth(mouth: np.ndarray, valid: np.ndarray, quantile: float = 0.15) -> np.ndarray:
    """A person's resting mouth: the median shape (T, 59, D) -> (59, D) over the most closed valid frames."""
    iod = canonical_iod()
    op = opening(mouth, iod)
    ok = np.flatnonzero(valid) if valid.any() else np.arange(len(mouth))
    thr = np.quantile(op[ok], quantile)
    rest = ok[op[ok] <= thr]
    return np.median(mouth[rest], axis=0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
