"""Shared fixtures: real, small, redistributable media shipped in demo/ and tests/fixtures/.

- demo/astronaut.jpg: NASA portrait of Eileen Collins (public domain), as shipped by scikit-image.
- demo/grid_lwbsza.wav, tests/fixtures/grid_lwbsza.mp4: GRID corpus clip (CC BY 4.0, Cooke et al. 2006).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _provenance_config(tmp_path_factory):
    """Outputs are signed with a local key created on first use: keep it out of the user's config folder."""
    old = os.environ.get("TALKINGFACE_CONFIG_DIR")
    os.environ["TALKINGFACE_CONFIG_DIR"] = str(tmp_path_factory.mktemp("talkingface-config"))
    yield
    if old is None:
        os.environ.pop("TALKINGFACE_CONFIG_DIR", None)
    else:
        os.environ["TALKINGFACE_CONFIG_DIR"] = old


@pytest.fixture(scope="session")
def astronaut_path() -> str:
    return str(ROOT / "demo" / "astronaut.jpg")


@pytest.fixture(scope="session")
def grid_wav_path() -> str:
    return str(ROOT / "demo" / "grid_lwbsza.wav")


@pytest.fixture(scope="session")
def grid_video_path() -> str:
    return str(ROOT / "tests" / "fixtures" / "grid_lwbsza.mp4")


@pytest.fixture(scope="session")
def astronaut(astronaut_path) -> np.ndarray:
    from talkingface import media

    return media.load_image(astronaut_path)


@pytest.fixture(scope="session")
def grid_wav(grid_wav_path) -> np.ndarray:
    from talkingface import media

    return media.load_audio(grid_wav_path)


@pytest.fixture(scope="session")
def tracker():
    from talkingface.face import FaceTracker

    with FaceTracker(static=True, max_faces=4) as t:
        yield t


@pytest.fixture(scope="session")
def pipeline():
    """The shipped pipeline (checkpoints/), built once for the whole session."""
    import talkingface

    pipe = talkingface.load()
    yield pipe
    pipe.close()


def shared_data() -> Path | None:
    return SHARED if (SHARED / "videos").is_dir() else None


def assert_talks(video_path, wav: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-track a rendered video with FaceMesh: the mouth must move during speech and rest (at the photo's
    own opening) in silence. Returns the speech and quiet frame masks."""
    from talkingface import face, media
    from talkingface.audio import speech_energy, voice_activity

    frames = list(media.iter_video_frames(video_path))
    # every frame read on its own: FaceMesh's tracking mode carries a temporal prior that drags the last open
    # mouth into a pause (and, with head motion, reads the same resting mouth differently as the head turns)
    with face.FaceTracker(static=True, max_faces=1) as tr:
        found = [tr.detect(fr) for fr in frames]
    opening = np.array([face.mouth_opening(f[0].landmarks) if f else np.nan for f in found])
    assert np.isfinite(opening).mean() > 0.95  # the output is still a trackable face
    speech = voice_activity(speech_energy(wav))[: len(opening)]
    # 7+ frames away from any speech: the silence gate releases over 4 frames and the predictions are delayed
    # by 2, so the mouth may still be closing 6 frames after the speech (a mouth that follows the landmarks at
    # full amplitude shows it; the first version's generator damped it)
    quiet = ~np.convolve(speech, np.ones(15), mode="same").astype(bool)
    assert quiet.sum() >= 5 and speech.sum() >= 20
    op_speech, op_quiet = opening[speech], opening[quiet]
    assert np.nanstd(op_speech) > 2 * np.nanstd(op_quiet) + 1e-3  # it moves while speaking ...
    assert np.nanmax(op_speech) > np.nanmedian(op_quiet) + 0.03  # ... opens wider than at rest ...
    # ... and rests in silence as in the first frame when that is silent too (read frame by frame, without the
    # tracking mode's temporal prior, which carries the last open mouth a little into the pause). Speech that
    # starts at once (TTS: 58 ms) gives no silent first frame: its first frame is already moving (re-tracked
    # 0.085 here, 0.151 on the CI machine), and the pauses must then rest below the speech's median opening.
    with face.FaceTracker(static=True) as still:
        quiet_open = [face.mouth_opening(f[0].landmarks) for i in np.flatnonzero(quiet)[::2]
                      if (f := still.detect(frames[i]))]
        if quiet[0]:
            rest_open = face.mouth_opening(still.detect(frames[0])[0].landmarks)
            assert abs(np.nanmedian(quiet_open) - rest_open) < 0.05
        else:
            assert np.nanmedian(quiet_open) < np.nanmedian(op_speech)
    return speech, quiet


@pytest.fixture
def ffmpeg_children(monkeypatch):
    """Every ffmpeg process talkingface.media starts during the test, as subprocess.Popen objects."""
    from talkingface import media

    started = []
    real = media._popen

    def recording(args, **kwargs):
        proc = real(args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(media, "_popen", recording)
    return started


def assert_processes_gone(procs) -> None:
    """Each process has exited and been reaped: no running child, no zombie left behind."""
    assert procs, "no process was started"
    for proc in procs:
        assert proc.returncode is not None, f"ffmpeg pid {proc.pid} is still running (or was never reaped)"
        stat = Path(f"/proc/{proc.pid}/stat")
        if stat.exists():  # the pid may have been reused by an unrelated process: then it is not our child
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            assert ppid != os.getpid(), f"ffmpeg pid {proc.pid} is still a child of this process"
