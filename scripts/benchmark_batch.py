"""Batch dubbing throughput, in one run, side by side: the local batch (1 process; --workers 2) against Ray
(1 worker with all CPUs; 2 workers with 1 CPU each) on this machine, and Ray's start-up overhead.

    python scripts/benchmark_batch.py --jobs 4 [--configs local1,local2,ray1,ray2] [--json out.json]

Each configuration dubs the same N jobs (the GRID fixture video, 360x288, 74 frames, with the two shipped GRID
sentences in turn) into a fresh folder, from a cold start: model loading, worker processes and, for Ray,
``ray.init`` of a private local instance are all counted. Printed per configuration: wall seconds, jobs per
minute and output frames per second end to end; the start-up (from the call until the first job began:
connecting to Ray, starting workers, loading models) and the throughput after it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkingface.batch import DubJob, dub_batch  # noqa: E402

CONFIGS = {
    "local1": {"executor": "local", "workers": 1},
    "local2": {"executor": "local", "workers": 2},
    "ray1": {"executor": "ray", "workers": 1, "cpus_per_worker": 2},
    "ray2": {"executor": "ray", "workers": 2, "cpus_per_worker": 1},
}


def run(name: str, jobs: list[DubJob], folder: Path) -> dict:
    cfg = dict(CONFIGS[name])
    done_at: list[tuple[float, dict]] = []
    t0 = time.perf_counter()
    connect = 0.0
    if cfg["executor"] == "ray":
        import ray

        from talkingface import cluster

        cluster.connect("local", num_cpus=os.cpu_count())
        connect = time.perf_counter() - t0
    try:
        records = dub_batch(jobs, folder / name, progress=lambda r: done_at.append((time.perf_counter(), r)), **cfg)
    finally:
        if cfg["executor"] == "ray":
            ray.shutdown()
    wall = time.perf_counter() - t0
    assert all(r["status"] == "done" for r in records), [r["error"] for r in records]
    frames = sum(r["frames"] for r in records)
    first_start = min(t - r["seconds"] for t, r in done_at) - t0
    return {"config": name, **cfg, "jobs": len(records), "frames": frames, "wall_s": round(wall, 1),
            "jobs_per_min": round(len(records) / wall * 60, 2), "fps": round(frames / wall, 1),
            "ray_init_s": round(connect, 1) if connect else None, "startup_s": round(first_start, 1),
            "fps_after_startup": round(frames / (wall - first_start), 1),
            "job_seconds": [r["seconds"] for r in records]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--configs", default="local1,local2,ray1,ray2")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    video = str(ROOT / "tests" / "fixtures" / "grid_lwbsza.mp4")
    wavs = [str(ROOT / "demo" / n) for n in ("grid_sbwe5n.wav", "grid_lwbsza.wav")]
    jobs = [DubJob(video, wavs[k % 2], f"job{k}.mp4") for k in range(args.jobs)]
    load = os.getloadavg()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average before "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    results = []
    folder = Path(tempfile.mkdtemp(prefix="talkingface-bench-batch-"))
    try:
        for name in args.configs.split(","):
            res = run(name, jobs, folder)
            results.append(res)
            print(json.dumps(res), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"# load average after {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("| configuration | wall s | jobs/min | fps end to end | start-up s (Ray init) | fps after start-up |")
    print("|---|---|---|---|---|---|")
    for r in results:
        init = f" ({r['ray_init_s']})" if r["ray_init_s"] is not None else ""
        print(f"| {r['config']} | {r['wall_s']} | {r['jobs_per_min']} | {r['fps']} | {r['startup_s']}{init} | "
              f"{r['fps_after_startup']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
