"""Dubbing: an existing video of a person + new speech -> the same video with the mouth following the speech.

The "Synthesizing Obama" setting (Suwajanakorn et al. 2017): mouth shapes are predicted in the pose-normalized
face space, then placed into every target frame by that frame's own 3D head pose. Two streamed passes:

1. **Track** (talkingface.tracking): decode the video once; FaceMesh on every frame, the chosen face
   followed through the video, its pose smoothed without lag; the resting mouth of *this* person is estimated
   from the video; a bounded bank of aligned crops of the person's own mouth is kept.
2. **Render**: decode again in output order (the length policy may loop or play the video backwards), and for
   every frame: aligned crop from the frame's pose -> the texture generator paints the mouth for the
   predicted landmarks, with the frame's own crop as context and the bank frame whose mouth opening is
   nearest the target as the appearance reference (teeth, tongue, lips, beard) -> warped back and blended
   (talkingface.composite) -> encoded. Frames without the face, or turned beyond ``max_angle``, pass through
   unchanged, with a short fade so the switch is not a jump.

Memory is constant in the video's length: frames are streamed, per-frame state is a few KB.
"""
from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.ndimage import median_filter

from . import audio as audio_mod
from . import checks, face, media, metrics, mouth, provenance, tracking
from .composite import Compositor
from .dub_options import LENGTH_POLICIES, DubOptions  # noqa: F401  (a light module: batch and cli read it alone)
from .errors import InputError
from .texture import lip_weight_map, sketches, to_tensor, to_uint8

log = logging.getLogger(__name__)


@dataclass
class DubResult:
    output: str | None
    fps: float
    n_frames: int  # frames written
    n_source_frames: int  # frames of the input video (at the output rate)
    duration: float  # seconds of output
    frames_dubbed: int
    frames_no_face: int  # passed through: the face was not found
    frames_turned: int  # passed through: head turned beyond max_angle
    n_faces: int  # most faces seen in one frame
    face_box: tuple[int, int, int, int] | None  # the dubbed face where first found
    mouth_landmarks: np.ndarray  # (T, 59, 2) image pixels of the output frames; NaN where passed through
    mouth_canonical: np.ndarray  # (T, 59, 3) predicted mouth, pose-normalized space (cm)
    adapt: dict | None = None  # adaptation report: steps, seconds, held-out L1 before/after
    frames: list[np.ndarray] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def source_indices(n_out: int, n_src: int, policy: str) -> np.ndarray:
    """Source frame index for each output frame under a length policy (n_out may exceed n_src)."""
    k = np.arange(n_out)
    if n_out <= n_src or n_src == 1:
        return np.minimum(k, n_src - 1)
    if policy == "loop":
        return k % n_src
    if policy == "freeze":
        return np.minimum(k, n_src - 1)
    period = 2 * (n_src - 1)  # pingpong: 0 1 .. n-1 n-2 .. 1 0 1 ..
    m = k % period
    return np.where(m < n_src, m, period - m)


def _shown_again(src_idx: np.ndarray) -> np.ndarray:
    """(n_out,) bool: whether the source frame of each output frame is shown again by a later output frame."""
    src_idx = np.asarray(src_idx)
    last = np.full(int(src_idx.max()) + 1 if len(src_idx) else 0, -1)
    last[src_idx] = np.arange(len(src_idx))  # the last write wins: each source frame's last position
    return np.arange(len(src_idx)) < last[src_idx]


def output_length(n_src: int, audio_seconds: float, fps: float, policy: str) -> int:
    n_audio = max(1, int(round(audio_seconds * fps)))
    if policy == "trim":
        return min(n_src, n_audio)
    if policy == "video":
        return n_src
    return n_audio


