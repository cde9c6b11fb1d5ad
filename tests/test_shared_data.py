"""Checks on ../shared/data (skipped on a fresh clone, where it is absent)."""
import pytest

from conftest import shared_data
from talkingface.training.speakers import KNOWN_SPEAKERS, VALIDATION_SPEAKERS, speaker_of, split_of

DATA = shared_data()
pytestmark = pytest.mark.skipif(DATA is None, reason="../shared/data is not present")


def test_every_clip_has_a_known_speaker_and_the_split_is_speaker_disjoint():
    stems = sorted(p.stem for p in (DATA / "videos").glob("*.mp4"))
    assert stems, "no clips"
    missing = [s for s in stems if s not in KNOWN_SPEAKERS]
    assert not missing, f"clips without a speaker id: {missing}"
    train = {speaker_of(s) for s in stems if split_of(speaker_of(s)) == "train"}
    val = {speaker_of(s) for s in stems if split_of(speaker_of(s)) == "val"}
    assert val == set(VALIDATION_SPEAKERS) and not train & val
    assert len(train) >= 3 * len(val) // 2


@pytest.mark.slow
def test_render_from_a_validation_clip(pipeline, tmp_path):
    from talkingface import media

    clip = DATA / "videos" / "OpenTalker__video-retalking__face_1.mp4"
    first = next(iter(media.iter_video_frames(clip)))
    res = pipeline.render(first, clip, output=tmp_path / "o.mp4")
    info = media.probe(tmp_path / "o.mp4")
    assert info.has_audio and abs(info.duration - media.probe(clip).duration) < 0.1
    assert res.n_frames > 100
