"""Media I/O: audio decoding, image loading, video frame streaming and video writing.

All audio/video work goes through the ffmpeg binary bundled with ``imageio-ffmpeg``
(never a system ffmpeg, there is no ffprobe). Inputs are passed to ffmpeg as
``file:<absolute path>`` so that odd file names (``-x.wav``, ``concat:a|b``,
``http:...``) are never interpreted as options or protocols.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import subprocess
import tempfile
import threading
import queue
import warnings
import wave
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import IO, TYPE_CHECKING, Callable, Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .audio import SAMPLE_RATE  # one home: talkingface.audio (re-exported here for media's callers)
from .errors import InputError, TalkingFaceError

if TYPE_CHECKING:
    from .provenance import Label

__all__ = [
    "SAMPLE_RATE",
    "MAX_IMAGE_PIXELS",
    "SUPPORTED_IMAGE_FORMATS",
    "MediaInfo",
    "ffmpeg_exe",
    "probe",
    "load_audio",
    "iter_audio_chunks",
    "load_image",
    "iter_video_frames",
    "VideoWriter",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

MAX_IMAGE_PIXELS = 40_000_000
# x264 on top of its "veryfast" preset for frames of X264_PARAMS_MIN_PIXELS and more: diamond motion search, no inter
# sub-partitions. 13-20 % less encoder CPU at 720p and over (the largest share of a 720p dub's CPU) for files up to
# 3.2 % larger and 0.05-0.14 dB lower PSNR at CRF 18 (scripts/measure_encoder.py; docs/DUBBING.md "Where a dub's CPU
# goes": also why x264's sub-pixel refinement is kept). Smaller frames keep "veryfast" alone: their encoding costs
# 3 ms a frame or less, and a 256 px output's watermark lost margin under blur with the cheaper settings.
X264_PARAMS = "me=dia:partitions=i8x8,i4x4"
X264_PARAMS_MIN_PIXELS = 640 * 360
#: Pillow format names accepted by :func:`load_image` (MPO = multi-picture JPEG from phones).
SUPPORTED_IMAGE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP"})

_PROBE_TIMEOUT_S = 60.0
_STDERR_TAIL_BYTES = 8192
# Lines ffmpeg prints last that carry no information about the actual cause.
_GENERIC_FFMPEG_LINES = ("conversion failed!",)


# --------------------------------------------------------------------------- helpers


def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary bundled with imageio-ffmpeg."""
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - dependency is mandatory
        raise TalkingFaceError("imageio-ffmpeg is not installed; it provides the ffmpeg binary") from e
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:  # pragma: no cover - broken install
        raise TalkingFaceError(f"the ffmpeg binary of imageio-ffmpeg cannot be found: {e}") from e


def _ff_url(path: PathLike) -> str:
    """ffmpeg input/output URL that forces the plain file protocol."""
    return "file:" + os.path.abspath(os.fspath(path))


def _last_error_line(text: str) -> str:
    """The most informative last line of ffmpeg's stderr ('' if none)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower() not in _GENERIC_FFMPEG_LINES:
            return line
    return lines[-1] if lines else ""


def _read_tail(f: IO[bytes]) -> str:
    """Read the last few KiB of a (stderr log) file object."""
    try:
        f.flush()
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - _STDERR_TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return ""


def _check_input_file(path: PathLike, kind: str) -> str:
    """Validate that ``path`` is an existing, non-empty regular file; return it as str."""
    p = os.fspath(path)
    if not os.path.exists(p):
        raise InputError(f"{kind} file '{p}' does not exist")
    if os.path.isdir(p):
        raise InputError(f"{kind} file '{p}' is a directory, not a file")
    try:
        size = os.path.getsize(p)
    except OSError as e:
        raise InputError(f"{kind} file '{p}' cannot be accessed: {e.strerror or e}") from e
    if size == 0 and os.path.isfile(p):
        raise InputError(f"{kind} file '{p}' is empty (0 bytes)")
    if not os.access(p, os.R_OK):
        raise InputError(f"{kind} file '{p}' is not readable (permission denied)")
    return p


def _popen(args: Sequence[str], **kwargs: object) -> subprocess.Popen:
    """Start ffmpeg, turning a failure to launch it into a TalkingFaceError."""
    logger.debug("running %s", " ".join(args))
    try:
        return subprocess.Popen(list(args), **kwargs)  # type: ignore[call-overload]
    except OSError as e:
        raise TalkingFaceError(f"could not start ffmpeg '{args[0]}': {e}") from e


def _kill(proc: subprocess.Popen) -> None:
    """Kill ``proc`` if still running and reap it."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:  # already gone
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - kill never fails like this
        logger.warning("ffmpeg (pid %s) did not exit after SIGKILL", proc.pid)


