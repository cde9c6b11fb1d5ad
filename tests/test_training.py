"""Dataset preparation and both training loops, on the real GRID fixture, for a few steps."""
import json
import shutil

import numpy as np
import pytest
import torch

from talkingface.audio import LIVE_WINDOW, StreamWindow
from talkingface.landmarks import LandmarkConfig
from talkingface.texture import TextureConfig


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, grid_video_path):
    from talkingface.training.prepare import prepare_folder

    videos = tmp_path_factory.mktemp("videos")
    for name in ("spk_a_1.mp4", "spk_b_1.mp4", "spk_c_1.mp4"):
        shutil.copy(grid_video_path, videos / name)
    (videos / "speakers.tsv").write_text("spk_a_1\tgrid_woman_d\nspk_b_1\tsomeone_else\nspk_c_1\tthird\n")
    out = tmp_path_factory.mktemp("prepared")
    prepare_folder(str(videos), str(out), size=64)
    return out


def test_prepare_writes_arrays(prepared):
    index = json.loads((prepared / "index.json").read_text())
    assert index["crop_size"] == 64 and len(index["clips"]) == 3
    splits = {c["clip"]: c["split"] for c in index["clips"]}
    assert splits == {"spk_a_1": "val", "spk_b_1": "train", "spk_c_1": "train"}  # grid_woman_d is validation
    d = np.load(prepared / "spk_b_1.npz")
    t = len(d["valid"])
    assert abs(t - 75) <= 1 and d["valid"].all()
    assert d["crops"].shape == (t, 64, 64, 3) and d["mouth_canon"].shape == (t, 59, 3)
    assert d["whisper"].shape == (t, 384) and d["logmel"].shape == (t, 320) and d["energy"].shape == (t,)
    assert d["mouth_canon"][:, :, 1].std() > 0.05  # the lips move (cm, canonical space)


def test_stream_features_are_named_by_their_window(prepared, tmp_path):
    """Streamable features of another window go beside a prepared clip, named by the window; a model's config
    names the features it needs (data_key); asking for features nobody prepared names the file and the fix."""
    from talkingface import audio as audio_mod, media
    from talkingface.training import landmark_training as lt
    from talkingface.training.prepare import add_stream_features

    assert LIVE_WINDOW.key == "whisper_stream_w100" and StreamWindow().key == "whisper_stream"
    assert StreamWindow(block=2, window=75).key == "whisper_stream_w75_b2_l1"
    assert LandmarkConfig(feature_kind="whisper_stream", stream_window=100).data_key == "whisper_stream_w100"
    assert LandmarkConfig(feature_kind="whisper_stream").data_key == "whisper_stream"  # live-v1/v2 checkpoints
    assert LandmarkConfig().data_key == "whisper"
    npz = prepared / "spk_b_1.npz"
    assert lt.load_features(str(npz), LIVE_WINDOW.key).shape == (len(np.load(npz)["valid"]), 384)
    with pytest.raises(FileNotFoundError, match="spk_b_1.npz.*whisper_stream_w75.*--add-stream-features"):
        lt.load_features(str(npz), "whisper_stream_w75")
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    window = StreamWindow(window=75)
    assert add_stream_features(str(data), window) == 3
    assert add_stream_features(str(data), window) == 0  # done once
    index = json.loads((data / "index.json").read_text())
    source = [c["source"] for c in index["clips"] if c["clip"] == "spk_b_1"][0]
    want = audio_mod.StreamingWhisper(audio_mod.WhisperEncoder(), window)(media.load_audio(source))
    got = lt.load_features(str(data / "spk_b_1.npz"), window.key)
    n = min(len(got), len(want))
    assert n >= len(got) - 1
    np.testing.assert_allclose(got[:n], want[:n], atol=1e-5)
    assert len(lt.load_clips(str(data), window.key)) == 3


