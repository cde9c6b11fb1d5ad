#!/usr/bin/env python3
"""Tune the mouth stage's settings (``talkingface.mouth.MouthOptions``) on TRAINING-speaker clips only.

Each clip is dubbed with its own audio by the warp-only mouth stage under each setting and scored with the
measures of ``talkingface eval --dub --texture-methods`` (talkingface.evaluate.texture_measures: lip-box PSNR
and SSIM, sharpness ratio on changed pixels, lip Delta E, flicker; the re-tracked mouth opening's r against
the input's own re-tracked opening; and its r and gain against the target track the stage was asked to show).
The validation speakers (talkingface.training.speakers) are refused: settings are chosen here and checked on
validation once, afterwards.

    python scripts/tune_mouth.py --configs "" "feather_cm=0.12" "feather_cm=0.12:smooth=0.3" --out eval/tune

A config is ``MouthOptions.parse``'s "name=value:name=value" ("" = the defaults), optionally after a texture
method of the mouth stage: "mouth-v2:feather_cm=0.06" (warp + refine network, from --checkpoints), "warp:..."
(the default method: warp only). The face tracking of each
clip and its predicted mouth track are computed once and reused by every config (they do not depend on the
mouth stage's settings), so a config costs only painting, encoding and re-tracking.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import cv2
import numpy as np

from talkingface import dub as dub_mod
from talkingface import load, media, mouth
from talkingface.dub import DubOptions
from talkingface.evaluate import lip_box, retrack, target_fidelity, texture_measures
from talkingface.training.landmark_training import score
from talkingface.training.speakers import speaker_of, split_of

# five clips of five training speakers: two GRID (studio), three real-world (lipstick, a large face, a man)
DEFAULT_CLIPS = ["rizkiarm__LipNet__GRID_brbk7n", "rizkiarm__LipNet__GRID_lbbc2a",
                 "OpenTalker__SadTalker__WDA_AlexandriaOcasioCortez_000", "OpenTalker__video-retalking__face_2",
                 "KwaiVGI__LivePortrait__d20"]
KEYS = ("lip_psnr", "lip_ssim", "sharpness_ratio", "delta_e", "flicker_ratio", "r_open_lag0", "r_target",
        "gain_target")

def _memo_track():
    """dub._track computed once per video (the tracking does not depend on the mouth stage's settings)."""
    orig, cache = dub_mod._track, {}

    def cached(pipe, vpath, *a, **kw):
        if vpath not in cache:
            cache[vpath] = orig(pipe, vpath, *a, **kw)
        return cache[vpath]

    dub_mod._track = cached


def _memo_predict(pipe):
    orig, cache = pipe.predict_mouth, {}

    def cached(wav, neutral, **kw):
        key = (hash(wav.tobytes()), hash(np.asarray(neutral).tobytes()))
        if key not in cache:
            cache[key] = orig(wav, neutral, **kw)
        return cache[key].copy()

    pipe.predict_mouth = cached


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=[""], help="MouthOptions specs (\"\" = defaults)")
    ap.add_argument("--clips", nargs="+", default=DEFAULT_CLIPS, help="clip stems in --videos (training speakers)")
    ap.add_argument("--videos", default="../shared/data/videos")
    ap.add_argument("--out", default="eval/tune_mouth")
    ap.add_argument("--strip", type=int, default=0, help="write a PNG strip of N lip boxes per clip and config")
    ap.add_argument("--checkpoints", default=None, help="checkpoint folder for mouth-v2 configs (default: shipped)")
    args = ap.parse_args()
    for c in args.clips:
        if split_of(speaker_of(c)) != "train":
            raise SystemExit(f"{c}: speaker {speaker_of(c)} is a validation speaker; tune on training clips only")
    os.makedirs(args.out, exist_ok=True)
    configs = []
    for c in args.configs:
        if c.split(":")[0].strip() in ("warp", "mouth-v2"):
            texture, opts = mouth.parse_method(c)
        else:
            texture, opts = "warp", mouth.MouthOptions.parse(c)
        configs.append((c, texture, opts or mouth.MouthOptions()))
    pipe = load(args.checkpoints, texture="warp")
    painters = {"warp": pipe.painter}
    if any(t == "mouth-v2" for _, t, _ in configs):
        painters["mouth-v2"] = load(args.checkpoints, texture="mouth-v2").painter
    _memo_track()
    _memo_predict(pipe)
    rows = []
    for clip in args.clips:
        path = os.path.join(args.videos, clip + ".mp4")
        src = list(media.iter_video_frames(path, fps=25))
        ex: dict = {}
        real_mouth, valid_src, _ = retrack(src, pipe.crop_size, extra=ex)
        h, w = src[0].shape[:2]
        reenc_path = os.path.join(args.out, f"{clip}.reencode.mp4")
        with media.VideoWriter(reenc_path, 25, w - w % 2, h - h % 2) as vw:
            for fr in src:
                vw.write(np.ascontiguousarray(fr[: h - h % 2, : w - w % 2]))
        reenc = list(media.iter_video_frames(reenc_path, fps=25))
        wav = media.load_audio(path)
        strips = []
        for spec, texture, opts in configs:
            pipe.painter = painters[texture]
            pipe.painter.options = opts
            t0 = time.perf_counter()
            out_path = os.path.join(args.out, f"{clip}.tune.mp4")
            res = pipe.dub(path, wav, output=out_path, options=DubOptions(fps=25, length="trim"))
            outf = list(media.iter_video_frames(out_path, fps=25))
            mouth_out, valid_out, _ = retrack(outf, pipe.crop_size)
            m = min(len(mouth_out), len(real_mouth), len(src), len(res.mouth_canonical))
            ok = valid_out[:m] & valid_src[:m]
            row = {"clip": clip, "config": spec or "(defaults)",
                   "r_open_lag0": score(mouth_out[:m], real_mouth[:m], ok)["r_open_lag0"],
                   **target_fidelity(mouth_out[:m], res.mouth_canonical[:m], ok),
                   **texture_measures(outf, src, reenc, ex["lips"], ok), "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            if args.strip:
                strips.append((outf, ok))
        if args.strip:
            _write_strip(os.path.join(args.out, f"{clip}.strip.png"), src, strips, ex["lips"], args.strip)
    with open(os.path.join(args.out, "tune.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = ["| config | lip-box PSNR | lip-box SSIM | sharpness ratio | lip Delta E | flicker / real | r lag 0 | "
             "r vs target | gain vs target |", "|---|---|---|---|---|---|---|---|---|"]
    for spec, _, _ in configs:
        rs = [r for r in rows if r["config"] == (spec or "(defaults)")]
        mean = {k: float(np.nanmean([r[k] for r in rs])) for k in KEYS}
        lines.append(f"| {spec or '(defaults)'} | {mean['lip_psnr']:.2f} dB | {mean['lip_ssim']:.3f} | "
                     f"{mean['sharpness_ratio']:.2f} | {mean['delta_e']:.2f} | {mean['flicker_ratio']:.3f} | "
                     f"{mean['r_open_lag0']:.3f} | {mean['r_target']:.3f} | {mean['gain_target']:.2f} |")
    table = "\n".join(lines)
    print(f"\nTraining clips ({len(args.clips)}): {', '.join(args.clips)}\n\n{table}")
    with open(os.path.join(args.out, "tune.md"), "w") as f:
        f.write(table + "\n")


def _write_strip(path: str, src: list, runs: list, lips: np.ndarray, n: int) -> None:
    """Rows: the real frames, then each config; columns: ``n`` frames (the most open real mouths among those
    every config kept), each the lip box (the real lips' box, 2x its size) at 3x, nearest-neighbour."""
    ok = np.logical_and.reduce([k for _, k in runs])
    idx = np.flatnonzero(ok[: len(lips)])
    if len(idx) == 0:
        return
    spread = np.array([np.ptp(lips[i][:, 1]) for i in idx])
    pick = np.sort(idx[np.argsort(-spread)[: n // 2]].tolist() + idx[np.linspace(0, len(idx) - 1, n - n // 2)
                                                                       .astype(int)].tolist())
    rows = []
    for frames in [src] + [f for f, _ in runs]:
        tiles = []
        for i in pick:
            x0, y0, x1, y1 = lip_box(lips[i], src[i].shape)
            cx, cy, hw, hh = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0), (y1 - y0)
            box = frames[i][max(0, cy - hh): cy + hh, max(0, cx - hw): cx + hw]
            tiles.append(cv2.resize(box, (3 * 96, 3 * 64), interpolation=cv2.INTER_NEAREST))
        rows.append(np.hstack(tiles))
    cv2.imwrite(path, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
