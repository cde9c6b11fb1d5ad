#!/usr/bin/env python3
"""What the live path costs in lip sync, at the landmark level, on the validation speakers (never trained on):
the offline model (bidirectional, 30 s Whisper windows) against the live ones (unidirectional, streamable
features), each with the sync delay stored in its checkpoint (decided by cross-validation on the training
speakers, or the teacher's for a distilled model), and without it. Nothing is tuned here.

A second table is the live issue's own measure at the landmark level: r of the mouth opening a live model
predicts against the opening the offline model predicts from the same audio (both with their delays), on the
validation clips' audio and on the held-out audio-only recordings (``landmark_training.is_dev_recording``: the
development set on which distillation variants may be compared).

    python scripts/eval_live_landmarks.py                                      # -> markdown tables
    python scripts/eval_live_landmarks.py --models landmarks-v2,landmarks-live-v7,runs/x/landmarks-....safetensors
"""
import argparse
import os

import numpy as np
import torch

from talkingface import checkpoints, metrics
from talkingface.audio import StreamWindow
from talkingface.landmarks import LandmarkConfig, build
from talkingface.mouth import smooth_track
from talkingface.training import landmark_training as lt
from talkingface.training.prepare import prepare_audio_folder


def load(name: str, folder: str):
    path = name if name.endswith(".safetensors") else checkpoints.resolve(name, folder)
    model, meta = checkpoints.load_module(path, build, LandmarkConfig, model="landmarks")
    return model.eval(), int(meta.get("info", {}).get("sync_delay", 0))


def predict(model, feats: np.ndarray, delay: int) -> np.ndarray:
    with torch.no_grad():
        return lt.shift(model.predict(torch.from_numpy(np.ascontiguousarray(feats, np.float32))).numpy(), -delay)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--models", default="landmarks-v2,landmarks-live-v7",
                    help="checkpoint names or .safetensors paths; the first is the offline reference")
    ap.add_argument("--checkpoints", default=str(checkpoints.DEFAULT_DIR))
    ap.add_argument("--audio", default="../shared/data/audio", help="audio-only recordings (for the dev set)")
    ap.add_argument("--reference-smooth", type=float, default=0.0, metavar="S",
                    help="smooth the offline reference's track as the offline render does (mouth.smooth_track; "
                         "the render's MouthOptions.smooth is 0.3) before the live measure (default: %(default)s)")
    args = ap.parse_args()
    names = args.models.split(",")
    models = {n: load(n, args.checkpoints) for n in names}
    label = {n: os.path.basename(n).removesuffix(".safetensors") for n in names}
    if len(set(label.values())) < len(label):  # runs/<name>/landmarks-....safetensors: the run's folder names it
        label = {n: os.path.basename(os.path.dirname(n)) if n.endswith(".safetensors") else n for n in names}
    print("| model | features | sync delay | r opening, lag 0 | best within +-2 | r width, lag 0 | lip dist / iod |")
    print("|---|---|---|---|---|---|---|")
    for name, (model, delay) in models.items():
        clips = lt.load_clips(args.data, model.config.data_key, splits=("val",))
        for d in sorted({0, delay}):
            rows = [lt.score(c.neutral + predict(model, c.feats, d), c.mouth, c.valid) for c in clips]
            m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(f"| {label[name]} | {model.config.data_key} | {d} | {m['r_open_lag0']:.3f} | {m['r_open']:.3f} | "
                  f"{m['r_width_lag0']:.3f} | {m['lip_dist']:.4f} |")
    print(f"\n({len(clips)} validation clips; mean over clips)\n")

    # the live measure: live opening against the offline model's, same audio
    ref_name, (ref, ref_delay) = names[0], models[names[0]]
    iod = metrics.canonical_iod()
    sets = {}
    val = {k: lt.load_clips(args.data, k, splits=("val",)) for k in {m.config.data_key for m, _ in models.values()}}
    sets["validation clips"] = {k: {c.name: c.feats for c in v} for k, v in val.items()}
    audio_dir = os.path.join(args.data, "audio")
    if os.path.isdir(audio_dir):
        for k in val:  # a live model whose window the recordings were not prepared for: its features, once
            window = StreamWindow.from_key(k)
            if window is not None and os.path.isdir(args.audio):
                prepare_audio_folder(args.audio, audio_dir, window)
        dev = [f[:-4] for f in sorted(os.listdir(audio_dir)) if f.endswith(".npz") and lt.is_dev_recording(f[:-4])]
        sets["held-out recordings (dev)"] = {k: {n: lt.load_features(os.path.join(audio_dir, n + ".npz"), k)
                                                 for n in dev} for k in val}
    ref_label = label[ref_name] + (f" smoothed {args.reference_smooth:g}" if args.reference_smooth else "")
    print(f"| live model | r opening vs {ref_label}, " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    for name, (model, delay) in models.items():
        if name == ref_name:
            continue
        cells = []
        for feats_by_kind in sets.values():
            rs = []
            for clip, f_ref in feats_by_kind[ref.config.data_key].items():
                a = metrics.opening(smooth_track(predict(ref, f_ref, ref_delay), args.reference_smooth), iod)
                b = metrics.opening(predict(model, feats_by_kind[model.config.data_key][clip], delay), iod)
                n = min(len(a), len(b))
                rs.append(metrics.pearson(a[:n], b[:n]))
            cells.append(f"{np.mean(rs):.3f} (min {np.min(rs):.3f}, {len(rs)} clips)")
        print(f"| {label[name]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
