"""The public API end to end with the shipped weights, on real fixtures, checked by re-tracking the output."""
import numpy as np
import pytest
from conftest import assert_talks

from talkingface import RenderOptions, face, media
from talkingface.audio import n_video_frames
from talkingface.errors import InputError, NoFaceError, SilentAudioError
from talkingface.metrics import I_LO, I_UP


@pytest.fixture(scope="module")
def rendered(pipeline, astronaut_path, grid_wav_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("render") / "out.mp4"
    result = pipeline.render(astronaut_path, grid_wav_path, output=out, return_frames=True)
    return result, out


def test_output_file_duration_fps_audio(rendered, grid_wav):
    result, out = rendered
    info = media.probe(out)
    assert info.has_video and info.has_audio and info.fps == 25.0
    audio_s = len(grid_wav) / 16000
    assert abs(info.duration - audio_s) <= 1 / 25 + 0.03
    frames = list(media.iter_video_frames(out))
    assert abs(len(frames) - audio_s * 25) <= 1
    assert result.n_frames == n_video_frames(len(grid_wav)) == len(result.mouth_landmarks)
    assert result.mouth_landmarks.shape[1:] == (59, 2) and result.fps == 25
    assert set(result.timings) >= {"audio_features", "landmarks", "texture", "composite", "encode", "total"}


def test_mouth_moves_in_speech_and_rests_in_silence(rendered, grid_wav):
    result, out = rendered
    speech, quiet = assert_talks(out, grid_wav)
    # the predicted landmarks say the same: open in speech, neutral in silence
    pred_open = np.linalg.norm(result.mouth_landmarks[:, I_UP] - result.mouth_landmarks[:, I_LO], axis=-1)
    assert pred_open[speech].max() > pred_open[quiet].max()


def test_only_the_lower_face_changes_without_head_motion(pipeline, astronaut, grid_wav):
    result = pipeline.render(astronaut, grid_wav[: 16000], output=None, return_frames=True,
                             options=RenderOptions(head_motion="still"))
    lm = face.FaceTracker().detect(astronaut)[0].landmarks
    top = int(min(lm[145, 1], lm[374, 1]))  # eyes, brows, forehead, hair: the input's own pixels, exactly
    for fr in result.frames[::5]:
        diff = np.abs(fr[:top].astype(int) - astronaut[:top].astype(int))
        assert diff.max() == 0


def test_array_inputs_and_no_output(pipeline, astronaut, grid_wav):
    res = pipeline.render(astronaut, grid_wav[: 16000], output=None, options=RenderOptions(batch_size=7))
    assert res.output is None and res.frames is None and res.n_frames == 25


def test_no_face_leaves_nothing(pipeline, tmp_path, grid_wav_path):
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))).save(blank)
    out = tmp_path / "o.mp4"
    with pytest.raises(NoFaceError, match="wall.png"):
        pipeline.render(blank, grid_wav_path, output=out)
    assert list(tmp_path.iterdir()) == [blank]


