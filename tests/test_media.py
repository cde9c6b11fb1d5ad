"""Tests for talkingface.media (fixtures are generated with the imageio ffmpeg binary)."""

from __future__ import annotations

import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_processes_gone

from talkingface import media
from talkingface.errors import InputError, TalkingFaceError
from talkingface.media import (
    SAMPLE_RATE,
    MediaInfo,
    VideoWriter,
    ffmpeg_exe,
    iter_audio_chunks,
    iter_video_frames,
    load_audio,
    load_image,
    probe,
)


def _ff(*args: str) -> None:
    """Run the bundled ffmpeg to make a fixture."""
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True, stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with generated media fixtures (made once per module)."""
    d = tmp_path_factory.mktemp("media")
    sine = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2"]
    for ext in ("mp3", "flac", "ogg", "m4a"):
        _ff(*sine, "-ac", "2", str(d / f"tone.{ext}"))
    # 2 s of 30 fps video with a 2 s 44.1 kHz audio track
    _ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=2", *sine,
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-shortest", str(d / "av30.mp4"))
    _ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=1",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(d / "silent.mp4"))
    # same video, tagged as rotated 90 degrees (stream copy, display matrix only)
    _ff("-display_rotation", "90", "-i", str(d / "silent.mp4"), "-c", "copy", str(d / "rot90.mp4"))
    (d / "text.wav").write_text("this is not audio\n" * 20)
    (d / "empty.wav").write_bytes(b"")
    with wave.open(str(d / "nosamples.wav"), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(16000)
    return d


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("ext", ["mp3", "flac", "ogg", "m4a"])
def test_load_audio_resamples_to_16k_mono(fx: Path, ext: str) -> None:
    a = load_audio(fx / f"tone.{ext}")
    assert a.dtype == np.float32 and a.ndim == 1
    assert abs(a.size - 2 * SAMPLE_RATE) <= 0.01 * 2 * SAMPLE_RATE
    assert np.abs(a).max() <= 1.0
    assert 0.05 < np.sqrt(np.mean(a ** 2)) < 1.0  # the tone is there
    # dominant frequency survives resampling
    spec = np.abs(np.fft.rfft(a[:SAMPLE_RATE]))
    assert abs(np.argmax(spec) - 440) <= 2


def test_load_audio_other_rate(fx: Path) -> None:
    a = load_audio(fx / "tone.flac", sr=8000)
    assert abs(a.size - 16000) <= 160


def test_load_audio_from_video(fx: Path) -> None:
    a = load_audio(fx / "av30.mp4")
    assert abs(a.size - 2 * SAMPLE_RATE) <= 0.01 * 2 * SAMPLE_RATE


def test_iter_audio_chunks(fx: Path) -> None:
    chunks = list(iter_audio_chunks(fx / "tone.flac", SAMPLE_RATE, 0.5))
    assert [c.size for c in chunks[:-1]] == [8000] * (len(chunks) - 1)
    full = np.concatenate(chunks)
    np.testing.assert_array_equal(full, load_audio(fx / "tone.flac"))


def test_iter_audio_chunks_early_close_kills_ffmpeg(fx: Path, ffmpeg_children) -> None:
    gen = iter_audio_chunks(fx / "tone.flac", SAMPLE_RATE, 0.1)
    assert next(gen).size == 1600
    assert len(ffmpeg_children) == 1 and ffmpeg_children[0].poll() is None  # decoding is under way
    gen.close()  # must not hang or leave a zombie
    assert_processes_gone(ffmpeg_children)
    assert ffmpeg_children[0].returncode != 0  # killed, not run to its end


def test_load_audio_max_seconds(fx: Path) -> None:
    with pytest.raises(InputError, match="too long"):
        load_audio(fx / "tone.mp3", max_seconds=1.0)
    assert load_audio(fx / "tone.mp3", max_seconds=3.0).size > 0


def test_load_audio_first_seconds(fx: Path) -> None:
    """Only the start is decoded, and then the length limit does not apply (the start is short)."""
    full = load_audio(fx / "tone.flac")
    head = load_audio(fx / "tone.flac", max_seconds=0.1, first_seconds=0.5)
    assert abs(head.size - SAMPLE_RATE // 2) <= 0.01 * SAMPLE_RATE
    np.testing.assert_allclose(head, full[: head.size], atol=1e-4)
    assert load_audio(fx / "av30.mp4", first_seconds=10.0).size == load_audio(fx / "av30.mp4").size
    with pytest.raises(ValueError, match="first_seconds"):
        load_audio(fx / "tone.flac", first_seconds=0)


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("missing.wav", "does not exist"),
        ("text.wav", "could not be decoded: .*Invalid data"),
        ("empty.wav", "empty"),
        ("silent.mp4", "no audio stream"),
        ("nosamples.wav", "no audio samples"),
    ],
)
def test_load_audio_errors(fx: Path, name: str, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern) as ei:
        load_audio(fx / name)
    msg = str(ei.value)
    assert name in msg and "\n" not in msg


def test_load_audio_directory(fx: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        load_audio(fx)


# ----------------------------------------------------------------------------- probe


def test_probe(fx: Path) -> None:
    info = probe(fx / "av30.mp4")
    assert isinstance(info, MediaInfo)
    assert info.has_audio and info.has_video
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(2.0, abs=0.1)
    assert info.rotation == 0
    a = probe(fx / "tone.mp3")
    assert a.has_audio and not a.has_video and a.width is None and a.fps is None


def test_probe_rotation(fx: Path) -> None:
    info = probe(fx / "rot90.mp4")
    assert abs(info.rotation) == 90
    assert info.display_size == (48, 64)
    frames = list(iter_video_frames(fx / "rot90.mp4", fps=None))
    assert frames[0].shape == (64, 48, 3)


def test_parse_probe_legacy_formats() -> None:
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mov':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 110 kb/s
  Stream #0:0(und): Video: h264 (avc1 / 0x31637661), yuv420p(tv, bt709), 1920x1080, 29.97 fps, 29.97 tbr (default)
    Metadata:
      rotate          : 90
    Side data:
      displaymatrix: rotation of -90.00 degrees
  Stream #0:1(und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp (default)
  Stream #0:2: Video: mjpeg, yuvj420p, 300x300, 90k tbr (attached pic)
"""
    info = media._parse_probe(text)
    assert info == MediaInfo(62.5, True, True, 1920, 1080, 29.97, -90, 29.97)


