#!/usr/bin/env python3
"""Does the offline landmark model depend on where its speech sits in Whisper's 30 s window?

The offline features (``audio.WhisperEncoder``) cut audio into fixed 30 s windows, and every training clip starts
its own window. Long audio (a dub of several minutes, the live benchmark's 10 minutes) puts most speech
elsewhere in a window, after other speech. This measures what that costs, and whether averaging the
predictions over a few window phases (test-time averaging) is worth its extra encoder passes, by
cross-validation on the training speakers only (3 speaker-grouped folds, the shipped recipe and AV offsets,
1000 steps per fold model; held-out clips scored as recorded, lag 0, with the shipped sync delay):

- ``alone``: the clip in its own window (as trained and as the validation table scores it);
- ``silence_0.96s``: 0.96 s of silence before it in the window;
- ``mid_window``: 12 s of another (training) clip's speech before it in the window;
- ``average_3`` / ``average_5``: the mean prediction over 0 / 0.32 / 0.64 s (and 0.96 / 1.6 s) of silence before;
- ``mid_window_average_3``: the mid-window case averaged over 0 / 0.32 / 0.64 s of silence between.

    python scripts/eval_whisper_phase.py            # ~10 min on the 2-core CPU; per-clip rows, then means
"""
import argparse
import json
import os

import numpy as np
import torch

from talkingface import audio as A
from talkingface import checkpoints, media, metrics
from talkingface.landmarks import LandmarkConfig
from talkingface.training import landmark_training as lt

SPF = A.SAMPLES_PER_FRAME


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--checkpoint", default=str(checkpoints.DEFAULT_DIR / "landmarks-v1.safetensors"),
                    help="the recipe (config, AV offsets, sync delay) to cross-validate")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=3)
    args = ap.parse_args()
    enc = A.WhisperEncoder()
    _, meta = checkpoints.read_checkpoint(args.checkpoint)
    shifts, delay = meta["info"]["av_shifts"], int(meta["info"].get("sync_delay", 0))
    cfg = LandmarkConfig(**meta["config"])
    clips = lt.load_clips(args.data, "whisper", ("train",))
    with open(os.path.join(args.data, "index.json")) as f:
        source = {e["clip"]: e["source"] for e in json.load(f)["clips"]}
    recorded = {c.name: c.feats for c in clips}
    lt.apply_av_offsets(clips, shifts)
    iod = metrics.canonical_iod()
    res: dict[str, list[float]] = {}
    for k, _, fold in lt.speaker_folds(clips, args.folds, 0, recorded=recorded):
        model, _ = lt.train(fold, cfg, steps=args.steps, seed=0)
        others = [c for c in fold if c.split == "train"]
        for i, c in enumerate(c for c in fold if c.split == "val"):
            n = len(c.mouth)
            wav = media.load_audio(source[c.name])[: n * SPF]
            wav = np.pad(wav, (0, n * SPF - len(wav)))

            def feats(before: np.ndarray) -> np.ndarray:
                return enc(np.concatenate([before, wav]))[len(before) // SPF:][:n]

            def pred(before: np.ndarray) -> np.ndarray:
                return model.predict(torch.from_numpy(feats(before))).numpy()

            def r(p: np.ndarray) -> float:
                p = lt.shift(p, -delay)
                return metrics.pearson(metrics.opening(c.neutral + p, iod)[c.valid],
                                       metrics.opening(c.mouth, iod)[c.valid])

            silence = {s: pred(np.zeros(s * SPF, np.float32)) for s in (0, 8, 16, 24, 40)}
            ctx = media.load_audio(source[others[i % len(others)].name])[: 12 * 16000]
            ctx = ctx[: len(ctx) // SPF * SPF]
            mid = [pred(np.concatenate([ctx, np.zeros(s * SPF, np.float32)])) for s in (0, 8, 16)]
            row = {"alone": r(silence[0]), "silence_0.96s": r(silence[24]), "mid_window": r(mid[0]),
                   "average_3": r(np.mean([silence[s] for s in (0, 8, 16)], 0)),
                   "average_5": r(np.mean(list(silence.values()), 0)), "mid_window_average_3": r(np.mean(mid, 0))}
            for key, v in row.items():
                res.setdefault(key, []).append(v)
            print(k, c.name, " ".join(f"{key} {v:.3f}" for key, v in row.items()), flush=True)
    base = np.array(res["alone"])
    print(f"\n| placement (held-out training speakers, {len(base)} clips) | lag-0 r opening | vs alone (s.e.) "
          "| clips up |")
    print("|---|---|---|---|")
    for key, v in res.items():
        d = np.array(v) - base
        print(f"| {key} | {np.mean(v):.3f} | {d.mean():+.4f} ({d.std(ddof=1) / np.sqrt(len(d)):.4f}) | "
              f"{(d > 0).sum()}/{len(d)} |")


if __name__ == "__main__":
    main()