class FrameSource:
    """Frames of a video in any order of source indices, decoded as a stream.

    Forward runs stream from one ffmpeg process; a jump (loop restart) reopens it with a seek; backward runs
    (ping-pong) are decoded in chunks from the end. Seeks are made exact by matching the per-frame thumbnails
    from the tracking pass. Holds at most ``chunk`` frames.
    """

    def __init__(self, path: str, fps: float, max_side: int | None, thumbs: np.ndarray, chunk: int = 48):
        self.path, self.fps, self.max_side, self.thumbs, self.chunk = path, fps, max_side, thumbs, chunk
        self._gen: Iterator[np.ndarray] | None = None
        self._next = 0
        self._cache: dict[int, np.ndarray] = {}

    def _open_at(self, index: int, n_read: int | None = None) -> tuple[Iterator[np.ndarray], list[np.ndarray], int]:
        """Open a decoder near ``index``; returns (generator, first frames read, source index of the first)."""
        start = max(0, index - 3)
        gen = media.iter_video_frames(self.path, fps=self.fps, max_side=self.max_side,
                                      start=start / self.fps if start > 0 else None)
        got = []
        for fr in gen:
            got.append(fr)
            if len(got) >= (n_read or 7):
                break
        if start == 0 or not got:
            return gen, got, start
        # align: which source index is got[0]? compare thumbnails within +-3 frames
        probe = np.stack([tracking.thumbnail(f) for f in got[:7]]).astype(np.float32)
        best, first = np.inf, start
        for d in sorted(range(-3, 4), key=abs):
            s = start + d
            if s < 0 or s >= len(self.thumbs):
                continue
            ref = self.thumbs[s:s + len(probe)].astype(np.float32)
            if len(ref) == 0:
                continue
            err = float(np.abs(probe[: len(ref)] - ref).mean())
            if err < best - 1e-6:
                best, first = err, s
        return gen, got, first

    def _close(self) -> None:
        if self._gen is not None:
            self._gen.close()
            self._gen = None

    def get(self, index: int, take: bool = False) -> np.ndarray:
        """The frame at ``index``. ``take``: the caller takes it (may paint on it) and will not ask for this index
        again: the source forgets it (a cached frame is otherwise shared and must not be changed)."""
        if self._cache.get(index) is not None:
            return self._serve(index, take)
        if self._gen is not None and self._next <= index < self._next + 2 * self.fps + 1:
            fr = None
            while self._next <= index:
                fr = next(self._gen, None)
                if fr is None:
                    break
                self._next += 1
            if fr is not None:
                self._cache = {index: fr}
                return self._serve(index, take)
        backward = index + 1 in self._cache or (self._cache and index < min(self._cache))
        if backward:  # decode the chunk ending at ``index`` and serve from it
            self._close()
            a = max(0, index + 1 - self.chunk)
            gen, got, first = self._open_at(a, n_read=index + 1 - a + 6)
            gen.close()
            self._cache = {first + j: f for j, f in enumerate(got) if a <= first + j <= index}
            if index in self._cache:
                return self._serve(index, take)
            kept = [j for j, f in self._cache.items() if f is not None]
            nearest = min(kept, key=lambda j: abs(j - index)) if kept else None
            if nearest is None:
                raise InputError(f"video file '{self.path}' could not be decoded again at frame {index}")
            return self._cache[nearest].copy() if take else self._cache[nearest]
        # (re)start forward decoding at ``index``
        self._close()
        gen, got, first = self._open_at(index)
        self._gen = gen
        frames = {first + j: f for j, f in enumerate(got)}
        self._next = first + len(got)
        if index in frames:
            self._cache = {index: frames[index]}
            # frames already read beyond ``index`` must not be lost: keep them for the next calls
            self._cache.update({j: f for j, f in frames.items() if j > index})
            return self._serve(index, take)
        while self._next <= index:
            fr = next(self._gen, None)
            if fr is None:
                raise InputError(f"video file '{self.path}' ended before frame {index} on a second read")
            self._next += 1
        self._cache = {index: fr}
        return self._serve(index, take)

    def owned(self, index: int, again: bool) -> np.ndarray:
        """The frame at ``index`` for the caller to paint on: a copy when it is asked for ``again`` later (the
        cache keeps the pristine one), else the cached frame itself, taken."""
        return self.get(index).copy() if again else self.get(index, take=True)

    def _serve(self, index: int, take: bool) -> np.ndarray:
        fr = self._cache[index]
        if take:
            self._cache[index] = None  # given away: the key stays (it tells a backward run from a forward one)
        return fr

    def close(self) -> None:
        self._close()
        self._cache = {}


def _pick_references(bank: list[tracking.BankEntry], k: int = 6) -> list[tracking.BankEntry]:
    """A few bank crops spanning the person's mouth openings (closed to widest), for reference selection."""
    if len(bank) <= k:
        return sorted(bank, key=lambda e: e.opening)
    ops = np.array([e.opening for e in bank])
    order = np.argsort(ops)
    picks = [order[int(round(q * (len(order) - 1)))] for q in np.linspace(0.05, 1.0, k)]
    return [bank[i] for i in dict.fromkeys(picks)]