def test_probe_errors(fx: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        probe(fx / "nope.mp4")
    with pytest.raises(InputError, match="Invalid data"):
        probe(fx / "text.wav")


# ----------------------------------------------------------------------------- images


def test_load_image_exif_rotation(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    arr = load_image(p)
    assert arr.shape == (40, 20, 3) and arr.dtype == np.uint8


def test_load_image_rgba_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[:, :6] = (0, 0, 255, 255)  # opaque blue left half, transparent right half
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    arr = load_image(p)
    assert arr.shape == (10, 12, 3)
    assert tuple(arr[5, 2]) == (0, 0, 255)
    assert tuple(arr[5, 10]) == (255, 255, 255)


def test_load_image_palette_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (8, 8), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.paste(1, (0, 0, 4, 8))
    p = tmp_path / "p.png"
    im.save(p, transparency=0)
    arr = load_image(p)
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[0, 7]) == (255, 255, 255)


@pytest.mark.parametrize("ext", ["png", "jpg", "bmp", "webp"])
def test_load_image_grayscale_to_rgb(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"g.{ext}"
    Image.new("L", (16, 9), 128).save(p)
    arr = load_image(p)
    assert arr.shape == (9, 16, 3) and arr.dtype == np.uint8
    assert abs(int(arr[4, 8, 0]) - 128) <= 3 and arr[4, 8, 0] == arr[4, 8, 2]


def test_load_image_16bit_gray(tmp_path: Path) -> None:
    p = tmp_path / "g16.png"
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(p)
    arr = load_image(p)
    assert arr.shape == (4, 5, 3) and arr.min() == 255


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="bad.jpg.*could not be read"):
        load_image(bad)
    good = tmp_path / "ok.jpg"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good)
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:200])
    with pytest.raises(InputError, match="trunc.jpg"):
        load_image(trunc)
    with pytest.raises(InputError, match="too large"):
        load_image(good, max_pixels=1000)
    gif = tmp_path / "x.gif"
    Image.new("RGB", (4, 4)).save(gif)
    with pytest.raises(InputError, match="unsupported format GIF"):
        load_image(gif)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")


# ----------------------------------------------------------------------------- video


def test_iter_video_frames_resamples_30_to_25(fx: Path) -> None:
    n = sum(1 for _ in iter_video_frames(fx / "av30.mp4", fps=25.0))
    assert 48 <= n <= 52  # 2 s at 25 fps
    n_native = sum(1 for _ in iter_video_frames(fx / "av30.mp4", fps=None))
    assert 58 <= n_native <= 62


def test_iter_video_frames_max_side_and_early_close(fx: Path, ffmpeg_children) -> None:
    gen = iter_video_frames(fx / "av30.mp4", fps=25.0, max_side=33)
    frame = next(gen)
    assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
    gen.close()
    assert_processes_gone([p for p in ffmpeg_children if p.stdout is not None])  # the decoder (not ffprobe)


def test_iter_video_frames_errors(fx: Path) -> None:
    with pytest.raises(InputError, match="no video stream"):
        iter_video_frames(fx / "tone.mp3")
    with pytest.raises(InputError, match="does not exist"):
        iter_video_frames(fx / "nope.mp4")


