"""How well the invisible watermark survives each transformation of the issue, per output frame size.

    python scripts/eval_watermark_sizes.py --out runs/wm-sizes [--scheme v2|v1] [--sizes 512x512,360x288]
    python scripts/eval_watermark_sizes.py --out runs/wm-sizes --fp-only [--fp-range 0:40]

Carriers (the "outputs"): 3 s of three real clips (a dub marks the whole frame, so a marked real clip is what a dub
of it looks like to the detector) and three photo renders of real photos by this project's pipeline (static
backgrounds: the harder case, since the detector's averaging over frames does not remove a static picture). Each
carrier is cut to each frame size (central crop to the aspect ratio, then an area resize), marked and written as
the project writes its outputs (``media.VideoWriter`` with a label: crf 18), then transformed with the same ffmpeg
commands as ``scripts/eval_provenance.py`` (crf 28; half size then crf 23; central 90% crop then crf 23; Gaussian
blur sigma 1.5 then crf 23) and checked with ``watermark.detect_frames``. ``--scheme v1`` marks with the format-1
tiling (a quarter of the shorter side at every size) for the before/after comparison; the detector is the current
one, which looks for both tilings.

PSNR: the marked frames against the same frames unmarked (before encoding), every 5th frame.
``--fp-only``: the false-positive pass of ``scripts/eval_provenance.py`` (every real clip in shared/data/videos and
videos_silent, none made by this project, and its crf 28, half-size and 10%-crop re-encodes).

Writes results.json, table.md and strip.png (unmarked | marked | 16x the difference, for one carrier per size).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from eval_provenance import SHARED, TRANSFORMS, ffmpeg, false_positives  # noqa: E402

from talkingface import media, watermark  # noqa: E402
from talkingface.provenance import Label  # noqa: E402

SIZES = ("1280x720", "512x512", "448x448", "640x360", "474x266", "360x288", "256x256", "200x300", "112x112")
CLIPS = ("rizkiarm__LipNet__GRID_brbk7n.mp4", "FuxiVirtualHuman__styletalk__Obama_clip1.mp4",
         "OpenTalker__SadTalker__WDA_KatieHill_000.mp4")
PHOTOS = ("KwaiVGI__LivePortrait__d8.jpg", "KwaiVGI__LivePortrait__s12.jpg", "OpenTalker__SadTalker__people_0.png")
SECONDS = 3.0
FPS = 25
KINDS = [k for k in TRANSFORMS if k != "metadata-stripping remux"]  # a remux does not touch the frames


def carriers(cache: Path, log) -> dict[str, np.ndarray]:
    """name -> (T, H, W, 3) uint8 unmarked frames, cached in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    n = int(SECONDS * FPS)
    for clip in CLIPS:
        f = cache / f"{clip}.npy"
        if not f.exists():
            frames = []
            for fr in media.iter_video_frames(str(SHARED / "videos" / clip), fps=FPS):
                frames.append(fr)
                if len(frames) == n:
                    break
            np.save(f, np.stack(frames))
        out[clip] = np.load(f)
    missing = [p for p in PHOTOS if not (cache / f"{p}.npy").exists()]
    if missing:
        import talkingface
        from talkingface import RenderOptions

        pipe = talkingface.load()
        speech = sorted((SHARED / "audio").glob("*.wav"))
        for k, photo in enumerate(PHOTOS):
            if photo not in missing:
                continue
            wav = media.load_audio(str(speech[k % len(speech)]))[: int(SECONDS * 16000)]
            t0 = time.time()
            res = pipe.render(str(SHARED / "images" / photo), wav, output=None, return_frames=True,
                              options=RenderOptions(max_size=512))
            np.save(cache / f"{photo}.npy", np.stack(res.frames))
            log(f"rendered {photo} {res.frames[0].shape[1]}x{res.frames[0].shape[0]} in {time.time() - t0:.0f} s")
        pipe.close()
    for photo in PHOTOS:
        out[photo] = np.load(cache / f"{photo}.npy")
    return out