def _resample_track(track: np.ndarray, n_out: int, fps: float) -> np.ndarray:
    """Mouth track at 25 fps (T, 59, 3) -> n_out frames at ``fps`` by linear interpolation in time."""
    if abs(fps - audio_mod.FPS) < 1e-6 and len(track) >= n_out:
        return track[:n_out]
    t = np.arange(n_out) * audio_mod.FPS / fps
    i0 = np.clip(np.floor(t).astype(int), 0, len(track) - 1)
    i1 = np.clip(i0 + 1, 0, len(track) - 1)
    w = (t - np.floor(t))[:, None, None]
    return track[i0] * (1 - w) + track[i1] * w


def held_out_block(frames: np.ndarray, *, fraction: float = 0.1, min_hold: int = 4, gap: int = 25
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Split bank entries (their source frame numbers) into a held-out contiguous block of time (the latest
    ``fraction``, at least ``min_hold`` entries) and the training entries at least ``gap`` frames before it (the
    gap shrinks when it would leave fewer than 8 training entries). Returns index arrays (hold, train)."""
    order = np.argsort(frames, kind="stable")
    n_hold = max(min_hold, int(len(frames) * fraction))
    hold, rest = order[-n_hold:], order[:-n_hold]
    start = frames[hold].min()
    for g in (gap, gap // 2, 0):
        train = rest[frames[rest] < start - g]
        if len(train) >= 8 or g == 0:
            return hold, train
    return hold, rest


OWN_RANGE_MIN_SECONDS = 2.0  # fewer tracked frontal frames than this: the average range (too few to measure)
OWN_RANGE_BOUNDS = (0.5, 1.7)  # the person's median lip range / the average, kept within what the training
#   speakers span (0.52-1.62 over their clips): a video where the person does not speak would otherwise freeze
#   the dubbed mouth


def _lip_range_ratio(pipe, own: np.ndarray) -> float:
    """A range of motion (59, 3) relative to the training speakers' mean range: the median over the lips' x, y."""
    mean_range = pipe.mean_motion_range.astype(np.float64)
    return float(np.median(own[: metrics.N_LIPS, :2] / mean_range[: metrics.N_LIPS, :2]))


def own_motion_range(pipe, mouth_canon: np.ndarray, neutral: np.ndarray, ok: np.ndarray,
                     fps: float) -> np.ndarray | None:
    """This person's range of mouth motion (59, 3) cm, measured on the video's tracked mouth (the frames ``ok``)
    as training measures each speaker's (``metrics.motion_range``), for ``Pipeline.predict_mouth``. None (the
    average range) when the video has fewer than ``OWN_RANGE_MIN_SECONDS`` of such frames. Its median over the
    lips, relative to the model's average range, is kept within ``OWN_RANGE_BOUNDS``.

    Why: the landmark model learns each training speaker's motion divided by that speaker's own range, and turns
    its prediction back into centimetres with the speakers' mean range; a video shows the person's own. Measured
    by speaker-grouped CV on the training speakers (scripts/eval_speaker_scale.py, docs/EVALUATION.md)."""
    if int(ok.sum()) < OWN_RANGE_MIN_SECONDS * fps:
        log.info("own range of mouth motion: only %d frames of the face, using the average range", int(ok.sum()))
        return None
    own = metrics.motion_range(mouth_canon, neutral, ok)
    ratio = _lip_range_ratio(pipe, own)
    lo, hi = OWN_RANGE_BOUNDS
    if not lo <= ratio <= hi:
        log.info("own range of mouth motion: %.2f of the average, kept at %.2f", ratio, min(max(ratio, lo), hi))
        own = own * (min(max(ratio, lo), hi) / ratio)
    return own.astype(np.float32)


def adapt_generator(generator: torch.nn.Module, bank: list[tracking.BankEntry], *, steps: int, device,
                    fps: float = 25.0, batch: int = 8, lr: float = 1e-4, seed: int = 0,
                    progress: Callable[[int, int], None] | None = None) -> tuple[torch.nn.Module, dict]:
    """Fine-tune a copy of the generator on this video's own crops (reconstruction: L1, lips weighted).

    The held-out set is a contiguous block of time: the last tenth of the bank's crops in frame order (at least
    4), with a gap of one second before it that neither side uses, so no training crop is a neighbour of a
    held-out one. Held-out crops are painted with the training crop of the nearest mouth opening as the
    appearance reference. The report gives the L1 on them before and after.
    """
    if len(bank) < 12:
        raise InputError(f"--adapt needs at least 12 near-frontal frames of the face, the video has {len(bank)}")
    t0 = time.perf_counter()
    gen = copy.deepcopy(generator).to(device).train()
    size = bank[0].crop.shape[0]
    rng = np.random.default_rng(seed)
    hold, train = held_out_block(np.array([e.frame for e in bank]), gap=int(round(fps)))
    n_hold = len(hold)
    ops = np.array([e.opening for e in bank])
    hold_refs = train[np.argmin(np.abs(ops[hold][:, None] - ops[train][None]), axis=1)]
    mask = gen.mask
    crops = to_tensor(np.stack([e.crop for e in bank])).to(device)  # (N, 3, S, S)
    sk = sketches([e.mouth for e in bank], size).to(device)
    lipw = torch.from_numpy(np.stack([lip_weight_map(e.mouth, size) for e in bank])[:, None]).to(device)

    def loss_on(idx: np.ndarray, ref_idx: np.ndarray, model) -> torch.Tensor:
        real = crops[idx]
        fake = model.paint(crops[ref_idx], real, sk[idx])
        w = mask * (1 + 4 * lipw[idx])
        return (torch.abs(fake - real) * w).sum() / (w.sum() * 3)

    def held_out() -> float:
        gen.eval()
        with torch.no_grad():
            val = float(loss_on(hold, hold_refs, gen))
        gen.train()
        return val

    before = held_out()
    opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    for step in range(steps):
        idx = rng.choice(train, size=min(batch, len(train)), replace=False)
        ref_idx = rng.choice(train, size=len(idx))
        loss = loss_on(idx, ref_idx, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, steps)
    after = held_out()
    gen.eval()
    report = {"steps": steps, "crops": len(bank), "held_out": int(n_hold), "l1_before": round(before, 4),
              "l1_after": round(after, 4), "seconds": round(time.perf_counter() - t0, 1)}
    log.info("adapted the generator: %s", report)
    return gen, report


def _interior_choice(bank: list[tracking.BankEntry], target_open: np.ndarray, k: int = 8
                     ) -> tuple[list, np.ndarray]:
    """The mouth interiors of a few of this video's own frames (closed to widest) and, per output frame, the one
    to fill the opening from: the least open that is at least as open as the target (its teeth and tongue
    cover the whole hole), else the widest; held a few frames so the interior does not flicker."""
    refs = [e for e in _pick_references(bank, k) if e.interior is not None]
    if not refs:
        return [], np.zeros(len(target_open), int)
    sources = [mouth.InteriorSource(e.interior, e.interior_points) for e in refs]
    ops = np.array([e.opening for e in refs])
    order = np.argsort(ops)
    enough = ops[order][None, :] >= target_open[:, None] - 0.01
    first = np.where(enough.any(1), enough.argmax(1), len(order) - 1)
    choice = order[first]
    if len(choice) >= 5:
        choice = median_filter(choice, size=5, mode="nearest")
    return sources, choice


def _painter_paint(pipe, track: tracking.VideoTrack, mouth_canon: np.ndarray, rest: np.ndarray,
                   target_open: np.ndarray) -> Callable:
    """paint(frames, work, timings) for the mouth stage: each frame's own pixels warped to the target mouth, the
    opening filled from the person's own frames, refined; ``work``: (position, source frame, output frame, fade)."""
    painter = pipe.painter
    sources, choice = _interior_choice(track.bank, target_open)

    def paint(frames: list[np.ndarray], work: list[tuple[int, int, int, float]], timings: dict) -> None:
        t0 = time.perf_counter()
        jobs = [painter.prepare(frames[j], track.points[s], track.frame(s), mouth_canon[k], rest,
                                sources[choice[k]] if sources else None, own=track.mouth_canon[s])
                for j, s, k, _ in work]
        t1 = time.perf_counter()
        painter.refine_batch(jobs)
        t2 = time.perf_counter()
        for (j, _, _, w), job in zip(work, jobs, strict=True):
            frames[j] = painter.finish(frames[j], job, weight=w, inplace=True)
        timings["texture"] += t2 - t1
        timings["composite"] += (t1 - t0) + time.perf_counter() - t2

    return paint