# --------------------------------------------------------------------------- probe


@dataclass(frozen=True)
class MediaInfo:
    """What ``ffmpeg -i`` says about a media file.

    ``width``/``height`` are the coded (stored) size of the first video stream, before
    rotation; ``rotation`` is the display-matrix rotation in degrees as ffmpeg prints
    it (counter-clockwise, normalised to (-180, 180]; 0 when absent).
    """

    duration: float | None
    has_audio: bool
    has_video: bool
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation: int = 0
    nominal_fps: float | None = None  # ffmpeg's "tbr": the base rate; differs from fps (average) when VFR

    @property
    def video_rate(self) -> float | None:
        """The frame rate to keep when re-encoding: the average rate, or the nominal one for variable-rate
        video whose average is not a real rate (e.g. 22.13 fps average of a 30 fps phone video)."""
        if self.fps and self.nominal_fps and abs(self.fps - self.nominal_fps) > 0.01 * self.nominal_fps \
                and self.nominal_fps <= 60:
            return self.nominal_fps
        return self.fps or self.nominal_fps

    @property
    def display_size(self) -> tuple[int, int] | None:
        """(width, height) after rotation, i.e. the size of frames ffmpeg decodes."""
        if self.width is None or self.height is None:
            return None
        if abs(self.rotation) % 180 == 90:
            return self.height, self.width
        return self.width, self.height


_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+.*?:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE_RE = re.compile(r",\s(\d+)x(\d+)(?=[\s,\[]|$)")
_FPS_RE = re.compile(r"([\d.]+)(k?)\s+fps")
_TBR_RE = re.compile(r"([\d.]+)(k?)\s+tbr")
_ROTATION_RE = re.compile(r"rotation of\s+(-?\d+(?:\.\d+)?)\s+degrees", re.IGNORECASE)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$", re.IGNORECASE)


def _parse_rate(m: re.Match[str] | None) -> float | None:
    if m is None:
        return None
    try:
        value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    except ValueError:
        return None
    return value if value > 0 else None


def _normalise_rotation(deg: float) -> int:
    r = int(round(deg)) % 360
    return r - 360 if r > 180 else r


def _parse_probe(text: str) -> MediaInfo:
    """Parse the stderr of ``ffmpeg -hide_banner -i FILE`` (first input only)."""
    duration: float | None = None
    m = _DURATION_RE.search(text)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

    has_audio = False
    has_video = False
    width = height = None
    fps: float | None = None
    tbr: float | None = None
    rotation = 0
    in_first_video = False  # are we inside the block of the first video stream?
    for line in text.splitlines():
        sm = _STREAM_RE.match(line)
        if sm:
            kind, desc = sm.group(1), sm.group(2)
            in_first_video = False
            if kind == "Audio":
                has_audio = True
            elif kind == "Video" and "(attached pic)" not in desc and not has_video:
                # cover art in mp3/m4a is reported as a video stream: not a real video
                has_video = True
                in_first_video = True
                zm = _SIZE_RE.search(desc)
                if zm:
                    width, height = int(zm.group(1)), int(zm.group(2))
                tbr = _parse_rate(_TBR_RE.search(desc))
                fps = _parse_rate(_FPS_RE.search(desc)) or tbr
            continue
        if in_first_video:
            if line.lstrip().startswith(("Input #", "Output #", "At least one output")):
                in_first_video = False
                continue
            rm = _ROTATION_RE.search(line)
            if rm:
                rotation = _normalise_rotation(float(rm.group(1)))
                continue
            tm = _ROTATE_TAG_RE.match(line)
            if tm and rotation == 0:
                # legacy 'rotate' tag is clockwise; display matrix is counter-clockwise
                rotation = _normalise_rotation(-float(tm.group(1)))
    return MediaInfo(duration, has_audio, has_video, width, height, fps, rotation, tbr)


