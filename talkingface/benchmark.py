"""``talkingface benchmark``: seconds per stage and end-to-end frames per second of a render.

The bundled photo (512 x 512) speaks the bundled GRID sentences, repeated to the asked length; the output
is written to a temporary mp4 so that encoding is included. The first render warms up (model loading,
thread pools); the best of the remaining renders is reported.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from . import media
from .pipeline import load

DEMO = Path(__file__).resolve().parent.parent / "demo"
STAGES = ("load", "face", "audio_features", "landmarks", "texture", "composite", "encode")


def example_inputs(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    image = media.load_image(DEMO / "astronaut.jpg")
    speech = np.concatenate([media.load_audio(DEMO / n) for n in ("grid_lwbsza.wav", "grid_sbwe5n.wav")])
    reps = int(np.ceil(seconds * 16000 / len(speech)))
    return image, np.tile(speech, reps)[: int(seconds * 16000)]


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    pipe = load(args.checkpoints, device=args.device)
    build_s = time.perf_counter() - t0
    image, wav = example_inputs(args.seconds)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(2, args.repeat)):
            res = pipe.render(image, wav, output=os.path.join(tmp, "bench.mp4"))
            runs.append(res)
    best = min(runs[1:], key=lambda r: r.timings["total"])
    t = best.timings
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "-"
    print(f"machine: {os.cpu_count()} CPU cores ({cpu}), torch threads {torch.get_num_threads()}, "
          f"device {args.device}, GPU {gpu}")
    print(f"pipeline build (models, once): {build_s:.2f} s")
    print(f"render of {args.seconds:.0f} s audio, {best.n_frames} frames at 512x512 (best of {len(runs) - 1}):")
    print(f"{'stage':16s} {'seconds':>8s} {'ms/frame':>9s}")
    for s in STAGES:
        print(f"{s:16s} {t.get(s, 0.0):8.3f} {1000 * t.get(s, 0.0) / best.n_frames:9.2f}")
    print(f"{'total':16s} {t['total']:8.3f} {1000 * t['total'] / best.n_frames:9.2f}")
    print(f"end-to-end: {best.n_frames / t['total']:.1f} frames/s ({best.duration / t['total']:.2f}x real time)")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0
