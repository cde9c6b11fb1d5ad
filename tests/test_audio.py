import numpy as np
import pytest

from talkingface import audio


def test_mel_filters_match_slaney_properties():
    fb = audio.mel_filters()
    assert fb.shape == (80, 201)
    assert (fb >= 0).all()
    # every filter is a triangle with a single peak, peaks rise with the band index
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    # slaney area normalisation: filter i has height 2 / (f[i+2] - f[i]) so low (narrow) filters are taller
    assert fb[5].max() > fb[70].max()


def test_mel_front_end_matches_librosa(grid_wav):
    """The numpy front end against librosa 0.11 (test-only dependency: importing librosa costs the runtime a
    second or more, and its first feature call a numba compile). Tolerances: filterbank 1e-6 relative (float32
    vs float64); log10 mel power 2e-3 absolute on bins above Whisper's floor, on real speech."""
    librosa = pytest.importorskip("librosa")

    ref_fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, htk=False, norm="slaney")
    np.testing.assert_allclose(audio.mel_filters(), ref_fb, rtol=1e-5, atol=1e-7)
    x = grid_wav[:16000 * 2]
    ref = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=16000, n_fft=400, hop_length=160, n_mels=80,
                                         window="hann", center=True, pad_mode="reflect", power=2.0, htk=False,
                                         norm="slaney")[:, :-1]  # Whisper drops the last frame
    ours = audio.log_mel(x, clamp_db=False)
    assert ours.shape == ref.shape
    ref_log = np.log10(np.maximum(ref, 1e-10))
    live = ref_log > ref_log.max() - 8  # above the dynamic-range floor Whisper applies
    assert live.mean() > 0.5
    np.testing.assert_allclose(ours[live], ref_log[live], atol=2e-3)
    # and a wrong front end fails that tolerance: HTK mel scale, or no Slaney area normalization
    for wrong in (librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, htk=True, norm="slaney"),
                  librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, htk=False, norm=None)):
        assert not np.allclose(audio.mel_filters(), wrong, rtol=1e-5, atol=1e-7)


def test_frame_counts_follow_audio_length():
    assert audio.n_video_frames(16000) == 25
    assert audio.n_video_frames(16000 * 3 + 300) == 75
    assert audio.n_video_frames(10) == 1
    x = np.random.default_rng(0).normal(size=16000 * 2).astype(np.float32) * 0.1
    assert audio.logmel_features(x).shape == (50, 320)
    assert audio.speech_energy(x).shape == (50,)


def test_log_mel_is_whisper_scaled():
    x = np.random.default_rng(1).normal(size=16000).astype(np.float32) * 0.1
    m = audio.log_mel(x)
    assert m.shape == (80, 100)
    assert m.max() <= (np.log10(np.abs(x).sum() ** 2) + 4) / 4 + 1  # scaled log10, not raw power
    assert m.max() - m.min() <= 2.0 + 1e-6  # dynamic range clamped to 8 log10 units / 4


def test_whisper_features_on_real_speech(grid_wav):
    enc = audio.AudioEncoder(audio.AudioFeatureConfig("whisper"))
    f1 = enc(grid_wav)
    assert f1.shape == (audio.n_video_frames(len(grid_wav)), 384)
    assert np.isfinite(f1).all()
    np.testing.assert_allclose(enc(grid_wav), f1, atol=1e-5)  # deterministic
    # speech and silence frames differ: the encoder sees the sound
    act = audio.voice_activity(audio.speech_energy(grid_wav))
    assert act.any() and (~act).any()
    assert np.linalg.norm(f1[act].mean(0) - f1[~act].mean(0)) > 1.0


def test_voice_activity_finds_speech_but_not_silence(grid_wav):
    act = audio.voice_activity(audio.speech_energy(grid_wav))
    assert 0.3 < act.mean() < 0.9  # GRID sentences: speech between leading and trailing silence
    assert not act[:3].any()  # the clip starts in silence
    silence = np.zeros(16000, np.float32)
    assert not audio.voice_activity(audio.speech_energy(silence)).any()


@pytest.mark.parametrize("kind", ["bogus"])
def test_unknown_feature_kind(kind):
    with pytest.raises(ValueError):
        audio.AudioEncoder(audio.AudioFeatureConfig(kind))


def test_bridge_pauses_fills_short_pauses_only():
    from talkingface.audio import bridge_pauses

    speech = np.zeros(60, bool)
    speech[10:20] = speech[24:30] = speech[50:55] = True  # a 4-frame pause, then a 20-frame one
    out = bridge_pauses(speech, 10)
    expect = speech.copy()
    expect[20:24] = True
    np.testing.assert_array_equal(out, expect)  # leading and trailing silence and the long pause stay
    np.testing.assert_array_equal(bridge_pauses(speech, 0), speech)
    assert not bridge_pauses(np.zeros(5, bool), 10).any()
