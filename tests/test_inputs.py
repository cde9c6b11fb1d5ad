"""Bad input of every kind is refused early, clearly and without losing anything (issue 10's cases)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from talkingface import audio, checks, face, media
from talkingface.errors import InputError, SilentAudioError, TalkingFaceError

ROOT = Path(__file__).resolve().parent.parent
GLOG = {**os.environ, "GLOG_minloglevel": "2", "PYTHONPATH": str(ROOT)}


def _cli(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "talkingface", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env or GLOG)


def _error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr  # one clear line, no traceback, no native log noise
    return lines[0]


# --- fast start, lazy imports --------------------------------------------------------------------------------


def test_help_imports_nothing_heavy():
    code = ("import sys, talkingface, talkingface.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'cv2', 'mediapipe', 'scipy', 'gradio', 'ctranslate2') if m in sys.modules]; "
            "assert not heavy, heavy; print(talkingface.InputError.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "InputError", r.stderr
    t0 = time.perf_counter()
    r = _cli("render", "--help")
    assert r.returncode == 0 and "--landmarks-json" in r.stdout
    assert time.perf_counter() - t0 < 3.0  # was 4 s with torch imported at start (here: a loaded 2-core box)


@pytest.mark.parametrize("content, expected", [
    (None, "does not exist"),
    ("video,audio\n", "no jobs"),
    ("video,audio\nv.mp4,a.wav,extra\n", "job file"),
])
def test_batch_job_file_mistakes_are_refused_without_torch(tmp_path, content, expected):
    """The batch reads and checks its job file before any model or torch is imported (a missing job file took 6-8 s:
    talkingface.batch imported the dubbing module, and torch with it, for its options)."""
    jobs = tmp_path / "jobs.csv"
    if content is not None:
        jobs.write_text(content)
    code = ("import sys; from talkingface.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code, "batch", str(jobs), "--out-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, cwd=tmp_path, env=GLOG, timeout=120)
    assert r.stdout.split() == ["False", "1"] and expected in _error_line(r), (r.stdout, r.stderr)
    assert not (tmp_path / "out").exists()


def test_lazy_names_still_resolve():
    import talkingface

    assert talkingface.RenderOptions.__module__ == "talkingface.pipeline"
    assert talkingface.media is media
    with pytest.raises(AttributeError):
        talkingface.no_such_name  # noqa: B018


# --- numbers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [("--motion", "nan"), ("--motion", "inf"), ("--motion", "10000"),
                                    ("--motion", "-1"), ("--crf", "99"), ("--face", "-1"), ("--face", "10"),
                                    ("--max-size", "1"), ("--max-size", "0"), ("--max-size", "-5"),
                                    ("--fps", "nan"), ("--max-angle", "1e309")])
def test_bad_numbers_are_usage_errors(tmp_path, option, astronaut_path, grid_wav_path):
    r = _cli("render", "--image", astronaut_path, "--audio", grid_wav_path, "-o", tmp_path / "o.mp4", *option)
    assert r.returncode == 2 and f"argument {option[0]}" in r.stderr and "must be" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["batch", "jobs.csv", "--out-dir", "b", "--workers", "0"],
    ["batch", "jobs.csv", "--out-dir", "b", "--ray", "local", "--cpus-per-worker", "nan"],  # was a traceback
    ["batch", "jobs.csv", "--out-dir", "b", "--ray", "local", "--gpus-per-worker", "-1"],
    ["benchmark", "--seconds", "nan"],  # was a traceback
    ["benchmark", "--seconds", "-1"],  # was "audio array is empty"
    ["benchmark", "--repeat", "0"],  # was accepted
    ["benchmark", "--live", "--chunk-ms", "0"],
    ["eval", "--max-clips", "-1"],  # was accepted (and cut the clip list from the end)
    ["eval", "--adapt-steps", "0"],
    ["demo", "--port", "99999"],  # was a traceback after the models had loaded
    ["demo", "--max-upload-mb", "nan"],  # was a traceback
    ["demo", "--max-seconds", "-1"],  # was accepted: the server started and refused nothing
    ["demo", "--max-uploads", "0"],
    ["demo", "--max-total-mb", "inf"],
])
def test_every_subcommands_numbers_are_usage_errors(tmp_path, args):
    (tmp_path / "jobs.csv").write_text("video,audio\nv.mp4,a.wav\n")
    r = _cli(*args, cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and f"argument {args[-2]}: must be between" in r.stderr, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.csv"]  # no output folder, no summary


def test_eval_dub_options_need_the_texture_table(tmp_path):
    r = _cli("eval", "--dub", "--average-expression", "--out", "e", cwd=tmp_path, timeout=60)
    assert r.returncode != 0 and "--average-expression applies to the dubbing texture table" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_options_are_checked_in_the_api_too():
    from talkingface import DubOptions, RenderOptions

    for bad in ({"motion_scale": float("nan")}, {"motion_scale": 1e309}, {"crf": 99}, {"max_size": 1},
                {"face_index": -1}, {"face_index": checks.MAX_FACES}, {"batch_size": 0}, {"seed": -5},
                {"seed": 2**40}, {"seed": 1.5}):
        with pytest.raises(InputError):
            RenderOptions(**bad)
    for bad in ({"fps": float("nan")}, {"max_angle": -1}, {"adapt_steps": 0}, {"face_point": (float("nan"), 3)},
                {"face_point": (3,)}, {"face_point": "1,2"}, {"face_point": (1, 2, 3)}, {"face_point": 5},
                {"max_size": 10}, {"motion_scale": float("inf")}):
        with pytest.raises(InputError):
            DubOptions(**bad)
    assert RenderOptions(max_size=64, motion_scale=0.0, crf=0).crf == 0
    from talkingface.web import Limits

    for bad in ({"max_upload_mb": float("nan")}, {"max_seconds": -1}, {"max_total_mb": 0},
                {"max_uploads_per_visitor": 0}):
        with pytest.raises(InputError):
            Limits(**bad)


def test_demo_refuses_an_address_it_cannot_listen_on_before_loading(tmp_path):
    """`demo --host nonsense.invalid` loaded the models (20 s here), then said "the port is in use" under a stray
    uvicorn ERROR line; a port really in use was found only after loading too."""
    import socket

    from talkingface import web

    with pytest.raises(InputError, match="does not resolve"):
        web.check_listen("nonsense.invalid", 7860)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match="the port is in use"):
            web.check_listen("127.0.0.1", port)
        r = _cli("demo", "--port", port, cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and "the port is in use" in _error_line(r) and "loading the models" not in r.stdout
    web.check_listen("127.0.0.1", port)  # free again


def test_batch_numbers_are_checked_before_any_file_is_made(tmp_path):
    from talkingface import dub_batch

    out = tmp_path / "out"
    for bad in ({"workers": 0}, {"workers": 1.5}, {"cpus_per_worker": float("nan"), "executor": "ray"},
                {"gpus_per_worker": -1, "executor": "ray"}):
        with pytest.raises(InputError, match="must be"):
            dub_batch([{"video": "v.mp4", "audio": "a.wav"}], out, **bad)
    assert not out.exists()


def test_speech_checks_name_the_problem():
    with pytest.raises(InputError, match=r"too short: 0\.10 s"):
        audio.check_speech(np.random.default_rng(0).normal(0, 0.1, 1600).astype(np.float32), "a.wav")
    with pytest.raises(SilentAudioError, match="silent"):
        audio.check_speech(np.zeros(16000, np.float32), "b.wav")
    with pytest.raises(InputError, match="not finite"):
        audio.check_speech(np.full(16000, np.nan, np.float32), "c.wav")


# --- inputs and outputs checked before the models load --------------------------------------------------------


@pytest.fixture
def workdir(tmp_path, astronaut_path, grid_wav_path, grid_video_path):
    for src in (astronaut_path, grid_wav_path, grid_video_path):
        (tmp_path / Path(src).name).write_bytes(Path(src).read_bytes())
    (tmp_path / "speech.mp4").write_bytes(Path(grid_video_path).read_bytes())  # audio in an mp4
    return tmp_path


@pytest.mark.parametrize("args,expected", [
    (["--video", "grid_lwbsza.mp4", "--audio", "grid_lwbsza.wav", "-o", "grid_lwbsza.mp4"], "is the video file"),
    (["--video", "grid_lwbsza.mp4", "--audio", "grid_lwbsza.wav", "-o", "x/../grid_lwbsza.mp4"], "is the video"),
    (["--image", "astronaut.jpg", "--audio", "speech.mp4", "-o", "speech.mp4"], "is the audio file"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "out.png"], "extension .png"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "astronaut.jpg/o.mp4"], "is not a folder"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--landmarks-json", "no/m.json"],
     "does not exist"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--landmarks-json",
      "grid_lwbsza.wav"], "is the audio file"),
    (["--image", "astronaut.jpg", "--text", "Hello there.", "-o", "o.mp4", "--save-audio", "o.mp4"],
     "extension .mp4"),
    (["--image", "astronaut.jpg", "--text", "Hello there.", "--voice", "xx-nonexistent", "-o", "o.mp4"],
     "unknown voice"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--fps", "30"], "--fps applies"),
    # a photo given as the video to dub: refused after loading the models and tracking (13 s here) as "1 frame(s)"
    (["--video", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4"], "is a photo, not a video"),
    # options the chosen mode would silently ignore (as --fps with --image was)
    (["--video", "grid_lwbsza.mp4", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--seed", "3"],
     "--seed applies to photo renders"),
    (["--video", "grid_lwbsza.mp4", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--keep-expression", "0.5",
      "--head-motion", "still"], "--keep-expression, --head-motion apply to photo renders"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--length", "loop"],
     "--length applies to dubbing"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--average-range"],
     "--average-range applies to dubbing"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--average-expression"],
     "--average-expression applies to dubbing"),
    (["--image", "astronaut.jpg", "--audio", "grid_lwbsza.wav", "-o", "o.mp4", "--voice", "es", "--rate", "1.2"],
     "--voice, --rate apply to text"),
    (["--image", "astronaut.jpg", "--text", "Hello.", "-o", "o.mp4", "--transcript", "hello"],
     "--transcript applies to a recording"),
])
def test_mistakes_are_refused_at_once_and_nothing_is_lost(workdir, args, expected):
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    t0 = time.perf_counter()
    r = _cli("render", *args, cwd=workdir)
    took = time.perf_counter() - t0
    assert r.returncode == 1 and expected in _error_line(r), r.stderr
    assert took < 8, took  # no model was loaded (that alone takes 5-15 s here)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before  # inputs intact, nothing new


def test_the_api_refuses_an_output_it_cannot_write_or_that_is_an_input(pipeline, workdir):
    """The command line refused these, the API did not: render(output='o.png') failed in ffmpeg's words after the
    whole render, and an output naming an input replaced it."""
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    with pytest.raises(InputError, match="has the extension .png"):
        pipeline.render(workdir / "astronaut.jpg", workdir / "grid_lwbsza.wav", output=workdir / "o.png")
    with pytest.raises(InputError, match="is the audio file"):
        pipeline.render(workdir / "astronaut.jpg", workdir / "speech.mp4", output=workdir / "speech.mp4")
    with pytest.raises(InputError, match="is the video file"):
        pipeline.dub(workdir / "grid_lwbsza.mp4", workdir / "grid_lwbsza.wav",
                     output=workdir / "x" / ".." / "grid_lwbsza.mp4")
    with pytest.raises(InputError, match="does not exist"):
        pipeline.dub(workdir / "grid_lwbsza.mp4", workdir / "grid_lwbsza.wav", output=workdir / "no" / "o.mp4")
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


@pytest.mark.parametrize("args,expected", [
    (["grid_lwbsza.wav", "-o", "no/m.json"], "does not exist"),
    (["grid_lwbsza.wav", "-o", "grid_lwbsza.wav"], "unknown export format"),
    (["grid_lwbsza.wav", "-o", "m.json", "--save-audio", "s.wav"], "--save-audio applies to text"),
    (["--text", "Hello.", "-o", "m.json", "--transcript", "hello"], "--transcript applies to a recording"),
    (["a.visemes.csv", "-o", "a.csv"], "is the audio file"),  # the CSV export's second file
    (["--text", " ", "-o", "m.json"], "the text is empty"),
    (["--text", "Hello.", "--voice", "xx-nonexistent", "-o", "m.json"], "unknown voice"),
    (["grid_lwbsza.wav", "--image", "tiny.png", "-o", "m.json"], "too small to hold a face"),
    (["silence.wav", "-o", "m.json"], "is silent"),
])
def test_lipsync_mistakes_are_refused_before_the_models_load(workdir, args, expected):
    """`talkingface lipsync` imported torch and the pipeline (6-10 s here) before it looked at its output path, and
    found a silent recording, a tiny photo or a bad voice only after that. Now checked first, as render does:
    the refusal comes without torch ever being imported."""
    import wave

    from PIL import Image

    Image.new("RGB", (20, 20)).save(workdir / "tiny.png")
    with wave.open(str(workdir / "silence.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(16000, np.int16).tobytes())
    (workdir / "a.visemes.csv").write_bytes((workdir / "grid_lwbsza.wav").read_bytes())
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    code = ("import sys; from talkingface.cli import main; rc = main(sys.argv[1:]); "
            "print('torch' in sys.modules, rc)")
    r = subprocess.run([sys.executable, "-c", code, "lipsync", *args], capture_output=True, text=True, cwd=workdir,
                       env=GLOG, timeout=120)
    assert r.stdout.split() == ["False", "1"] and expected in _error_line(r), (r.stdout, r.stderr)
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


def test_a_photo_is_told_from_a_video(tmp_path, astronaut_path, grid_video_path):
    """Pillow opens photos (and, through its MPEG plugin, an MPEG-1 stream's first header): only a one-frame
    picture is a photo; ffmpeg's header duration of a raw stream (0.01 s for 1 s here) is not trusted."""
    m1v = tmp_path / "v.m1v"
    subprocess.run([media.ffmpeg_exe(), "-y", "-i", grid_video_path, "-t", "0.4", "-c:v", "mpeg1video", "-f",
                    "mpeg1video", str(m1v)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert media.is_still_image(astronaut_path) and not media.is_still_image(grid_video_path)
    assert not media.is_still_image(m1v) and media.probe_video(m1v).display_size == (360, 288)
    with pytest.raises(InputError, match="is a photo, not a video"):
        media.probe_video(astronaut_path)
    with pytest.raises(InputError, match="no video stream"):
        media.probe_video(ROOT / "demo" / "grid_lwbsza.wav")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only folder")
def test_unwritable_output_folder(tmp_path, astronaut_path, grid_wav_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="not writable"):
            checks.output_file(ro / "o.mp4")
    finally:
        ro.chmod(0o700)


def test_tiny_images_and_short_audio_named(tmp_path, astronaut_path, grid_wav_path, pipeline):
    from PIL import Image

    for w, h in ((1, 1), (1, 300), (300, 1), (20, 200)):
        p = tmp_path / f"tiny_{w}x{h}.png"
        Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(p)
        r = _cli("render", "--image", p, "--audio", grid_wav_path, "-o", tmp_path / "o.mp4")
        assert r.returncode == 1 and f"{w}x{h} px: too small to hold a face" in _error_line(r)
        with pytest.raises(InputError, match=f"{w}x{h} px"):  # the API, with an array
            pipeline.render(np.full((h, w, 3), 128, np.uint8), grid_wav_path)
    short = tmp_path / "short.wav"
    import wave

    with wave.open(str(short), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.sin(np.arange(1600) / 5) * 8000).astype(np.int16).tobytes())
    r = _cli("render", "--image", astronaut_path, "--audio", short, "-o", tmp_path / "o.mp4")
    assert r.returncode == 1 and "too short: 0.10 s" in _error_line(r)
    assert not (tmp_path / "o.mp4").exists()


def test_audio_arrays_must_be_float_mono(pipeline, astronaut_path, grid_wav):
    """A (n, 2) stereo array was flattened into one channel twice as long (a video of double length, its mouth
    off the speech), and int16 samples were taken as floats 32768 times too loud; both are refused, named."""
    wav = grid_wav[:16000]
    with pytest.raises(InputError, match=r"must be mono \(n,\) at 16 kHz, got shape \(16000, 2\)"):
        pipeline.render(astronaut_path, np.stack([wav, wav], axis=1))
    with pytest.raises(InputError, match="must hold float samples"):
        pipeline.render(astronaut_path, (wav * 32767).astype(np.int16))
    res = pipeline.render(astronaut_path, wav[None, :, None].astype(np.float64))  # (1, n, 1) is mono
    assert res.n_frames == 25


def test_landmarks_json_failing_removes_the_video_too(tmp_path):
    from talkingface.cli import _write_landmarks_json

    video = tmp_path / "o.mp4"
    video.write_bytes(b"video")
    gone = tmp_path / "gone"
    from types import SimpleNamespace

    result = SimpleNamespace(mouth_landmarks=np.zeros((3, 59, 2)), fps=25, duration=0.12, output=str(video))
    with pytest.raises(TalkingFaceError, match="landmarks-json"):
        _write_landmarks_json(str(gone / "m.json"), result, None, "photo")
    assert list(tmp_path.iterdir()) == []  # both or neither
    _write_landmarks_json(str(tmp_path / "m.json"), result, None, "photo")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


# --- interruption ---------------------------------------------------------------------------------------------


def _default_sigint() -> None:
    """A child of a background job inherits SIGINT ignored (and Python then keeps it so): undo that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _render_proc(tmp_path, astronaut_path, grid_wav_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    out.mkdir(), tmp.mkdir()
    env = {**GLOG, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "talkingface", "render", "--image", astronaut_path, "--text",
                             "Hello there. This sentence is long enough to still be rendering when it stops. " * 3,
                             "-o", str(out / "talk.mp4")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=_default_sigint)
    return proc, out, tmp


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_while_writing_leaves_nothing(tmp_path, astronaut_path, grid_wav_path, sig, code, word):
    """SIGTERM (like Ctrl-C) while the encoder writes: workers stopped, the hidden output and the writer's and
    the speech's temporary folders removed, one line, non-zero exit."""
    proc, out, tmp = _render_proc(tmp_path, astronaut_path, grid_wav_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(p.name.startswith(".talk.tmp-") for p in out.iterdir()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert any(tmp.iterdir())  # the writer's (and the speech's) temporary folders exist now
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code
    assert err.strip().splitlines() == [f"talkingface: {word}; no output was written"]
    assert list(out.iterdir()) == []
    # onnxruntime (the TTS runtime) leaves a '.ses' session marker in the temp folder on import: not ours
    assert [p.name for p in tmp.iterdir() if p.name != ".ses"] == []


def test_ctrl_c_in_the_first_second_is_one_line(tmp_path, astronaut_path, grid_wav_path):
    proc = subprocess.Popen([sys.executable, "-m", "talkingface", "render", "--image", astronaut_path, "--audio",
                             grid_wav_path, "-o", str(tmp_path / "o.mp4")], stderr=subprocess.PIPE, text=True,
                            env=GLOG, preexec_fn=_default_sigint)
    time.sleep(0.8)  # the checks or the model loading
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines() == ["talkingface: interrupted; no output was written"]
    assert list(tmp_path.iterdir()) == []


_SWALLOW = """
import os, signal, sys, time, weakref
from talkingface import cli

def ctrl_c():
    os.kill(os.getpid(), signal.SIG{sig})
    time.sleep(5)  # the handler raises here

class Lock:
    pass

def fake_render(args):  # stands in for the checks and imports a Ctrl-C lands in
    {what}
    bar, progress = cli._bar(args, "render")
    progress(1, 10)  # the render's first progress callback
    open(args.output, "w").write("rendered")
    return 0

cli._render = fake_render
sys.exit(cli.main(["render", "--image", "a.jpg", "--audio", "a.wav", "-o", "o.mp4"]))
"""
# importlib's module-lock weakref callback: CPython prints "Exception ignored in: ..." and goes on
_IN_A_CALLBACK = "lock = Lock(); ref = weakref.ref(lock, lambda r: ctrl_c()); del lock"
# numpy's C import macro: PyErr_Print (the traceback, through sys.excepthook), then an ImportError
_IN_AN_IMPORT = """try:
        ctrl_c()
    except KeyboardInterrupt as e:
        sys.excepthook(*sys.exc_info())
        raise ImportError("numpy._core.multiarray failed to import") from e"""


@pytest.mark.parametrize("sig,code,word", [("INT", 130, "interrupted"), ("TERM", 143, "terminated")])
@pytest.mark.parametrize("what", [_IN_A_CALLBACK, _IN_AN_IMPORT], ids=["callback", "import"])
def test_ctrl_c_that_a_library_swallows_or_turns_into_an_error(tmp_path, sig, code, word, what):
    """Ctrl-C in the first second, 24 tries 0.1 s apart: 21 gave the one line; at 0.7 s and 2.1 s numpy's import
    turned it into an ImportError traceback (exit 1), at 0.5 s the import lock's callback swallowed it and the render
    wrote its output (exit 0). Both library behaviours reproduced here with a real signal."""
    r = subprocess.run([sys.executable, "-c", _SWALLOW.replace("{sig}", sig).replace("{what}", what)],
                       capture_output=True, text=True, cwd=tmp_path, env=GLOG, timeout=120, preexec_fn=_default_sigint)
    assert r.returncode == code and r.stderr.strip().splitlines() == [f"talkingface: {word}; no output was written"], \
        r.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_code_run_from_a_string_exits_130_under_python_m(tmp_path):
    """A Ctrl-C that lands in code exec'd from a string (dataclasses build their methods so while modules import)
    made `python -m talkingface` end by SIGINT (status -2) after printing its line: 2 of 24 tries."""
    mod = tmp_path / "mod"
    mod.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    what = 'exec("import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(5)")'
    (mod / "fake_talkingface.py").write_text(_SWALLOW.replace("{sig}", "INT").replace("{what}", what))
    r = subprocess.run([sys.executable, "-m", "fake_talkingface"], capture_output=True, text=True, cwd=work,
                       env={**GLOG, "PYTHONPATH": f"{mod}{os.pathsep}{ROOT}"}, timeout=120, preexec_fn=_default_sigint)
    assert r.returncode == 130 and r.stderr.strip() == "talkingface: interrupted; no output was written", r.stderr
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("start", ["runpy.run_module('talkingface', run_name='__main__')",  # python -m talkingface
                                   "from talkingface.__main__ import run; sys.exit(run())"])  # the console script
def test_ctrl_c_while_the_command_starts_is_one_line(tmp_path, start):
    """Ctrl-C 0.4 s after `python -m talkingface` (still importing the command line: argparse, gettext) was a
    KeyboardInterrupt traceback: the import is now inside the handling too, for the `talkingface` command as well."""
    code = ("import runpy, sys\n"
            "class Interrupt:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'talkingface.cli':\n"
            "            raise KeyboardInterrupt\n"
            "sys.meta_path.insert(0, Interrupt())\n" + start + "\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=GLOG,
                       timeout=60)
    assert r.returncode == 130 and r.stderr.strip() == "talkingface: interrupted; no output was written", r.stderr
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"talkingface": "talkingface.__main__:run"}


def test_a_signal_after_the_work_is_done_is_not_called_success(tmp_path):
    code = _SWALLOW.replace("{sig}", "INT").replace("{what}", _IN_A_CALLBACK).replace("progress(1, 10)", "pass")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=GLOG,
                       timeout=120, preexec_fn=_default_sigint)
    assert r.returncode == 130 and r.stderr.strip() == "talkingface: interrupted too late to stop: the work was done"


def test_ctrl_c_is_the_demos_normal_end(tmp_path):
    """The page's server stops on Ctrl-C (Gradio catches it and closes): exit 0, no 'interrupted' line."""
    code = (_SWALLOW.split("cli._render = fake_render")[0] + (
        "import talkingface.web as web\n"
        "def serve(args):\n"
        "    try:\n"
        "        ctrl_c()\n"
        "    except KeyboardInterrupt:\n"
        "        print('closing server')\n"
        "    return 0\n"
        "web.main = serve\n"
        "sys.exit(cli.main(['demo']))\n")).replace("{sig}", "INT").replace("{what}", "pass")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=GLOG,
                       timeout=120, preexec_fn=_default_sigint)
    assert r.returncode == 0 and r.stdout.strip() == "closing server" and r.stderr.strip() == "", r.stderr


def test_main_leaves_the_signal_handlers_as_it_found_them():
    from talkingface import cli

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    assert cli.main(["render", "--image", "x.jpg", "--audio", "y.wav", "-o", "o.mp4"]) == 1  # x.jpg missing
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook) == before