def test_silent_audio_is_refused(pipeline, tmp_path, astronaut_path):
    import wave

    silent = tmp_path / "silence.wav"
    with wave.open(str(silent), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    with pytest.raises(SilentAudioError, match="silence.wav"):
        pipeline.render(astronaut_path, silent, output=tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_bad_paths(pipeline, tmp_path, astronaut_path, grid_wav_path):
    with pytest.raises(InputError, match="nope.wav"):
        pipeline.render(astronaut_path, tmp_path / "nope.wav", output=tmp_path / "o.mp4")
    with pytest.raises(InputError, match="nope.jpg"):
        pipeline.render(tmp_path / "nope.jpg", grid_wav_path, output=tmp_path / "o.mp4")
    with pytest.raises(InputError, match="missing_dir"):
        pipeline.render(astronaut_path, grid_wav_path, output=tmp_path / "missing_dir" / "o.mp4")
    bad = tmp_path / "bad.wav"
    bad.write_text("this is not audio")
    with pytest.raises(InputError, match="bad.wav"):
        pipeline.render(astronaut_path, bad, output=tmp_path / "o.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav"]


def test_failure_midway_leaves_no_file(pipeline, tmp_path, astronaut_path, grid_wav_path):
    out = tmp_path / "o.mp4"

    def boom(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        pipeline.render(astronaut_path, grid_wav_path, output=out, progress=boom)
    assert list(tmp_path.iterdir()) == []


def test_several_faces_largest_by_default_or_chosen(pipeline, astronaut, grid_wav):
    import cv2

    canvas = np.full((512, 1024, 3), 128, np.uint8)
    canvas[:, :512] = astronaut
    canvas[:420, 604:] = cv2.resize(astronaut, (420, 420))
    short = grid_wav[: 16000]
    first = pipeline.render(canvas, short, output=None)
    second = pipeline.render(canvas, short, output=None, options=RenderOptions(face_index=1))
    assert first.n_faces == second.n_faces == 2
    assert first.face_box[0] < 512 <= second.face_box[0]  # the big face is on the left
    with pytest.raises(NoFaceError, match="face index 2"):
        pipeline.render(canvas, short, output=None, options=RenderOptions(face_index=2))


def test_runtime_never_imports_the_training_code(astronaut_path, grid_wav_path):
    """load() and a render read everything they need (the sync delay too) from the checkpoint's metadata: the
    training package (and what it pulls in) stays out of the runtime. Checked in a fresh interpreter."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, talkingface\n"
        "from talkingface import media\n"
        "pipe = talkingface.load()\n"
        "assert pipe.sync_delay == talkingface.checkpoints.read_checkpoint(talkingface.checkpoints.resolve("
        "talkingface.pipeline.DEFAULT_MODELS['landmarks']))[1]['info']['sync_delay']\n"
        f"wav = media.load_audio({grid_wav_path!r})[:16000]\n"
        f"pipe.render({astronaut_path!r}, wav, output=None)\n"
        "bad = sorted(m for m in sys.modules if m.startswith('talkingface.training'))\n"
        "assert not bad, bad\n"
        "print('ok', talkingface.__file__)\n"
    )
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok") and str(root) in run.stdout  # this checkout's code was the one tested


def _turned_landmarks(yaw_deg: float, size: int = 512) -> np.ndarray:
    """FaceMesh-like (478, 3) image points of the canonical face turned ``yaw_deg`` about its vertical axis,
    seen by the camera head_pose assumes (focal length = image width), centred in a size x size image."""
    mesh = face.canonical_mesh()
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    p = mesh @ rot.T
    z = 40.0 - p[:, 2]  # 40 cm in front of the camera (the mesh is y-up, z towards the camera)
    xy = np.stack([size / 2 + size * p[:, 0] / z, size / 2 - size * p[:, 1] / z], 1)
    pts = np.concatenate([xy, (p[:, 2:] * size / 40.0)], 1)
    return np.concatenate([pts, np.repeat(pts[:1], 10, 0)]).astype(np.float32)


def test_a_profile_photo_is_refused_by_name_and_leaves_nothing(pipeline, tmp_path, astronaut_path, grid_wav_path,
                                                              monkeypatch):
    """Issue 9's bad input: a face turned beyond the supported angle (60 degrees: a near-profile) is refused with a
    message that names the photo and the angle, before anything is written; 3/4 views are fine."""
    for yaw in (20.0, -25.0, 50.0):
        face.check_facing(_turned_landmarks(yaw), (512, 512), "ok.png")
    yaw, _ = face.facing_angles(_turned_landmarks(75.0), (512, 512))
    assert 65 < abs(yaw) < 85
    lm = _turned_landmarks(75.0)
    det = face.DetectedFace(lm, (int(lm[:, 0].min()), int(lm[:, 1].min()), int(lm[:, 0].max()), int(lm[:, 1].max())))
    monkeypatch.setattr(pipeline.tracker, "detect", lambda image: [det])
    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match=r"astronaut.*turned \d+ degrees to the side"):
        pipeline.render(astronaut_path, grid_wav_path, output=out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
