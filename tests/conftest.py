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
