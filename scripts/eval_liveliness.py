"""Evaluate head motion and blinks of photo renders against the real validation clips (issue 12).

For each speaker-disjoint validation clip (data/prepared/index.json, split "val"), the clip's first frame is the
photo and the clip's own audio the speech; the photo is rendered with ``--head-motion natural`` (and ``still``,
the reference without motion) at 512 px, and every rendered frame is re-tracked with FaceMesh exactly as
``scripts/measure_head_motion.py`` tracks the real clips. Measured, beside the same measures on the real clip:

* blinks per minute, blink duration (ms), and how far the eyes close at a blink (1 - EAR/open level, the
  deepest frame; real clips with FaceMesh reach about 0.6-0.8, FaceMesh never reports a fully shut lid);
* head pose: |deviation from the median| at the 50th/95th percentile per axis and angular speed (median, p95);
* background: PSNR against the photo outside a dilated head-and-hair mask (>= 40 dB asked);
* lip sync: lag-0 Pearson r of the rendered mouth opening with the speech energy, natural vs still.

Writes OUT/liveliness.json and OUT/liveliness.md, and a strip (PNG) plus a short mp4 of the bundled example
(demo/astronaut.jpg + the GRID validation sentence) into docs/.

    python scripts/eval_liveliness.py --out eval/liveliness          # ~10 min on 2 cores
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

from talkingface import RenderOptions, face, media, metrics, motion  # noqa: E402
from talkingface import audio as audio_mod  # noqa: E402
from talkingface.pipeline import load  # noqa: E402


def retrack(frames: list[np.ndarray]) -> dict:
    poses, ears, opens, valid = [], [], [], []
    with face.FaceTracker(static=False, max_faces=1) as tr:
        for fr in frames:
            found = tr.detect(fr)
            if not found:
                poses.append((np.nan,) * 3)
                ears.append(np.nan)
                opens.append(np.nan)
                valid.append(False)
                continue
            lm = found[0].landmarks
            p = face.head_pose(lm, fr.shape[:2])
            poses.append((p.yaw, p.pitch, p.roll))
            ears.append(float(motion.eye_aspect_ratio(lm)))
            opens.append(float(face.mouth_opening(lm)))
            valid.append(True)
    return {"pose": np.asarray(poses), "ear": np.asarray(ears), "open": np.asarray(opens),
            "valid": np.asarray(valid, bool)}


def measures(tr: dict, energy: np.ndarray) -> dict:
    v = tr["valid"]
    n = len(v)
    blinks = motion.detect_blinks(tr["ear"], v)
    pose = motion.clean_pose(tr["pose"], v)
    m = min(n, len(energy))
    ok = v[:m]
    return {"frames": n, "tracked": float(v.mean()), "blinks": len(blinks),
            "blinks_per_min": len(blinks) / (n / 25 / 60), "blink_ms": [round(b["duration"] * 40, 1) for b in blinks],
            "blink_depth": [round(b["depth"], 3) for b in blinks],
            "sync_r0": metrics.pearson(tr["open"][:m][ok], energy[:m][ok]) if ok.sum() > 3 else 0.0,
            **motion.pose_measures(pose, v)}


def head_mask(an: motion.HeadAnimator, shape) -> np.ndarray:
    """The head and hair (the person inside the head's third ring, and everything inside its first ring),
    dilated by a tenth of the face width: outside it the scene must not change."""
    m = len(motion.warp.FACE_OVAL)
    ring1 = np.zeros(shape, np.uint8)
    cv2.fillPoly(ring1, [np.round(an.ring_src[:m]).astype(np.int32)], 1)
    ring3 = np.zeros(shape, np.uint8)
    cv2.fillPoly(ring3, [np.round(an.ring_src[2 * m:3 * m]).astype(np.int32)], 1)
    head = np.maximum(ring1, ((an.person > 0.5) & (ring3 > 0)).astype(np.uint8))
    fw = int(np.ptp(an.ring_src[:m, 0]) / motion.RING_SCALES[0])
    k = max(3, fw // 10 * 2 + 1)
    return cv2.dilate(head, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0


def background_psnr(frames, photo, mask) -> float:
    far = ~mask
    errs = [np.mean((f[far].astype(np.float64) - photo[far]) ** 2) for f in frames]
    mse = float(np.mean(errs))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def summarize(rows: list[dict], key: str) -> dict:
    rs = [r[key] for r in rows]
    allms = sum((r["blink_ms"] for r in rs), [])
    depth = sum((r["blink_depth"] for r in rs), [])
    return {"blinks_per_min": float(np.mean([r["blinks_per_min"] for r in rs])),
            "blink_ms_median": float(np.median(allms)) if allms else None,
            "blink_depth_median": float(np.median(depth)) if depth else None,
            "range_p50": np.mean([r["range_p50"] for r in rs], 0).round(2).tolist(),
            "range_p95": np.mean([r["range_p95"] for r in rs], 0).round(2).tolist(),
            "speed_median": float(np.mean([r["speed_median"] for r in rs])),
            "speed_p95": float(np.mean([r["speed_p95"] for r in rs])),
            "sync_r0": float(np.mean([r["sync_r0"] for r in rs])) if "sync_r0" in rs[0] else None}


def strip_and_video(pipe, out_png: Path, out_mp4: Path, seed: int) -> None:
    image = media.load_image(ROOT / "demo" / "astronaut.jpg")
    wav = media.load_audio(ROOT / "demo" / "grid_lwbsza.wav")
    wav = np.concatenate([wav, np.zeros(8000, np.float32), media.load_audio(ROOT / "demo" / "grid_sbwe5n.wav")])
    res = pipe.render(image, wav, output=str(out_mp4), return_frames=True,
                      options=RenderOptions(max_size=512, seed=seed, crf=28))
    plan = res.motion
    # frames: around the first blink, the largest turns, and a pause
    picks = [int(np.argmax(plan.pose[:, 0])), int(np.argmin(plan.pose[:, 0])), int(np.argmax(plan.pose[:, 1])),
             int(np.argmin(plan.pose[:, 1]))]
    if plan.blinks:
        t = plan.blinks[0][0]
        picks += [max(0, t - 2), t]
    picks = sorted(set(picks))[:8]
    box = res.face_box
    x0, y0, x1, y1 = box
    fw, fh = x1 - x0, y1 - y0
    cx0, cy0 = max(0, x0 - fw // 2), max(0, y0 - fh // 2)
    cx1, cy1 = min(image.shape[1], x1 + fw // 2), min(image.shape[0], y1 + fh // 2)
    tiles = []
    for i in picks:
        tile = np.ascontiguousarray(res.frames[i][cy0:cy1, cx0:cx1])
        lab = f"{i} y{plan.pose[i, 0]:+.1f} p{plan.pose[i, 1]:+.1f} e{plan.closure[i]:.1f}"
        cv2.putText(tile, lab, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(str(out_png), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))


def write_summary(rows: list[dict], out: Path, seed: int) -> None:
    summary = {"real": summarize([{"r": r["real"]} for r in rows], "r"), "natural": summarize(rows, "natural"),
               "still": summarize(rows, "still")}
    bg = [r["natural"]["background_psnr"] for r in rows]
    summary["natural"]["background_psnr_min"] = float(np.min(bg))
    (out / "liveliness.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1, default=float))
    lines = [f"Validation: {len(rows)} clips (speakers never in the motion library); photo = the clip's first frame, "
             "speech = its audio, 512 px, seed %d. Re-tracked with FaceMesh." % seed, "",
             "| | blinks/min | blink ms (median) | blink depth (median) | yaw/pitch/roll p50 (deg) | "
             "yaw/pitch/roll p95 (deg) | speed median (deg/s) | speed p95 | lag-0 sync r |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in ("real", "natural", "still"):
        s = summary[k]
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        p50, p95 = (" / ".join(f"{x:.1f}" for x in s[q]) for q in ("range_p50", "range_p95"))
        lines.append(f"| {k} | {s['blinks_per_min']:.1f} | {fmt(s['blink_ms_median'])} "
                     f"| {fmt(s['blink_depth_median'])} | {p50} | {p95} "
                     f"| {s['speed_median']:.1f} | {s['speed_p95']:.1f} | {fmt(s['sync_r0'])} |")
    lines += ["", f"Background PSNR far from the head (natural vs the photo): min {np.min(bg):.1f} dB, "
              f"mean {np.mean([b for b in bg if np.isfinite(b)] or [float('inf')]):.1f} dB over the clips."]
    table = "\n".join(lines)
    (out / "liveliness.md").write_text(table + "\n")
    print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=str(ROOT / "data" / "prepared" / "index.json"))
    ap.add_argument("--out", default="eval/liveliness")
    ap.add_argument("--max-clips", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-example", action="store_true", help="no example strip and video")
    ap.add_argument("--summarize", action="store_true",
                    help="only summarize OUT/liveliness_rows.json (the clips done so far) into OUT/liveliness.md")
    ap.add_argument("--docs", default=str(ROOT / "docs"), help="where the example strip and mp4 go")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    index = json.loads(Path(args.index).read_text())
    entries = [e for e in index["clips"] if e["split"] == "val"][: args.max_clips]
    if args.summarize:
        rows = json.loads((out / "liveliness_rows.json").read_text())
        write_summary(rows, out, args.seed)
        return 0
    pipe = load()
    rows = []
    for e in entries:
        t0 = time.perf_counter()
        src = Path(e["source"]) if Path(e["source"]).is_absolute() else (ROOT / e["source"]).resolve()
        if not src.is_file():  # the index was made from another checkout: the shared data by name
            shared = (ROOT.parent / "shared" / "data" / "videos", Path("/work/shared/data/videos"))
            src = next(p / src.name for p in shared if (p / src.name).is_file())
        photo = next(iter(media.iter_video_frames(src, fps=25)))
        wav = media.load_audio(src)
        energy = audio_mod.speech_energy(wav)
        row = {"clip": e["clip"], "speaker": e["speaker"]}
        for mode in ("natural", "still"):
            res = pipe.render(photo, wav, output=None, return_frames=True,
                              options=RenderOptions(max_size=512, head_motion=mode, seed=args.seed))
            tr = retrack(res.frames)
            row[mode] = measures(tr, energy)
            if mode == "natural":
                photo_fit = pipe._fit_size(photo, 512)
                det = pipe.tracker.detect(photo_fit)[0]
                an = motion.HeadAnimator(photo_fit, det.landmarks, face.FaceFrame.fit(det.landmarks))
                row[mode]["background_psnr"] = background_psnr(res.frames, photo_fit,
                                                               head_mask(an, photo_fit.shape[:2]))
                row[mode]["planned_blinks"] = len(res.motion.blinks)
        # the real clip, measured the same way (at the same 512 px)
        row["real"] = measures(retrack(list(media.iter_video_frames(src, fps=25, max_side=512))), energy)
        rows.append(row)
        (out / "liveliness_rows.json").write_text(json.dumps(rows, indent=1, default=float))  # so far
        n, s = row["natural"], row["still"]
        print(f"{e['clip']}: blinks/min real {row['real']['blinks_per_min']:.1f} rendered {n['blinks_per_min']:.1f}; "
              f"yaw p95 real {row['real']['range_p95'][0]:.1f} rendered {n['range_p95'][0]:.1f}; speed median real "
              f"{row['real']['speed_median']:.1f} rendered {n['speed_median']:.1f} (still {s['speed_median']:.1f}); "
              f"bg PSNR {n['background_psnr']:.1f} dB; sync r0 natural {n['sync_r0']:.3f} still {s['sync_r0']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    write_summary(rows, out, args.seed)
    if args.skip_example:
        return 0
    docs = Path(args.docs)
    strip_and_video(pipe, docs / "liveliness_strip.png", docs / "liveliness_example.mp4", args.seed)
    print(f"wrote {out / 'liveliness.md'}, {docs / 'liveliness_strip.png'}, {docs / 'liveliness_example.mp4'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
