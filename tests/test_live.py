"""The live path (talkingface.live): streamable features and landmarks equal their offline runs for any chunking;
the stream against the offline render; idle periods; a stalled producer; a slow machine; bad input."""
import numpy as np
import pytest
import torch

from talkingface import audio
from talkingface.errors import InputError
from talkingface.landmarks import LandmarkConfig, LandmarkModel, LandmarkStream


def _chunks(x: np.ndarray, seed: int, lo: int = 100, hi: int = 4000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        k = int(rng.integers(lo, hi))
        out.append(x[i:i + k])
        i += k
    return out


@pytest.fixture(scope="module")
def whisper():
    return audio.WhisperEncoder(threads=1)


def test_streaming_whisper_features_do_not_depend_on_the_chunking(whisper, grid_wav):
    """A file's streamable features equal its live stream's, chunk sizes 100-4000 samples or all at once."""
    sw = audio.StreamingWhisper(whisper)
    offline = sw(grid_wav)
    assert offline.shape == (audio.n_video_frames(len(grid_wav)), 384)
    for seed in (0, 1):
        sw.reset()
        live = np.concatenate([sw.push(c) for c in _chunks(grid_wav, seed)] + [sw.flush()])
        np.testing.assert_array_equal(live, offline)
    # and a block's features come only after its window's audio is in (block 4 + lookahead 1 frames)
    sw.reset()
    assert len(sw.push(grid_wav[: 5 * 640 - 1])) == 0 and len(sw.push(grid_wav[5 * 640 - 1: 5 * 640])) == 4


def test_streaming_whisper_features_follow_the_speech(whisper, grid_wav):
    """The short windows still carry the speech: they are close (cosine) to the 30 s window features of the same
    frames where someone speaks (measured: median 0.77 on this clip; rows of the wrong frames give less), and they
    change more from frame to frame during speech than in silence (measured 1.34x)."""
    sw = audio.StreamingWhisper(whisper)
    f = sw(grid_wav)
    full = whisper(grid_wav)
    speech = audio.voice_activity(audio.speech_energy(grid_wav))[: len(f)]
    step = np.linalg.norm(np.diff(f, axis=0), axis=1)
    assert step[speech[1:]].mean() > 1.2 * step[~speech[1:]].mean()
    cos = (f * full).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(full, axis=1)
    assert np.median(cos[speech]) > 0.7


def test_landmark_stream_equals_the_offline_model():
    torch.manual_seed(0)
    model = LandmarkModel(LandmarkConfig(bidirectional=False, dropout=0.0)).eval()
    torch.nn.init.normal_(model.pca_basis)
    x = torch.randn(61, 384)
    offline = model.predict(x)
    for seed in (0, 1):
        st = LandmarkStream(model)
        parts = [st.push(c) for c in _chunks(x.numpy(), seed, 1, 9)] + [st.flush()]
        torch.testing.assert_close(torch.cat(parts), offline, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="bidirectional"):
        LandmarkStream(LandmarkModel(LandmarkConfig(bidirectional=True)))