def test_landmark_training_runs(prepared):
    from talkingface.training import landmark_training as lt

    clips = lt.load_clips(str(prepared), "whisper")
    cfg = LandmarkConfig(hidden=16, n_pca=4)
    model, log = lt.train(clips, cfg, steps=6, batch=4, window=40)
    assert log["info"]["train_clips"] == ["spk_b_1", "spk_c_1"]
    # regression: clips shorter than the training window (GRID's 3 s vs 80+ frames) are padded, not dropped
    _, log_long = lt.train(clips, cfg, steps=2, batch=4, window=120)
    assert log_long["info"]["train_clips"] == ["spk_b_1", "spk_c_1"]
    assert len(log["history"]) >= 1 and np.isfinite(log["history"][-1]["loss"])
    assert model.cm_per_unit.min() > 0 and model.pca_basis.abs().sum() > 0
    shifts = lt.estimate_av_offsets(clips, cfg, folds=2, steps=2, batch=2, window=40)
    assert isinstance(shifts, dict) and set(shifts) <= {"spk_b_1", "spk_c_1"}
    by_name = {c.name: c for c in clips}
    before_b, before_a = by_name["spk_b_1"].feats.copy(), by_name["spk_a_1"].feats.copy()
    lt.apply_av_offsets(clips, {"spk_b_1": 2, "spk_a_1": 3})
    np.testing.assert_array_equal(by_name["spk_b_1"].feats[:-2], before_b[2:])
    np.testing.assert_array_equal(by_name["spk_a_1"].feats, before_a)  # validation clips are never shifted
    row = lt.score(clips[0].neutral + model.predict(torch.from_numpy(clips[0].feats)).numpy(), clips[0].mouth,
                   clips[0].valid)
    assert set(row) >= {"r_open", "r_width", "lip_dist"}


def test_texture_training_runs(prepared):
    from talkingface.training import texture_training as tt

    clips = tt.load_crop_clips(str(prepared), "train")
    cfg = TextureConfig(size=64, width=8, levels=4, disc_width=8)
    gen, log = tt.train(clips, cfg, steps=3, batch=2, warmup=1)
    assert log["info"]["steps"] == 3 and log["history"][-1]["d"] > 0
    val = tt.validation_l1(gen, clips, n=4)
    assert 0 < val["val_l1_mask"] < 2


def test_sync_delay_cross_validation_finds_the_lead(monkeypatch):
    """The CV delay: fold models that lead the real mouth by 2 frames on the lab-synchronized (GRID) clips get a
    delay of 2; non-anchor training clips (here 5 frames off) and validation clips do not count."""
    from talkingface import metrics
    from talkingface.training import landmark_training as lt

    rng = np.random.default_rng(0)
    clips = []
    for i, (name, split) in enumerate([("x_GRID_a", "train"), ("x_GRID_b", "train"), ("obama", "train"),
                                       ("y_GRID_val", "val")]):
        t = 120
        opening = np.convolve(rng.random(t + 10), np.ones(5) / 5, mode="same")[5:-5]  # smooth random motion
        mouth = np.zeros((t, 59, 3), np.float32)
        mouth[:, metrics.I_LO, 1] = -opening
        feats = np.stack([np.arange(t), np.full(t, i)], axis=1).astype(np.float32)  # frame index, clip id
        clips.append(lt.Clip(name, f"spk{i}", split, feats, mouth, np.ones(t, bool), np.zeros(t), mouth[0] * 0))
    lead = {0: 2, 1: 2, 2: -5, 3: 0}  # frames by which the fake model's prediction leads the real mouth
    seen = []

    class Leading:
        def predict(self, feats):
            t, i = feats[:, 0].long().numpy(), int(feats[0, 1])
            seen.append(clips[i].name)
            return torch.from_numpy(clips[i].mouth[np.clip(t + lead[i], 0, len(t) - 1)])

    monkeypatch.setattr(lt, "train", lambda fold, config, **kw: (Leading(), {}))
    res = lt.cross_validate_sync_delay(clips, LandmarkConfig(), {}, folds=3, steps=1)
    assert res["sync_delay"] == 2 and set(res["clips"]) == {"x_GRID_a", "x_GRID_b"}
    assert set(seen) == {"x_GRID_a", "x_GRID_b"}  # validation and non-anchor clips are never predicted
    assert res["r_by_delay"][2] > 0.99 > res["r_by_delay"][0]


