"""Time the mouth stage (``MouthPainter.prepare`` + ``finish``) alone on the frames of a real dub.

A short dub of ``talkingface benchmark``'s test video (GRID fixture scaled to 1280x720 or 512x512) is run once
with the painter's calls recorded; the recorded frames are then painted again, timed, with the current maps
(``warp.piecewise_affine_maps``) and with the simple reference implementation (``warp.reference_maps``, the
pre-2026-12-02 per-pixel version) side by side, alternating, so both see the same machine load. Also checks that
both give the same pixels and optionally prints a cProfile of the current version.

    python scripts/profile_mouth.py --size 720 --seconds 3 [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from talkingface import benchmark, warp
from talkingface.dub import DubOptions
from talkingface.pipeline import load


def record(size: int, seconds: float) -> tuple[object, list[tuple]]:
    pipe = load(texture="warp")
    painter = pipe.painter
    calls: list[tuple] = []
    orig = painter.prepare

    def prepare(frame, *a, **k):
        calls.append((frame.copy(), a, k))
        return orig(frame, *a, **k)

    painter.prepare = prepare
    _, wav = benchmark.example_inputs(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "input.mp4")
        benchmark.make_test_video(video, seconds, size)
        pipe.dub(video, wav, output=os.path.join(tmp, "out.mp4"), options=DubOptions())
    painter.prepare = orig
    return painter, calls


def paint_all(painter, calls) -> tuple[float, list[np.ndarray]]:
    outs = []
    t0 = time.perf_counter()
    for frame, a, k in calls:
        job = painter.prepare(frame, *a, **k)
        outs.append(painter.finish(frame, job))
    return time.perf_counter() - t0, outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=720, choices=(512, 720))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (best is reported)")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the current version")
    args = ap.parse_args()
    painter, calls = record(args.size, args.seconds)
    n = len(calls)
    fast = warp.piecewise_affine_maps
    times = {"reference": [], "current": []}
    outs = {}
    for _ in range(args.rounds):
        for name, fn in (("reference", warp.reference_maps), ("current", fast)):
            warp.piecewise_affine_maps = fn
            try:
                t, outs[name] = paint_all(painter, calls)
            finally:
                warp.piecewise_affine_maps = fast
            times[name].append(t)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; "
          f"{n} frames of a {args.size}p dub")
    for name, ts in times.items():
        print(f"mouth stage, {name:9s} maps: {1000 * min(ts) / n:7.2f} ms/frame (best of {len(ts)}; "
              f"all: {', '.join(f'{1000 * t / n:.1f}' for t in ts)})")
    diff = [np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(outs["reference"], outs["current"],
                                                                            strict=True)]
    print(f"current vs reference output: max |diff| {max(int(d.max()) for d in diff)} (0..255), "
          f"pixels differing {sum(int((d > 0).any(2).sum()) for d in diff) / n:.1f} per frame, "
          f"mean |diff| over the frame {np.mean([d.mean() for d in diff]):.5f}")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        paint_all(painter, calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
