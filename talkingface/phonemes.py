"""Phoneme timing: the type, the phoneme -> viseme map, and the correction of a mouth track by phonemes.

Where timings come from: the TTS (``tts.py``: Piper's per-phoneme durations, espeak-ng's phoneme events) or
forced alignment of recorded speech to its transcript (``align.py``, PocketSphinx). All of them produce a
list of :class:`Phone` with IPA symbols and times in seconds of the audio; silence is ``SILENCE``.

Visemes are the nine mouth shapes of Rhubarb Lip Sync (after Preston Blair), which animators already know:

====  ===========================================  =========================================
 A    closed lips                                  m, b, p
 B    slightly open, teeth together                most consonants (k, s, t, d, n, ...), "ee"
 C    open                                         "eh", "ae", "uh", schwa
 D    wide open                                    "aa", "ah" (father)
 E    slightly rounded                             "aw", "er", "o"
 F    puckered                                     "oo", "w", "ʊ", "y" (French/German ü)
 G    upper teeth on lower lip                     f, v
 H    tongue up, mouth open                        l
 X    rest                                         silence and pauses
====  ===========================================  =========================================

``apply_phoneme_timing`` uses two of them as constraints on the landmark model's track: lips closed during
A (bilabials), lips narrowed during F (rounded vowels and w). What it buys is measured in docs/LIPSYNC.md.
"""
from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SILENCE = "_"  # symbol of a pause / silence phone

VISEMES = {
    "A": "closed lips (m, b, p)",
    "B": "slightly open, teeth together (most consonants, 'ee')",
    "C": "open ('eh', 'ae', 'uh')",
    "D": "wide open ('aa')",
    "E": "slightly rounded ('aw', 'er', 'o')",
    "F": "puckered ('oo', 'w')",
    "G": "upper teeth on lower lip (f, v)",
    "H": "tongue up ('l')",
    "X": "rest (silence)",
}

# IPA base symbol (diacritics, stress and length marks stripped) -> viseme
_VISEME_OF: dict[str, str] = {}
for _v, _syms in {
    "A": "m b p ʙ β ɓ",
    "B": "k g ɡ s z t d n ŋ ɲ ɳ ʃ ʒ ʧ ʤ j h ɦ ɹ r ɾ ʀ ʁ ɻ x ç ʝ ɣ χ ʔ c ɟ q ɕ ʑ ʂ ʐ θ ð i ɪ ɨ ɯ ʏ ɘ ɰ ħ ʕ ɖ ʈ ɽ ǀ",
    "C": "ɛ e æ ə ʌ ɜ ɐ ɞ ɤ",
    "D": "a ɑ ä ɶ",
    "E": "ɔ o ɒ ɚ ɝ ɵ ø œ",
    "F": "u ʊ w ɥ y ʉ ʍ",
    "G": "f v ɱ ʋ",
    "H": "l ɫ ʎ ɭ ɬ ɮ ʟ",
}.items():
    for _s in _syms.split():
        _VISEME_OF[_s] = _v

BILABIAL = "A"
ROUNDED = "F"


@dataclass(frozen=True)
class Phone:
    """One phoneme of an utterance: IPA ``symbol`` (or ``SILENCE``) from ``start`` to ``end`` (seconds)."""

    symbol: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def viseme(self) -> str:
        return viseme_of(self.symbol)


def base_symbol(symbol: str) -> str:
    """The IPA letter of a phoneme symbol: stress/length marks, tie bars and combining diacritics removed."""
    s = unicodedata.normalize("NFD", symbol)
    s = "".join(ch for ch in s if not unicodedata.combining(ch) and ch not in "ˈˌːˑ͡‿-")
    return s


def viseme_of(symbol: str) -> str:
    """Viseme letter (A-H, X) of an IPA phoneme; unknown letters count as B (the most common consonant shape)."""
    s = base_symbol(symbol)
    if not s or s == SILENCE or not any(ch.isalpha() for ch in s):
        return "X"
    for ch in s:  # diphthongs and affricates: the first letter that is known decides
        if ch in _VISEME_OF:
            return _VISEME_OF[ch]
    return "B"


