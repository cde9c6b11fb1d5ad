"""Time the mouth stage (``MouthPainter.prepare`` + ``finish``) alone, on the frames of a real dub, for two
versions of the code side by side.

A short dub of ``talkingface benchmark``'s test video (the GRID fixture scaled to 1280x720 or 512x512) is run
once with the painter's calls recorded. The recorded frames are then painted again by each version in turn
(``--base``: a git revision, by default the commit before the mouth stage was sped up; and this working tree),
each in a fresh subprocess, alternating for ``--rounds`` rounds so both see the same machine load; the best
round of each is reported, and the outputs of the two versions are compared pixel by pixel.

    python scripts/profile_mouth.py --size 720 --seconds 3 [--base REV] [--profile]
"""
from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = "78fb954"  # main before the mouth stage's speed-up (2026-12-02)

WORKER = r"""
import pickle, sys, time, cProfile, pstats
import numpy as np
from talkingface import mouth
calls_path, out_path, profile = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
with open(calls_path, "rb") as f:
    calls = pickle.load(f)
painter = mouth.MouthPainter()
def rebuild(a):
    return mouth.InteriorSource(a[1], a[2]) if isinstance(a, tuple) and a and a[0] == "__interior__" else a
calls = [(fr, [rebuild(x) for x in a], {k: rebuild(v) for k, v in kw.items()}) for fr, a, kw in calls]
def run():
    outs = []
    for frame, a, kw in calls:
        outs.append(painter.finish(frame, painter.prepare(frame, *a, **kw)))
    return outs
run()  # warm-up (caches, allocator)
t0 = time.perf_counter()
outs = run()
dt = time.perf_counter() - t0
np.save(out_path, np.stack(outs))
print(dt)
if profile:
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats(sys.argv[4] if len(sys.argv) > 4 else "tottime").print_stats(30)
"""


def record(size: int, seconds: float, path: str) -> int:
    sys.path.insert(0, ROOT)
    from talkingface import benchmark, mouth
    from talkingface.dub import DubOptions
    from talkingface.pipeline import load

    pipe = load(texture="warp")
    painter = pipe.painter
    calls: list[tuple] = []
    orig = painter.prepare

    def flat(a):
        return ("__interior__", a.crop, a.points) if isinstance(a, mouth.InteriorSource) else a

    def prepare(frame, *a, **k):
        calls.append((frame.copy(), [flat(x) for x in a], {key: flat(v) for key, v in k.items()}))
        return orig(frame, *a, **k)

    painter.prepare = prepare
    _, wav = benchmark.example_inputs(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "input.mp4")
        benchmark.make_test_video(video, seconds, size)
        pipe.dub(video, wav, output=os.path.join(tmp, "out.mp4"), options=DubOptions())
    with open(path, "wb") as f:
        pickle.dump(calls, f)
    return len(calls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=720, choices=(512, 720))
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (the best is reported)")
    ap.add_argument("--base", default=BASE, help=f"git revision to compare with (default {BASE})")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of each version (last round)")
    ap.add_argument("--sort", default="tottime", help="cProfile sort key (tottime, cumulative)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        calls = os.path.join(tmp, "calls.pkl")
        n = record(args.size, args.seconds, calls)
        base_tree = os.path.join(tmp, "base")
        os.makedirs(base_tree)
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.base, "talkingface"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", base_tree], input=archive, check=True)
        versions = {f"base {args.base}": base_tree, "this tree": ROOT}
        times: dict[str, list[float]] = {k: [] for k in versions}
        env = dict(os.environ)
        for r in range(args.rounds):
            for name, tree in versions.items():
                out = os.path.join(tmp, f"{len(times[name])}-{name.split()[0]}.npy")
                prof = "1" if args.profile and r == args.rounds - 1 else "0"
                res = subprocess.run([sys.executable, "-c", WORKER, calls, out, prof, args.sort], cwd=tree, env=env,
                                     capture_output=True, text=True, check=True)
                times[name].append(float(res.stdout.strip().splitlines()[-1]))
                if prof == "1":
                    print(f"--- profile, {name}:\n{res.stderr}")
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} "
              f"(at the end); {n} frames of a {args.size}p dub; mouth stage = MouthPainter.prepare + finish")
        for name, ts in times.items():
            print(f"{name:>16s}: {1000 * min(ts) / n:7.2f} ms/frame (best of {len(ts)}; all rounds: "
                  f"{', '.join(f'{1000 * t / n:.1f}' for t in ts)})")
        a = np.load(os.path.join(tmp, f"{args.rounds - 1}-base.npy")).astype(np.int16)
        b = np.load(os.path.join(tmp, f"{args.rounds - 1}-this.npy")).astype(np.int16)
        d = np.abs(a - b)
        print(f"outputs, this tree vs base: max |diff| {int(d.max())} (0..255), "
              f"{(d > 0).any(-1).sum() / n:.1f} pixels differ per frame, "
              f"{(d > 2).any(-1).sum() / n:.1f} by more than 2, mean |diff| {d.mean():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