def _distill_clips(rng, n_feat=8):
    from talkingface import metrics
    from talkingface.training import landmark_training as lt

    clips = []
    for i in range(3):
        t = 100
        feats = rng.standard_normal((t, n_feat)).astype(np.float32)
        opening = np.convolve(feats[:, 0], np.ones(3) / 3, mode="same")  # the mouth follows feature 0
        mouth = np.zeros((t, 59, 3), np.float32)
        mouth[:, metrics.I_LO, 1] = -0.5 * opening
        mouth[:, :, 0] += 0.01 * rng.standard_normal((t, 59))
        clips.append(lt.Clip(f"c{i}", f"spk{i}", "train", feats, mouth, np.ones(t, bool), np.zeros(t, np.float32),
                             np.zeros((59, 3), np.float32)))
    return clips


def test_distillation_learns_the_teacher_on_audio_without_video():
    """An audio-only clip (no mouth) teaches through the teacher's targets alone: with distill=0 it is left out
    entirely (bit-identical weights), with distill=1 the student ends much closer to the teacher on it."""
    from talkingface.landmarks import LandmarkModel
    from talkingface.training import landmark_training as lt

    rng = np.random.default_rng(0)
    cfg = LandmarkConfig(feature_dim=8, hidden=16, n_pca=4, conv_kernel=3, bidirectional=False)
    clips = _distill_clips(rng)
    torch.manual_seed(1)
    teacher = LandmarkModel(cfg).eval()  # a fixed random function of the features, in the student's PCA space
    basis, _, _ = lt.fit_pca(clips, lt.speaker_scales(clips), cfg.n_pca)
    teacher.pca_basis.copy_(torch.from_numpy(basis))
    torch.nn.init.normal_(teacher.head[1].weight, std=1.0)
    feats = rng.standard_normal((200, 8)).astype(np.float32)
    target = lt.distillation_targets(teacher, feats)
    assert target.shape == (200, 59 * 3) and np.abs(target).max() > 0
    audio = lt.Clip("audio:x", "audio:x", "train", feats, np.zeros((200, 59, 3), np.float32), np.zeros(200, bool),
                    np.zeros(200, np.float32), np.zeros((59, 3), np.float32), teacher=target)

    plain, _ = lt.train(clips, cfg, steps=5, batch=4, window=40)
    ignored, _ = lt.train(clips + [audio], cfg, steps=5, batch=4, window=40, distill=0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ignored.state_dict().values()))

    def err(model):
        return float(((lt.distillation_targets(model, feats) - target) ** 2).mean())

    without, _ = lt.train(clips + [audio], cfg, steps=80, batch=4, window=40, distill=0.0)
    with_teacher, log = lt.train(clips + [audio], cfg, steps=80, batch=4, window=40, distill=1.0)
    assert "audio:x" in log["info"]["train_clips"]
    assert err(with_teacher) < 0.5 * err(without)

    # smoothed targets (--teacher-smooth): the offline render's own track smoothing, applied to the teacher's output
    from talkingface.mouth import smooth_track

    smoothed = lt.distillation_targets(teacher, feats, smooth=0.3)
    np.testing.assert_allclose(smoothed, smooth_track(target, 0.3), atol=1e-6)
    assert np.abs(np.diff(smoothed, axis=0)).mean() < 0.9 * np.abs(np.diff(target, axis=0)).mean()
    assert np.array_equal(lt.distillation_targets(teacher, feats, smooth=0.0), target)


