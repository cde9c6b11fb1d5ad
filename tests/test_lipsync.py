"""Phoneme -> viseme map, the phoneme-timing correction, forced alignment, and the mouth data export."""
from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest

from talkingface import align, cli, face, lipsync, tts
from talkingface.errors import InputError
from talkingface.phonemes import (
    CLOSED_GAP_CM,
    ROUND_WIDTH,
    SILENCE,
    Phone,
    apply_phoneme_timing,
    viseme_of,
    viseme_segments,
)

UP, LO = face.MOUTH.index(13), face.MOUTH.index(14)
L, R = face.MOUTH.index(61), face.MOUTH.index(291)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    return tts.synthesize_to_file("Bob made maps for the boat. We move in June.",
                                  tmp_path_factory.mktemp("tts") / "s.wav")


def test_viseme_map():
    assert [viseme_of(s) for s in ("m", "b", "p", "uː", "w", "f", "v", "ɑː", "æ", "l", "s", "ˈɔ", SILENCE, ".")] == \
        list("AAAFFGGDCHBEXX")
    assert viseme_of("aɪ") == "D" and viseme_of("tʃ") == "B" and viseme_of("ɹ̩") == "B"


def test_correction_closes_and_rounds():
    neutral = lipsync.default_neutral()
    track = np.repeat(neutral[None], 50, axis=0).copy()
    track[:, 20:40][:, :, 1] += 0.0
    # open every frame: lower lip and jaw 1 cm down, mouth 10 % wider
    track[:, list(range(1, 10)) + list(range(21, 30)) + list(range(40, 59)), 1] -= 1.0
    track[:, :40, 0] *= 1.1
    phones = [Phone(SILENCE, 0, 0.4), Phone("m", 0.4, 0.5), Phone("ɑ", 0.5, 1.0), Phone("u", 1.0, 1.4),
              Phone(SILENCE, 1.4, 2.0)]
    out = apply_phoneme_timing(track, neutral, phones, fps=25)
    gap = out[:, UP, 1] - out[:, LO, 1]
    assert gap[10:12].max() <= CLOSED_GAP_CM + 1e-4  # frames 10, 11 lie in [0.4, 0.5)
    assert np.allclose(out[:8], track[:8]) and np.allclose(out[14:24], track[14:24])  # far away: unchanged
    width = out[:, R, 0] - out[:, L, 0]
    rest = neutral[R - 0, 0] - neutral[L, 0]
    assert width[27:34].max() <= ROUND_WIDTH * rest + 1e-4  # "u" frames narrowed
    assert width[20] == pytest.approx(1.1 * rest, rel=1e-4)
    # lips stay ordered: upper above lower everywhere
    assert (out[:, UP, 1] >= out[:, LO, 1] - 1e-5).all()


def test_viseme_segments_snap_within_a_frame(speech):
    for fps in (24, 25, 30):
        segs = viseme_segments(speech.phonemes, fps=fps, duration=speech.duration)
        assert segs[0]["start"] == 0 and segs[-1]["end"] == pytest.approx(round(speech.duration * fps) / fps)
        for a, b in itertools.pairwise(segs):
            assert a["end"] == b["start"] and a["viseme"] != b["viseme"]
        bounds = np.array(sorted({p.start for p in speech.phonemes} | {p.end for p in speech.phonemes}))
        for s in segs[1:]:
            assert np.abs(bounds - s["start"]).min() <= 1 / fps + 1e-6
        # every bilabial of the speech is in a closed-lips segment
        for p in speech.phonemes:
            if p.viseme == "A":
                mid = (p.start + p.end) / 2
                assert any(s["viseme"] == "A" and s["start"] - 1 / fps <= mid <= s["end"] + 1 / fps for s in segs)


