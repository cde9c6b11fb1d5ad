"""talkingface: speech audio (or text) + one photo -> a lip-synced talking video; or a video dubbed to new speech.
Offline.

    import talkingface
    pipe = talkingface.load()                 # built once: shipped, hash-verified weights
    result = pipe.render(image="face.jpg", audio="speech.wav", output="out.mp4")
    result.mouth_landmarks                    # (T, 59, 2) per-frame mouth landmarks, image pixels
    pipe.dub("presenter.mp4", "dub_es.wav", output="presenter_es.mp4")   # only the mouth changes
    talkingface.dub_batch("jobs.csv", "dubbed/", workers=2)              # resumable batch dubbing
"""
from .batch import DubJob, dub_batch
from .dub import DubOptions, DubResult
from .errors import CheckpointError, InputError, NoFaceError, SilentAudioError, TalkingFaceError
from .pipeline import Pipeline, RenderOptions, RenderResult, load

__version__ = "0.1.0"
__all__ = [
    "load", "Pipeline", "RenderOptions", "RenderResult", "DubOptions", "DubResult", "DubJob", "dub_batch",
    "TalkingFaceError", "InputError", "NoFaceError", "SilentAudioError", "CheckpointError",
]
