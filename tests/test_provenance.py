"""Provenance: every output carries signed C2PA content credentials and an invisible watermark; verify finds them."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from talkingface import media, provenance, watermark
from talkingface.errors import InputError
from talkingface.provenance import Label


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


def test_embedding_is_invisible_and_detected(astronaut):
    import cv2

    img = cv2.resize(astronaut, (512, 512), interpolation=cv2.INTER_AREA)
    marked = watermark.embed(img)
    assert _psnr(marked, img) >= 45.0
    assert watermark.detect_frames([marked] * 4).found
    clean = watermark.detect_frames([img] * 4)
    assert not clean.found and clean.score < watermark.THRESHOLD - 1.0


def test_untouched_grid_fixture_has_no_provenance(grid_video_path):
    v = provenance.verify(grid_video_path)
    assert v.readable and v.manifest == "absent"
    assert not v.watermark.found, v.watermark
    assert v.exit_code == 1 and "no sign" in v.report()


@pytest.fixture(scope="module")
def dubbed(pipeline, grid_video_path, grid_wav_path, tmp_path_factory):
    """A short GRID render: the GRID clip dubbed with its own speech (2 s)."""
    from talkingface.dub import DubOptions

    out = tmp_path_factory.mktemp("prov") / "dubbed.mp4"
    wav = media.load_audio(grid_wav_path)[: 2 * 16000]
    pipeline.dub(grid_video_path, wav, output=str(out), options=DubOptions(length="trim"))
    return str(out)


def test_round_trip_manifest_valid_and_watermark_found(dubbed):
    v = provenance.verify(dubbed)
    assert v.manifest == "valid", v.report()
    assert v.by_talkingface and v.manifest_facts["mode"] == "dub"
    assert set(v.manifest_facts["models"]) >= {"landmarks-v1"}
    assert "talkingface signer" in v.signer
    assert v.watermark.found, v.watermark
    assert v.exit_code == 0


def test_watermark_survives_crf28_reencode(dubbed, tmp_path):
    out = tmp_path / "crf28.mp4"
    _ffmpeg("-i", dubbed, "-c:v", "libx264", "-crf", "28", "-c:a", "copy", str(out))
    v = provenance.verify(out)
    assert v.manifest == "absent"  # a re-encode drops the manifest...
    assert v.watermark.found, v.watermark  # ...the watermark stays
    assert v.exit_code == 0


def test_tampered_video_stream_is_reported(dubbed, tmp_path):
    data = bytearray(open(dubbed, "rb").read())
    mdat = data.find(b"mdat")
    assert mdat > 0
    pos = mdat + 4096
    data[pos] ^= 0xFF
    out = tmp_path / "tampered.mp4"
    out.write_bytes(bytes(data))
    v = provenance.verify(out, watermark=False)
    assert v.manifest == "tampered", v.report()
    assert v.manifest_problems and "TAMPERED" in v.report()


def test_metadata_stripping_remux_leaves_the_watermark(dubbed, tmp_path):
    out = tmp_path / "stripped.mp4"
    _ffmpeg("-i", dubbed, "-map", "0", "-map_metadata", "-1", "-c", "copy", str(out))
    v = provenance.verify(out)
    assert v.manifest == "absent"
    assert v.watermark.found and v.exit_code == 0


def test_opt_out_drops_the_manifest_not_the_watermark(tmp_path, grid_video_path):
    frames = list(media.iter_video_frames(grid_video_path))[:40]
    h, w = frames[0].shape[:2]
    out = tmp_path / "optout.mp4"
    with media.VideoWriter(out, 25, w, h, label=Label("photo", credentials=False)) as vw:
        for f in frames:
            vw.write(f)
    v = provenance.verify(out)
    assert v.manifest == "absent" and v.watermark.found


def test_cli_no_credentials_flag(tmp_path, astronaut_path, grid_wav_path):
    from talkingface.cli import main

    short = tmp_path / "short.wav"
    _ffmpeg("-i", grid_wav_path, "-t", "1.5", str(short))
    out = tmp_path / "out.mp4"
    assert main(["render", "--image", astronaut_path, "--audio", str(short), "-o", str(out), "--max-size", "512",
                 "--no-credentials"]) == 0
    v = provenance.verify(out)
    assert v.manifest == "absent" and v.watermark.found
    assert main(["verify", str(out)]) == 0


def test_user_supplied_key_signs(tmp_path, grid_video_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    provenance._create_local_signer(key, cert)
    frames = list(media.iter_video_frames(grid_video_path))[:10]
    h, w = frames[0].shape[:2]
    out = tmp_path / "mine.mp4"
    with media.VideoWriter(out, 25, w, h, label=Label("text", sign_key=str(key), sign_cert=str(cert))) as vw:
        for f in frames:
            vw.write(f)
    v = provenance.verify(out, watermark=False)
    assert v.manifest == "valid" and v.manifest_facts["mode"] == "text"


@pytest.mark.parametrize("problem", ["missing", "garbage", "directory", "unreadable", "another key"])
def test_unreadable_user_key_is_a_clear_error(tmp_path, problem):
    import os

    cert = tmp_path / "c.pem"
    provenance._create_local_signer(tmp_path / "k0.pem", cert)
    key = tmp_path / "k.pem"
    if problem == "garbage":
        key.write_text("not a key\n")
    elif problem == "directory":
        key.mkdir()
    elif problem == "another key":  # a valid key that the certificate does not belong to
        provenance._create_local_signer(key, tmp_path / "c2.pem")
    elif problem == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads any file")
        key.write_text("x")
        key.chmod(0)
    out = tmp_path / "o.mp4"
    with pytest.raises(InputError, match="k.pem'"):
        media.VideoWriter(out, 25, 64, 64, label=Label("photo", sign_key=str(key), sign_cert=str(cert)))
    assert not out.exists() and not list(tmp_path.glob(".o.*"))


def test_render_with_unreadable_key_writes_nothing(pipeline, astronaut_path, grid_wav, tmp_path):
    from talkingface import RenderOptions

    out = tmp_path / "o.mp4"
    opts = RenderOptions(max_size=256, sign_key=str(tmp_path / "nope.pem"), sign_cert=str(tmp_path / "nope.crt"))
    with pytest.raises(InputError, match="nope.pem"):
        pipeline.render(astronaut_path, grid_wav[:16000], output=str(out), options=opts)
    assert list(tmp_path.iterdir()) == []


def test_verify_exit_codes_for_unreadable_files(tmp_path):
    from talkingface.cli import main

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    assert provenance.verify(junk).exit_code == 2
    assert main(["verify", str(tmp_path / "missing.mp4")]) == 2
    assert main(["verify", str(junk)]) == 2


def test_odd_sized_video_is_labelled(tmp_path, grid_video_path):
    """Dubs of odd-sized videos are padded to even sides before encoding: the mark is made for the padded size."""
    frames = [f[:287, :359] for f in list(media.iter_video_frames(grid_video_path))[:30]]
    out = tmp_path / "odd.mp4"
    with media.VideoWriter(out, 25, 359, 287, pad_odd=True, label=Label("dub", credentials=False)) as vw:
        for f in frames:
            vw.write(np.ascontiguousarray(f))
    assert provenance.verify(out).watermark.found