def fit(frames: np.ndarray, w: int, h: int) -> np.ndarray:
    """Central crop to the aspect ratio w:h, then an area (or cubic, when enlarging) resize to w x h."""
    H, W = frames.shape[1:3]
    if W * h > H * w:
        cw = int(round(H * w / h))
        frames = frames[:, :, (W - cw) // 2:(W - cw) // 2 + cw]
    else:
        ch = int(round(W * h / w))
        frames = frames[:, (H - ch) // 2:(H - ch) // 2 + ch]
    interp = cv2.INTER_AREA if frames.shape[2] >= w else cv2.INTER_CUBIC
    return np.stack([cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=interp) for f in frames])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def write_marked(frames: np.ndarray, path: Path, tiles: float | None) -> list[np.ndarray]:
    """Write ``frames`` marked as the project writes its outputs; returns the marked frames (every 5th)."""
    h, w = frames.shape[1:3]
    if tiles is None:  # the real path: the writer marks the frames itself
        with media.VideoWriter(path, FPS, w, h, label=Label("photo", credentials=False)) as vw:
            for f in frames:
                vw.write(f)
        emb = watermark.Embedder(h, w)
    else:  # another scheme: mark here, write unlabelled with the same encoder settings
        emb = watermark.Embedder(h, w, tiles=tiles)
        with media.VideoWriter(path, FPS, w, h) as vw:
            for f in frames:
                vw.write(emb(f))
    return [emb(f) for f in frames[::5]]


def detect(path: Path) -> watermark.Detection:
    return watermark.detect_frames(media.iter_video_frames(str(path), fps=None))


def evaluate(sizes: list[str], scheme: str, out: Path, log) -> list[dict]:
    tiles = {"v1": 4.0, "v2": None}[scheme]
    src = carriers(out.parent / "carriers", log)
    tmp = out / "work"
    tmp.mkdir(parents=True, exist_ok=True)
    rows, strips = [], []
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        for name, frames in src.items():
            fr = fit(frames, w, h)
            marked = tmp / "marked.mp4"
            mk = write_marked(fr, marked, tiles)
            row = {"size": size, "carrier": name, "psnr": float(np.mean([psnr(m, f) for m, f in zip(mk, fr[::5])])),
                   "scores": {}, "tiles": {}}
            for kind in KINDS:
                path = marked
                if TRANSFORMS[kind] is not None:
                    path = tmp / "t.mp4"
                    ffmpeg(str(marked), str(path), ["-an"] + TRANSFORMS[kind])
                d = detect(path)
                row["scores"][kind], row["tiles"][kind] = d.score, d.tiles
            rows.append(row)
            log(f"{scheme} {size} {name[:40]:40s} psnr {row['psnr']:.2f} "
                + " ".join(f"{k}={v:.1f}" for k, v in row["scores"].items()))
            if name == PHOTOS[0]:
                diff = np.clip(128 + 16 * (mk[0].astype(np.int16) - fr[0]), 0, 255).astype(np.uint8)
                strips.append(np.concatenate([fr[0], mk[0], diff], axis=1))
    if strips:
        wmax = max(s.shape[1] for s in strips)
        img = np.concatenate([np.pad(s, ((0, 8), (0, wmax - s.shape[1]), (0, 0))) for s in strips], axis=0)
        cv2.imwrite(str(out / "strip.png"), img[..., ::-1])
    return rows


def table(rows: list[dict]) -> str:
    n = len({r["carrier"] for r in rows})
    lines = [f"| size | PSNR dB (min) | " + " | ".join(KINDS) + " |", "|---" * (len(KINDS) + 2) + "|"]
    for size in dict.fromkeys(r["size"] for r in rows):
        sel = [r for r in rows if r["size"] == size]
        cells = []
        for kind in KINDS:
            s = [r["scores"][kind] for r in sel]
            cells.append(f"{sum(v >= watermark.THRESHOLD for v in s)}/{len(s)} ({min(s):.1f})")
        lines.append(f"| {size} | {min(r['psnr'] for r in sel):.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Cells: outputs detected / outputs ({n} per size), and the lowest score (threshold "
                 f"{watermark.THRESHOLD:g}).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/wm-sizes")
    ap.add_argument("--scheme", choices=("v2", "v1"), default="v2", help="v1: mark with the format-1 tiling")
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--fp-only", action="store_true", help="only the false-positive pass over the real clips")
    ap.add_argument("--fp-range", default=None, metavar="FIRST:LAST", help="only these clips (to run in parts)")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    if args.fp_only:
        first, last = (int(v) for v in args.fp_range.split(":")) if args.fp_range else (0, None)
        fp_dir = out / f"fp-{first}-{last}"
        (fp_dir / "work").mkdir(parents=True, exist_ok=True)
        fp = false_positives(fp_dir / "work", log, first, last)
        (fp_dir / "false_positives.json").write_text(json.dumps(fp, indent=1, default=float))
        print(f"false positives: {fp['detections']} of {fp['checks']} checks on {fp['clips']} real clips, "
              f"highest score {fp['max_score']:.2f}, mean {fp['mean_score']:.2f}")
        return 0
    sub = out / args.scheme
    sub.mkdir(parents=True, exist_ok=True)
    rows = evaluate(args.sizes.split(","), args.scheme, sub, log)
    (sub / "results.json").write_text(json.dumps({"scheme": args.scheme, "threshold": watermark.THRESHOLD,
                                                  "rows": rows}, indent=1))
    md = table(rows)
    (sub / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
