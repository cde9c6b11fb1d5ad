"""Measure head motion and blinks on the real clips -> talkingface/assets/head_motion.npz (derived numbers only).

For every clip of ../shared/data/videos (speech) and ../shared/data/videos_silent (blinks only), decoded at 25 fps,
the project's own FaceMesh tracking (talkingface.face.FaceTracker, video mode) gives per frame: head pose
(solvePnP against the canonical mesh: yaw, pitch, roll in degrees), the eye aspect ratio of both eyes, and,
for clips with audio, the voice-activity mask of the speech (talkingface.audio.voice_activity).

Shipped (``--out``): the pose tracks of the *training* speakers' speech clips (split of data/prepared/index.json,
so the validation speakers stay unseen), lightly smoothed (Gaussian, sigma 1 frame: FaceMesh jitter) and
centred on each clip's median pose, with their speech masks; and the mean eyelid-closure curve of the real blinks
found (all clips, speech and silent), with the measured blink durations. No frames, crops or landmarks.

Also written (``--stats``, JSON): per-clip blink rate, blink durations, pose range and angular speed, for every
clip, the reference that ``scripts/eval_liveliness.py`` compares rendered videos with.

    python scripts/measure_head_motion.py            # ~3-4 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from talkingface import audio as audio_mod  # noqa: E402
from talkingface import face, media, motion  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
if not SHARED.is_dir():
    SHARED = Path("/work/shared/data")


def track_clip(path: Path) -> dict:
    """Per-frame yaw/pitch/roll (deg), EAR and validity of the largest face of a clip at 25 fps."""
    poses, ears, valid = [], [], []
    size = None
    with face.FaceTracker(static=False, max_faces=1) as tracker:
        for frame in media.iter_video_frames(path, fps=25):
            size = frame.shape[:2]
            faces = tracker.detect(frame)
            if not faces:
                poses.append((np.nan,) * 3)
                ears.append(np.nan)
                valid.append(False)
                continue
            lm = faces[0].landmarks
            p = face.head_pose(lm, size)
            poses.append((p.yaw, p.pitch, p.roll))
            ears.append(float(motion.eye_aspect_ratio(lm)))
            valid.append(True)
    return {"pose": np.asarray(poses, np.float64), "ear": np.asarray(ears, np.float64),
            "valid": np.asarray(valid, bool), "size": size}


def speech_mask(path: Path, n: int) -> np.ndarray | None:
    try:
        wav = media.load_audio(path)
    except Exception:  # noqa: BLE001 - a clip without an audio track
        return None
    if wav.size == 0 or float(np.max(np.abs(wav))) < 1e-4:
        return None
    vad = audio_mod.voice_activity(audio_mod.speech_energy(wav))
    out = np.zeros(n, bool)
    out[: min(n, len(vad))] = vad[:n]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED), help="the shared data folder (videos/, videos_silent/)")
    ap.add_argument("--index", default=str(ROOT / "data" / "prepared" / "index.json"),
                    help="prepared index with the speaker split (train/val)")
    ap.add_argument("--out", default=str(ROOT / "talkingface" / "assets" / "head_motion.npz"))
    ap.add_argument("--stats", default=str(ROOT / "docs" / "liveliness_real_clips.json"))
    ap.add_argument("--max-clips", type=int, default=None)
    args = ap.parse_args()
    data = Path(args.data)
    split = {}
    if Path(args.index).is_file():
        for e in json.loads(Path(args.index).read_text())["clips"]:
            split[e["clip"]] = e["split"]
    clips = sorted((data / "videos").glob("*.mp4")) + sorted((data / "videos_silent").glob("*.mp4"))
    clips = clips[: args.max_clips]
    lib_pose, lib_speech, lib_start, lib_names = [], [], [], []
    blink_profiles, blink_durs = [], []
    stats = {}
    t_start = time.perf_counter()
    for k, path in enumerate(clips):
        t0 = time.perf_counter()
        tr = track_clip(path)
        n = len(tr["valid"])
        silent_dir = path.parent.name == "videos_silent"
        speech = None if silent_dir else speech_mask(path, n)
        blinks = motion.detect_blinks(tr["ear"], tr["valid"])
        pose = motion.clean_pose(tr["pose"], tr["valid"])
        m = motion.pose_measures(pose, tr["valid"])
        name = path.stem
        stats[name] = {"kind": "silent" if silent_dir else "speech", "split": split.get(name, "none"),
                       "frames": n, "tracked": float(tr["valid"].mean()),
                       "blinks": len(blinks), "blinks_per_min": len(blinks) / max(n / 25 / 60, 1e-9),
                       "blink_ms": [round(b["duration"] * 40.0, 1) for b in blinks],
                       "speech_ratio": None if speech is None else float(speech.mean()), **m}
        for b in blinks:
            blink_profiles.append(b["profile"])
            blink_durs.append(b["duration"])
        if speech is not None and split.get(name) == "train" and tr["valid"].mean() > 0.9:
            centred = pose - np.nanmedian(pose[tr["valid"]], axis=0)
            centred[~tr["valid"]] = 0.0
            lib_start.append(sum(len(p) for p in lib_pose))
            lib_pose.append(centred)
            lib_speech.append(speech)
            lib_names.append(name)
        print(f"[{k + 1}/{len(clips)}] {name}: {n} frames, tracked {tr['valid'].mean():.2f}, blinks {len(blinks)}, "
              f"yaw p95 {m['range_p95'][0]:.1f} deg, speed median {m['speed_median']:.1f} deg/s "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
    profiles = np.stack(blink_profiles) if blink_profiles else np.zeros((0, motion.CURVE_SAMPLES))
    curve = profiles.mean(0) if len(profiles) else np.zeros(motion.CURVE_SAMPLES)
    curve = curve / max(curve.max(), 1e-9)
    np.savez_compressed(
        args.out,
        pose=np.concatenate(lib_pose).astype(np.float32), speech=np.concatenate(lib_speech),
        clip_start=np.asarray(lib_start, np.int64), clip_names=np.asarray(lib_names),
        blink_curve=curve.astype(np.float32), blink_frames=np.asarray(blink_durs, np.float32),
        fps=np.int64(25))
    Path(args.stats).write_text(json.dumps(stats, indent=1))
    print(f"library: {len(lib_names)} training speech clips, {sum(len(p) for p in lib_pose)} frames; "
          f"{len(profiles)} real blinks (median {np.median(blink_durs) * 40 if blink_durs else 0:.0f} ms); "
          f"-> {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KB), {args.stats}; "
          f"{time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