def _generator_paint(pipe, generator, track: tracking.VideoTrack, mouth_canon: np.ndarray,
                     target_open: np.ndarray, size: int) -> Callable:
    """paint(frames, work, timings) for the first version's 128 px generator: the frame's aligned crop repainted,
    the bank crop nearest the target opening as the appearance reference, blended back (talkingface.composite)."""
    refs = _pick_references(track.bank)
    ref_t = to_tensor(np.stack([e.crop for e in refs])).to(pipe.device) if refs else None
    ref_open = np.array([e.opening for e in refs])
    ref_choice = (np.argmin(np.abs(target_open[:, None] - ref_open[None]), axis=1) if refs
                  else np.zeros(len(mouth_canon), int))
    if len(ref_choice) >= 5:  # hold each reference for a few frames: no flicker between references
        ref_choice = median_filter(ref_choice, size=5, mode="nearest")

    def paint(frames: list[np.ndarray], work: list[tuple[int, int, int, float]], timings: dict) -> None:
        t0 = time.perf_counter()
        crops, targets, affines = [], [], []
        for j, s, k, _ in work:
            ff = track.frame(s)
            affine = ff.crop_affine(size)
            target_img = ff.to_image(mouth_canon[k].astype(np.float64))[:, :2]
            affines.append(affine)
            crops.append(face.warp_crop(frames[j], affine, size))
            targets.append(face.apply_affine(target_img, affine))
        crop_t = to_tensor(np.stack(crops)).to(pipe.device)
        rsel = torch.as_tensor(ref_choice[[k for _, _, k, _ in work]], device=pipe.device)
        ref_b = ref_t[rsel] if ref_t is not None else crop_t
        with torch.no_grad():
            gen_np = to_uint8(generator.paint(ref_b, crop_t, sketches(targets, size).to(pipe.device)))
        timings["texture"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for g, (j, s, _, w) in enumerate(work):
            affine = affines[g]
            comp = Compositor(frames[j].shape[:2], affine, size, face.apply_affine(track.mouth_img[s], affine),
                              face.apply_affine(track.nose_img[s], affine))
            frames[j] = comp(frames[j], gen_np[g], crops[g], targets[g], weight=w)
        timings["composite"] += time.perf_counter() - t0

    return paint


class PipelinedWriter:
    """Pass 2's two background threads and the encoder: while the caller paints one batch, the next batch is
    decoded (``prefetch``/``frames``) and the previous one encoded (``write``); ffmpeg pipes and torch both
    release the GIL. At most one batch is in flight each way (bounded memory; a thread's error surfaces at the
    next call). ``abort`` (also on leaving the ``with`` block by an exception) cancels both threads, waits for
    them, and removes the partial output. ``timings`` "decode" and "encode" are the waits for the threads."""

    def __init__(self, read: Callable[[int, int], list[np.ndarray]], writer: media.VideoWriter | None,
                 timings: dict[str, float]):
        self._read, self._writer, self.timings = read, writer, timings
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="talkingface-decode")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="talkingface-encode")
        self._upcoming = None
        self._pending = None
        timings.update(decode=timings.get("decode", 0.0), encode=timings.get("encode", 0.0))

    def prefetch(self, a: int, b: int) -> None:
        """Start decoding output frames a..b-1 in the background."""
        self._upcoming = self._reader.submit(self._read, a, b)

    def frames(self) -> list[np.ndarray]:
        """The frames of the last ``prefetch`` (waits for them)."""
        t0 = time.perf_counter()
        frames = self._upcoming.result()
        self.timings["decode"] += time.perf_counter() - t0
        return frames

    def write(self, frames: list[np.ndarray]) -> None:
        """Encode ``frames`` in the background after the batch before them has been written."""
        if self._writer is None:
            return
        t0 = time.perf_counter()
        if self._pending is not None:
            self._pending.result()
        self._pending = self._encoder.submit(self._emit, frames)
        self.timings["encode"] += time.perf_counter() - t0

    def _emit(self, batch: list[np.ndarray]) -> None:
        for fr in batch:
            self._writer.write(fr)

    def close(self) -> None:
        """Wait for the last batch and finish the file."""
        if self._writer is not None:
            t0 = time.perf_counter()
            if self._pending is not None:
                self._pending.result()
            self._writer.close()
            self.timings["encode"] += time.perf_counter() - t0

    def abort(self) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)
        self._encoder.shutdown(wait=True, cancel_futures=True)  # no write may race the abort
        if self._writer is not None:
            self._writer.abort()

    def __enter__(self) -> PipelinedWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        self._reader.shutdown(wait=True)
        self._encoder.shutdown(wait=True)


