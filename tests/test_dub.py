"""Dubbing a video (talkingface.dub) and batch dubbing (talkingface.batch), on the GRID fixture (CC BY 4.0)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from talkingface import DubOptions, face, media, metrics
from talkingface.audio import speech_energy
from talkingface.batch import DubJob, dub_batch, read_jobs
from talkingface.dub import output_length, source_indices
from talkingface.errors import InputError, NoFaceError, TalkingFaceError

ROOT = Path(__file__).resolve().parent.parent


def test_source_indices_length_policies():
    assert source_indices(5, 3, "pingpong").tolist() == [0, 1, 2, 1, 0]
    assert source_indices(8, 3, "pingpong").tolist() == [0, 1, 2, 1, 0, 1, 2, 1]
    assert source_indices(7, 3, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert source_indices(5, 3, "freeze").tolist() == [0, 1, 2, 2, 2]
    assert source_indices(2, 5, "pingpong").tolist() == [0, 1]  # shorter audio: cut
    assert output_length(75, 2.0, 25, "pingpong") == 50  # audio shorter than video: cut to the audio
    assert output_length(75, 6.0, 25, "loop") == 150  # longer: follow the audio
    assert output_length(75, 6.0, 25, "trim") == 75
    assert output_length(75, 2.0, 25, "video") == 75
    with pytest.raises(InputError, match="length policy"):
        DubOptions(length="stretch")


def test_choose_face_follows_the_chosen_one():
    from talkingface.tracking import choose_face

    def f(x0, y0, x1, y1):
        return face.DetectedFace(np.zeros((478, 3), np.float32), (x0, y0, x1, y1))

    big, small = f(100, 100, 300, 300), f(400, 100, 480, 180)
    assert choose_face([big, small], index=None, point=None, previous=None) is big
    assert choose_face([big, small], index=1, point=None, previous=None) is small
    assert choose_face([big, small], index=None, point=(450, 150), previous=None) is small
    # once chosen, the face nearest the last position wins even if it is no longer the largest
    moved = f(405, 105, 485, 185)
    assert choose_face([f(90, 90, 310, 310), moved], index=None, point=None, previous=small.box) is moved
    # the chosen face left the frame: another face far away is not taken for it
    assert choose_face([big], index=None, point=None, previous=small.box) is None


def test_edge_weights_fade_at_passthrough():
    from talkingface.tracking import edge_weights

    ok = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    w = edge_weights(ok, ramp=3)
    assert w[0] == 1 and w[-1] == 1  # the video's own ends need no fade
    assert w[6] == 0 and w[7] == 0
    assert 0 < w[5] < w[4] < w[3] <= 1 and 0 < w[8] < w[9] < w[10] <= 1


@pytest.fixture(scope="module")
def gappy_video(tmp_path_factory, grid_video_path) -> tuple[str, list[np.ndarray]]:
    """The GRID fixture with the face hidden in frames 30-39 (a grey card in front of the camera)."""
    frames = [f.copy() for f in media.iter_video_frames(grid_video_path)]
    for i in range(30, 40):
        frames[i][:] = 128
    path = tmp_path_factory.mktemp("dub") / "gappy.mp4"
    h, w = frames[0].shape[:2]
    with media.VideoWriter(path, 25, w, h, audio=grid_video_path, crf=12) as vw:
        for fr in frames:
            vw.write(fr)
    return str(path), list(media.iter_video_frames(path))


def _nose_line(frame: np.ndarray) -> int:
    with face.FaceTracker(static=True) as t:
        lm = t.detect(frame)[0].landmarks
    return int(lm[face.NOSE_LINE, 1].min()) - 12  # rows above this are outside every mouth crop


def test_dub_passes_faceless_frames_through_and_pingpongs(pipeline, gappy_video, tmp_path):
    path, src = gappy_video
    wav = np.concatenate([media.load_audio(ROOT / "demo" / "grid_sbwe5n.wav"),
                          media.load_audio(ROOT / "demo" / "grid_lwbsza.wav")])  # ~6 s against 3 s of video
    out = tmp_path / "dubbed.mp4"
    res = pipeline.dub(path, wav, output=out, return_frames=True)
    assert res.n_source_frames == len(src) == 75
    assert res.n_frames == len(res.frames) == round(len(wav) / 16000 * 25)
    idx = source_indices(res.n_frames, len(src), "pingpong")
    hidden = (idx >= 30) & (idx < 40)
    assert res.frames_no_face == hidden.sum() == 20  # forwards and backwards
    assert res.frames_dubbed == res.n_frames - 20
    top = _nose_line(src[0])
    for k, s in enumerate(idx):  # decoded again backwards and forwards: every frame is the right one
        if hidden[k]:
            assert np.array_equal(res.frames[k], src[s])  # passed through untouched
        else:
            assert np.array_equal(res.frames[k][:top], src[s][:top])  # above the mouth: untouched
    assert np.isnan(res.mouth_landmarks[hidden]).all() and np.isfinite(res.mouth_landmarks[~hidden]).all()
    info = media.probe(out)
    assert info.has_audio and abs(info.duration - len(wav) / 16000) < 0.1
    assert (info.width, info.height) == (src[0].shape[1], src[0].shape[0])


def test_dub_end_to_end_mouth_follows_the_new_audio(pipeline, grid_video_path, tmp_path):
    """GRID clip lwbsza dubbed with clip sbwe5n's speech: everything above the mouth is unchanged, and the
    re-tracked mouth opening follows the new speech, not the old one."""
    new = media.load_audio(ROOT / "demo" / "grid_sbwe5n.wav")
    old = media.load_audio(grid_video_path)
    out = tmp_path / "dub.mp4"
    res = pipeline.dub(grid_video_path, ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    assert out.is_file() and res.frames_dubbed == res.n_frames
    src = list(media.iter_video_frames(grid_video_path))
    dubbed = list(media.iter_video_frames(out))
    top = _nose_line(src[0])
    psnr = [metrics.psnr(a[:top], b[:top]) for a, b in zip(src, dubbed, strict=False)]
    assert np.median(psnr) > 36  # only the H.264 encoder (crf 18) touched it
    with face.FaceTracker(static=False) as tr:
        opening = np.array([face.mouth_opening(tr.detect(f)[0].landmarks) for f in dubbed])
        before = np.array([face.mouth_opening(tr.detect(f)[0].landmarks) for f in src])
    r_new, _ = metrics.pearson_lagged(opening, speech_energy(new)[: len(opening)], 2)
    r_old, _ = metrics.pearson_lagged(opening, speech_energy(old)[: len(opening)], 2)
    # the two GRID sentences share their template, so their speech energies correlate with each other: the
    # undubbed video's mouth already follows the new sentence with r about 0.35 (0.59 for its own); dubbed, it
    # must follow the new one far better than that, and better than the old one
    r_before, _ = metrics.pearson_lagged(before, speech_energy(new)[: len(before)], 2)
    assert r_new > r_before + 0.3 and r_new > r_old + 0.1, (r_new, r_old, r_before)


def test_dub_bad_inputs_leave_nothing(pipeline, tmp_path, grid_video_path):
    out = tmp_path / "out.mp4"
    still = tmp_path / "noface.mp4"
    with media.VideoWriter(still, 25, 128, 96, audio=np.full(16000, 0.1, np.float32)) as vw:
        for i in range(25):
            vw.write(np.full((96, 128, 3), 40 + i, np.uint8))
    with pytest.raises(NoFaceError, match="no face found in any of the 25 frames"):
        pipeline.dub(still, ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    with pytest.raises(InputError, match="no video stream"):
        pipeline.dub(ROOT / "demo" / "grid_sbwe5n.wav", ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(Path(grid_video_path).read_bytes()[:3000])
    with pytest.raises(TalkingFaceError):
        pipeline.dub(broken, ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    with pytest.raises(InputError, match="at least 0.2 s"):
        pipeline.dub(grid_video_path, np.zeros(800, np.float32) + 0.1, output=out)
    with pytest.raises(NoFaceError, match="face index 3"):
        pipeline.dub(grid_video_path, ROOT / "demo" / "grid_sbwe5n.wav", output=out,
                     options=DubOptions(face_index=3))
    assert sorted(os.listdir(tmp_path)) == ["broken.mp4", "noface.mp4"]  # no output, no temporary


def test_read_jobs_csv_and_json(tmp_path):
    (tmp_path / "jobs.csv").write_text("video,audio,output,face,length,adapt\na.mp4,b.wav,,1,loop,yes\n")
    [job] = read_jobs(tmp_path / "jobs.csv")
    assert job.video == str(tmp_path / "a.mp4") and job.output is None
    assert job.options == {"face_index": 1, "length": "loop", "adapt": True}
    (tmp_path / "jobs.json").write_text(json.dumps([{"video": "/x.mp4", "audio": "y.wav", "fps": 25}]))
    [job] = read_jobs(tmp_path / "jobs.json")
    assert job.video == "/x.mp4" and job.options == {"fps": 25.0}
    (tmp_path / "bad.csv").write_text("video,audio,colour\na.mp4,b.wav,red\n")
    with pytest.raises(InputError, match="unknown job option 'colour'"):
        read_jobs(tmp_path / "bad.csv")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(InputError, match="lists no jobs"):
        read_jobs(tmp_path / "empty.json")


_KILLABLE = """
import sys, talkingface
from talkingface.batch import dub_batch, read_jobs
dub_batch(read_jobs(sys.argv[1]), sys.argv[2], workers=1, progress=False)
"""


def test_batch_resumes_after_kill_and_reports_failures(pipeline, grid_video_path, tmp_path):
    jobs = tmp_path / "jobs.csv"
    rows = ["video,audio,output",
            f"{grid_video_path},{ROOT / 'demo' / 'grid_sbwe5n.wav'},first.mp4",
            f"{grid_video_path},{ROOT / 'demo' / 'grid_lwbsza.wav'},second.mp4",
            f"{grid_video_path},{tmp_path / 'missing.wav'},third.mp4"]
    jobs.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    summary = out / "batch_summary.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", _KILLABLE, str(jobs), str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill as soon as the first job is done (the second is then running)
            if summary.is_file() and any(r["status"] == "done" for r in json.loads(summary.read_text())):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert (out / "first.mp4").is_file()
    assert not (out / "second.mp4").exists()  # never a partial output under the real name
    records = dub_batch(read_jobs(jobs), out, pipeline=pipeline, progress=False)
    assert [r["status"] for r in records] == ["skipped", "done", "failed"]
    assert "missing.wav" in records[2]["error"]
    assert not list(out.glob(".*.tmp-*"))  # what the killed run left was cleaned up
    assert media.probe(out / "second.mp4").has_audio
    again = dub_batch(read_jobs(jobs), out, pipeline=pipeline, progress=False)
    assert [r["status"] for r in again] == ["skipped", "skipped", "failed"]
    # other options make it a different job
    changed = dub_batch([DubJob(grid_video_path, str(ROOT / "demo" / "grid_sbwe5n.wav"), "first.mp4",
                                {"crf": 30})], out, pipeline=pipeline, progress=False)
    assert changed[0]["status"] == "done"
    assert json.loads(summary.read_text())[0]["frames"] == 74


def test_dub_rotated_phone_video(pipeline, grid_video_path, tmp_path):
    """A phone video stored sideways with a display matrix is dubbed upright, at its display size."""
    ff = media.ffmpeg_exe()
    stored = tmp_path / "stored.mp4"
    tagged = tmp_path / "tagged.mp4"
    run = {"check": True, "stdin": subprocess.DEVNULL, "capture_output": True}
    subprocess.run([ff, "-y", "-i", grid_video_path, "-vf", "transpose=1", "-c:v", "libx264", "-preset",
                    "ultrafast", "-crf", "12", "-c:a", "copy", str(stored)], **run)
    subprocess.run([ff, "-y", "-display_rotation", "90", "-i", str(stored), "-c", "copy", str(tagged)], **run)
    info = media.probe(tagged)
    assert abs(info.rotation) == 90 and info.display_size == (360, 288)
    out = tmp_path / "out.mp4"
    res = pipeline.dub(tagged, ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    assert res.frames_dubbed == res.n_frames  # upright: the face is found in every frame
    o = media.probe(out)
    assert (o.width, o.height, o.rotation) == (360, 288, 0)
    first_in = next(iter(media.iter_video_frames(grid_video_path)))
    first_out = next(iter(media.iter_video_frames(out)))
    assert metrics.psnr(first_in[:100], first_out[:100]) > 30  # same picture, same way up


def test_dub_truncated_video_uses_what_decodes(pipeline, gappy_video, tmp_path, caplog):
    """A download cut short (moov atom first, so it still opens): the decodable frames are dubbed, with a
    warning, and the output is as long as the audio."""
    data = Path(gappy_video[0]).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with caplog.at_level("WARNING", logger="talkingface.dub"):
        res = pipeline.dub(cut, ROOT / "demo" / "grid_sbwe5n.wav", output=tmp_path / "out.mp4")
    assert 10 < res.n_source_frames < 70 and res.n_frames == 74
    assert "truncated" in caplog.text


def test_dub_interrupted_midway_leaves_nothing(pipeline, grid_video_path, tmp_path, ffmpeg_children):
    """A failure in pass 2, while the next batch is decoded and the previous one encoded in the background
    (here: the progress callback raises, as a cancelled web request would), stops both threads, kills every
    ffmpeg process and leaves no output and no temporary."""
    import threading

    from conftest import assert_processes_gone

    stages, seen_threads = [], set()

    def progress(done, total):
        if stages and stages[-1] == "rendering" and done >= 32:
            seen_threads.update(t.name.rsplit("_", 1)[0] for t in threading.enumerate())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.dub(grid_video_path, ROOT / "demo" / "grid_sbwe5n.wav", output=tmp_path / "out.mp4",
                     progress=progress, stage=stages.append)
    assert stages[-1] == "rendering"  # it fired in pass 2 ...
    assert {"talkingface-decode", "talkingface-encode"} <= seen_threads  # ... while both threads were running
    alive = [t.name for t in threading.enumerate() if t.name.startswith(("talkingface-decode", "talkingface-encode"))]
    assert alive == []
    assert_processes_gone(ffmpeg_children)
    assert list(tmp_path.iterdir()) == []


def test_adapt_holds_out_a_contiguous_block_of_time():
    from talkingface.dub import held_out_block

    frames = np.random.default_rng(1).permutation(np.arange(0, 400, 3))  # a reservoir sample, in bank order
    hold, train = held_out_block(frames, gap=25)
    assert len(hold) == max(4, len(frames) // 10)
    held = np.sort(frames[hold])
    assert set(held) == set(np.sort(frames)[-len(hold):])  # the latest frames, one block
    assert frames[train].max() < held.min() - 25  # no training frame within a second of the block
    assert not set(hold) & set(train)
    hold, train = held_out_block(np.arange(12), gap=25)  # a short bank: the gap shrinks, training keeps 8
    assert len(hold) == 4 and len(train) == 8


def test_an_off_centre_face_is_not_turned(tmp_path, grid_video_path):
    """A frontal face at the top of a tall frame (a phone's format) is dubbed, not passed through as turned: the
    camera-axis pose read the GRID face padded to 360 x 988 as pitched 51 deg (over max_angle 35 in every frame,
    and out of the appearance bank's 25); against its own line of sight it is about as frontal as unpadded."""
    import cv2

    from talkingface import tracking

    frames = [f for _, f in zip(range(30), media.iter_video_frames(grid_video_path))]
    tall = [cv2.copyMakeBorder(f, 0, 700, 0, 0, cv2.BORDER_CONSTANT, value=(90, 90, 90)) for f in frames]
    with face.FaceTracker(static=False) as t:
        plain = tracking.track_video(iter(frames), video_tracker=t)
    with face.FaceTracker(static=False) as t:
        track = tracking.track_video(iter(tall), video_tracker=t)
    assert track.valid.all() and len(track.bank) > 0
    assert np.abs(track.pitch).max() < 20 and np.abs(track.yaw).max() < 10
    assert np.abs(np.median(track.pitch) - np.median(plain.pitch)) < 5


def test_speaking_expression_shifts_the_speech_frames(pipeline, grid_wav, tmp_path):
    """The person's speaking expression, measured on the video where its own audio is speech, becomes the mean of
    the predicted mouth over the new audio's speech frames; the silent frames keep the resting mouth. A video
    without audio, with too little speech, or where the mouth does not move while the audio speaks (a voice-over)
    gets none."""
    from talkingface import audio as audio_mod
    from talkingface import media
    from talkingface.dub import BRIDGE_PAUSES, OWN_EXPRESSION_MIN_SECONDS, own_expression

    neutral = np.zeros((59, 3))
    smile = np.zeros((59, 3), np.float32)
    smile[:, 0] = 0.05 * np.sign(np.arange(59) % 2 - 0.5)  # corners pulled apart, lips apart
    smile[:, 1] = 0.08
    plain = pipeline.predict_mouth(grid_wav, neutral, silence_gate=False)
    shifted = pipeline.predict_mouth(grid_wav, neutral, silence_gate=False, expression=smile)
    speech = audio_mod.speech_mask(grid_wav)[: len(plain)]
    assert 10 < speech.sum() < len(speech)
    np.testing.assert_allclose(shifted[speech].mean(axis=0), smile, atol=1e-5)
    np.testing.assert_allclose(shifted - plain, np.broadcast_to(shifted[0] - plain[0], plain.shape), atol=1e-5)
    gated = pipeline.predict_mouth(grid_wav, neutral, expression=smile)
    assert np.abs(gated[~speech][:3]).max() < 1e-6  # the leading silence rests
    assert np.abs(gated[speech].mean(axis=0) - smile).max() < 0.02
    # a dub bridges pauses under 1 s: the mouth keeps talking (and its expression) through them
    bridged = pipeline.predict_mouth(grid_wav, neutral, expression=smile, bridge_pauses=BRIDGE_PAUSES)
    utterance = audio_mod.bridge_pauses(speech, BRIDGE_PAUSES)
    assert np.abs(bridged[utterance].mean(axis=0) - smile).max() < 0.02
    assert np.abs(bridged[~utterance][:3]).max() < 1e-6

    # measured on a "video" (the two demo sentences' audio, a tracked mouth that speaks with this expression)
    from scipy.io import wavfile

    wav = np.concatenate([media.load_audio(str(ROOT / "demo" / f"grid_{s}.wav")) for s in ("lwbsza", "sbwe5n")])
    grid_wav_path = str(tmp_path / "two.wav")
    wavfile.write(grid_wav_path, audio_mod.SAMPLE_RATE, wav)
    sp = audio_mod.bridge_pauses(audio_mod.speech_mask(wav), BRIDGE_PAUSES)  # the utterances
    n = len(sp)
    rng = np.random.default_rng(0)
    moving = rng.standard_normal((n, 59, 3)) * pipeline.mean_motion_range
    moving[sp] -= moving[sp].mean(axis=0)  # the motion averages out over the speech: what is left is the smile
    mouth = moving + np.where(sp[:, None, None], smile[None], 0.0)
    ok = np.ones(n, bool)
    got = own_expression(pipeline, grid_wav_path, True, mouth, neutral, ok, 25.0)
    assert got is not None and got.shape == (59, 3)
    np.testing.assert_allclose(got, smile, atol=1e-5)
    assert own_expression(pipeline, grid_wav_path, False, mouth, neutral, ok, 25.0) is None  # no audio track
    few = ok.copy()
    few[np.flatnonzero(sp)[: int(sp.sum() - OWN_EXPRESSION_MIN_SECONDS * 25) + 1]] = False
    assert own_expression(pipeline, grid_wav_path, True, mouth, neutral, few, 25.0) is None  # under 2 s speaking
    still = np.broadcast_to(smile, mouth.shape) + moving * 0.05
    assert own_expression(pipeline, grid_wav_path, True, still, neutral, ok, 25.0) is None  # a voice-over


def test_own_range_of_motion_scales_the_prediction(pipeline, grid_wav):
    """Dubbing scales the model's speaker-normalized prediction by the person's own range of motion (measured on
    the video) instead of the training speakers' mean range; too little video falls back to the mean range, and
    a person who barely moves in the video (no speech) is kept at half the mean range, not frozen."""
    from talkingface import metrics
    from talkingface.dub import OWN_RANGE_BOUNDS, own_motion_range

    mean_range = pipeline.landmark_model.cm_per_unit.detach().numpy().reshape(59, 3)
    np.testing.assert_array_equal(pipeline.mean_motion_range, mean_range)
    neutral = np.zeros((59, 3))
    plain = pipeline.predict_mouth(grid_wav, neutral, silence_gate=False)
    same = pipeline.predict_mouth(grid_wav, neutral, silence_gate=False, motion_range=mean_range)
    double = pipeline.predict_mouth(grid_wav, neutral, silence_gate=False, motion_range=2 * mean_range)
    np.testing.assert_allclose(same, plain, atol=1e-6)
    np.testing.assert_allclose(double, 2 * plain, rtol=1e-4, atol=1e-6)
    assert np.abs(plain).max() > 0.05  # the clip's mouth does move

    rng = np.random.default_rng(0)
    lively = rng.standard_normal((200, 59, 3)) * 1.2 * mean_range  # 1.2 x the mean range, per coordinate
    ok = np.ones(200, bool)
    own = own_motion_range(pipeline, lively, neutral, ok, 25.0)
    np.testing.assert_allclose(own, metrics.motion_range(lively, neutral, ok), rtol=1e-5)
    assert 1.1 < np.median(own[:40, :2] / mean_range[:40, :2]) < 1.3
    assert own_motion_range(pipeline, lively[:40], neutral, ok[:40], 25.0) is None  # under 2 s of face
    still = rng.standard_normal((200, 59, 3)) * 0.05 * mean_range
    kept = own_motion_range(pipeline, still, neutral, ok, 25.0)
    assert np.median(kept[:40, :2] / mean_range[:40, :2]) == pytest.approx(OWN_RANGE_BOUNDS[0], rel=1e-3)


def test_read_ahead_keeps_order_errors_and_stops_its_thread():
    """Pass 1 reads frames in a background thread: the same frames and thumbnails in order, the source's error
    raised after the frames before it, and closing early stops the thread before the source is closed."""
    import threading

    from talkingface import tracking

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(9)]
    got = list(tracking.read_ahead(iter(frames), depth=2))
    assert len(got) == 9
    for f, (g, th) in zip(frames, got, strict=True):
        assert g is f and np.array_equal(th, tracking.thumbnail(f))

    def failing():
        yield from frames[:3]
        raise InputError("video file 'x.mp4' could not be decoded")

    seen = []
    with pytest.raises(InputError, match="could not be decoded"):
        for f, _ in tracking.read_ahead(failing()):
            seen.append(f)
    assert len(seen) == 3

    def endless():
        while True:
            yield frames[0]

    source = endless()
    reader = tracking.read_ahead(source, depth=2)
    next(reader)
    reader.close()
    assert not any(t.name == "talkingface-track-read" for t in threading.enumerate())
    source.close()  # no "generator already executing": the thread no longer runs it


@pytest.mark.parametrize("policy", ["pingpong", "freeze", "loop"])
def test_frames_painted_in_place_never_reach_a_later_output_frame(grid_video_path, policy):
    """Pass 2 paints on the decoded frames themselves: a source frame the timeline shows again is handed out as a
    copy, the others are taken from the source's cache, so every output frame starts from the pristine frame
    even when the one before it was painted over."""
    from talkingface import tracking
    from talkingface.dub import FrameSource, _shown_again

    real = list(media.iter_video_frames(grid_video_path))
    n_src = len(real)
    thumbs = np.stack([tracking.thumbnail(f) for f in real])
    src_idx = source_indices(2 * n_src + 7, n_src, policy)
    again = _shown_again(src_idx)
    assert again.sum() == len(src_idx) - len(np.unique(src_idx))  # all but each frame's last showing
    source = FrameSource(grid_video_path, 25.0, None, thumbs)
    try:
        for k, s in enumerate(src_idx):
            fr = source.owned(int(s), bool(again[k]))
            assert np.array_equal(fr, real[s]), (k, s)
            fr[:] = 0  # "painted"
    finally:
        source.close()
