#!/usr/bin/env python3
"""Dubbing knows the person: should the mouth move with *their* range of motion instead of the average speaker's?

The landmark model learns speaker-normalized motion: during training every speaker's mouth offsets are divided by
that speaker's own per-coordinate standard deviation (``landmark_training.speaker_scales``), and at inference the
prediction is multiplied back by the training speakers' *mean* deviation (``LandmarkModel.cm_per_unit``). A photo
has no motion to measure, but a video to dub shows the person speaking, so the inverse of the training
normalization can use their own deviation, measured on the video's tracked mouth (``DubOptions.own_range``).

This measures it at the landmark level, predicted mouth against the real one (lag 0, with the shipped sync delay):

- decision: speaker-grouped 3-fold CV on the training speakers only (the shipped recipe and AV offsets, one
  model of ``--steps`` per fold, held-out clips as recorded);
- report: the validation speakers with the shipped model (nothing is chosen on them).

Variants: ``average`` (as shipped: the training speakers' mean deviation), ``own`` (the clip's own deviation, as
``dub`` measures it on the video it dubs: a self-dub then sees the very motion it is scored against, so also
``other_half``: each half of the clip scaled by the deviation measured on the other half, the honest estimate of
what a different video of the person gives), and ``halfway`` (the geometric mean of average and own).
r is unchanged by a scale; the measures are the lip distance (mean 2D distance of the 40 lip points / iod) and
the amplitude ratio (std of the predicted opening / std of the real one; 1 is right).

    python scripts/eval_speaker_scale.py            # ~15 min on the 2-core CPU; markdown tables
"""
import argparse
import os

import numpy as np
import torch

from talkingface import checkpoints, metrics
from talkingface.landmarks import LandmarkConfig, build
from talkingface.training import landmark_training as lt

VARIANTS = ("average", "own", "other_half", "halfway")


def own_scale(mouth: np.ndarray, neutral: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-coordinate (59*3,) deviation of a tracked mouth around its resting shape, as training normalizes."""
    return metrics.motion_range(mouth, neutral, valid).reshape(-1)


def variants(unit: np.ndarray, avg: np.ndarray, c: lt.Clip) -> dict[str, np.ndarray]:
    """Offsets (T, 59, 3) in cm for each variant from the model's normalized prediction ``unit`` (T, 59*3)."""
    t = len(unit)
    own = own_scale(c.mouth, c.neutral, c.valid)
    half = t // 2
    first, second = np.zeros(t, bool), np.zeros(t, bool)
    first[:half], second[half:] = True, True
    s_first = own_scale(c.mouth, c.neutral, c.valid & first)
    s_second = own_scale(c.mouth, c.neutral, c.valid & second)
    other = np.where(first[:, None], s_second[None], s_first[None])
    out = {"average": unit * avg, "own": unit * own, "other_half": unit * other,
           "halfway": unit * np.sqrt(avg * own)}
    return {k: v.reshape(t, -1, 3) for k, v in out.items()}


def measure(model, clips: list[lt.Clip], delay: int) -> list[dict]:
    iod = metrics.canonical_iod()
    avg = model.cm_per_unit.detach().cpu().numpy().reshape(-1).astype(np.float64)
    rows = []
    for c in clips:
        with torch.no_grad():
            cm = model.predict(torch.from_numpy(np.ascontiguousarray(c.feats, np.float32))).numpy()
        cm = lt.shift(cm, -delay).reshape(len(cm), -1)
        n = min(len(cm), len(c.mouth))
        unit = cm[:n] / avg
        real_open = metrics.opening(c.mouth[:n], iod)[c.valid[:n]]
        row = {"clip": c.name}
        for name, off in variants(unit, avg, c).items():
            pred = c.neutral + off
            row[f"{name}_lip_dist"] = metrics.lip_distance(pred[c.valid[:n]], c.mouth[:n][c.valid[:n]], iod)
            row[f"{name}_amp"] = float(np.std(metrics.opening(pred, iod)[c.valid[:n]]) / (np.std(real_open) + 1e-9))
        rows.append(row)
    return rows


def table(title: str, rows: list[dict]) -> None:
    base = np.array([r["average_lip_dist"] for r in rows])
    print(f"\n{title} ({len(rows)} clips)\n")
    print("| scale | lip dist / iod | change vs average (se) | clips better | amplitude ratio, median (IQR) |")
    print("|---|---|---|---|---|")
    for v in VARIANTS:
        d = np.array([r[f"{v}_lip_dist"] for r in rows])
        amp = np.array([r[f"{v}_amp"] for r in rows])
        q1, q2, q3 = np.percentile(amp, [25, 50, 75])
        diff = d - base
        print(f"| {v} | {d.mean():.4f} | {diff.mean():+.4f} ({diff.std(ddof=1) / np.sqrt(len(d)):.4f}) | "
              f"{int((diff < 0).sum())}/{len(d)} | {q2:.2f} ({q1:.2f}-{q3:.2f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--recipe", default=str(checkpoints.DEFAULT_DIR / "landmarks-v1.safetensors"),
                    help="the recipe (config, AV offsets, sync delay) the CV trains")
    ap.add_argument("--model", default="landmarks-v2", help="the shipped model, reported on validation")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--no-cv", action="store_true", help="only the validation table")
    args = ap.parse_args()
    model, meta = checkpoints.load_module(checkpoints.resolve(args.model, str(checkpoints.DEFAULT_DIR)), build,
                                          LandmarkConfig, model="landmarks")
    val = lt.load_clips(args.data, model.config.data_key, ("val",))
    table(f"validation speakers, {args.model} (report only)",
          measure(model.eval(), val, int(meta["info"].get("sync_delay", 0))))
    if args.no_cv:
        return
    _, rmeta = checkpoints.read_checkpoint(args.recipe)
    shifts, delay = rmeta["info"]["av_shifts"], int(rmeta["info"].get("sync_delay", 0))
    cfg = LandmarkConfig(**rmeta["config"])
    clips = lt.load_clips(args.data, cfg.data_key, ("train",))
    recorded = {c.name: c.feats for c in clips}
    lt.apply_av_offsets(clips, shifts)
    rows = []
    for k, held, fold in lt.speaker_folds(clips, args.folds, 0, recorded=recorded):
        fold_model, _ = lt.train(fold, cfg, steps=args.steps, seed=0)
        rows += measure(fold_model.eval(), [c for c in fold if c.split == "val"], delay)
        print(f"fold {k}: {len(held)} speakers held out", flush=True)
    table(f"speaker-grouped {args.folds}-fold CV on the training speakers ({os.path.basename(args.recipe)}'s "
          f"recipe, {args.steps} steps; the decision)", rows)


if __name__ == "__main__":
    main()