def test_audio_only_recordings_for_distillation(tmp_path, grid_wav_path):
    """Recordings without video become distillation clips: features of both kinds on one timeline, computed once,
    a file naming a validation speaker never used, one in five held out as the development set."""
    from talkingface.landmarks import LandmarkModel
    from talkingface.training import landmark_training as lt
    from talkingface.training.prepare import prepare_audio_folder

    folder = tmp_path / "audio"
    folder.mkdir()
    names = ["spk_x_a", "spk_x_b", "OpenTalker__DPE__2", "someone_May_5s"]  # DPE__2 is a dev recording
    for n in names:
        shutil.copy(grid_wav_path, folder / f"{n}.wav")
    out = tmp_path / "prepared_audio"
    ready = prepare_audio_folder(str(folder), str(out))
    assert sorted(ready) == sorted(names[:3])  # the validation speaker's file is skipped
    d = np.load(out / "spk_x_a.npz")
    key = LIVE_WINDOW.key  # whisper_stream_w100
    assert d["whisper"].shape == d[key].shape and len(d["energy"]) == len(d["whisper"]) > 50
    assert json.loads((out / "sources.json").read_text())["spk_x_a"] == str(folder / "spk_x_a.wav")
    stamp = (out / "spk_x_a.npz").stat().st_mtime_ns
    prepare_audio_folder(str(folder), str(out))
    assert (out / "spk_x_a.npz").stat().st_mtime_ns == stamp  # computed once
    assert lt.is_dev_recording("OpenTalker__DPE__2") and not lt.is_dev_recording("spk_x_a")

    teacher = LandmarkModel(LandmarkConfig(feature_kind="whisper", feature_dim=384)).eval()
    clips = lt.audio_only_clips(str(folder), str(out), key, teacher)
    dev = lt.audio_only_clips(str(folder), str(out), key, teacher, dev=True)
    assert sorted(c.name for c in clips) == ["audio:spk_x_a", "audio:spk_x_b"]
    assert [c.name for c in dev] == ["audio:OpenTalker__DPE__2"]
    c = clips[0]
    assert not c.valid.any() and c.teacher.shape == (len(c.feats), 59 * 3)
    np.testing.assert_allclose(c.teacher, lt.distillation_targets(teacher, d["whisper"]), atol=1e-6)

    # another window (a live model with 2-frame encoder passes): its features join the recordings as side files,
    # equal to a live stream's of the same audio; the prepared files stay as they were
    from talkingface import audio as audio_mod
    from talkingface import media

    small = audio_mod.StreamWindow(block=2, window=100)
    assert audio_mod.StreamWindow.from_key(small.key) == small and audio_mod.StreamWindow.from_key("whisper") is None
    two = lt.audio_only_clips(str(folder), str(out), small.key, teacher)
    assert (out / "spk_x_a.npz").stat().st_mtime_ns == stamp
    assert (out / f"spk_x_a.{small.key}.npy").exists() and not list(out.glob("*.tmp*"))
    wav = media.load_audio(str(folder / "spk_x_a.wav"))
    stream = audio_mod.StreamingWhisper(audio_mod.WhisperEncoder(), small)
    live = np.concatenate([stream.push(wav[i:i + 1000]) for i in range(0, len(wav), 1000)] + [stream.flush()])
    n = len(two[0].feats)
    np.testing.assert_allclose(two[0].feats, live[:n], atol=1e-5)
    assert not np.allclose(two[0].feats, c.feats)  # not the 4-frame window's rows


def test_speed_perturbed_recordings(tmp_path, grid_wav_path):
    """Speed perturbation for distillation: a tone at 1.1x is 10 % higher and the audio 1/1.1 as long; the recordings
    at another speed get their own features and names, and a development recording stays out at every speed."""
    from talkingface.landmarks import LandmarkConfig, LandmarkModel
    from talkingface.training import landmark_training as lt
    from talkingface.training.prepare import change_speed

    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 200 * t).astype(np.float32)
    for speed in (0.9, 1.1):
        y = change_speed(tone, speed)
        assert abs(len(y) - 16000 / speed) <= 2
        peak = np.abs(np.fft.rfft(y)).argmax() * 16000 / len(y)
        assert abs(peak - 200 * speed) < 2
    assert change_speed(tone, 1.0) is tone
    with pytest.raises(ValueError):
        change_speed(tone, 3.0)

    folder = tmp_path / "audio"
    folder.mkdir()
    for n in ("spk_x_a", "OpenTalker__DPE__2"):  # DPE__2 is a dev recording
        shutil.copy(grid_wav_path, folder / f"{n}.wav")
    teacher = LandmarkModel(LandmarkConfig(feature_kind="whisper", feature_dim=384)).eval()
    key = LIVE_WINDOW.key
    plain = lt.audio_only_clips(str(folder), str(tmp_path / "p1"), key, teacher)
    fast = lt.audio_only_clips(str(folder), str(tmp_path / "p11"), key, teacher, speed=1.1)
    assert [c.name for c in plain] == ["audio:spk_x_a"] and [c.name for c in fast] == ["audio:spk_x_a@speed1.1"]
    assert fast[0].speaker == plain[0].speaker
    assert abs(len(fast[0].feats) - len(plain[0].feats) / 1.1) <= 2
    assert lt.audio_only_clips(str(folder), str(tmp_path / "p11"), key, teacher, speed=1.1, dev=True)[0].name \
        == "audio:OpenTalker__DPE__2@speed1.1"