def probe(path: PathLike) -> MediaInfo:
    """Probe a media file by parsing ``ffmpeg -hide_banner -i path`` stderr.

    Raises InputError if the file is missing/empty or ffmpeg cannot open it
    (e.g. 'Invalid data found when processing input') or it has no streams.
    """
    return _probe(path, "media")


def probe_video(path: PathLike) -> MediaInfo:
    """:func:`probe` of a video to dub, refused when it has no video stream or is a photo (which ffmpeg reads as a
    one-frame video): said before any model is loaded. (The header's duration cannot tell a one-frame clip: raw
    streams report guesses; the tracker counts the frames that decode.)"""
    info = probe(path)
    if not info.has_video or info.display_size is None:
        raise InputError(f"'{path}' has no video stream to dub")
    if is_still_image(path):
        raise InputError(f"'{path}' is a photo, not a video: a photo is made to talk with --image "
                         "(Pipeline.render); dubbing needs a video")
    return info


def is_still_image(path: PathLike) -> bool:
    """True when ``path`` is an image file of one frame (jpg, png, one-frame webp/gif, ...)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(os.fspath(path)) as im:
                # Pillow's MPEG plugin reads an MPEG video's first header as a picture: that one is a video
                return im.format != "MPEG" and int(getattr(im, "n_frames", 1)) == 1
    except Exception:  # noqa: BLE001 - not an image Pillow reads (a video, audio, anything else)
        return False


def _probe(path: PathLike, kind: str) -> MediaInfo:
    """:func:`probe` with ``kind`` ('audio', 'video', ...) used in error messages."""
    p = _check_input_file(path, kind)
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _ff_url(p)]
    logger.debug("probing %s", p)
    try:
        res = subprocess.run(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, timeout=_PROBE_TIMEOUT_S, check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise InputError(f"{kind} file '{p}' could not be probed: ffmpeg timed out") from e
    except OSError as e:
        raise TalkingFaceError(f"could not start ffmpeg '{args[0]}': {e}") from e
    text = res.stderr.decode("utf-8", errors="replace")
    # ffmpeg always exits non-zero here ("At least one output file must be specified").
    if "Input #0" not in text:
        detail = _last_error_line(text) or "unknown ffmpeg error"
        raise InputError(f"{kind} file '{p}' could not be decoded: {detail}")
    info = _parse_probe(text)
    if not info.has_audio and not info.has_video:
        raise InputError(f"{kind} file '{p}' contains no audio or video streams")
    return info


# --------------------------------------------------------------------------- audio


def _open_audio(path: PathLike, max_seconds: float | None) -> tuple[str, MediaInfo]:
    """Validate an audio (or video-with-audio) input; return (path, info)."""
    p = _check_input_file(path, "audio")
    info = _probe(p, "audio")
    if not info.has_audio:
        raise InputError(f"audio file '{p}' has no audio stream")
    if max_seconds is not None and info.duration is not None and info.duration > max_seconds:
        raise InputError(
            f"audio file '{p}' is too long: {info.duration:.1f} s (limit {max_seconds:g} s)"
        )
    return p, info


def _audio_stream(p: str, sr: int, chunk_samples: int, seconds: float | None = None) -> Iterator[np.ndarray]:
    """Decode ``p`` with ffmpeg to float32 mono at ``sr`` (only its first ``seconds`` if given) and yield chunks."""
    args = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-i", _ff_url(p), *(["-t", f"{seconds:.3f}"] if seconds is not None else []),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-ac", "1", "-ar", str(sr), "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1",
    ]
    chunk_bytes = chunk_samples * 4
    with tempfile.TemporaryFile(prefix="talkingface-ffmpeg-", suffix=".log") as log:
        proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        finished = False
        try:
            assert proc.stdout is not None
            while True:
                data = proc.stdout.read(chunk_bytes)
                if not data:
                    break
                usable = len(data) - len(data) % 4
                if usable:
                    chunk = np.frombuffer(bytearray(data[:usable]), dtype="<f4").astype(np.float32, copy=False)
                    np.nan_to_num(chunk, copy=False)
                    np.clip(chunk, -1.0, 1.0, out=chunk)
                    yield chunk
                if len(data) < chunk_bytes:
                    break
            rc = proc.wait()
            finished = True
            if rc != 0:
                line = _last_error_line(_read_tail(log)) or f"ffmpeg exited with status {rc}"
                raise InputError(f"audio file '{p}' could not be decoded: {line}")
        finally:
            if not finished:
                _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()


def iter_audio_chunks(
    path: PathLike, sr: int = SAMPLE_RATE, chunk_seconds: float = 10.0
) -> Iterator[np.ndarray]:
    """Stream the decoded audio of ``path`` as float32 mono chunks of ``chunk_seconds``.

    The file is validated (exists, decodable, has audio) when this is called; ffmpeg
    starts on the first ``next()``. Closing the generator early kills ffmpeg. The last
    chunk may be shorter. Yields nothing more than the audio (no empty-audio check).
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    p, _ = _open_audio(path, None)
    return _audio_stream(p, int(sr), max(1, int(round(chunk_seconds * sr))))