def viseme_segments(phones: Sequence[Phone], *, fps: float | None = None,
                    duration: float | None = None) -> list[dict]:
    """Phones -> viseme track [{"viseme", "start", "end", "phonemes"}], neighbours with one viseme merged.

    With ``fps`` the boundaries are snapped to the nearest frame boundary (so they are within half a frame of
    the phoneme boundaries), segments that snap to nothing are dropped, except closed lips (A), which keep the
    frame that holds their middle. Gaps and the end up to ``duration`` are rest (X).
    """
    segs: list[dict] = []

    def add(vis: str, start: float, end: float, sym: str) -> None:
        if end <= start:
            return
        if segs and segs[-1]["viseme"] == vis and abs(segs[-1]["end"] - start) < 1e-6:
            segs[-1]["end"] = end
            if sym:
                segs[-1]["phonemes"].append(sym)
            return
        segs.append({"viseme": vis, "start": start, "end": end, "phonemes": [sym] if sym else []})

    t = 0.0
    items = []
    for p in sorted(phones, key=lambda p: p.start):
        if p.start > t + 1e-6:
            items.append(("X", t, p.start, ""))
        start = max(p.start, t)
        items.append((p.viseme, start, p.end, "" if p.viseme == "X" else p.symbol))
        t = max(t, p.end)
    if duration is not None and duration > t + 1e-6:
        items.append(("X", t, duration, ""))
    if fps:
        snapped = []
        for vis, s, e, sym in items:
            fs, fe = round(s * fps), round(e * fps)
            if fe <= fs:
                if vis != BILABIAL:
                    continue
                fs = int(np.floor((s + e) / 2 * fps))
                fe = fs + 1
            snapped.append([vis, fs, fe, sym])
        # a closure that claimed a frame pushes its neighbours' boundaries; keep the track contiguous
        for i in range(1, len(snapped)):
            prev, cur = snapped[i - 1], snapped[i]
            if cur[1] < prev[2]:
                if cur[0] == BILABIAL:
                    prev[2] = cur[1]
                else:
                    cur[1] = prev[2]
            elif cur[1] > prev[2]:
                cur[1] = prev[2]
        for vis, fs, fe, sym in snapped:
            if fe > fs:
                add(vis, fs / fps, fe / fps, sym)
    else:
        for vis, s, e, sym in items:
            add(vis, s, e, sym)
    return segs


def frame_visemes(phones: Sequence[Phone], n_frames: int, fps: float) -> list[str]:
    """Viseme letter of each video frame (the viseme segment that holds the frame)."""
    out = ["X"] * n_frames
    for seg in viseme_segments(phones, fps=fps):
        for i in range(round(seg["start"] * fps), min(n_frames, round(seg["end"] * fps))):
            out[i] = seg["viseme"]
    return out


# --- correcting a mouth track ----------------------------------------------------------------------------
# face.MOUTH order: 20 outer lip points, 20 inner lip points, 19 jaw points (see face.py).
_OUTER, _INNER, _JAW = slice(0, 20), slice(20, 40), slice(40, 59)
# Inner lip: index 0 (78) and 10 (308) are the corners, 1-9 run along the lower lip (95 ... 324),
# 11-19 back along the upper lip (415 ... 191); inner 1 faces inner 19, 2 faces 18, ...
_INNER_LOWER = np.arange(21, 30)  # MOUTH indices of the lower inner lip, left to right
_INNER_UPPER = np.arange(39, 30, -1)  # the upper inner points facing them
# Outer lip: 0 (61) and 10 (291) are the corners, 1-9 lower lip, 11-19 upper lip.
_UPPER = np.r_[np.arange(11, 20), np.arange(31, 40)]  # upper lip points, outer and inner
_LOWER = np.r_[np.arange(1, 10), np.arange(21, 30), np.arange(40, 59)]  # lower lip and jaw move together
_LIPS = np.r_[np.arange(0, 40)]

CLOSED_GAP_CM = 0.03  # inner-lip gap (canonical cm) that counts as pressed lips, as FaceMesh sees them
ROUND_WIDTH = 0.85  # lip width during a puckered viseme, as a fraction of the resting width at most


