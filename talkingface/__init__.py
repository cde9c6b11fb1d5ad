"""talkingface: speech audio (or text) + one photo -> a lip-synced talking video; or a video dubbed to new speech.
Offline.

    import talkingface
    pipe = talkingface.load()                 # built once: shipped, hash-verified weights
    result = pipe.render(image="face.jpg", audio="speech.wav", output="out.mp4")
    result.mouth_landmarks                    # (T, 59, 2) per-frame mouth landmarks, image pixels
    pipe.dub("presenter.mp4", "dub_es.wav", output="presenter_es.mp4")   # only the mouth changes
    talkingface.dub_batch("jobs.csv", "dubbed/", workers=2)              # resumable batch dubbing
    talkingface.verify("out.mp4").found     # every output carries C2PA credentials and an invisible watermark

The heavy libraries (torch, MediaPipe, ...) are imported on first use of a name that needs them, so that
``import talkingface`` and ``talkingface --help`` stay fast.
"""
from __future__ import annotations

import importlib

from .errors import CheckpointError, InputError, NoFaceError, SilentAudioError, TalkingFaceError

__version__ = "0.1.0"
_LAZY = {
    "DubJob": "batch", "dub_batch": "batch", "DubOptions": "dub", "DubResult": "dub",
    "Pipeline": "pipeline", "RenderOptions": "pipeline", "RenderResult": "pipeline", "load": "pipeline",
    "verify": "provenance", "Verification": "provenance",
}
__all__ = [
    "load", "Pipeline", "RenderOptions", "RenderResult", "DubOptions", "DubResult", "DubJob", "dub_batch",
    "verify", "Verification", "TalkingFaceError", "InputError", "NoFaceError", "SilentAudioError", "CheckpointError",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):  # a submodule (talkingface.media, ...), as when everything was imported eagerly
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module 'talkingface' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