def load_audio(path: PathLike, sr: int = SAMPLE_RATE, max_seconds: float | None = None, *,
               first_seconds: float | None = None) -> np.ndarray:
    """Decode an audio file (or the audio track of a video) to float32 mono in [-1, 1].

    first_seconds: decode only the start, up to this many seconds (then ``max_seconds`` is not checked).
    Raises InputError for a missing/corrupt/non-media file, a file without audio
    stream, empty audio, or audio longer than ``max_seconds``.
    """
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    if first_seconds is not None:
        if not first_seconds > 0:
            raise ValueError(f"first_seconds must be positive, got {first_seconds}")
        max_seconds = None
    p, info = _open_audio(path, max_seconds)
    # Only enforce the limit while decoding when the probe could not tell the duration.
    limit = None
    if max_seconds is not None and info.duration is None:
        limit = int(math.ceil(max_seconds * sr))
    chunks: list[np.ndarray] = []
    total = 0
    gen = _audio_stream(p, int(sr), 1 << 20, first_seconds)
    try:
        for chunk in gen:
            chunks.append(chunk)
            total += chunk.size
            if limit is not None and total > limit:
                raise InputError(f"audio file '{p}' is too long: more than {max_seconds:g} s")
    finally:
        gen.close()
    if total == 0:
        raise InputError(f"audio file '{p}' contains no audio samples")
    audio = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    logger.debug("loaded %s: %d samples at %d Hz (%.2f s)", p, audio.size, sr, audio.size / sr)
    return audio


