"""Dubbing's options (``DubOptions``), in a module of their own so that the batch and the command line can read and
check them without importing torch and the models (``talkingface.dub`` re-exports them)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from . import checks
from .errors import InputError

LENGTH_POLICIES = ("pingpong", "loop", "freeze", "trim", "video")


@dataclass(frozen=True)
class DubOptions:
    face_index: int | None = None  # which face when several: 0 = largest (default: the largest)
    face_point: tuple[float, float] | None = None  # or: the face whose box holds this (x, y) pixel, first frame
    length: str = "pingpong"  # audio longer than video: pingpong | loop | freeze (last frame); trim: the
    #   shorter of the two; video: keep the video's length (audio cut or padded with silence)
    fps: float | None = None  # output frame rate; None keeps the input's
    max_size: int | None = None  # longer side of the output; None keeps the input's resolution
    max_angle: float = 35.0  # frames with |yaw| or |pitch| beyond this (degrees) pass through unchanged
    adapt: bool = False  # fine-tune the texture generator on this video's own frames first
    adapt_steps: int = 150
    silence_gate: bool = True
    motion_scale: float = 1.0
    own_range: bool = True  # the mouth moves within this person's own range of motion, measured on the video
    #   (dub.own_motion_range; False: the training speakers' average range, as a photo gets)
    own_expression: bool = True  # while speaking, the mouth takes this person's speaking expression, measured on
    #   the video with its own audio (dub.own_expression; False: the resting mouth plus the predicted motion)
    smooth: float = 1.0  # Gaussian sigma (frames) of the zero-phase pose/landmark smoothing
    batch_size: int = 16
    crf: int = 18
    max_seconds: float = 3 * 3600.0  # longest video or audio accepted
    credentials: bool = True  # the C2PA manifest (talkingface.provenance); the watermark is always added
    sign_key: str | None = None  # a user's own signing key and certificate chain (default: the local key)
    sign_cert: str | None = None

    def __post_init__(self):
        if self.length not in LENGTH_POLICIES:
            raise InputError(f"length policy '{self.length}' is not one of {', '.join(LENGTH_POLICIES)}")
        checks.fields(self, ("face_index", "fps", "max_size", "max_angle", "adapt_steps", "motion_scale", "smooth",
                             "batch_size", "crf", "max_seconds"))
        if self.face_point is not None:
            try:
                point = [float(v) for v in self.face_point]
            except (TypeError, ValueError):
                point = []
            if len(point) != 2 or not all(math.isfinite(v) for v in point):
                raise InputError(f"face_point must be two finite pixel coordinates, got {self.face_point!r}")