@dataclass
class _Timeline:
    """The output's frames: how many, which source frame each shows, and the new audio fitted to them."""
    n_out: int
    duration: float
    n_samples: int
    wav_out: np.ndarray
    src_idx: np.ndarray


def _check_video(vpath: str, options: DubOptions) -> tuple[media.MediaInfo, float, int | None]:
    """Probe the input video: (info, output fps, decoder max side)."""
    info = media.probe_video(vpath)
    if info.duration is not None and info.duration > options.max_seconds:
        raise InputError(f"video '{vpath}' is {info.duration:.0f} s long; the limit is {options.max_seconds:.0f} s")
    fps = float(options.fps or info.video_rate or 25.0)
    if not 1 <= fps <= 120:
        raise InputError(f"video '{vpath}' reports {fps} fps; pass an explicit output fps")
    return info, fps, options.max_size  # max side None: the input's size, odd sides too (the writer pads them)


def _track(pipe, vpath: str, info, fps: float, max_side: int | None, options: DubOptions, timings: dict,
           progress: Callable[[int, int], None] | None) -> tracking.VideoTrack:
    """Pass 1: decode the video once and track the chosen face through it."""
    n_est = int(round((info.duration or 0) * fps))
    t0 = time.perf_counter()
    decoded = media.iter_video_frames(vpath, fps=fps, max_side=max_side)
    first = next(decoded, None)
    if first is None:
        raise InputError(f"video '{vpath}' has no frames that could be decoded")
    # FaceMesh tracks up to max_faces faces and re-runs its detector while it tracks fewer: ask for as many as
    # the first frame shows (one, usually), so a one-person video is tracked at full speed
    n_first = len(pipe.tracker.detect(first))
    want = max(1, n_first, (options.face_index or 0) + 1)
    vt = face.FaceTracker(static=False, max_faces=min(checks.MAX_FACES, want))
    try:
        track = tracking.track_video(
            itertools.chain([first], decoded), video_tracker=vt,
            photo_tracker=pipe.tracker, face_index=options.face_index, face_point=options.face_point,
            crop_size=pipe.crop_size, smooth_sigma=options.smooth, source=vpath, timings=timings,
            progress=(lambda i: progress(i, n_est)) if progress else None)
    finally:
        vt.close()
        decoded.close()
    timings["tracking"] = time.perf_counter() - t0 - timings["decode_track"]  # detection, pose, smoothing
    n_src = track.n_frames
    if n_est and n_src < 0.9 * n_est - 2:
        log.warning("video '%s' ended after %d of the %d frames its header announces (truncated?); dubbing with "
                    "the frames that could be decoded", vpath, n_src, n_est)
    if n_src < 2:
        raise InputError(f"video '{vpath}' has {n_src} frame(s); a video of at least 2 frames is needed")
    return track