def _color_frames(n: int, h: int = 48, w: int = 64) -> list[np.ndarray]:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    return [np.full((h, w, 3), colors[(i // 10) % 3], np.uint8) for i in range(n)]


def test_video_writer_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    t = np.arange(int(1.2 * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = _color_frames(30)
    with VideoWriter(out, 25, 64, 48, audio=audio, audio_sr=SAMPLE_RATE) as vw:
        for f in frames:
            vw.write(f)
    assert vw.frames_written == 30
    assert out.is_file()
    assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # no temp file left behind
    info = probe(out)
    assert info.has_audio and info.has_video
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(1.2, abs=0.08)
    back = list(iter_video_frames(out, fps=25.0))
    assert len(back) == 30
    for i in (0, 15, 29):
        mean = back[i].reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - frames[i][0, 0]).max() < 20
    a = load_audio(out)
    assert abs(a.size - audio.size) < 0.05 * audio.size


def test_video_writer_audio_file_and_duration(fx: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut.mp4"
    with VideoWriter(out, 25, 64, 48, audio=fx / "tone.m4a", duration=0.6) as vw:
        for f in _color_frames(40):  # 1.6 s of frames, cut to 0.6 s
            vw.write(f)
    assert vw.frames_written == 15
    info = probe(out)
    assert info.has_audio and info.duration == pytest.approx(0.6, abs=0.08)


def test_video_writer_atomic_on_exception(tmp_path: Path, ffmpeg_children) -> None:
    out = tmp_path / "out.mp4"

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with VideoWriter(out, 25, 64, 48) as vw:
            for f in _color_frames(5):
                vw.write(f)
            raise Boom()
    assert os.listdir(tmp_path) == []
    assert_processes_gone(ffmpeg_children)  # the encoder was killed and reaped


def test_video_writer_keeps_existing_target_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 25, 64, 48) as vw:
            vw.write(_color_frames(1)[0])
            raise RuntimeError("stop")
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_video_writer_no_frames_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TalkingFaceError, match="no frames"):
        with VideoWriter(tmp_path / "x.mp4", 25, 64, 48):
            pass
    assert os.listdir(tmp_path) == []


def test_video_writer_missing_folder(tmp_path: Path) -> None:
    target = tmp_path / "nope" / "out.mp4"
    with pytest.raises(InputError, match="nope"):
        VideoWriter(target, 25, 64, 48)
    assert not (tmp_path / "nope").exists()
    assert os.listdir(tmp_path) == []


def test_video_writer_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "o.mp4", 25, 63, 48)
    with pytest.raises(InputError, match="does not exist"):
        VideoWriter(tmp_path / "o.mp4", 25, 64, 48, audio=tmp_path / "missing.wav")
    with VideoWriter(tmp_path / "o.mp4", 25, 64, 48) as vw:
        with pytest.raises(ValueError, match="shape"):
            vw.write(np.zeros((48, 62, 3), np.uint8))
        with pytest.raises(TypeError, match="uint8"):
            vw.write(np.zeros((48, 64, 3), np.float32))
        vw.write(np.zeros((48, 64, 3), np.uint8))
    assert (tmp_path / "o.mp4").is_file()


def test_variable_rate_video_keeps_its_nominal_rate():
    """A VFR phone video averaging 22.13 fps is a 30 fps video with dropped frames: keep 30 (regression)."""
    text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:00:06.13, start: 0.000000, bitrate: 870 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p(progressive), 700x700, 628 kb/s, 22.13 fps, 30 tbr, 15360 tbn, start 0.033008 (default)
"""
    info = media._parse_probe(text)
    assert info.fps == 22.13 and info.nominal_fps == 30 and info.video_rate == 30
    cfr = media._parse_probe(text.replace("22.13 fps", "29.97 fps").replace("30 tbr", "29.97 tbr"))
    assert cfr.video_rate == 29.97


def test_writer_uses_the_cheaper_encoder_settings_from_640x360(tmp_path: Path) -> None:
    """The x264 settings that save encoder CPU are used for frames of 640 x 360 and more (where encoding is a large
    share of the CPU); smaller outputs keep the preset's own; an explicit choice is kept. Both encode a video."""
    assert VideoWriter(tmp_path / "a.mp4", 25, 256, 256).x264_params is None
    assert VideoWriter(tmp_path / "a.mp4", 25, 640, 360).x264_params == media.X264_PARAMS
    assert VideoWriter(tmp_path / "a.mp4", 25, 256, 256, x264_params="me=hex").x264_params == "me=hex"
    assert VideoWriter(tmp_path / "a.mp4", 25, 1280, 720, x264_params=None).x264_params is None
    rng = np.random.default_rng(0)
    for w, h in [(256, 256), (640, 360)]:
        out = tmp_path / f"{w}.mp4"
        with VideoWriter(out, 25, w, h) as vw:
            for _ in range(3):
                vw.write(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        assert media.probe_video(out).display_size == (w, h)
