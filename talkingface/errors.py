"""Exception hierarchy for talkingface.

Every error raised on purpose by the package derives from :class:`TalkingFaceError`,
so a CLI can catch that one class, print ``str(err)`` (always a single line that
names the file and the problem) and exit non-zero without a traceback.
"""

from __future__ import annotations

__all__ = [
    "TalkingFaceError",
    "InputError",
    "NoFaceError",
    "SilentAudioError",
    "CheckpointError",
]


class TalkingFaceError(Exception):
    """Base class of all talkingface errors (also used for encoder/internal failures)."""

    def __init__(self, message: str) -> None:
        # Keep messages on one line: ffmpeg/Pillow details may contain newlines.
        lines = [line.strip() for line in str(message).splitlines()]
        super().__init__(" ".join(line for line in lines if line))


class InputError(TalkingFaceError):
    """Bad user input: missing file, unreadable/corrupt/empty media, unsupported
    format, missing output folder, input too long/large."""


class NoFaceError(InputError):
    """No (usable) face was found in the input image or video."""


class SilentAudioError(InputError):
    """The audio decodes fine but contains no audible signal."""


class CheckpointError(TalkingFaceError):
    """A model checkpoint is missing, corrupt, or does not match the model."""