def _plan(n_src: int, wav: np.ndarray, fps: float, policy: str) -> _Timeline:
    """The output timeline under the length policy, and the new audio padded or cut to it."""
    n_out = output_length(n_src, len(wav) / audio_mod.SAMPLE_RATE, fps, policy)
    duration = n_out / fps
    n_samples = int(round(duration * audio_mod.SAMPLE_RATE))
    wav_out = np.pad(wav, (0, max(0, n_samples - len(wav))))[:n_samples]
    return _Timeline(n_out, duration, n_samples, wav_out, source_indices(n_out, n_src, policy))


def _painter(pipe, track: tracking.VideoTrack, mouth_canon: np.ndarray, neutral: np.ndarray,
             options: DubOptions, fps: float, say: Callable[[str], None], timings: dict) -> tuple[Callable, dict | None]:
    """paint(frames, work, timings) of the pipeline's texture method (and --adapt's report)."""
    target_open = metrics.opening(mouth_canon, metrics.canonical_iod())
    if pipe.painter is not None:
        if options.adapt:
            raise InputError(f"--adapt fine-tunes the first version's generator; the mouth stage "
                             f"('{pipe.texture_name}') copies this video's own pixels and needs no adaptation "
                             "(use --texture texture-v1 with --adapt)")
        return _painter_paint(pipe, track, mouth_canon, neutral, target_open), None
    generator, adapt_report = pipe.generator, None
    if options.adapt:
        say("adapting")
        t0 = time.perf_counter()
        generator, adapt_report = adapt_generator(pipe.generator, track.bank, steps=options.adapt_steps,
                                                  device=pipe.device, fps=fps, progress=None)
        timings["adapt"] = time.perf_counter() - t0
    return _generator_paint(pipe, generator, track, mouth_canon, target_open, pipe.crop_size), adapt_report


BRIDGE_PAUSES = 25  # frames at 25 fps: a dub's mouth keeps talking through pauses under 1 s (the speech gate and
#   the speaking expression see utterances; a photo render rests in every pause). Chosen with the expression by
#   speaker-grouped CV (scripts/eval_speaker_scale.py: expr_uttgate25)
OWN_EXPRESSION_SECONDS = 120.0  # of the video's own audio read for the speaking expression (it is a mean)
OWN_EXPRESSION_MIN_SECONDS = 2.0  # of tracked frontal frames with speech: fewer, no expression


