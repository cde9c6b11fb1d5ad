"""``talkingface benchmark``: seconds per stage and end-to-end frames per second of a render or a dub.

Photo mode: the bundled photo (512 x 512) speaks the bundled GRID sentences, repeated to the asked length; the
output is written to a temporary mp4 so that encoding is included. The first render warms up (model loading,
thread pools); the best of the remaining renders is reported.

Dubbing (``--dub``): a test video is made from the GRID fixture (CC BY 4.0) scaled to ``--size`` (512: 512x512,
720: 1280x720, the face ~2.5x larger than in GRID), played back and forth to the asked length, at 25 fps; it is
dubbed with the GRID sentences. Peak resident memory is per process, so compare lengths in separate runs.

Live (``--live``): the bundled photo and GRID sentences streamed as a live source would send them: chunks of
``--chunk-ms`` handed over at the real-time pace by a producer thread, frames taken from
``Pipeline.stream(realtime=True)`` and JPEG-encoded (what a network transport sends). Prints the latency from
a chunk's arrival to the encoded frame that shows its audio (median, 95th percentile, and both over the first
and the last tenth of the run: a growing delay is drift), the sustained frames per second, frames repeated to
stay live, each stage's milliseconds per frame, and the lip sync of the live path against the offline render
of the same audio (r of the mouth opening the two pipelines drive, landmark level).
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import tempfile
import time
from contextlib import redirect_stdout

import numpy as np
import torch

from . import media
from .checkpoints import shipped
from .pipeline import RenderOptions, load

DEMO = shipped("demo")
STAGES = ("load", "face", "audio_features", "landmarks", "texture", "composite", "motion", "encode")


def example_inputs(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    image = media.load_image(DEMO / "astronaut.jpg")
    speech = np.concatenate([media.load_audio(DEMO / n) for n in ("grid_lwbsza.wav", "grid_sbwe5n.wav")])
    reps = int(np.ceil(seconds * 16000 / len(speech)))
    return image, np.tile(speech, reps)[: int(seconds * 16000)]


DUB_STAGES = ("load", "decode_track", "tracking", "expression", "audio_features", "landmarks", "adapt", "decode",
              "texture", "composite", "encode")


def make_test_video(path: str, seconds: float, size: int, audio: np.ndarray | None = None) -> tuple[int, int]:
    """Write the GRID fixture scaled to ``size`` (512 or 720), ping-ponged to ``seconds``, streaming; with
    ``audio`` (16 kHz) as its sound track (a video to dub has its own speech: the dub reads it)."""
    import cv2

    src = list(media.iter_video_frames(shipped("fixtures") / "grid_lwbsza.mp4", fps=25))
    w, h = (512, 512) if size == 512 else (1280, 720)
    sh, sw = src[0].shape[:2]
    k = h / sh
    frames = []
    for fr in src:
        big = cv2.resize(fr, (int(sw * k) // 2 * 2, h), interpolation=cv2.INTER_CUBIC)
        if big.shape[1] >= w:
            x0 = (big.shape[1] - w) // 2
            out = big[:, x0:x0 + w]
        else:
            pad = w - big.shape[1]
            out = cv2.copyMakeBorder(big, 0, 0, pad // 2, pad - pad // 2, cv2.BORDER_REFLECT)
        frames.append(np.ascontiguousarray(out))
    n = int(round(seconds * 25))
    order = np.concatenate([np.arange(len(frames)), np.arange(len(frames) - 2, 0, -1)])
    with media.VideoWriter(path, 25, w, h, crf=18, audio=audio, audio_sr=16000) as vw:
        for i in range(n):
            vw.write(frames[order[i % len(order)]])
    return w, h


def bench_dub(args: argparse.Namespace) -> int:
    from .dub import DubOptions

    t0 = time.perf_counter()
    pipe = _load(args)
    build_s = time.perf_counter() - t0
    _, wav = example_inputs(args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        video = os.path.join(tmp, "input.mp4")
        w, h = make_test_video(video, args.seconds, args.size, audio=wav)  # a video to dub speaks
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        runs = []
        for _ in range(max(1, args.repeat)):
            runs.append(pipe.dub(video, wav, output=os.path.join(tmp, "dubbed.mp4"),
                                 options=DubOptions(adapt=args.adapt)))
        best = min(runs[1:] or runs, key=lambda r: r.timings["total"])
        with redirect_stdout(io.StringIO()) as buf:  # printed below, in the table
            _provenance_rows(video, w, h)
    t = best.timings
    _machine(args)
    print(f"pipeline build (models, once): {build_s:.2f} s; mouth texture: {pipe.texture_name}")
    print(f"dub of a {args.seconds:.0f} s {w}x{h} 25 fps video, {best.n_frames} frames "
          f"({'best of %d after a warm-up' % (len(runs) - 1) if len(runs) > 1 else 'one run, no warm-up'}):")
    print(f"{'stage':16s} {'seconds':>8s} {'ms/frame':>9s}")
    for s in DUB_STAGES:
        if s in t:
            print(f"{s:16s} {t[s]:8.3f} {1000 * t[s] / best.n_frames:9.2f}")
    print(f"{'total':16s} {t['total']:8.3f} {1000 * t['total'] / best.n_frames:9.2f}")
    print(buf.getvalue(), end="")
    print(f"end-to-end: {best.n_frames / t['total']:.1f} frames/s ({best.duration / t['total']:.2f}x real time)")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(before dubbing, models loaded and test video made: {rss_before:.0f} MB)")
    return 0


def _provenance_rows(video: str, w: int, h: int) -> None:
    """The cost of labelling outputs: watermark per frame (inside "encode" above), C2PA signing per file."""
    from . import provenance, watermark

    frame = np.ascontiguousarray(next(media.iter_video_frames(video, fps=None)))
    mark = watermark.Embedder(h, w)
    mark(frame)
    t0 = time.perf_counter()
    for _ in range(100):
        mark(frame)
    wm_ms = (time.perf_counter() - t0) * 10
    signed = video + ".signed.mp4"
    t0 = time.perf_counter()
    provenance.sign_mp4(video, signed, provenance.Label("photo"), "benchmark")
    sign_s = time.perf_counter() - t0
    os.remove(signed)
    print(f"{'watermark':16s} {'':8s} {wm_ms:9.2f}   (per {w}x{h} frame, included in encode)")
    print(f"{'c2pa signing':16s} {sign_s:8.3f} {'':9s}   (once per output file, included in encode)")


def _load(args: argparse.Namespace):
    texture = getattr(args, "texture", None) or ("texture-v1" if getattr(args, "adapt", False) else None)
    return load(args.checkpoints, device=args.device, **({"texture": texture} if texture else {}))


def _machine(args: argparse.Namespace) -> None:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") and torch.cuda.is_available() else "-"
    print(f"machine: {os.cpu_count()} CPU cores ({cpu}), torch threads {torch.get_num_threads()}, "
          f"device {args.device}, GPU {gpu}, load average {os.getloadavg()[0]:.1f}")


def bench_live(args: argparse.Namespace) -> int:
    import threading

    import cv2

    from . import metrics
    from .live import LiveOptions, LiveStats

    t0 = time.perf_counter()
    pipe = _load(args)
    pipe.live_model()
    build_s = time.perf_counter() - t0
    image, wav = example_inputs(args.seconds)
    step = max(1, int(round(args.chunk_ms * 16)))  # samples per chunk
    opts = LiveOptions(head_motion=getattr(args, "head_motion", "natural"))
    # warm-up (thread pools, first encoder passes), not timed
    for _ in pipe.stream(image, [wav[: 16000]], options=opts):
        pass
    started = threading.Event()
    clock: dict[str, float] = {}

    def producer():
        started.wait()
        t_start = clock["t0"] = time.perf_counter()
        for k, i in enumerate(range(0, len(wav), step)):
            delay = t_start + (i + step) / 16000 - time.perf_counter()  # a chunk exists once its audio has played
            if delay > 0:
                time.sleep(delay)
            yield wav[i: i + step]

    stats = LiveStats()
    mouths, enc_s, n = [], 0.0, 0
    started.set()
    for fr in pipe.stream(image, producer(), options=opts, realtime=True, stats=stats):
        t1 = time.perf_counter()
        cv2.imencode(".jpg", fr.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        t2 = time.perf_counter()
        enc_s += t2 - t1
        stats.latencies[-1] += t2 - t1  # the latency counts the encoded frame
        mouths.append(fr.mouth)
        n += 1
    wall = time.perf_counter() - clock["t0"]
    lat = np.array(stats.latencies) * 1000
    tenth = max(1, len(lat) // 10)
    offline = pipe.mouth_track(image, wav, options=RenderOptions(head_motion="still"))  # what render would paint
    m = min(len(mouths), len(offline))
    iod = metrics.canonical_iod()
    live_open = metrics.opening(np.stack(mouths[:m]), iod)
    off_open = metrics.opening(offline[:m], iod)
    r = metrics.pearson(live_open, off_open)
    seg = 30 * 25  # does the lip sync hold over a long stream? r per 30 s
    r_seg = [metrics.pearson(live_open[i: i + seg], off_open[i: i + seg]) for i in range(0, m - seg + 1, seg)]
    _machine(args)
    summary = stats.summary()
    print(f"pipeline build (models, once): {build_s:.2f} s; live landmark model sync delay {pipe.live_model()[1]} "
          f"frames; head motion {opts.head_motion}")
    print(f"live stream of {args.seconds:.0f} s audio in {args.chunk_ms:g} ms chunks at real-time pace, "
          f"{image.shape[1]}x{image.shape[0]}: {n} frames in {wall:.1f} s")
    print(f"{'stage':16s} {'ms/frame':>9s}")
    for k, v in summary.get("ms_per_frame", {}).items():
        print(f"{k:16s} {v:9.2f}")
    print(f"{'jpeg encode':16s} {1000 * enc_s / max(n, 1):9.2f}")
    print(f"latency (chunk in -> encoded frame out): median {np.median(lat):.0f} ms, 95th percentile "
          f"{np.percentile(lat, 95):.0f} ms; first tenth median {np.median(lat[:tenth]):.0f} ms, last tenth "
          f"{np.median(lat[-tenth:]):.0f} ms")
    drift = float(np.median(lat[-tenth:]) - np.median(lat[:tenth]))
    print(f"drift (last tenth's median latency - first tenth's): {drift:+.0f} ms "
          f"({'within' if abs(drift) <= 40 else 'MORE than'} one frame); audio/video offset in the stream: 0 by "
          f"construction (each frame carries the 40 ms of audio it shows)")
    print(f"sustained: {n / wall:.2f} frames/s (real time: 25); rendered {stats.rendered}, repeated to stay live "
          f"{stats.repeated}; silence inserted for a late producer {stats.silence_inserted:.2f} s")
    print(f"lip sync against the offline render of the same audio: r of mouth opening {r:.3f} ({m} frames)")
    if len(r_seg) > 1:
        print(f"  per 30 s: min {min(r_seg):.3f}, median {np.median(r_seg):.3f}, max {max(r_seg):.3f}; first "
              f"{r_seg[0]:.3f}, last {r_seg[-1]:.3f} ({len(r_seg)} segments)")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0


def main(args: argparse.Namespace) -> int:
    if getattr(args, "live", False):
        return bench_live(args)
    if getattr(args, "dub", False):
        return bench_dub(args)
    t0 = time.perf_counter()
    pipe = _load(args)
    build_s = time.perf_counter() - t0
    image, wav = example_inputs(args.seconds)
    mode = getattr(args, "head_motion", "natural")
    runs, still_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(max(2, args.repeat)):
            # with motion on, the render without it is timed alternately in the same process: side by side
            for m, into in [(mode, runs)] + ([("still", still_runs)] if mode != "still" else []):
                into.append(pipe.render(image, wav, output=os.path.join(tmp, "bench.mp4"),
                                        options=RenderOptions(head_motion=m)))
        best = min(runs[1:], key=lambda r: r.timings["total"])
        with redirect_stdout(io.StringIO()) as buf:  # printed below, in the table
            _provenance_rows(os.path.join(tmp, "bench.mp4"), image.shape[1], image.shape[0])
    t = best.timings
    _machine(args)
    print(f"pipeline build (models, once): {build_s:.2f} s; mouth texture: {pipe.texture_name}")
    print(f"render of {args.seconds:.0f} s audio, {best.n_frames} frames at 512x512, head motion "
          f"{getattr(args, 'head_motion', 'natural')} (best of {len(runs) - 1}):")
    print(f"{'stage':16s} {'seconds':>8s} {'ms/frame':>9s}")
    for s in STAGES:
        print(f"{s:16s} {t.get(s, 0.0):8.3f} {1000 * t.get(s, 0.0) / best.n_frames:9.2f}")
    print(f"{'total':16s} {t['total']:8.3f} {1000 * t['total'] / best.n_frames:9.2f}")
    print(buf.getvalue(), end="")
    print(f"end-to-end: {best.n_frames / t['total']:.1f} frames/s ({best.duration / t['total']:.2f}x real time)")
    if still_runs:
        still = min(still_runs[1:], key=lambda r: r.timings["total"])
        print(f"same renders without head motion (--head-motion still), alternating with the above: "
              f"{still.n_frames / still.timings['total']:.1f} frames/s; head motion and blinks cost "
              f"{1000 * (t['total'] - still.timings['total']) / best.n_frames:.1f} ms/frame "
              f"(the motion stage alone {1000 * t.get('motion', 0.0) / best.n_frames:.1f})")
    print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    return 0
