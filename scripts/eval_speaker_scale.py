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
Then the speaking expression (``DubOptions.own_expression``): how the person's mouth sits while they speak (a
talking smile, lips held apart), which the model, trained across speakers, cannot know. Every variant takes its
estimates from the other half of the clip (scale included): ``expr_model`` adds the mean of (real - resting -
prediction) over the speech frames (the clip's ``voice_activity``), which needs the model run on the video's own
audio; ``expr_mean`` shifts the prediction so that its mean over the speech frames is the real mouth's mean offset
there, which needs only the speech frames of the video's own audio; ``expr_all`` applies that shift to every
frame; ``expr_utt<k>`` measures and applies it over the utterances (pauses under k frames bridged,
``audio.bridge_pauses``); ``uttgate<k>`` bridges the pauses for the speech gate only, ``expr_uttgate<k>`` for the
gate and the expression (shipped with k = 25: ``dub.own_expression``, ``dub.BRIDGE_PAUSES``).

Measures: the lip distance (mean 2D distance of the 40 lip points / iod), the amplitude ratio (std of the
predicted opening / std of the real one; 1 is right), and lag-0 r of the opening and the width within each half
of the clip (a per-half estimate puts a step between the halves that no real dub has), mean of the two halves.
Each table is printed twice: the motion as predicted, and gated by the speech as ``Pipeline.predict_mouth`` does
(the one that decides; the uttgate variants differ from the others only there).

    python scripts/eval_speaker_scale.py --cache runs/cv-folds    # ~15 min on the 2-core CPU the first time
"""
import argparse
import os

import numpy as np
import torch

from talkingface import audio as audio_mod
from talkingface import checkpoints, metrics
from talkingface.landmarks import LandmarkConfig, build
from talkingface.pipeline import _smooth_gate
from talkingface.training import landmark_training as lt

GATED = {False: "", True: ", motion gated by the speech as the pipeline does"}
UTT_GAPS = (12, 25)  # frames: pauses under 0.5 s and 1 s
VARIANTS = ("average", "own", "other_half", "halfway", "expr_model", "expr_mean", "expr_all",
            *(f"expr_utt{k}" for k in UTT_GAPS), *(f"uttgate{k}" for k in UTT_GAPS),
            *(f"expr_uttgate{k}" for k in UTT_GAPS))


def own_scale(mouth: np.ndarray, neutral: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-coordinate (59*3,) deviation of a tracked mouth around its resting shape, as training normalizes."""
    return metrics.motion_range(mouth, neutral, valid).reshape(-1)


def variants(unit: np.ndarray, avg: np.ndarray, c: lt.Clip, gate: bool = False) -> dict[str, np.ndarray]:
    """Offsets (T, 59, 3) in cm for each variant from the model's normalized prediction ``unit`` (T, 59*3).
    gate: every variant's offsets times the pipeline's smoothed speech gate, as ``Pipeline.predict_mouth`` does,
    and the expression shift times the smoothed gate of its own frames; without, the motion is not gated and the
    shift changes only its frames."""
    t = len(unit)
    speech = audio_mod.voice_activity(c.energy[:t])
    speech = np.pad(speech, (0, t - len(speech)))
    own = own_scale(c.mouth, c.neutral, c.valid)
    half = t // 2
    first, second = np.zeros(t, bool), np.zeros(t, bool)
    first[:half], second[half:] = True, True
    s_first = own_scale(c.mouth, c.neutral, c.valid & first)
    s_second = own_scale(c.mouth, c.neutral, c.valid & second)
    other = np.where(first[:, None], s_second[None], s_first[None])
    out = {"average": unit * avg, "own": unit * own, "other_half": unit * other,
           "halfway": unit * np.sqrt(avg * own)}
    # the speaking expression, every estimate from the other half (a different video of the person)
    real = (c.mouth[:t] - c.neutral[None]).reshape(t, -1)

    def half_shifts(pred: np.ndarray, frames: np.ndarray, residual: bool = False) -> np.ndarray:
        """The expression shift (T, 59*3) for each half, estimated on the other half's ``frames``: the real
        mouth's mean there minus ``pred``'s mean on this half's frames (``residual``: the mean of real - pred on
        the other half's frames); zero for a half with too few frames."""
        shift = np.zeros_like(unit)
        for here, there in ((first, second), (second, first)):
            sel, spk = c.valid[:t] & there & frames, here & frames
            if sel.sum() >= 10 and spk.any():
                shift[here] = (real[sel] - pred[sel]).mean(0) if residual else real[sel].mean(0) - pred[spk].mean(0)
        return shift

    g_speech = _smooth_gate(speech)[:, None] if gate else speech[:, None].astype(np.float64)
    pred = unit * other * (g_speech if gate else 1.0)
    out = {k: v * (g_speech if gate else 1.0) for k, v in out.items()}
    for name, frames in (("expr_model", speech), ("expr_mean", speech), ("expr_all", speech), *(
            (f"expr_utt{k}", audio_mod.bridge_pauses(speech, k)) for k in UTT_GAPS)):
        g = _smooth_gate(frames)[:, None] if gate else frames[:, None].astype(np.float64)
        shift = half_shifts(pred, frames, residual=name == "expr_model")
        out[name] = pred + shift * (1.0 if name == "expr_all" else g)
    # the gate itself over utterances: the motion is not closed in pauses shorter than k frames (uttgate<k>), and
    # with the expression over the same utterances (expr_uttgate<k>); without the gate these are other_half and
    # expr_utt<k>
    for k in UTT_GAPS:
        if not gate:
            out[f"uttgate{k}"], out[f"expr_uttgate{k}"] = out["other_half"], out[f"expr_utt{k}"]
            continue
        frames = audio_mod.bridge_pauses(speech, k)
        g = _smooth_gate(frames)[:, None]
        moved = unit * other * g
        out[f"uttgate{k}"], out[f"expr_uttgate{k}"] = moved, moved + half_shifts(moved, frames) * g
    return {k: v.reshape(t, -1, 3) for k, v in out.items()}


def measure(model, clips: list[lt.Clip], delay: int, gate: bool = False) -> list[dict]:
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
        for name, off in variants(unit, avg, c, gate).items():
            pred = c.neutral + off
            row[f"{name}_lip_dist"] = metrics.lip_distance(pred[c.valid[:n]], c.mouth[:n][c.valid[:n]], iod)
            # r within each half (the expression variants take a different estimate per half: a step between
            # the halves that no real dub has would otherwise count against them), mean of the two halves
            halves = [lt.score(pred[sl], c.mouth[:n][sl], c.valid[:n][sl]) for sl in (slice(0, n // 2),
                                                                                      slice(n // 2, n))]
            row[f"{name}_r_open"] = float(np.mean([h["r_open_lag0"] for h in halves]))
            row[f"{name}_r_width"] = float(np.mean([h["r_width_lag0"] for h in halves]))
            row[f"{name}_amp"] = float(np.std(metrics.opening(pred, iod)[c.valid[:n]]) / (np.std(real_open) + 1e-9))
        rows.append(row)
    return rows


def table(title: str, rows: list[dict]) -> None:
    base = np.array([r["average_lip_dist"] for r in rows])
    print(f"\n{title} ({len(rows)} clips)\n")
    print("| scale | lip dist / iod | change vs average (se) | clips better | amplitude ratio, median (IQR) | "
          "r opening, lag 0, within halves | r width, lag 0, within halves |")
    print("|---|---|---|---|---|---|---|")
    for v in VARIANTS:
        d = np.array([r[f"{v}_lip_dist"] for r in rows])
        amp = np.array([r[f"{v}_amp"] for r in rows])
        q1, q2, q3 = np.percentile(amp, [25, 50, 75])
        diff = d - base
        print(f"| {v} | {d.mean():.4f} | {diff.mean():+.4f} ({diff.std(ddof=1) / np.sqrt(len(d)):.4f}) | "
              f"{int((diff < 0).sum())}/{len(d)} | {q2:.2f} ({q1:.2f}-{q3:.2f}) | "
              f"{np.mean([r[f'{v}_r_open'] for r in rows]):.3f} | {np.mean([r[f'{v}_r_width'] for r in rows]):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--recipe", default=str(checkpoints.DEFAULT_DIR / "landmarks-v1.safetensors"),
                    help="the recipe (config, AV offsets, sync delay) the CV trains")
    ap.add_argument("--model", default="landmarks-v2", help="the shipped model, reported on validation")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--no-cv", action="store_true", help="only the validation table")
    ap.add_argument("--cache", default=None, metavar="DIR",
                    help="keep the fold models here and reuse them on the next run (same folds and steps)")
    args = ap.parse_args()
    model, meta = checkpoints.load_module(checkpoints.resolve(args.model, str(checkpoints.DEFAULT_DIR)), build,
                                          LandmarkConfig, model="landmarks")
    val = lt.load_clips(args.data, model.config.data_key, ("val",))
    for gate in (False, True):
        table(f"validation speakers, {args.model} (report only){GATED[gate]}",
              measure(model.eval(), val, int(meta["info"].get("sync_delay", 0)), gate))
    if args.no_cv:
        return
    _, rmeta = checkpoints.read_checkpoint(args.recipe)
    shifts, delay = rmeta["info"]["av_shifts"], int(rmeta["info"].get("sync_delay", 0))
    cfg = LandmarkConfig(**rmeta["config"])
    clips = lt.load_clips(args.data, cfg.data_key, ("train",))
    recorded = {c.name: c.feats for c in clips}
    lt.apply_av_offsets(clips, shifts)
    for c in clips:  # the speech frames move with the audio
        c.energy = lt.shift(c.energy, shifts.get(c.name, 0))
    rows, rows_gated = [], []
    for k, held, fold in lt.speaker_folds(clips, args.folds, 0, recorded=recorded):
        cached = os.path.join(args.cache, f"fold{k}-of{args.folds}-{args.steps}.safetensors") if args.cache else None
        if cached and os.path.exists(cached):
            fold_model, _ = checkpoints.load_module(cached, build, LandmarkConfig, model="landmarks")
        else:
            fold_model, _ = lt.train(fold, cfg, steps=args.steps, seed=0)
            if cached:
                os.makedirs(args.cache, exist_ok=True)
                checkpoints.save_module(cached, fold_model, cfg, model="landmarks")
        rows += measure(fold_model.eval(), [c for c in fold if c.split == "val"], delay)
        rows_gated += measure(fold_model.eval(), [c for c in fold if c.split == "val"], delay, True)
        print(f"fold {k}: {len(held)} speakers held out", flush=True)
    for gate, rs in ((False, rows), (True, rows_gated)):
        table(f"speaker-grouped {args.folds}-fold CV on the training speakers ({os.path.basename(args.recipe)}'s "
              f"recipe, {args.steps} steps; the decision){GATED[gate]}", rs)


if __name__ == "__main__":
    main()
