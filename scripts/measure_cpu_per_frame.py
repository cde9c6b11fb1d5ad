"""CPU time per output frame of a dub and a photo render (this process and its ffmpeg children), for capacity
planning (docs/DUBBING.md, "Capacity plan"): CPU-seconds do not depend on how many other jobs share the machine
as much as wall time does, so they give frames per second per CPU core even on a loaded machine.

    python scripts/measure_cpu_per_frame.py --seconds 8

Each case runs twice in the same process (the first warms up) and reports the second; the test video is the
benchmark's (``talkingface benchmark --dub``: the GRID fixture scaled to 512x512 or 1280x720).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkingface import RenderOptions  # noqa: E402
from talkingface.benchmark import example_inputs, make_test_video  # noqa: E402
from talkingface.pipeline import load  # noqa: E402


def cpu_seconds() -> tuple[float, float]:
    """(this process, its finished children: the ffmpeg decoders and encoder), user + system seconds."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def measure(run) -> tuple[float, float, float, int]:
    run()  # warm-up
    (s0, c0), t0 = cpu_seconds(), time.perf_counter()
    res = run()
    (s1, c1) = cpu_seconds()
    return s1 - s0, c1 - c0, time.perf_counter() - t0, res.n_frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--cases", default="dub512,dub720,photo512")
    args = ap.parse_args()
    pipe = load()
    image, wav = example_inputs(args.seconds)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs, mouth texture {pipe.texture_name}")
    print("| case | frames | CPU s (python + ffmpeg) | wall s | CPU ms/frame | frames/s per CPU core | frames/s wall |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.mp4")
        for case in args.cases.split(","):
            if case.startswith("dub"):
                video = os.path.join(tmp, f"in{case}.mp4")
                make_test_video(video, args.seconds, int(case[3:]))
                run = lambda video=video: pipe.dub(video, wav, output=out)  # noqa: E731
            else:
                run = lambda: pipe.render(image, wav, output=out, options=RenderOptions(max_size=512))  # noqa: E731
            own, kids, wall, n = measure(run)
            cpu = own + kids
            print(f"| {case} | {n} | {cpu:.1f} ({own:.1f} + {kids:.1f}) | {wall:.1f} | {1000 * cpu / n:.1f} | "
                  f"{n / cpu:.1f} | {n / wall:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
