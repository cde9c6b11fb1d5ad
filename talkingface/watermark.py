"""An invisible watermark in every frame talkingface writes: "this video was made by talkingface".

Design (our own; see docs/PROVENANCE.md for why not ``invisible-watermark``):

- one secret-free, fixed pseudo-random *tile* (64 x 64, band-limited to 6-22 cycles per tile, i.e. mid
  frequencies) is repeated over the frame with a period tied to the frame's shorter side: a quarter of it on
  frames of 400 px and more (periods of 6-21 px in a 512 px frame), half of it on smaller frames (format version
  2; version 1 used a quarter at every size, which a half-size copy of a small frame turned into wavelengths of
  2-6 px that the downscale and the re-encode erase). It is added to the luma of every frame at about 1.25 grey
  levels RMS (PSNR ~46 dB). The same pattern in every frame gives temporal redundancy: the detector averages many
  frames, the pattern adds up and the moving content does not.
- the period is tied to the frame size, so scaling the video keeps it at the same fraction of the shorter side;
  a crop only shifts the phase of a periodic pattern (found by circular correlation) and shortens the frame a
  little (the detector searches periods from 0.95 to 1.26 times the nominal one); blur and H.264 quantisation
  remove high frequencies, which the pattern does not use.
- detection: high-pass each frame's luma, average over frames, then for both tilings (a quarter and half of the
  shorter side: a scaled copy does not say which size it was made at, and version-1 videos use a quarter at
  every size) and each candidate period resample to a 64 px period, fold into one tile, phase-correlate with the
  key tile; the peak's height over the correlation's noise (a z-score, maximised over the tilings, candidates
  and the 4096 shifts) is the evidence. ``THRESHOLD`` is set far above what unmarked video reaches (see
  docs/PROVENANCE.md for the measured margins).

The mark is a 1-bit label, not a secret: the tile is public (anyone can check for it, and a determined
adversary who knows it can subtract it). It says "made by talkingface", which is all it is meant to say.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np

__all__ = ["TILE", "STRENGTH", "THRESHOLD", "VERSION", "TILINGS", "SMALL_SIDE", "Detection", "Embedder", "embed",
           "detect_frames", "pattern_for", "tiles_per_side"]

VERSION = 2  # 1: a quarter of the shorter side at every size; 2: half of it below SMALL_SIDE
TILE = 64  # the key tile's size in the detection domain
# the pattern's period = shorter side / tiles per side. The detector tries every tiling here: a copy scaled down
# from a large frame and one made small look alike, and version-1 small videos used 4.
TILINGS = (4.0, 2.0)
SMALL_SIDE = 400  # frames whose shorter side is below this get 2 tiles per side (version 2), larger ones 4
BAND = (6.0, 22.0)  # cycles per tile: mid frequencies that survive blur, half-size scaling and crf 28 (measured)
STRENGTH = 1.25  # RMS of the added luma pattern, in grey levels (0-255)
SEED = 0x7A1C_F00D  # fixed: the mark is a public label
THRESHOLD = 7.0  # z-score of the correlation peak above which a video is said to carry the mark
# candidate periods, relative to (shorter side / tiles per side) of the video being checked: a crop makes the
# frame smaller than the one the mark was made for, so the true period is up to ~1/0.8 of the nominal one
_SCALES = np.exp(np.arange(math.log(0.95), math.log(1.26), 0.005))


@lru_cache(maxsize=1)
def key_tile() -> np.ndarray:
    """The 64 x 64 periodic key pattern (float32, zero mean, unit RMS), band-limited to ``BAND``."""
    rng = np.random.default_rng(SEED)
    f = np.fft.fftfreq(TILE) * TILE
    radius = np.hypot(f[:, None], f[None, :])
    band = (radius >= BAND[0]) & (radius <= BAND[1])
    spec = np.exp(2j * np.pi * rng.random((TILE, TILE))) * band
    tile = np.fft.ifft2(spec).real  # real part of a random-phase band: still band-limited and periodic
    tile -= tile.mean()
    tile /= tile.std()
    return tile.astype(np.float32)


def tiles_per_side(height: int, width: int) -> float:
    """How many periods of the pattern fit the shorter side of a frame of this size (the format's version 2)."""
    return TILINGS[1] if min(height, width) < SMALL_SIDE else TILINGS[0]


@lru_cache(maxsize=8)
def pattern_for(height: int, width: int, tiles: float | None = None) -> np.ndarray:
    """The (height, width) float32 pattern (unit RMS) that marks frames of this size; ``tiles`` periods across the
    shorter side (default: ``tiles_per_side``; 4 everywhere reproduces version 1)."""
    period = min(height, width) / (tiles or tiles_per_side(height, width))
    step = TILE / period
    xs = (np.arange(width, dtype=np.float32) * step) % TILE
    ys = (np.arange(height, dtype=np.float32) * step) % TILE
    mapx = np.broadcast_to(xs[None, :], (height, width)).astype(np.float32)
    mapy = np.broadcast_to(ys[:, None], (height, width)).astype(np.float32)
    tile = key_tile()
    big = np.pad(tile, 1, mode="wrap")  # so that bilinear sampling wraps around the tile's edges
    pat = cv2.remap(big, mapx + 1, mapy + 1, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    pat = (pat - pat.mean()) / max(float(pat.std()), 1e-6)
    pat.setflags(write=False)
    return pat


class Embedder:
    """Adds the mark to uint8 RGB frames of one size; precomputes the pattern once (about 1 ms a 512 px frame)."""

    def __init__(self, height: int, width: int, strength: float = STRENGTH, tiles: float | None = None):
        pat = np.round(pattern_for(int(height), int(width), tiles) * float(strength))
        # the same offset on R, G and B changes luma only; rounded once here and split into its positive and
        # negative parts, so that embedding is two saturating uint8 operations (= clip(frame + delta, 0, 255))
        delta = np.repeat(pat[..., None], 3, axis=2)
        self._plus = np.clip(delta, 0, 255).astype(np.uint8)
        self._minus = np.clip(-delta, 0, 255).astype(np.uint8)
        self.shape = (int(height), int(width), 3)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape != self.shape or frame.dtype != np.uint8:
            raise ValueError(f"watermark: frame must be uint8 {self.shape}, got {frame.dtype} {frame.shape}")
        return cv2.subtract(cv2.add(np.ascontiguousarray(frame), self._plus), self._minus)


def embed(frame: np.ndarray, strength: float = STRENGTH, tiles: float | None = None) -> np.ndarray:
    """Return ``frame`` (uint8 RGB) with the mark added."""
    return Embedder(frame.shape[0], frame.shape[1], strength, tiles)(frame)


@dataclass(frozen=True)
class Detection:
    found: bool
    score: float  # z-score of the best correlation peak (unmarked video: typically 4-5.5)
    confidence: float  # 1 - the chance that unmarked video reaches this score (Gaussian tail, all tests counted)
    period: float  # the period (pixels) at which the mark was found best
    frames: int  # frames looked at
    tiles: float = 0.0  # the tiling (periods per shorter side) at which it was found best

    def describe(self) -> str:
        if self.found:
            return (f"watermark found (score {self.score:.1f}, threshold {THRESHOLD:g}; "
                    f"confidence {self.confidence:.6f}, {self.frames} frames)")
        return f"no watermark (score {self.score:.1f}, threshold {THRESHOLD:g}; {self.frames} frames)"


def _luma_residual(frame: np.ndarray) -> np.ndarray:
    """High-passed luma of one RGB frame, divided by its local RMS: textured regions (where the picture itself
    hides the mark) count less than smooth ones (where the mark stands out from the picture)."""
    y = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    # the high-pass keeps the band of the finer tiling whole and 83% of the coarser one's lowest frequency
    sigma = max(1.5, min(y.shape) / TILINGS[0] / 10.0)
    r = np.clip(y - cv2.GaussianBlur(y, (0, 0), sigma), -6.0, 6.0)
    return r / np.sqrt(cv2.GaussianBlur(r * r, (0, 0), 4.0) + 1.0)


def _fold(img: np.ndarray) -> np.ndarray:
    """Sum an image into one TILE x TILE tile (position modulo TILE), normalised per tile cell by its count."""
    h, w = img.shape
    ph, pw = -h % TILE, -w % TILE
    acc = np.pad(img, ((0, ph), (0, pw))).reshape((h + ph) // TILE, TILE, (w + pw) // TILE, TILE).sum(axis=(0, 2))
    cnt = np.pad(np.ones((h, w), np.float32), ((0, ph), (0, pw))).reshape(
        (h + ph) // TILE, TILE, (w + pw) // TILE, TILE).sum(axis=(0, 2))
    return acc / np.maximum(cnt, 1.0)


# detection sub-bands (cycles per tile): the whole band, and its lower part alone for copies whose higher
# frequencies were destroyed (half-size scaling, blur), where they would add only noise
DETECT_BANDS = ((6.0, 22.0), (6.0, 14.0))


@lru_cache(maxsize=1)
def _key_spectra() -> list[np.ndarray]:
    k = np.fft.fft2(key_tile())
    mag = np.abs(k)
    f = np.fft.fftfreq(TILE) * TILE
    radius = np.hypot(f[:, None], f[None, :])
    out = []
    for lo, hi in DETECT_BANDS:
        band = (mag > 1e-6 * mag.max()) & (radius >= lo) & (radius <= hi)
        out.append(np.where(band, np.conj(k) / np.maximum(mag, 1e-12), 0))
    return out


def score_residual(mean_residual: np.ndarray, tilings: Iterable[float] = TILINGS) -> tuple[float, float, float]:
    """Best (z-score, period, tiles per side) of the key tile in an averaged high-passed luma image."""
    spectra = _key_spectra()
    h, w = mean_residual.shape
    best = (-np.inf, 0.0, 0.0)
    for tiles in tilings:
        nominal = min(h, w) / tiles
        for s in _SCALES:
            period = nominal * s
            k = TILE / period
            nh, nw = max(TILE, int(round(h * k))), max(TILE, int(round(w * k)))
            small = cv2.resize(mean_residual, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
            f = np.fft.fft2(_fold(small))
            f /= np.maximum(np.abs(f), 1e-9)
            for kconj in spectra:
                c = np.fft.ifft2(f * kconj).real
                z = float(c.max() / max(c.std(), 1e-12))
                if z > best[0]:
                    best = (z, period, float(tiles))
    return best


def _confidence(z: float) -> float:
    tests = TILE * TILE * len(_SCALES) * len(DETECT_BANDS) * len(TILINGS)
    tail = 0.5 * math.erfc(z / math.sqrt(2.0))
    return max(0.0, 1.0 - min(1.0, tests * tail))


def detect_frames(frames: Iterable[np.ndarray], max_frames: int = 150) -> Detection:
    """Look for the mark in RGB uint8 frames (any size: scaled, cropped, re-encoded copies included)."""
    acc = None
    n = 0
    for fr in frames:
        r = _luma_residual(fr)
        if acc is None:
            acc = r.astype(np.float64)
        elif r.shape != acc.shape:
            break
        else:
            acc += r
        n += 1
        if n >= max_frames:
            break
    if acc is None:
        return Detection(False, 0.0, 0.0, 0.0, 0)
    if min(acc.shape) < TILE:  # too small to hold several periods at a resolvable scale
        return Detection(False, 0.0, 0.0, 0.0, n)
    z, period, tiles = score_residual((acc / n).astype(np.float32))
    return Detection(z >= THRESHOLD, z, _confidence(z), period, n, tiles)