def test_json_export_schema_and_timing(pipeline, speech, tmp_path):
    from talkingface import media

    wav = media.load_audio(speech.path)
    points, space = lipsync.mouth_track(pipeline, wav, phonemes=speech.phonemes)
    assert space == "canonical" and points.shape[1:] == (59, 3)
    doc = lipsync.mouth_data(points, 25, phonemes=speech.phonemes, duration=speech.duration, out_fps=30,
                             space=space)
    path = tmp_path / "mouth.json"
    lipsync.write(doc, path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "talkingface-lipsync" and doc["version"] == 1 and doc["fps"] == 30
    assert doc["n_frames"] == len(doc["frames"]) == round(speech.duration * 30)
    assert doc["points"]["mediapipe_ids"] == list(face.MOUTH) and doc["units"] == "cm"
    assert set(doc["viseme_set"]) == set("ABCDEFGHX")
    f0 = doc["frames"][5]
    assert set(f0) == {"frame", "time", "viseme", "open", "width", "points"}
    assert np.array(f0["points"]).shape == (59, 3) and f0["time"] == pytest.approx(5 / 30, abs=1e-4)
    # viseme boundaries within one frame of the TTS phoneme boundaries
    bounds = np.array(sorted({p.start for p in speech.phonemes} | {p.end for p in speech.phonemes}))
    for s in doc["visemes"]:
        assert np.abs(bounds - s["start"]).min() <= 1 / 30 + 1e-4
        assert np.abs(bounds - s["end"]).min() <= 1 / 30 + 1e-4
    assert len(doc["phonemes"]) == len(speech.phonemes)
    # per-frame viseme agrees with the segments, and the mouth is closed on A frames, open on D/C frames
    fr = doc["frames"]
    a_open = [f["open"] for f in fr if f["viseme"] == "A"]
    v_open = [f["open"] for f in fr if f["viseme"] in ("C", "D")]
    assert a_open and v_open and np.median(a_open) <= CLOSED_GAP_CM + 0.02 and max(v_open) > 0.5


def test_render_result_json(speech):
    class Result:  # what the web page has: a RenderResult
        mouth_landmarks = np.random.default_rng(0).normal(100, 5, (10, 59, 2)).astype(np.float32)
        fps = 25
        duration = 0.4

    doc = lipsync.mouth_track_json(Result(), [Phone("m", 0.0, 0.1), Phone("a", 0.1, 0.4)])
    assert doc["space"] == "image" and doc["n_frames"] == 10 and doc["units"] == "px"
    assert [s["viseme"] for s in doc["visemes"]] == ["A", "D"]
    assert np.array(doc["frames"][0]["points"]).shape == (59, 2)


def test_cli_lipsync_text_and_audio(tmp_path, grid_wav_path, capsys):
    out = tmp_path / "m.json"
    assert cli.main(["lipsync", "--text", "Bob made maps.", "-o", str(out), "--save-audio",
                     str(tmp_path / "s.wav")]) == 0
    doc = json.loads(out.read_text())
    assert doc["source"]["phoneme_timing"] == "tts" and "A" in {s["viseme"] for s in doc["visemes"]}
    assert (tmp_path / "s.wav").exists()
    tsv = tmp_path / "m.tsv"
    assert cli.main(["lipsync", grid_wav_path, "--transcript", "lay white by s zero again", "--fps", "24",
                     "-o", str(tsv)]) == 0
    rows = list(csv.reader(tsv.open(), delimiter="\t"))
    assert rows[0][:5] == ["frame", "time", "viseme", "open", "width"] and len(rows[0]) == 5 + 59 * 3
    assert len(rows) - 1 == round(3.0 * 24) or abs(len(rows) - 1 - 72) <= 1
    vis = list(csv.reader((tmp_path / "m.visemes.tsv").open(), delimiter="\t"))
    assert vis[0] == ["start", "end", "viseme", "phonemes"] and any(r[2] == "A" for r in vis[1:])  # "by"
    # bad input: a clear one-line error, exit status 1, no output
    assert cli.main(["lipsync", "--text", "   ", "-o", str(tmp_path / "e.json")]) == 1
    assert cli.main(["lipsync", "--text", "hi", "--voice", "nope", "-o", str(tmp_path / "e.json")]) == 1
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9")
    assert cli.main(["lipsync", "--text-file", str(bad), "-o", str(tmp_path / "e.json")]) == 1
    err = capsys.readouterr().err
    assert "empty" in err and "unknown voice" in err and "not UTF-8" in err
    assert not (tmp_path / "e.json").exists()


def test_cli_render_text(tmp_path, astronaut_path):
    out = tmp_path / "welcome.mp4"
    assert cli.main(["render", "--image", astronaut_path, "--text", "Welcome to the course.", "-o", str(out),
                     "--save-audio", str(tmp_path / "w.wav")]) == 0
    from talkingface import media

    n = sum(1 for _ in media.iter_video_frames(out))
    dur = len(media.load_audio(tmp_path / "w.wav")) / 16000
    assert abs(n / 25 - dur) <= 1 / 25


def test_forced_alignment(grid_wav):
    phones = align.align(grid_wav, "Lay white by S zero again.")
    syms = [p.symbol for p in phones if p.symbol != SILENCE]
    assert syms[:3] == ["l", "eɪ", "w"] and "b" in syms and syms[-1] == "n"
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(phones))
    b = next(p for p in phones if p.symbol == "b")
    assert 0.9 < b.start < 1.4  # "by" is about 1.1 s into the clip
    with pytest.raises(InputError, match="no words"):
        align.align(grid_wav, "?!")
    rec = align.recognize(grid_wav)
    assert any(p.viseme == "A" for p in rec) and rec[-1].end == pytest.approx(len(grid_wav) / 16000, abs=0.05)


def test_frames_without_a_mouth_export_as_null(tmp_path):
    """A dubbed video's passed-through frames have NaN mouth points: strict JSON null, empty CSV cells."""
    pts = np.random.default_rng(0).uniform(100, 200, (10, len(face.MOUTH), 2)).astype(np.float32)
    pts[4:6] = np.nan
    doc = lipsync.mouth_data(pts, 25)
    assert [f["points"] is None for f in doc["frames"]] == [i in (4, 5) for i in range(10)]
    assert doc["frames"][4]["open"] is None and doc["frames"][3]["open"] is not None
    lipsync.write(doc, tmp_path / "m.json")
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and json.loads(text)["frames"][5]["width"] is None
    lipsync.write(doc, tmp_path / "m.csv")
    rows = list(csv.reader((tmp_path / "m.csv").open()))
    assert len(rows) == 11 and rows[5][3] == "" and len(rows[5]) == len(rows[4])
