#!/usr/bin/env python3
"""The mouth strips of docs/MOUTH.md, from redistributable inputs only (the demo photo, the GRID clips, CC BY 4.0).

Rows: the input, then each texture method (``talkingface.load(texture=...)``); columns: the same frames for every
row (the most open predicted mouths and one rest frame), the lower face at native resolution, enlarged 2x with
nearest-neighbour so pixels stay visible.

    python scripts/make_mouth_strips.py                      # -> docs/mouth_photo_strip.jpg, docs/mouth_dub_strip.jpg
                                                             #    and the README's docs/astronaut_strip.jpg
    python scripts/make_mouth_strips.py --methods texture-v1,warp,mouth-v2 --checkpoints checkpoints
"""
import argparse
import os

import cv2
import numpy as np

import talkingface
from talkingface import RenderOptions, media
from talkingface.dub import DubOptions
from talkingface.errors import CheckpointError
from talkingface.evaluate import lip_box


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _box(lips: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """One 3:2 box around the mouth and jaw points (T, n, 2) of every frame, 1.1 times their width."""
    points = lips.reshape(-1, 2)
    return lip_box(points[np.isfinite(points).all(1)], shape, widen=1.1)


def _strip(rows: list[tuple[str, list[np.ndarray]]], idx: list[int], box, zoom: int = 2) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = []
    for name, frames in rows:
        tiles = [cv2.resize(frames[i][y0:y1, x0:x1], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
                 for i in idx]
        tiles[0] = _label(tiles[0], name)
        out.append(np.hstack(tiles))
    return np.vstack(out)


def _pick(opening: np.ndarray, n: int) -> list[int]:
    """One rest frame and the n - 1 most open frames, at least 3 frames apart, in time order."""
    chosen: list[int] = []
    opening = np.nan_to_num(opening, nan=0.0)
    for i in np.argsort(-opening):
        if all(abs(int(i) - j) >= 3 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == n - 1:
            break
    return sorted(chosen + [int(np.argmin(opening))])


def _pipes(methods: list[str], checkpoints: str | None) -> list[tuple[str, talkingface.Pipeline]]:
    pipes = []
    for m in methods:
        try:
            pipes.append((m, talkingface.load(checkpoints, texture=m)))
        except CheckpointError as e:
            print(f"skipping {m}: {e}")
    return pipes


def readme_strip(root: str, out: str, n: int = 7, height: int = 240) -> None:
    """The README's picture: the quick start's render (the default pipeline and options: the demo photo speaking
    demo/grid_lwbsza.wav, head motion and blinks included), one rest frame and the ``n`` - 1 most open, the head (a
    square 1.8 times the mouth and jaw points wide, the same for every frame) scaled to ``height`` px."""
    res = talkingface.load().render(os.path.join(root, "demo", "astronaut.jpg"),
                                    os.path.join(root, "demo", "grid_lwbsza.wav"), return_frames=True)
    idx = _pick(np.ptp(res.mouth_landmarks[:, :, 1], axis=1), n)
    lips = res.mouth_landmarks[idx].reshape(-1, 2)
    side = 1.8 * np.ptp(lips[:, 0])
    cx, cy = np.nanmean(lips, axis=0)
    h, w = res.frames[0].shape[:2]
    x0, y0 = int(np.clip(cx - side / 2, 0, w - side)), int(np.clip(cy - 0.6 * side, 0, h - side))
    s = int(side)
    tiles = [cv2.resize(res.frames[i][y0:y0 + s, x0:x0 + s], (height, height), interpolation=cv2.INTER_AREA)
             for i in idx]
    cv2.imwrite(os.path.join(out, "astronaut_strip.jpg"), np.hstack(tiles)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="texture-v1,warp,mouth-v2")
    ap.add_argument("--checkpoints", default=None)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--out", default="docs")
    args = ap.parse_args()
    pipes = _pipes([m.strip() for m in args.methods.split(",") if m.strip()], args.checkpoints)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    # photo mode: the demo photo (closed mouth) speaking a GRID sentence, head still so frames line up
    photo = media.load_image(os.path.join(root, "demo", "astronaut.jpg"))
    wav = media.load_audio(os.path.join(root, "demo", "grid_lwbsza.wav"))
    rows, idx, box = [], None, None
    for name, pipe in pipes:
        res = pipe.render(photo, wav, options=RenderOptions(head_motion="still"), return_frames=True)
        if idx is None:
            lips = res.mouth_landmarks
            idx = _pick(np.ptp(lips[:, :, 1], axis=1), args.frames)
            box = _box(lips, photo.shape[:2])
        rows.append((name, res.frames))
    rows.insert(0, ("photo", [photo] * (max(idx) + 1)))
    cv2.imwrite(os.path.join(args.out, "mouth_photo_strip.jpg"), _strip(rows, idx, box)[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 92])

    # dubbing: the GRID fixture clip dubbed with the other GRID sentence
    video = os.path.join(root, "tests", "fixtures", "grid_lwbsza.mp4")
    other = media.load_audio(os.path.join(root, "demo", "grid_sbwe5n.wav"))
    src = list(media.iter_video_frames(video, fps=25))
    rows, idx, box = [("input", src)], None, None
    tmp = os.path.join(args.out, ".strip-dub.mp4")
    try:
        for name, pipe in pipes:
            res = pipe.dub(video, other, output=tmp, options=DubOptions(fps=25, length="trim"))
            frames = list(media.iter_video_frames(tmp, fps=25))
            if idx is None:
                lips = res.mouth_landmarks[: len(frames)]
                idx = _pick(np.ptp(lips[:, :, 1], axis=1), args.frames)
                box = _box(lips, src[0].shape[:2])
            rows.append((name, frames))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    cv2.imwrite(os.path.join(args.out, "mouth_dub_strip.jpg"), _strip(rows, idx, box, zoom=3)[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    readme_strip(root, args.out)
    print(f"wrote {args.out}/mouth_photo_strip.jpg, {args.out}/mouth_dub_strip.jpg and {args.out}/astronaut_strip.jpg")


if __name__ == "__main__":
    main()