# --------------------------------------------------------------------------- images


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert any Pillow image to uint8 RGB, compositing alpha over white."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        # 16-bit / float grayscale: Pillow's convert('L') clips instead of scaling.
        arr = np.asarray(im, dtype=np.float64)
        if arr.size and float(np.nanmax(arr)) > 255.0:
            arr = arr / 257.0
        gray = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, rgba).convert("RGB")
    elif im.mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def load_image(path: PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Load a jpg/png/webp/bmp image as uint8 RGB (H, W, 3).

    Applies the EXIF orientation, composites transparency over white and expands
    grayscale to 3 channels. Raises InputError for a missing, unreadable, corrupt,
    unsupported, zero-size or larger than ``max_pixels`` image.
    """
    p = _check_input_file(path, "image")
    with warnings.catch_warnings():
        # the size is checked against max_pixels below, with one clear line: no Pillow warning on stderr
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return _load_image(p, max_pixels)


def _load_image(p: str, max_pixels: int) -> np.ndarray:
    try:
        with Image.open(p) as im:
            fmt = im.format or "unknown"
            if fmt not in SUPPORTED_IMAGE_FORMATS:
                supported = ", ".join(sorted(SUPPORTED_IMAGE_FORMATS - {"MPO"}))
                raise InputError(f"image file '{p}' has unsupported format {fmt} (supported: {supported})")
            w, h = im.size
            if w <= 0 or h <= 0:
                raise InputError(f"image file '{p}' has zero size ({w}x{h})")
            if w * h > max_pixels:
                raise InputError(
                    f"image file '{p}' is too large: {w}x{h} = {w * h / 1e6:.1f} MP "
                    f"(limit {max_pixels / 1e6:g} MP)"
                )
            im.load()
            try:
                oriented = ImageOps.exif_transpose(im)
            except Exception as e:  # broken EXIF must not make the photo unusable
                logger.warning("ignoring unreadable EXIF orientation of '%s': %s", p, e)
                oriented = im
            arr = _to_rgb_array(oriented if oriented is not None else im)
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"image file '{p}' is too large: {e}") from e
    except UnidentifiedImageError as e:
        raise InputError(f"image file '{p}' could not be read: not a recognised image format") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        # truncated/corrupt data (OSError), bad headers (SyntaxError), odd modes (ValueError)
        raise InputError(f"image file '{p}' could not be read: {e}") from e
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image file '{p}' decoded to an unexpected shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------- video reading


def _fit_even(w: int, h: int, max_side: int) -> tuple[int, int]:
    """Downscale (w, h) so max(w, h) <= max_side, with even dimensions (>= 2)."""
    if max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    # floor to even keeps the longer side <= max_side even when max_side is odd
    return max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2)


def _video_stream(
    p: str, w: int, h: int, fps: float | None, need_scale: bool, start: float | None = None
) -> Iterator[np.ndarray]:
    """Run ffmpeg to rawvideo rgb24 and yield exactly w*h*3-byte frames."""
    filters = []
    if fps is not None:
        filters.append(f"fps={_rate_str(fps)}")
    if need_scale:
        filters.append(f"scale={w}:{h}:flags=area")
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error"]
    if start:
        args += ["-ss", f"{start:.6f}"]  # input seek: decodes from the keyframe before, emits from ``start``
    args += ["-i", _ff_url(p), "-map", "0:v:0", "-an", "-sn", "-dn"]
    if filters:
        args += ["-vf", ",".join(filters)]
    if fps is None:
        args += ["-fps_mode", "passthrough"]  # rawvideo muxer would otherwise force CFR
    args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    frame_bytes = w * h * 3
    with tempfile.TemporaryFile(prefix="talkingface-ffmpeg-", suffix=".log") as log:
        proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        finished = False
        count = 0
        try:
            assert proc.stdout is not None
            while True:
                buf = bytearray(frame_bytes)
                view = memoryview(buf)
                got = 0
                while got < frame_bytes:
                    n = proc.stdout.readinto(view[got:])
                    if not n:
                        break
                    got += n
                if got < frame_bytes:
                    if got:
                        logger.warning("'%s': dropped a truncated last frame (%d of %d bytes)", p, got, frame_bytes)
                    break
                count += 1
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
            rc = proc.wait()
            finished = True
            if rc != 0:
                line = _last_error_line(_read_tail(log)) or f"ffmpeg exited with status {rc}"
                raise InputError(f"video file '{p}' could not be decoded: {line}")
            logger.debug("read %d frames of %dx%d from %s", count, w, h, p)
        finally:
            if not finished:
                _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()


_END = object()


def ahead(items: Iterable, fn: Callable, depth: int = 2, name: str = "talkingface-ahead") -> Iterator:
    """``fn(item)`` for each of ``items``, taken and computed up to ``depth`` items ahead by a background thread
    (a decoder's pipe, a speech synthesizer and OpenCV release the GIL, so they overlap the caller's work). An
    error of ``items`` or ``fn`` is raised here, in order. Closing this generator stops and joins the thread, so
    the caller may close ``items`` afterwards (a generator cannot be closed while another thread runs it)."""
    q: queue.Queue = queue.Queue(max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for x in items:
                if not put(fn(x)):
                    return
            put(_END)
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
            put(e)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def iter_video_frames(
    path: PathLike, fps: float | None = 25.0, max_side: int | None = None, start: float | None = None
) -> Iterator[np.ndarray]:
    """Stream the frames of a video (or still image) as uint8 RGB (H, W, 3) arrays.

    With ``fps`` the video is resampled to that constant rate (VFR-safe); with
    ``fps=None`` frames are passed through as decoded. ``max_side`` downscales so the
    longer side is at most that, with even dimensions. Frames are upright (ffmpeg
    applies the rotation metadata). The file is validated on call; closing the
    generator early kills ffmpeg. ``start`` (seconds) seeks before decoding (the first frame may be one
    frame off the exact time; callers that need exact frames check what they got).
    """
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive or None, got {fps}")
    if max_side is not None and max_side < 2:
        raise ValueError(f"max_side must be >= 2, got {max_side}")
    p = _check_input_file(path, "video")
    info = _probe(p, "video")
    if not info.has_video or info.display_size is None:
        raise InputError(f"video file '{p}' has no video stream")
    w, h = info.display_size
    if max_side is not None:
        w, h = _fit_even(w, h, max_side)
    # Always scale to the size we computed: guarantees the byte count per frame even if
    # ffmpeg's autorotation and our parsing of the rotation metadata ever disagree.
    return _video_stream(p, w, h, fps, need_scale=True, start=start)


# --------------------------------------------------------------------------- video writing


def _rate_str(fps: float) -> str:
    """Exact rational string for a frame rate (29.97002997 -> '30000/1001')."""
    frac = Fraction(fps).limit_denominator(100_000)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


def _write_wav16(path: str, audio: np.ndarray, sr: int) -> None:
    """Write float mono audio in [-1, 1] as a 16-bit PCM wav."""
    a = np.nan_to_num(np.asarray(audio, dtype=np.float32).reshape(-1))
    pcm = (np.clip(a, -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(path, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(int(sr))
        wf.writeframes(pcm.tobytes())


class VideoWriter:
    """Stream RGB frames into an H.264/AAC mp4 with ffmpeg, atomically.

    Usage::

        with VideoWriter("out.mp4", 25, 512, 512, audio=wav, audio_sr=16000) as vw:
            for frame in frames:
                vw.write(frame)

    ffmpeg writes to a hidden temp file next to ``path`` which replaces ``path`` only
    when the block exits normally and ffmpeg succeeds; otherwise ffmpeg is killed,
    the temp file removed and nothing appears at ``path``. ``duration`` (seconds)
    cuts the output with ``-t``; frames beyond it are dropped (not counted).

    H.264 in yuv420p (what every player plays) needs even sides. An odd ``width`` or
    ``height`` is refused unless ``pad_odd``: then frames are still written at
    ``width`` x ``height`` and encoded one pixel larger, the last column/row repeated
    (every input pixel is kept; the padding is logged).
    ``label`` (a ``provenance.Label``): every frame gets the invisible watermark and, unless the label turns
    credentials off, the finished file is signed with a C2PA manifest before it appears at ``path``. Every
    video the pipeline outputs is written with a label; only internal/test videos are written without.
    ``preset`` and ``x264_params`` set the encoder's speed ("auto": ``X264_PARAMS`` for frames of
    ``X264_PARAMS_MIN_PIXELS`` and more; None: the preset's own settings).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float,
        width: int,
        height: int,
        *,
        audio: PathLike | np.ndarray | None = None,
        audio_sr: int = SAMPLE_RATE,
        crf: int = 18,
        preset: str = "veryfast",
        x264_params: str | None = "auto",
        duration: float | None = None,
        pad_odd: bool = False,
        label: "Label | None" = None,
    ) -> None:
        if not fps or not fps > 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if int(width) != width or int(height) != height or width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive integers, got {width}x{height}")
        if (width % 2 or height % 2) and not pad_odd:
            raise ValueError(
                f"width and height must be even for H.264/yuv420p, got {width}x{height}; "
                "pad or crop the frames"
            )
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be positive or None, got {duration}")
        if audio_sr <= 0:
            raise ValueError(f"audio_sr must be positive, got {audio_sr}")
        self.path = os.fspath(path)
        self.fps = float(fps)
        self.width = int(width)
        self.height = int(height)
        self.encoded_size = (self.width + self.width % 2, self.height + self.height % 2)
        if self.encoded_size != (self.width, self.height):
            logger.warning("'%s': frames of %dx%d are encoded as %dx%d (H.264 needs even sides; the last %s "
                           "repeated)", self.path, self.width, self.height,
                           *self.encoded_size, " and ".join(n for n, odd in (("column", self.width % 2),
                                                                              ("row", self.height % 2)) if odd))
        self.audio = audio
        self.audio_sr = int(audio_sr)
        self.crf = int(crf)
        self.preset = preset
        if x264_params == "auto":
            x264_params = X264_PARAMS if self.width * self.height >= X264_PARAMS_MIN_PIXELS else None
        self.x264_params = x264_params
        self.duration = duration
        self.label = label
        if label is not None:
            label.check()  # an unreadable signing key fails here, before any work
        from . import watermark  # cv2: imported only when a labelled video is written

        self._mark = None if label is None else watermark.Embedder(self.encoded_size[1], self.encoded_size[0])
        self.frames_written = 0
        self._max_frames = None if duration is None else int(math.ceil(duration * self.fps - 1e-9))
        self._dropped = 0
        self._proc: subprocess.Popen | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None
        self._tmp_out: str | None = None
        self._closed = False

        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise InputError(f"output folder '{folder}' does not exist (for '{self.path}')")
        if os.path.isdir(self.path):
            raise InputError(f"output path '{self.path}' is a directory")
        if isinstance(audio, np.ndarray):
            if audio.ndim == 2 and 1 in audio.shape:
                audio = audio.reshape(-1)
            if audio.ndim != 1:
                raise ValueError(f"audio array must be 1-D mono, got shape {audio.shape}")
            if audio.size == 0:
                raise ValueError("audio array is empty")
            self.audio = audio
        elif audio is not None:
            ap = _check_input_file(audio, "audio")
            info = _probe(ap, "audio")
            if not info.has_audio:
                raise InputError(f"audio file '{ap}' has no audio stream")
            self.audio = ap

    # -- lifecycle

    def open(self) -> "VideoWriter":
        """Start ffmpeg (called by ``__enter__``)."""
        if self._proc is not None or self._closed:
            raise RuntimeError("VideoWriter can only be opened once")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise InputError(f"output folder '{folder}' does not exist (for '{self.path}')")
        base = os.path.basename(self.path)
        stem, suffix = os.path.splitext(base)
        self._tmp_out = os.path.join(folder, f".{stem}.tmp-{secrets.token_hex(4)}{suffix or '.mp4'}")
        self._tmpdir = tempfile.TemporaryDirectory(prefix="talkingface-writer-")
        try:
            self._log = open(os.path.join(self._tmpdir.name, "ffmpeg.log"), "w+b")
            args = [
                ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24",
                "-s", "{}x{}".format(*self.encoded_size), "-framerate", _rate_str(self.fps),
                "-i", "pipe:0",
            ]
            if isinstance(self.audio, np.ndarray):
                wav = os.path.join(self._tmpdir.name, "audio.wav")
                _write_wav16(wav, self.audio, self.audio_sr)
                args += ["-i", _ff_url(wav)]
            elif self.audio is not None:
                args += ["-i", _ff_url(self.audio)]
            args += ["-map", "0:v:0"]
            if self.audio is not None:
                args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
            args += [
                "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
                *(["-x264-params", self.x264_params] if self.x264_params else []),
                "-pix_fmt", "yuv420p", "-movflags", "+faststart",
            ]
            if self.duration is not None:
                args += ["-t", f"{self.duration:.6f}"]
            if not suffix:
                args += ["-f", "mp4"]
            args.append(_ff_url(self._tmp_out))
            self._proc = _popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        except BaseException:
            self._cleanup()
            raise
        return self

    def __enter__(self) -> "VideoWriter":
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def write(self, frame: np.ndarray) -> None:
        """Send one uint8 RGB frame of shape (height, width, 3) to the encoder."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        if self._proc is None:
            raise RuntimeError("VideoWriter is not open; use it as a context manager")
        if not isinstance(frame, np.ndarray):
            raise TypeError(f"frame must be a numpy array, got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise TypeError(f"frame must be uint8, got {frame.dtype}")
        if frame.shape != (self.height, self.width, 3):
            raise ValueError(f"frame must have shape {(self.height, self.width, 3)}, got {frame.shape}")
        if self._max_frames is not None and self.frames_written >= self._max_frames:
            # ffmpeg stops reading stdin once -t is reached (the next write would be EPIPE)
            self._dropped += 1
            return
        assert self._proc.stdin is not None
        if self.encoded_size != (self.width, self.height):
            ew, eh = self.encoded_size
            frame = np.pad(frame, ((0, eh - self.height), (0, ew - self.width), (0, 0)), mode="edge")
        if self._mark is not None:
            frame = self._mark(frame)
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, ValueError) as e:
            message = self._failure_message("stopped accepting frames")
            self.abort()
            raise TalkingFaceError(message) from e
        self.frames_written += 1

    def close(self) -> None:
        """Finish encoding and move the result onto ``path``; raise on ffmpeg failure."""
        if self._closed:
            return
        if self._proc is None:
            self._closed = True
            self._cleanup()
            return
        proc = self._proc
        try:
            if self.frames_written == 0:
                raise TalkingFaceError(f"no frames were written to video '{self.path}'")
            assert proc.stdin is not None
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = proc.wait()
            if rc != 0:
                raise TalkingFaceError(self._failure_message(f"exited with status {rc}"))
            assert self._tmp_out is not None
            if self.label is not None and self.label.credentials:
                self._sign()
            try:
                os.replace(self._tmp_out, self.path)
            except OSError as e:
                raise TalkingFaceError(f"could not move the encoded video onto '{self.path}': {e}") from e
            self._tmp_out = None
            if self._dropped:
                logger.debug("%s: dropped %d frames beyond duration %.3f s", self.path, self._dropped, self.duration)
            logger.info("wrote %s (%d frames at %g fps)", self.path, self.frames_written, self.fps)
        except BaseException:
            self.abort()
            raise
        finally:
            self._closed = True
            self._cleanup()

    def _sign(self) -> None:
        """Replace the encoded temp file by a copy that carries the label's signed C2PA manifest."""
        from .provenance import sign_mp4

        assert self._tmp_out is not None and self.label is not None
        signed = self._tmp_out + ".signed.mp4"
        try:
            sign_mp4(self._tmp_out, signed, self.label, os.path.basename(self.path))
            os.replace(signed, self._tmp_out)
        finally:
            if os.path.exists(signed):
                os.remove(signed)

    def abort(self) -> None:
        """Kill ffmpeg and remove the temporary output; nothing is left at ``path``."""
        self._closed = True
        if self._proc is not None:
            _kill(self._proc)
            if self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()
                except (BrokenPipeError, OSError, ValueError):
                    pass
        self._cleanup()

    def _failure_message(self, what: str) -> str:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        tail = _read_tail(self._log) if self._log is not None else ""
        detail = _last_error_line(tail) or "no error message"
        return f"ffmpeg {what} while writing video '{self.path}': {detail}"

    def _cleanup(self) -> None:
        if self._tmp_out is not None:
            try:
                os.remove(self._tmp_out)
            except FileNotFoundError:
                pass
            except OSError as e:
                logger.warning("could not remove temporary file '%s': %s", self._tmp_out, e)
            self._tmp_out = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __del__(self) -> None:
        # Safety net for writers that were opened but never closed.
        if getattr(self, "_proc", None) is not None and not getattr(self, "_closed", True):
            try:
                self.abort()
            except Exception:
                pass