def own_expression(pipe, vpath: str, has_audio: bool, mouth_canon: np.ndarray, neutral: np.ndarray,
                   ok: np.ndarray, fps: float) -> np.ndarray | None:
    """This person's speaking expression for ``Pipeline.predict_mouth``: the mean offset (59, 3) cm of the
    video's tracked mouth from its resting shape ``neutral`` over the frames ``ok`` where the video's own audio
    (its first ``OWN_EXPRESSION_SECONDS``) is speech, pauses under ``BRIDGE_PAUSES`` frames included (as
    ``Pipeline.predict_mouth`` applies it). How the mouth sits while they talk (a talking smile, lips
    held apart) is theirs, not the words'; the landmark model, trained across speakers, predicts the average.

    None (no expression) when the video has no audio track, fewer than ``OWN_EXPRESSION_MIN_SECONDS`` of such
    frames, or when the mouth barely moves while the audio speaks (its lips' median range under
    ``OWN_RANGE_BOUNDS[0]`` of the average: a voice-over, not this person speaking). Chosen by speaker-grouped
    CV on the training speakers (scripts/eval_speaker_scale.py; docs/EVALUATION.md, "The person's speaking
    expression")."""
    if not has_audio:
        log.info("speaking expression: the video has no audio track, none used")
        return None
    n = min(len(mouth_canon), int(OWN_EXPRESSION_SECONDS * fps))
    try:
        wav = media.load_audio(vpath, first_seconds=n / fps + 0.1)
    except InputError as e:
        log.info("speaking expression: the video's audio could not be read (%s), none used", e)
        return None
    speech = audio_mod.bridge_pauses(audio_mod.speech_mask(wav), BRIDGE_PAUSES)
    if not speech.any():
        log.info("speaking expression: no speech in the video's audio, none used")
        return None
    t = np.arange(n) * audio_mod.FPS / fps  # each video frame's time in 25 fps audio frames
    sel = ok[:n] & (t < len(speech)) & speech[np.clip(np.round(t).astype(int), 0, len(speech) - 1)]
    if int(sel.sum()) < OWN_EXPRESSION_MIN_SECONDS * fps:
        log.info("speaking expression: only %d frames of the face speaking, none used", int(sel.sum()))
        return None
    ratio = _lip_range_ratio(pipe, metrics.motion_range(mouth_canon[:n], neutral, sel))
    if ratio < OWN_RANGE_BOUNDS[0]:
        log.info("speaking expression: the mouth barely moves while the video's audio speaks (%.2f of the average "
                 "range), none used", ratio)
        return None
    return (mouth_canon[:n][sel] - neutral[None]).mean(axis=0).astype(np.float32)


