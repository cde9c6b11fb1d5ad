"""Checks shared by the API, the command line and the web page, done before any model is loaded.

* ``RANGES``: the accepted range of every numeric option. ``RenderOptions``/``DubOptions`` check their fields
  against it (so the API and the page's server side refuse what the page's sliders would not offer), and the
  command line parses its numbers with :func:`arg` (a bad ``--motion nan`` is a usage error at once).
* :func:`output_file`: an output path is refused before any work when its folder is missing or not writable,
  its extension is not one the encoder writes, or it is one of the inputs (which would be overwritten).
* ``MAX_FACES``: how many faces a photo or a video frame is searched for; face indices are ``0..MAX_FACES-1``
  on the command line, in the API and on the page.

This module imports nothing heavy: ``talkingface --help`` and the checks above run in well under a second.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Iterable

from .errors import InputError

MAX_FACES = 10  # faces searched for in a photo / a video's first frame; the page offers 0..MAX_FACES-1
MIN_IMAGE_SIDE = 32  # px: a smaller photo (or video frame) cannot hold a face FaceMesh finds
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")  # containers the H.264/AAC writer produces

# name -> (lowest, highest, integer?)
RANGES: dict[str, tuple[float, float, bool]] = {
    "motion_scale": (0.0, 2.0, False),  # 0: no mouth motion; the page's slider offers 0.5..1.5
    "keep_expression": (0.0, 1.0, False),
    "seed": (0, 2**31 - 1, True),  # head motion and blinks (photo mode)
    "crf": (0, 51, True),  # H.264's quality scale
    "max_size": (64, 8192, True),  # longer side of the output, px
    "fps": (1.0, 120.0, False),
    "max_angle": (0.0, 90.0, False),
    "adapt_steps": (1, 5000, True),
    "rate": (0.25, 4.0, False),  # speaking rate (tts.MIN_RATE, tts.MAX_RATE)
    "face_index": (0, MAX_FACES - 1, True),
    "batch_size": (1, 1024, True),
    "smooth": (0.0, 10.0, False),
    "max_seconds": (0.1, 24 * 3600.0, False),
    "max_audio_seconds": (0.1, 24 * 3600.0, False),
    # batch
    "workers": (1, 1024, True),
    "cpus_per_worker": (0.01, 1024.0, False),  # Ray accepts fractions of a CPU
    "gpus_per_worker": (0.0, 64.0, False),  # 0.5: two workers share one GPU
    # the web page (talkingface demo, web.Limits)
    "port": (1, 65535, True),
    "max_upload_mb": (0.01, 1e6, False),
    "max_total_mb": (1.0, 1e9, False),
    "max_uploads_per_visitor": (1, 10**6, True),
    # eval and benchmark
    "max_clips": (1, 10**6, True),
    "bench_seconds": (1.0, 3600.0, False),
    "repeat": (1, 100, True),
    "chunk_ms": (10.0, 2000.0, False),
}


def number(name: str, value, *, label: str | None = None):
    """``value`` checked against ``RANGES[name]`` (None passes); returns it as int or float."""
    if value is None:
        return None
    lo, hi, integer = RANGES[name]
    label = label or name
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise InputError(f"{label} must be between {lo:g} and {hi:g}, got {value!r}")
    if integer:
        if x != int(x):
            raise InputError(f"{label} must be a whole number, got {value!r}")
        return int(x)
    return x


def fields(obj, names: Iterable[str]) -> None:
    """Check the attributes ``names`` of an options dataclass (called from its ``__post_init__``)."""
    for name in names:
        number(name, getattr(obj, name))


def arg(name: str, integer: bool | None = None):
    """An argparse ``type=`` for the option checked as ``RANGES[name]``: a bad value is a usage error."""
    lo, hi, is_int = RANGES[name]

    def parse(text: str):
        try:
            return number(name, text, label="value")
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e).replace("value must be", "must be")) from None

    parse.__name__ = "integer" if (is_int if integer is None else integer) else "number"
    return parse


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when two paths name the same file (links and ``x/../`` resolved; also for not-yet-existing paths)."""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def output_file(path: str | os.PathLike, *, inputs: Iterable[tuple[str, str | os.PathLike | None]] = (),
                suffixes: tuple[str, ...] | None = VIDEO_SUFFIXES, what: str = "output") -> None:
    """Refuse an output path that cannot be written, before any work: missing or read-only folder, a folder as
    the file, an extension the writer does not produce, or the same file as one of ``inputs`` ((kind, path))."""
    path = os.fspath(path)
    if not path:
        raise InputError(f"the {what} path is empty")
    if suffixes is not None:
        ext = os.path.splitext(path)[1].lower()
        if ext and ext not in suffixes:
            raise InputError(f"{what} '{path}' has the extension {ext}; write one of {', '.join(suffixes)}")
    for kind, src in inputs:
        if src is not None and not isinstance(src, (bytes, bytearray)) and isinstance(src, (str, os.PathLike)) \
                and same_file(path, src):
            raise InputError(f"{what} '{path}' is the {kind} file: it would be overwritten; choose another name")
    if os.path.isdir(path):
        raise InputError(f"{what} path '{path}' is a folder; name a file inside it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise InputError(f"{what} folder '{folder}' is not a folder (for '{path}')")
        raise InputError(f"output folder '{folder}' does not exist (for '{path}')")
    try:  # the real test: root passes os.access on a read-only file system, or on a folder it may not write
        with tempfile.NamedTemporaryFile(prefix=".talkingface-check-", dir=folder):
            pass
    except OSError as e:
        raise InputError(f"output folder '{folder}' is not writable (for '{path}'): {e.strerror or e}") from None
