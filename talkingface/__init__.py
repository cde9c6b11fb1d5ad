"""talkingface: speech audio + one photo -> a lip-synced talking video, offline.

    import talkingface
    pipe = talkingface.load()                 # built once: shipped, hash-verified weights
    result = pipe.render(image="face.jpg", audio="speech.wav", output="out.mp4")
    result.mouth_landmarks                    # (T, 59, 2) per-frame mouth landmarks, image pixels
"""
from .errors import CheckpointError, InputError, NoFaceError, SilentAudioError, TalkingFaceError
from .dub import DubOptions, DubResult
from .pipeline import Pipeline, RenderOptions, RenderResult, load

__version__ = "0.1.0"
__all__ = [
    "load", "Pipeline", "RenderOptions", "RenderResult", "DubOptions", "DubResult",
    "TalkingFaceError", "InputError", "NoFaceError", "SilentAudioError", "CheckpointError",
]
