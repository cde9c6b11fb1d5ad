"""Evaluate talkingface's provenance labels (docs/PROVENANCE.md): watermark false positives on real clips, detection
rates after each transformation on the project's own outputs, the C2PA manifest's valid/tampered/absent cases,
and the PSNR the watermark costs.

    python scripts/eval_provenance.py --out runs/provenance-eval [--renders 16] [--dubs 8]

Needs ../shared/data (real clips, photos, speech). Writes results.json and table.md into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkingface import media, provenance, watermark  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")

# the transformations of the issue: each a list of ffmpeg output options (None: the file as written)
TRANSFORMS = {
    "as written": None,
    "crf 28": ["-c:v", "libx264", "-crf", "28", "-preset", "veryfast"],
    "half size": ["-vf", "scale=trunc(iw/4)*2:trunc(ih/4)*2", "-c:v", "libx264", "-crf", "23", "-preset", "veryfast"],
    "10% crop": ["-vf", "crop=trunc(iw*0.9/2)*2:trunc(ih*0.9/2)*2", "-c:v", "libx264", "-crf", "23",
                 "-preset", "veryfast"],
    "blur (screen-recording)": ["-vf", "gblur=sigma=1.5", "-c:v", "libx264", "-crf", "23", "-preset", "veryfast"],
    "metadata-stripping remux": ["-map", "0", "-map_metadata", "-1", "-c", "copy"],
}


def ffmpeg(src: str, dst: str, opts: list[str], seconds: float | None = None) -> None:
    cmd = [media.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", src]
    if seconds:
        cmd += ["-t", str(seconds)]
    subprocess.run(cmd + opts + [dst], check=True)


def detect(path: str) -> float:
    return watermark.detect_frames(media.iter_video_frames(path, fps=None)).score


def false_positives(tmp: Path, log, first: int = 0, last: int | None = None) -> dict:
    clips = sorted((SHARED / "videos").glob("*.mp4")) + sorted((SHARED / "videos_silent").glob("*.mp4"))
    rows = []
    for i, clip in enumerate(clips):
        if i < first or (last is not None and i >= last):
            continue
        row = {"clip": clip.name, "original": detect(str(clip))}
        for name in ("crf 28", "half size", "10% crop"):
            out = tmp / f"fp{i}.mp4"
            ffmpeg(str(clip), str(out), ["-an"] + TRANSFORMS[name], seconds=6)
            row[name] = detect(str(out))
            out.unlink()
        rows.append(row)
        log(f"fp {i + 1}/{len(clips)} {clip.name}: " + " ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "clip"))
    scores = [v for r in rows for k, v in r.items() if k != "clip"]
    return {"clips": len(rows), "checks": len(scores), "detections": int(sum(s >= watermark.THRESHOLD for s in scores)),
            "max_score": max(scores), "mean_score": float(np.mean(scores)), "rows": rows}


def make_outputs(tmp: Path, n_renders: int, n_dubs: int, log) -> list[dict]:
    import talkingface
    from talkingface import RenderOptions
    from talkingface.dub import DubOptions
    from talkingface.errors import InputError

    pipe = talkingface.load()
    speech = sorted((SHARED / "audio").glob("*.wav")) + sorted((SHARED / "audio").glob("*.mp3"))
    outputs = []
    images = sorted((SHARED / "images").glob("*"))
    rng = np.random.default_rng(0)
    for img in images:
        if sum(o["mode"] == "photo" for o in outputs) >= n_renders:
            break
        wav = media.load_audio(str(speech[int(rng.integers(len(speech)))]))[: 3 * 16000]
        out = tmp / f"render{len(outputs)}.mp4"
        try:
            res = pipe.render(str(img), wav, output=str(out), options=RenderOptions(max_size=512),
                              return_frames=True)
        except InputError as e:
            log(f"skip {img.name}: {e}")
            continue
        psnr = float(np.mean([_psnr(watermark.embed(f), f) for f in res.frames[::10]]))
        h, w = res.frames[0].shape[:2]
        outputs.append({"mode": "photo", "source": img.name, "path": str(out), "size": f"{w}x{h}", "psnr": psnr})
        log(f"render {img.name} {w}x{h} psnr {psnr:.2f}")
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    grid = [v for v in videos if "GRID" in v.name]
    others = [v for v in videos if "GRID" not in v.name]
    for k, vid in enumerate((grid + others)[: n_dubs]):
        wav = media.load_audio(str(speech[int(rng.integers(len(speech)))]))[: 3 * 16000]
        out = tmp / f"dub{k}.mp4"
        try:
            res = pipe.dub(str(vid), wav, output=str(out), options=DubOptions(length="trim", max_size=640),
                           return_frames=True)
        except InputError as e:
            log(f"skip {vid.name}: {e}")
            continue
        psnr = float(np.mean([_psnr(watermark.embed(f), f) for f in res.frames[::10]]))
        h, w = res.frames[0].shape[:2]
        outputs.append({"mode": "dub", "source": vid.name, "path": str(out), "size": f"{w}x{h}", "psnr": psnr})
        log(f"dub {vid.name} {w}x{h} psnr {psnr:.2f}")
    pipe.close()
    return outputs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def true_positives(outputs: list[dict], tmp: Path, log) -> dict:
    manifest = {"fresh: valid": 0, "byte flip in the video stream: tampered": 0, "stripping remux: absent": 0}
    for o in outputs:
        o["scores"] = {}
        for name, opts in TRANSFORMS.items():
            path = o["path"]
            if opts is not None:
                path = str(tmp / "tp.mp4")
                ffmpeg(o["path"], path, opts)
            v = provenance.verify(path)
            o["scores"][name] = v.watermark.score
            if name == "as written":
                manifest["fresh: valid"] += v.manifest == "valid"
            if name == "metadata-stripping remux":
                manifest["stripping remux: absent"] += v.manifest == "absent"
        data = bytearray(Path(o["path"]).read_bytes())
        pos = data.find(b"mdat") + 4096
        data[pos] ^= 0xFF
        bad = tmp / "tampered.mp4"
        bad.write_bytes(bytes(data))
        manifest["byte flip in the video stream: tampered"] += provenance.verify(bad, watermark=False).manifest == "tampered"
        log(f"tp {o['mode']} {o['source']}: " + " ".join(f"{k}={v:.1f}" for k, v in o["scores"].items()))
    return {"manifest": manifest, "outputs": outputs}


def table(fp: dict, tp: dict) -> str:
    outs = tp["outputs"]
    lines = ["| transformation | " + " | ".join(f"{m} ({sum(o['mode'] == m for o in outs)})" for m in ("photo", "dub"))
             + f" | all ({len(outs)}) | min score |", "|---|---|---|---|---|"]
    for name in TRANSFORMS:
        cells = []
        for group in ("photo", "dub", None):
            sel = [o for o in outs if group is None or o["mode"] == group]
            hit = sum(o["scores"][name] >= watermark.THRESHOLD for o in sel)
            cells.append(f"{hit}/{len(sel)}" if sel else "-")
        lo = min(o["scores"][name] for o in outs)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {lo:.1f} |")
    lines.append("")
    lines.append(f"False positives: {fp['detections']} of {fp['checks']} checks on {fp['clips']} real clips "
                 f"(originals, crf 28, half size, 10% crop), highest score {fp['max_score']:.2f}, mean "
                 f"{fp['mean_score']:.2f}; threshold {watermark.THRESHOLD:g}.")
    lines.append("Manifest: " + ", ".join(f"{k} {v}/{len(outs)}" for k, v in tp["manifest"].items()) + ".")
    ps = [o["psnr"] for o in outs]
    lines.append(f"PSNR of watermarked vs unmarked frames: min {min(ps):.2f} dB, mean {np.mean(ps):.2f} dB.")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/provenance-eval")
    ap.add_argument("--renders", type=int, default=16)
    ap.add_argument("--dubs", type=int, default=8)
    ap.add_argument("--skip-fp", action="store_true", help="skip the false-positive pass over the real clips")
    ap.add_argument("--fp-only", action="store_true", help="only the false-positive pass")
    ap.add_argument("--fp-range", default=None, metavar="FIRST:LAST", help="only these clips (to run in parts)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "work"
    tmp.mkdir(exist_ok=True)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    if args.fp_only:
        first, last = (int(v) for v in args.fp_range.split(":")) if args.fp_range else (0, None)
        fp = false_positives(tmp, log, first, last)
        (out / "false_positives.json").write_text(json.dumps(fp, indent=1, default=float))
        print(f"false positives: {fp['detections']} of {fp['checks']} checks on {fp['clips']} real clips, "
              f"highest score {fp['max_score']:.2f}, mean {fp['mean_score']:.2f}")
        return 0
    outputs = make_outputs(tmp, args.renders, args.dubs, log)
    tp = true_positives(outputs, tmp, log)
    fp = {"clips": 0, "checks": 0, "detections": 0, "max_score": 0.0, "mean_score": 0.0, "rows": []}
    if not args.skip_fp:
        fp = false_positives(tmp, log)
    (out / "results.json").write_text(json.dumps({"false_positives": fp, "true_positives": tp,
                                                  "threshold": watermark.THRESHOLD}, indent=1, default=float))
    md = table(fp, tp)
    (out / "table.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