def test_training_an_ensemble_averages_models_trained_apart(tmp_path):
    """train_members(members=2) trains the recipe with seeds s and s + 1 (the same models as two single runs) and
    predicts their mean; it saves and loads through landmarks.build as one checkpoint."""
    from talkingface import checkpoints
    from talkingface.landmarks import LandmarkEnsemble, build
    from talkingface.training import landmark_training as lt

    clips = _distill_clips(np.random.default_rng(0))
    cfg = LandmarkConfig(feature_dim=8, hidden=8, n_pca=3, bidirectional=False)
    kw = dict(steps=5, batch=4, window=40)
    ens, log = lt.train_members(clips, cfg, 2, seed=3, **kw)
    assert isinstance(ens, LandmarkEnsemble) and ens.config.members == 2
    assert [m["seed"] for m in log["info"]["members"]] == [3, 4]
    singles = [lt.train(clips, cfg, seed=s, **kw)[0] for s in (3, 4)]
    x = torch.from_numpy(clips[0].feats)
    a, b = (m.predict(x) for m in singles)
    assert (a - b).abs().max() > 1e-4  # the two seeds give different models
    torch.testing.assert_close(ens.predict(x), (a + b) / 2)
    path = tmp_path / "ens.safetensors"
    checkpoints.save_module(path, ens, ens.config, model="landmarks", info=log["info"])
    loaded, _ = checkpoints.load_module(path, build, LandmarkConfig, model="landmarks")
    assert isinstance(loaded, LandmarkEnsemble)
    torch.testing.assert_close(loaded.predict(x), ens.predict(x))
    single, _ = lt.train_members(clips, cfg, 1, seed=3, **kw)
    torch.testing.assert_close(single.predict(x), a)
    # as a distillation teacher: its normalized targets are the same mean, in centimetres after cm_per_unit
    targets = torch.from_numpy(lt.distillation_targets(ens, clips[0].feats)).view(-1, 59, 3)
    torch.testing.assert_close(targets * ens.cm_per_unit.view(59, 3), ens.predict(x), atol=1e-5, rtol=1e-4)


def test_eval_compares_landmark_models_by_name(prepared, tmp_path):
    """`talkingface eval --landmarks NAME` scores that landmark model instead of the default, so two compare in one
    session: the shipped landmarks-v1 and the default (landmarks-v2, three models averaged) give different tracks."""
    from talkingface.cli import main
    from talkingface.pipeline import DEFAULT_MODELS

    results = {}
    for name in ("landmarks-v1", None):
        out = tmp_path / (name or "default")
        argv = ["eval", "--data", str(prepared), "--out", str(out), "--no-video"]
        argv += ["--landmarks", name] if name else []
        assert main(argv) == 0
        rows = json.loads((out / "results.json").read_text())["rows"]
        results[name or DEFAULT_MODELS["landmarks"]] = [r for r in rows if r["method"] == "model"]
    assert set(results) == {"landmarks-v1", DEFAULT_MODELS["landmarks"]} and len(results) == 2
    (a,), (b,) = results.values()  # the fixture's one validation clip
    assert a["clip"] == b["clip"] == "spk_a_1" and a["lip_dist"] != b["lip_dist"]