def dub(pipe, video, audio, *, output=None, options: DubOptions = DubOptions(), phonemes=None,
        progress: Callable[[int, int], None] | None = None, stage: Callable[[str], None] | None = None,
        return_frames: bool = False, mouth_fn: Callable | None = None) -> DubResult:
    """Dub ``video`` with ``audio`` using the models of ``pipe`` (a talkingface.Pipeline).

    video: path of any video ffmpeg reads; audio: path or float32 mono 16 kHz array; output: mp4 path (written
    atomically) or None. progress(done, total) is called per output frame; stage(name) at each pass.
    mouth_fn(wav, neutral) -> (T, 59, 3) canonical mouth track at 25 fps replaces the landmark model (the
    evaluation's baselines use it).
    """
    from .pipeline import check_output, load_speech

    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    say = stage or (lambda name: None)
    vpath = str(video)
    # inputs
    check_output(output, [("video", video), ("audio", audio)])
    info, fps, max_side = _check_video(vpath, options)
    wav, energy = load_speech(audio, max_seconds=options.max_seconds)
    face.check_image_size(*info.display_size, vpath)
    timings["load"] = time.perf_counter() - t_start

    # pass 1: track the face through the whole video
    say("tracking")
    track = _track(pipe, vpath, info, fps, max_side, options, timings, progress)
    plan = _plan(track.n_frames, wav, fps, options.length)
    n_out = plan.n_out

    # mouth shapes for the new speech, this person's resting mouth, placed by each frame's pose
    ok = track.valid.copy()
    turned = ok & ((np.abs(track.yaw) > options.max_angle) | (np.abs(track.pitch) > options.max_angle))
    ok &= ~turned
    neutral = metrics.neutral_mouth(track.mouth_canon, track.valid).astype(np.float64)
    motion_range = own_motion_range(pipe, track.mouth_canon, neutral, ok, fps) if options.own_range else None
    expression = None
    if options.own_expression and mouth_fn is None:
        t0 = time.perf_counter()
        expression = own_expression(pipe, vpath, info.has_audio, track.mouth_canon, neutral, ok, fps)
        timings["expression"] = time.perf_counter() - t0
    gate_energy = energy if len(plan.wav_out) == len(wav) else None
    if mouth_fn is not None:
        mouth25 = mouth_fn(plan.wav_out, neutral)
    else:
        mouth25 = pipe.predict_mouth(plan.wav_out, neutral, motion_scale=options.motion_scale,
                                     silence_gate=options.silence_gate, timings=timings, energy=gate_energy,
                                     phonemes=phonemes, motion_range=motion_range, expression=expression,
                                     bridge_pauses=BRIDGE_PAUSES)
    mouth_canon = _resample_track(mouth25, n_out, fps).astype(np.float32)
    if pipe.painter is not None:  # the mouth stage's temporal smoothing of its targets (MouthOptions.smooth)
        mouth_canon = pipe.painter.smooth_track(mouth_canon, fps)
    weights = tracking.edge_weights(ok)
    paint, adapt_report = _painter(pipe, track, mouth_canon, neutral, options, fps, say, timings)

    # pass 2: decode in output order, paint, blend, encode
    say("rendering")
    source = FrameSource(vpath, fps, max_side, track.thumbs)
    mouth_out = np.full((n_out, len(face.MOUTH), 2), np.nan, np.float32)
    frames_out: list[np.ndarray] | None = [] if return_frames else None
    timings.update(decode=0.0, texture=0.0, composite=0.0, encode=0.0)
    writer = None
    if output is not None:
        audio_arg = audio if (not isinstance(audio, np.ndarray) and plan.n_samples <= len(wav)) else plan.wav_out
        writer = media.VideoWriter(output, fps, track.width, track.height, audio=audio_arg,
                                   audio_sr=audio_mod.SAMPLE_RATE, crf=options.crf, duration=plan.duration,
                                   pad_odd=True,
                                   label=provenance.label_for(pipe, "dub", options, parent=vpath,
                                                             adapted=bool(options.adapt)))
        writer.open()
    counts = {"dubbed": 0, "no_face": 0, "turned": 0}

    # the frames are painted in place: one the timeline shows again later is copied, the others taken over
    again = _shown_again(plan.src_idx)

    def read(a: int, b: int) -> list[np.ndarray]:
        return [source.owned(int(s), bool(again[k])) for k, s in zip(range(a, b), plan.src_idx[a:b], strict=True)]

    bs = options.batch_size
    try:
        with PipelinedWriter(read, writer, timings) as io:
            io.prefetch(0, min(n_out, bs))
            for start in range(0, n_out, bs):
                stop = min(n_out, start + bs)
                frames = io.frames()
                if stop < n_out:
                    io.prefetch(stop, min(n_out, stop + bs))
                work = []  # (position in batch, source frame, output frame, fade weight)
                for j, k in enumerate(range(start, stop)):
                    s = int(plan.src_idx[k])
                    if not ok[s] or weights[s] <= 0:
                        counts["no_face" if not track.valid[s] else "turned"] += 1
                        continue
                    mouth_out[k] = track.frame(s).to_image(mouth_canon[k].astype(np.float64))[:, :2]
                    work.append((j, s, k, float(weights[s])))
                if work:
                    paint(frames, work, timings)
                    counts["dubbed"] += len(work)
                io.write(frames)
                if frames_out is not None:
                    frames_out.extend(frames)
                if progress is not None:
                    progress(stop, n_out)
            io.close()
    finally:
        source.close()
    timings["total"] = time.perf_counter() - t_start
    if counts["no_face"] or counts["turned"]:
        log.info("%s: %d frames dubbed, %d passed through without the face, %d turned beyond %g degrees",
                 vpath, counts["dubbed"], counts["no_face"], counts["turned"], options.max_angle)
    return DubResult(
        output=str(output) if output is not None else None, fps=fps, n_frames=n_out,
        n_source_frames=track.n_frames, duration=plan.duration, frames_dubbed=counts["dubbed"],
        frames_no_face=counts["no_face"], frames_turned=counts["turned"], n_faces=track.n_faces_max,
        face_box=track.first_box, mouth_landmarks=mouth_out, mouth_canonical=mouth_canon, adapt=adapt_report,
        frames=frames_out, timings=timings)