def _frame_weights(phones: Sequence[Phone], viseme: str, n: int, fps: float) -> np.ndarray:
    """Per-frame weight in [0, 1] of ``viseme``: 1 on frames whose middle lies in such a phone (or the frame
    nearest its middle when the phone is shorter than a frame), 0.5 on the frames right beside them."""
    w = np.zeros(n, dtype=np.float32)
    centers = (np.arange(n) + 0.5) / fps  # frame i covers audio [i / fps, (i + 1) / fps)
    for p in phones:
        if p.viseme != viseme:
            continue
        hit = np.flatnonzero((centers >= p.start) & (centers < p.end))
        if hit.size == 0:
            hit = np.array([int(np.clip((p.start + p.end) / 2 * fps, 0, n - 1))])
        hit = hit[hit < n]
        if hit.size == 0:
            continue
        w[hit] = 1.0
        for j in (hit[0] - 1, hit[-1] + 1):
            if 0 <= j < n:
                w[j] = max(w[j], 0.5)
    return w


def _gaps(track: np.ndarray) -> np.ndarray:
    """Inner-lip vertical gap (canonical y is up) along the mouth. (T, 59, 3) -> (T, 9) cm."""
    return track[:, _INNER_UPPER, 1] - track[:, _INNER_LOWER, 1]


def close_lips(track: np.ndarray, weight: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Move the lips of each frame towards closed by ``weight`` (T,): the upper lip down and the lower lip
    with the jaw up, each by half of the excess gap (the part above the pressed-lips gap)."""
    out = track.copy()
    target = np.minimum(np.maximum(_gaps(neutral[None])[0], 0.0), CLOSED_GAP_CM)  # (9,)
    excess = np.maximum(_gaps(track) - target[None], 0.0) * weight[:, None]  # (T, 9)
    # the gap is known at 9 x positions; corners have none: interpolate along x for every point
    for t in np.flatnonzero(weight > 0):
        xs = np.r_[track[t, 20, 0], track[t, _INNER_LOWER, 0], track[t, 30, 0]]
        gs = np.r_[0.0, excess[t], 0.0]
        order = np.argsort(xs)
        half = 0.5 * np.interp(track[t, :, 0], xs[order], gs[order])  # (59,)
        out[t, _UPPER, 1] -= half[_UPPER]
        jaw_half = 0.5 * float(excess[t].max())  # the jaw moves as one piece with the lower lip's middle
        out[t, _LOWER[:18], 1] += half[_LOWER[:18]]
        out[t, _JAW, 1] += jaw_half
    return out


def round_lips(track: np.ndarray, weight: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Narrow the lips of each frame towards at most ROUND_WIDTH of the resting width, by ``weight`` (T,)."""
    out = track.copy()
    rest_w = float(neutral[10, 0] - neutral[0, 0])  # outer corners 291 - 61
    width = track[:, 10, 0] - track[:, 0, 0]  # (T,)
    scale = np.minimum(1.0, ROUND_WIDTH * rest_w / np.maximum(width, 1e-6))  # (T,) <= 1
    scale = 1.0 - weight * (1.0 - scale)
    cx = 0.5 * (track[:, 10, 0] + track[:, 0, 0])  # (T,)
    out[:, _LIPS, 0] = cx[:, None] + (track[:, _LIPS, 0] - cx[:, None]) * scale[:, None]
    return out


def apply_phoneme_timing(track: np.ndarray, neutral: np.ndarray, phonemes: Sequence[Phone],
                         fps: float = 25) -> np.ndarray:
    """Correct a predicted mouth track with phoneme timing of the same audio.

    track: (T, 59, 3) canonical mouth per frame (frame i = audio [i / fps, (i + 1) / fps)); neutral: (59, 3)
    the resting mouth; phonemes: list of Phone. Returns a new (T, 59, 3) track where the lips are closed on
    bilabials (m, b, p) and narrowed on rounded sounds ("oo", w). Frames away from those phones are unchanged.
    """
    track = np.asarray(track, dtype=np.float32)
    n = len(track)
    if not phonemes or n == 0:
        return track
    w_round = _frame_weights(phonemes, ROUNDED, n, fps)
    w_close = _frame_weights(phonemes, BILABIAL, n, fps)
    out = round_lips(track, w_round, neutral) if w_round.any() else track
    out = close_lips(out, w_close, neutral) if w_close.any() else out
    return out.astype(np.float32)
