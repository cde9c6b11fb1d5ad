"""Provenance: every output carries signed C2PA content credentials and an invisible watermark; verify finds them."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from talkingface import media, provenance, watermark
from talkingface.errors import InputError
from talkingface.pipeline import DEFAULT_MODELS
from talkingface.provenance import Label


def _ffmpeg(*args: str) -> None:
    subprocess.run([media.ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))


@pytest.mark.parametrize("size", [(512, 512), (288, 360), (256, 256)])
def test_embedding_is_invisible_and_detected(astronaut, size):
    import cv2

    h, w = size
    img = cv2.resize(astronaut, (w, h), interpolation=cv2.INTER_AREA)
    marked = watermark.embed(img)
    assert _psnr(marked, img) >= 45.0
    found = watermark.detect_frames([marked] * 4)
    assert found.found and found.tiles == watermark.tiles_per_side(h, w), found
    clean = watermark.detect_frames([img] * 4)
    assert not clean.found and clean.score < watermark.THRESHOLD - 1.0


def test_pattern_period_is_a_fraction_of_the_shorter_side():
    """Version 2: a quarter of the shorter side from 400 px up, half of it below (v1: a quarter everywhere)."""
    assert watermark.VERSION == 2
    assert watermark.tiles_per_side(400, 640) == 4 and watermark.tiles_per_side(399, 640) == 2
    assert watermark.tiles_per_side(1080, 1920) == 4 and watermark.tiles_per_side(288, 360) == 2
    for (h, w), period in (((512, 512), 128), ((288, 360), 144), ((360, 640), 180)):
        pat = watermark.pattern_for(h, w)
        assert abs(pat.std() - 1.0) < 1e-3
        assert np.abs(pat[period:] - pat[:-period]).max() < 1e-3  # repeats after one period, down and across
        assert np.abs(pat[:, period:] - pat[:, :-period]).max() < 1e-3
        assert np.abs(pat[period // 2:] - pat[:-(period // 2)]).mean() > 0.5  # and not after half of it
    v1 = watermark.pattern_for(288, 360, 4.0)
    assert np.abs(v1[72:] - v1[:-72]).max() < 1e-3


def _scaled_copy(src: str, dst, vf: str) -> None:
    _ffmpeg("-i", src, "-an", "-vf", vf, "-c:v", "libx264", "-crf", "23", "-preset", "veryfast", str(dst))


def test_half_size_copy_of_a_small_output_is_detected(tmp_path, grid_video_path):
    """The bug of version 1: a 360x288 output scaled to half size (then H.264 crf 23) lost the mark (score ~5);
    with half the shorter side as the period it keeps it. The old tiling still fails here, the unmarked clip too."""
    frames = list(media.iter_video_frames(grid_video_path))[:50]
    h, w = frames[0].shape[:2]
    assert (w, h) == (360, 288)
    new, old = tmp_path / "v2.mp4", tmp_path / "v1.mp4"
    with media.VideoWriter(new, 25, w, h, label=Label("dub", credentials=False)) as vw:
        for f in frames:
            vw.write(f)
    mark_v1 = watermark.Embedder(h, w, tiles=4.0)
    with media.VideoWriter(old, 25, w, h) as vw:
        for f in frames:
            vw.write(mark_v1(f))
    scores = {}
    for name, src in (("v2", new), ("v1", old), ("unmarked", grid_video_path)):
        half = tmp_path / f"{name}-half.mp4"
        _scaled_copy(str(src), half, "scale=180:144")
        scores[name] = provenance.verify(half).watermark
    assert scores["v2"].found and scores["v2"].tiles == 2, scores
    assert not scores["v1"].found and not scores["unmarked"].found, scores
    assert scores["v2"].score > scores["v1"].score + 3.0, scores


def test_version_1_marks_are_still_found(tmp_path, grid_video_path):
    """Videos written before version 2 (a quarter of the shorter side on small frames) are still detected, also
    after a 10% crop."""
    frames = list(media.iter_video_frames(grid_video_path))[:40]
    h, w = frames[0].shape[:2]
    mark_v1 = watermark.Embedder(h, w, tiles=4.0)
    old = tmp_path / "v1.mp4"
    with media.VideoWriter(old, 25, w, h) as vw:
        for f in frames:
            vw.write(mark_v1(f))
    d = provenance.verify(old).watermark
    assert d.found and d.tiles == 4, d
    crop = tmp_path / "v1-crop.mp4"
    _scaled_copy(str(old), crop, "crop=324:258")
    d = provenance.verify(crop).watermark
    assert d.found and d.tiles == 4, d


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
    assert set(v.manifest_facts["models"]) >= {DEFAULT_MODELS["landmarks"]}
    assert v.manifest_facts["watermark"]["version"] == watermark.VERSION
    # a dub edits the input video: opened (the input, its parent ingredient), then edited with AI compositing
    assert v.actions == ["c2pa.opened", "c2pa.edited"], v.report()
    assert v.source_type == "compositeWithTrainedAlgorithmicMedia" and v.parent == "grid_lwbsza.mp4"
    assert "edited from 'grid_lwbsza.mp4'" in v.report()
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
    assert v.actions == ["c2pa.created"] and v.source_type == "trainedAlgorithmicMedia" and v.parent is None


@pytest.mark.parametrize("parent", ["junk.mp4", "input.mkv", "missing.mp4"])
def test_dub_of_an_input_the_c2pa_sdk_cannot_read_is_still_signed(tmp_path, grid_video_path, parent):
    """The parent ingredient is optional: an input the SDK cannot parse (or gone) gives a 'created' manifest."""
    src = tmp_path / parent
    if parent != "missing.mp4":
        src.write_bytes(b"not a video at all" * 20)
    out = tmp_path / "o.mp4"
    provenance.sign_mp4(grid_video_path, str(out), Label("dub", parent=str(src)), "o.mp4")
    v = provenance.verify(out, watermark=False)
    assert v.manifest == "valid" and v.actions == ["c2pa.created"] and v.parent is None, v.report()
    assert v.source_type == "compositeWithTrainedAlgorithmicMedia"


def test_local_key_is_created_once_in_the_config_folder(tmp_path, monkeypatch):
    """First use creates the key (mode 0600) and chain in <config>/c2pa; later uses reuse them; the folder follows
    $TALKINGFACE_CONFIG_DIR, else $XDG_CONFIG_HOME/talkingface."""
    import stat

    monkeypatch.delenv("TALKINGFACE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("TALKINGFACE_SIGN_KEY", raising=False)
    monkeypatch.delenv("TALKINGFACE_SIGN_CERT", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert provenance.config_dir() == tmp_path / "xdg" / "talkingface"
    monkeypatch.setenv("TALKINGFACE_CONFIG_DIR", str(tmp_path / "cfg"))
    key, cert = provenance.signing_paths()
    assert key == tmp_path / "cfg" / "c2pa" / "signer.key.pem" and not key.exists()
    Label("photo").check()
    assert key.exists() and cert.exists()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    Label("dub").check()
    assert key.read_bytes() == first  # reused, not replaced
    assert not (tmp_path / "xdg").exists()  # $TALKINGFACE_CONFIG_DIR wins over $XDG_CONFIG_HOME


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


def test_live_stream_frames_carry_the_watermark(pipeline, astronaut, grid_wav):
    """Live frames are not written to a file, but are what gets screen-recorded: they carry the mark too, also as
    the browser gets them (JPEG, quality 80) and after a blur like a screen recording's."""
    import cv2

    from talkingface.liveweb import _jpeg

    wav = grid_wav[: 2 * 16000]
    frames = [f.image for f in pipeline.stream(astronaut, [wav[i:i + 640] for i in range(0, len(wav), 640)])]
    assert len(frames) == 50
    assert watermark.detect_frames(frames).found
    sent = [cv2.imdecode(np.frombuffer(_jpeg(f), np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for f in frames]
    assert watermark.detect_frames(sent).found
    assert watermark.detect_frames([cv2.GaussianBlur(f, (0, 0), 1.5) for f in sent]).found


def test_batch_no_credentials_reaches_every_job(tmp_path, monkeypatch, grid_video_path, grid_wav_path):
    """`talkingface batch --no-credentials` (and --sign-key/--sign-cert) become every job's DubOptions."""
    import talkingface.batch
    from talkingface.cli import main

    seen = {}

    def fake_dub_batch(jobs, out_dir, *, options=None, **kw):
        seen["options"] = options
        return []

    monkeypatch.setattr(talkingface.batch, "dub_batch", fake_dub_batch)
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"video,audio,output\n{grid_video_path},{grid_wav_path},a.mp4\n")
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--no-credentials"]) == 0
    assert seen["options"] == {"credentials": False}
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    provenance._create_local_signer(key, cert)
    assert main(["batch", str(jobs), "--out-dir", str(tmp_path / "out"), "--sign-key", str(key),
                 "--sign-cert", str(cert)]) == 0
    assert seen["options"] == {"sign_key": str(key), "sign_cert": str(cert)}