# --- odd sizes -------------------------------------------------------------------------------------------------


def test_writer_pads_odd_sizes_and_keeps_every_pixel(tmp_path):
    rng = np.random.default_rng(1)
    frames = [np.repeat(np.repeat(np.repeat(rng.integers(0, 255, (31, 41, 1), dtype=np.uint8), 3, 2), 4, 0), 4, 1)
              [:123, :161] for _ in range(5)]  # 161 x 123, grey blocks that H.264 keeps (no chroma subsampling)
    with pytest.raises(ValueError, match="even"):
        media.VideoWriter(tmp_path / "a.mp4", 25, 161, 123)
    with media.VideoWriter(tmp_path / "a.mp4", 25, 161, 123, pad_odd=True, crf=0) as vw:
        for f in frames:
            vw.write(f)
    info = media.probe(tmp_path / "a.mp4")
    assert (info.width, info.height) == (162, 124)
    back = next(iter(media.iter_video_frames(tmp_path / "a.mp4")))
    assert np.abs(back[:123, :161].astype(int) - frames[0]).mean() < 2  # every input pixel is there
    assert np.abs(back[123].astype(int) - back[122]).mean() < 2  # the padding repeats the last row


@pytest.mark.parametrize("size", [(360, 287), (359, 288)])
def test_dub_odd_video_sizes(pipeline, grid_video_path, tmp_path, size):
    """640x481-like videos (one odd side) crashed; now dubbed, every pixel kept, padded by one to even."""
    w, h = size
    odd = tmp_path / "odd.mkv"
    subprocess.run([media.ffmpeg_exe(), "-y", "-i", grid_video_path, "-vf", f"format=yuv444p,crop={w}:{h}:0:0", "-c:v", "ffv1",
                    "-c:a", "copy", str(odd)], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert media.probe(odd).display_size == (w, h)
    out = tmp_path / "out.mp4"
    res = pipeline.dub(odd, ROOT / "demo" / "grid_sbwe5n.wav", output=out)
    assert res.frames_dubbed == res.n_frames
    o = media.probe(out)
    assert (o.width, o.height) == (w + w % 2, h + h % 2)
    src = next(iter(media.iter_video_frames(odd)))
    dub = next(iter(media.iter_video_frames(out)))
    from talkingface import metrics

    assert metrics.psnr(src[:100], dub[:100, :w]) > 30  # the same picture, not rescaled


# --- several faces ---------------------------------------------------------------------------------------------


def _faces_grid(astronaut, n: int, tile: int = 256, gap: int = 64, rows: int = 1) -> np.ndarray:
    import cv2

    t = cv2.resize(astronaut, (tile, tile), interpolation=cv2.INTER_AREA)
    canvas = np.full((rows * (tile + gap) + gap, n * tile + (n + 1) * gap, 3), 200, np.uint8)
    for r in range(rows):
        for i in range(n):
            y, x = gap + r * (tile + gap), gap + i * (tile + gap)
            canvas[y:y + tile, x:x + tile] = t
    return canvas


def test_every_visible_face_is_found_up_to_the_limit(astronaut):
    """Five well-separated faces gave "no face found" (the full-range detector sees the wide photo at 192 px);
    the tiles find them all, and a crowd is cut at the shared limit, largest first."""
    with face.FaceTracker(static=True) as tracker:  # max_faces: checks.MAX_FACES
        _faces_found(tracker, astronaut)


def _faces_found(tracker, astronaut):
    for n, rows, tile in ((5, 1, 256), (3, 2, 256)):
        faces = tracker.detect(_faces_grid(astronaut, n, tile=tile, gap=tile // 4, rows=rows))
        assert len(faces) == min(n * rows, checks.MAX_FACES), (n, rows, len(faces))
        xs = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
        assert min(np.diff(xs)) > 0 or rows > 1  # distinct faces
    crowd = tracker.detect(_faces_grid(astronaut, 12))
    assert len(crowd) == checks.MAX_FACES
    assert len(tracker.detect(astronaut)) == 1  # and no suit, badge or hair is taken for a face
    big = _faces_grid(astronaut, 1, tile=600, gap=10)
    assert len(tracker.detect(big)) == 1


def test_face_index_beyond_four_renders(pipeline, astronaut, grid_wav, tmp_path):
    from talkingface import RenderOptions

    img = _faces_grid(astronaut, 6)
    res = pipeline.render(img, grid_wav[:24000], options=RenderOptions(face_index=5))
    assert res.n_faces == 6 and len(res.mouth_landmarks) == res.n_frames == 38
    x0, y0, x1, y1 = res.face_box
    assert np.isfinite(res.mouth_landmarks).all()
    assert ((res.mouth_landmarks[..., 0] > x0) & (res.mouth_landmarks[..., 0] < x1)).all()  # on that face


def test_detection_tiles_cover_the_image():
    for h, w in ((384, 1664), (672, 672), (720, 1280), (3000, 4000)):
        for side in face.tile_sides(h, w, 128):
            origins = face.tile_origins(h, w, side)
            covered = np.zeros((h, w), bool)
            for y, x in origins:
                covered[y:y + side, x:x + side] = True
            assert covered.all()
        assert sum(len(face.tile_origins(h, w, s)) for s in face.tile_sides(h, w, 128)) <= 96
    # one box per face: the larger of two overlapping ones (an eye inside a face, a face cut by a tile), scored
    assert face.merge_boxes([(0.9, (2, 2, 6, 6)), (0.5, (1, 1, 11, 11)), (0.8, (0, 0, 10, 10)),
                             (0.7, (50, 50, 60, 60))]) == [(0.9, (0, 0, 10, 10)), (0.7, (50, 50, 60, 60))]


def test_no_pillow_warning_on_big_images(tmp_path, monkeypatch):
    """Pillow's DecompressionBombWarning went to stderr before talkingface's own one-line size error."""
    import warnings

    from PIL import Image

    p = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 px: Pillow warns (it raises above 2000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert media.load_image(p).shape == (30, 40, 3)
        with pytest.raises(InputError, match="too large"):
            media.load_image(p, max_pixels=1000)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_downscaled_crops_are_not_aliased():
    """warp_crop passed INTER_AREA to warpAffine, which ignores it (bilinear): a large face's fine texture
    aliased into the small crop. 1-px stripes shrunk 8x must come out as even grey, not as stripes or moire."""
    import cv2

    stripes = np.zeros((1024, 1024, 3), np.uint8)
    stripes[:, ::2] = 255
    affine = np.array([[0.125, 0.01, 3.3], [-0.01, 0.125, 5.1]])  # 8x smaller, slightly rotated
    crop = face.warp_crop(stripes, affine, 112)
    plain = cv2.warpAffine(stripes, affine, (112, 112), flags=cv2.INTER_LINEAR)  # what it did before
    assert plain.std() > 40  # aliased
    assert crop.std() < 6 and abs(crop.mean() - 127.5) < 4
    same = np.array([[1.0, 0, -10], [0, 1.0, -20]])  # no shrinking: an exact copy, as before
    assert np.array_equal(face.warp_crop(stripes, same, 64), stripes[20:84, 10:74])


def test_no_face_in_a_video_is_said_so(pipeline, tmp_path, grid_wav_path):
    """The page always asks for face 0; a video without faces said "face index 0 requested but ... shows at
    most 0 face(s)"."""
    from talkingface import DubOptions
    from talkingface.errors import NoFaceError

    still = tmp_path / "noface.mp4"
    with media.VideoWriter(still, 25, 128, 96) as vw:
        for i in range(10):
            vw.write(np.full((96, 128, 3), 40 + i, np.uint8))
    with pytest.raises(NoFaceError, match="^no face found in any of the 10 frames of"):
        pipeline.dub(still, grid_wav_path, output=tmp_path / "o.mp4", options=DubOptions(face_index=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["noface.mp4"]


# --- noise is not speech --------------------------------------------------------------------------------------


def test_noise_does_not_move_the_mouth(grid_wav):
    """3 s of white noise rendered a chattering mouth (the energy gate was open throughout). The gate now also
    needs Silero VAD to hear a voice: noise alone is refused, clean speech is gated as before, and speech under
    noise gets its pauses back."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, 48000).astype(np.float32)
    assert audio.voice_activity(audio.speech_energy(noise)).mean() > 0.9  # the old gate: open
    assert not audio.speech_mask(noise).any()
    with pytest.raises(SilentAudioError, match="no voice"):
        audio.check_speech(noise, "noise.wav")
    old = audio.voice_activity(audio.speech_energy(grid_wav))
    new = audio.speech_mask(grid_wav)
    assert (old != new).mean() < 0.02 and 0.3 < new.mean() < 0.7  # clean speech: the same gate
    audio.check_speech(grid_wav, "grid.wav")  # passes
    rms = float(np.sqrt(np.mean(grid_wav ** 2)))
    noisy = grid_wav + rng.normal(0, rms / 3, len(grid_wav)).astype(np.float32)  # about 10 dB SNR
    assert audio.voice_activity(audio.speech_energy(noisy)).mean() > 0.95
    assert audio.speech_mask(noisy).mean() < 0.8  # the pauses are found again


def test_noise_refused_by_the_cli_before_loading(tmp_path, astronaut_path):
    import wave

    p = tmp_path / "noise.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.random.default_rng(1).normal(0, 0.1, 48000) * 32767).clip(-32767, 32767)
                      .astype(np.int16).tobytes())
    r = _cli("render", "--image", astronaut_path, "--audio", p, "-o", tmp_path / "o.mp4")
    assert r.returncode == 1 and "has no voice in it" in _error_line(r)
    assert not (tmp_path / "o.mp4").exists()


def test_espeak_voices_named_by_language_speak(tmp_path, monkeypatch):
    """'fr-fr' (the --voice help's own example) and 'en-gb' ended in a wave.Error traceback: espeak-ng knows
    them by file name ('fr', 'en'), and the wave file's close hid the real error."""
    from talkingface import tts

    for voice in ("fr-fr", "en-gb"):
        sp = tts.synthesize_to_file("Bonjour. Hello there.", tmp_path / f"{voice}.wav", voice=voice)
        assert sp.duration > 0.5 and sp.voice == voice
    monkeypatch.setattr(tts, "resolve_voice", lambda name: tts.Voice("xx", "xx", "espeak", "a voice espeak lacks"))
    with pytest.raises(InputError, match="no voice for language"):  # the real error, not wave.Error
        tts.synthesize_to_file("Hello.", tmp_path / "x.wav", voice="xx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["en-gb.wav", "fr-fr.wav"]  # no temporary left
