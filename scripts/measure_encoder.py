"""The output encoder's cost and what it gives: x264 settings compared on real footage.

Each video is decoded once to raw RGB (optionally scaled), then encoded with each setting as the pipeline's
writer does (libx264, CRF, yuv420p from rgb24); the encoder's CPU time per frame (user + system of the ffmpeg
process, best of ``--repeat``), the file size and the PSNR of the result against the raw frames are printed
as a table. The encoder runs in its own process beside the renderer, so on 2 cores its CPU time is taken from
the mouth stage and the decoder (docs/DUBBING.md "Where a dub's CPU goes").

    python scripts/measure_encoder.py [--videos A.mp4[@1280:720],B.mp4] [--settings 'veryfast;veryfast+PARAMS']
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from talkingface import media  # noqa: E402

VIDEOS = "../shared/data/videos/ajay-sainy__Wav2Lip-GFPGAN__kim_7s_raw.mp4@1280:720," \
         "../shared/data/videos/ajay-sainy__Wav2Lip-GFPGAN__kim_7s_raw.mp4," \
         "../shared/data/videos/kleinlee__MiniMates__driving.mp4," \
         "../shared/data/videos/FuxiVirtualHuman__styletalk__feifeili_clip3.mp4"
SETTINGS = f"veryfast;veryfast+{media.X264_PARAMS};veryfast+subme=1:{media.X264_PARAMS};superfast"


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", default=VIDEOS, help="comma-separated videos, each optionally @W:H to scale")
    ap.add_argument("--settings", default=SETTINGS, help="semicolon-separated PRESET or PRESET+X264PARAMS")
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--repeat", type=int, default=2, help="encodes per setting (the least CPU is reported)")
    args = ap.parse_args()
    ff = media.ffmpeg_exe()
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; CRF {args.crf}")
    print("| video | size | frames | setting | encoder CPU ms/frame | file KB | PSNR dB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.videos.split(","):
            path, _, scale = spec.partition("@")
            info = media.probe_video(path)
            w, h = tuple(map(int, scale.split(":"))) if scale else info.display_size
            raw = os.path.join(tmp, "frames.rgb")
            subprocess.run([ff, "-v", "error", "-y", "-i", path, "-vf", f"scale={w}:{h}", "-f", "rawvideo",
                            "-pix_fmt", "rgb24", raw], check=True)
            n = os.path.getsize(raw) // (w * h * 3)
            source = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25", "-i", raw]
            for setting in args.settings.split(";"):
                preset, _, params = setting.partition("+")
                out = os.path.join(tmp, "out.mp4")
                best = float("inf")
                for _ in range(max(1, args.repeat)):
                    c0 = children_cpu()
                    subprocess.run([ff, "-v", "error", "-y", *source, "-c:v", "libx264", "-preset", preset,
                                    "-crf", str(args.crf), *(["-x264-params", params] if params else []),
                                    "-pix_fmt", "yuv420p", out], check=True)
                    best = min(best, (children_cpu() - c0) / n * 1000)
                res = subprocess.run([ff, "-v", "info", *source, "-i", out, "-lavfi",
                                      "[0:v]format=yuv420p[a];[a][1:v]psnr", "-f", "null", "-"],
                                     capture_output=True, text=True)
                found = re.search(r"average:([\d.]+|inf)", res.stderr)
                psnr = f"{float(found.group(1)):.2f}" if found else "?"
                print(f"| {os.path.basename(path)} | {w}x{h} | {n} | {setting} | {best:.1f} | "
                      f"{os.path.getsize(out) // 1024} | {psnr} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
