#!/usr/bin/env python3
"""Train the audio -> mouth landmark LSTM on a prepared dataset (scripts/prepare_data.py).

    python scripts/train_landmarks.py                          # whisper features, 1000 steps -> runs/
    python scripts/train_landmarks.py --cv 4                   # speaker-grouped CV on the TRAIN split only
    python scripts/train_landmarks.py --members 3 --av-offsets-from checkpoints/landmarks-v1.safetensors \
        --out runs/v2                                          # landmarks-v2: three models averaged
    python scripts/train_landmarks.py --cv 3 --members 3 --cv-delay 2   # does averaging three pay? (CV)
    python scripts/train_landmarks.py --feature logmel
    python scripts/train_landmarks.py --feature whisper_stream --causal \
        --av-offsets-from checkpoints/landmarks-v1.safetensors       # the live model (talkingface.live)
    python scripts/train_landmarks.py --sync-delay-cv checkpoints/landmarks-v1.safetensors   # delay of a model
    python scripts/train_landmarks.py --feature whisper_stream --causal --conv-kernel 7 \
        --av-offsets-from checkpoints/landmarks-v1.safetensors --teacher checkpoints/landmarks-v1.safetensors \
        --distill 0.5 --extra-audio ../shared/data/audio        # the live model, distilled from the offline one

Model selection (feature kind, sizes) and the sync delay use cross-validation on the training speakers;
the validation speakers are only scored, never tuned on. Training also decides the delay
(``landmark_training.cross_validate_sync_delay``, 3 more models) and stores it in the checkpoint.
Writes runs/landmarks-<feature>.safetensors and a JSON log beside it.
"""
import argparse
import dataclasses
import json
import logging
import os

import numpy as np

from talkingface.audio import LIVE_WINDOW
from talkingface.checkpoints import save_module
from talkingface.landmarks import LandmarkConfig, LandmarkEnsemble
from talkingface.training import landmark_training as lt


def evaluate(model, clips, direction, delay: int = 0) -> list[dict]:
    """Rows of measures per clip and method: ``model`` (or each of a {method: model} dict), its prediction delayed by
    ``delay`` frames (a sync delay), and the static and energy baselines."""
    import torch

    models = model if isinstance(model, dict) else {"model": model}
    rows = []
    for c in clips:
        tracks = {name: c.neutral + lt.shift(m.predict(torch.from_numpy(c.feats)).numpy(), -delay)  # (T, 59, 3)
                  for name, m in models.items()}
        tracks.update(lt.baseline_tracks(c.neutral, c.energy, direction))
        for method, track in tracks.items():
            rows.append({"clip": c.name, "speaker": c.speaker, "method": method, **lt.score(track, c.mouth, c.valid)})
    return rows


def summarize(rows: list[dict]) -> dict:
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        out[method] = {k: float(np.mean([r[k] for r in rs])) for k in
                       ("r_open", "r_open_lag0", "r_width", "r_width_lag0", "lip_dist")}
    return out


def print_summary(title: str, summary: dict) -> None:
    print(f"\n{title}")
    print(f"{'method':14s} {'r_open':>7s} {'(lag0)':>7s} {'r_width':>8s} {'(lag0)':>7s} {'lip_dist':>9s}")
    for m, s in summary.items():
        print(f"{m:14s} {s['r_open']:7.3f} {s['r_open_lag0']:7.3f} {s['r_width']:8.3f} {s['r_width_lag0']:7.3f} "
              f"{s['lip_dist']:9.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--feature", default="whisper", choices=["whisper", "logmel", "whisper_stream"],
                    help="whisper_stream: streamable features (prepare_data.py --add-stream-features)")
    ap.add_argument("--stream-window", type=int, default=LIVE_WINDOW.window, metavar="FRAMES",
                    help="with --feature whisper_stream: video frames of audio per encoder pass, stored in the "
                         "checkpoint for the live path (default: %(default)s = 4 s; 50 = the 2 s of live-v1/v2)")
    ap.add_argument("--stream-block", type=int, default=LIVE_WINDOW.block, metavar="FRAMES",
                    help="with --feature whisper_stream: video frames per encoder pass (default: %(default)s; "
                         "a smaller block waits less for its audio and costs more encoder passes)")
    ap.add_argument("--av-offsets-from", metavar="CHECKPOINT",
                    help="take the training clips' audio/video offsets from this checkpoint (they belong to the "
                         "clips; a causal first-pass model would estimate them late) instead of estimating them")
    ap.add_argument("--no-sync-cv", action="store_true",
                    help="skip the sync-delay cross-validation (3 more models): the checkpoint says delay 0 until "
                         "--sync-delay-cv and export_checkpoints.py --sync-delay stamp the cross-validated one")
    ap.add_argument("--causal", action="store_true",
                    help="unidirectional LSTM (the live path); the default is bidirectional (offline rendering)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--pca", type=int, default=16)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--conv-kernel", type=int, default=5,
                    help="input convolution width (odd); a causal model sees kernel // 2 frames ahead")
    ap.add_argument("--no-av-correction", action="store_true", help="do not shift training clips' audio")
    ap.add_argument("--first-pass", type=int, default=500,
                    help="steps of each held-out-speaker model that estimates AV offsets (default 500)")
    ap.add_argument("--cv", type=int, default=0, help="K-fold speaker-grouped CV on the train split, then exit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--members", type=int, default=1,
                    help="train N models of the recipe (seeds --seed, --seed + 1, ...) and save their average "
                         "(landmarks.LandmarkEnsemble; its sync delay is cross-validated with ensembles too); with "
                         "--cv: score the first member alone and the first 2..N averaged")
    ap.add_argument("--cv-delay", type=int, default=0, metavar="FRAMES",
                    help="with --cv: score the predictions delayed by this many frames (a sync delay, e.g. the "
                         "shipped 2)")
    ap.add_argument("--sync-delay-cv", metavar="CHECKPOINT",
                    help="only decide the sync delay of CHECKPOINT's recipe (its config, AV offsets and steps) by "
                         "CV on the training speakers; writes runs/sync-delay-<name>.json for export_checkpoints.py")
    ap.add_argument("--teacher", metavar="CHECKPOINT",
                    help="distil: also learn this model's predictions (on its own feature kind; train clips only)")
    ap.add_argument("--distill", type=float, default=0.5,
                    help="with --teacher: weight of the teacher's targets in the loss (default: %(default)s)")
    ap.add_argument("--teacher-smooth", type=float, default=0.0, metavar="S",
                    help="with --teacher: learn the teacher's track smoothed over time as the offline render smooths "
                         "it (mouth.smooth_track; the render's default is MouthOptions.smooth = 0.3), so a live "
                         "student produces the smoothed track the offline render shows (default: %(default)s)")
    ap.add_argument("--extra-audio", metavar="FOLDER",
                    help="with --teacher: speech recordings without video, learnt from the teacher's predictions "
                         "only (files that name a validation speaker are skipped)")
    ap.add_argument("--extra-audio-speeds", default="", metavar="S1,S2",
                    help="with --extra-audio: also learn the recordings played at these speeds (e.g. 0.9,1.1: "
                         "speed perturbation; features go to <data>/audio_speed<S> once)")
    ap.add_argument("--out", default="runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    if args.sync_delay_cv:
        from talkingface import checkpoints

        _, meta = checkpoints.read_checkpoint(args.sync_delay_cv)
        info, config = meta["info"], checkpoints.config_from_dict(LandmarkConfig, meta["config"])
        clips = lt.load_clips(args.data, config.data_key, splits=("train",))
        result = lt.cross_validate_sync_delay(clips, config, info.get("av_shifts", {}), steps=info["steps"],
                                              seed=args.seed, device=args.device)
        name = os.path.basename(args.sync_delay_cv).removesuffix(".safetensors")
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"sync-delay-{name}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(f"sync delay {result['sync_delay']} frames; mean lag-0 r by delay: "
              + ", ".join(f"{d}: {r:.3f}" for d, r in result["r_by_delay"].items()) + f"\nwrote {path}")
        return
    config = LandmarkConfig(feature_kind=args.feature, hidden=args.hidden, n_pca=args.pca, dropout=args.dropout,
                            bidirectional=not args.causal, conv_kernel=args.conv_kernel,
                            **({"stream_window": args.stream_window, "stream_block": args.stream_block}
                               if args.feature == "whisper_stream" else {}))
    clips = lt.load_clips(args.data, config.data_key)
    config = dataclasses.replace(config, feature_dim=clips[0].feats.shape[1])

    shifts: dict[str, int] = {}
    if args.av_offsets_from and not args.no_av_correction:
        from talkingface import checkpoints

        shifts = {k: int(v) for k, v in checkpoints.read_checkpoint(args.av_offsets_from)[1]["info"]["av_shifts"].items()}
    elif not args.no_av_correction:
        # estimated once on the training speakers (cached: it costs 3 first-pass models)
        cache = os.path.join(args.out, f"av_offsets-{config.data_key}-{args.first_pass}.json")
        if os.path.exists(cache):
            shifts = json.load(open(cache))
        else:
            shifts = lt.estimate_av_offsets(clips, config, steps=args.first_pass, seed=args.seed, device=args.device)
            os.makedirs(args.out, exist_ok=True)
            with open(cache, "w") as f:
                json.dump(shifts, f, indent=1)
    original_feats = {c.name: c.feats for c in clips}  # held-out clips are always scored as recorded
    lt.apply_av_offsets(clips, shifts)

    extra: list[lt.Clip] = []
    teacher_info: dict = {}
    if args.teacher:
        teacher = load_teacher(args.teacher)
        teacher_info = add_teacher_targets(args, clips, shifts, teacher)
        if args.extra_audio:
            speeds = [float(v) for v in args.extra_audio_speeds.split(",") if v.strip()]
            extra = lt.audio_only_clips(args.extra_audio, os.path.join(args.data, "audio"), config.data_key,
                                        teacher, smooth=args.teacher_smooth)
            for speed in speeds:
                extra += lt.audio_only_clips(args.extra_audio, os.path.join(args.data, f"audio_speed{speed:g}"),
                                             config.data_key, teacher, speed=speed, smooth=args.teacher_smooth)
            teacher_info["extra_audio"] = {"folder": args.extra_audio, "files": len(extra),
                                           "seconds": round(sum(len(c.feats) for c in extra) / 25, 1)}
            if speeds:
                teacher_info["extra_audio"]["speeds"] = [1.0] + speeds
        print(f"distilling {args.teacher} (weight {args.distill}): "
              f"{sum(c.teacher is not None for c in clips)} training clips"
              + (f" + {len(extra)} audio-only recordings ({teacher_info['extra_audio']['seconds']} s)" if extra else ""))

    def fit(clip_set):
        model, log = lt.train_members(clip_set + extra, config, args.members, steps=args.steps, seed=args.seed,
                                      device=args.device, distill=args.distill if args.teacher else 0.0)
        log["info"]["av_shifts"] = shifts
        if args.teacher:
            log["info"]["distillation"] = {**teacher_info, "weight": args.distill}
        return model, log

    if args.cv:
        train = [c for c in clips if c.split == "train"]
        rows = []
        for _, _, fold in lt.speaker_folds(train, args.cv, args.seed, recorded=original_feats):
            model, _ = fit(fold)
            if args.members > 1:  # the first member alone, and the first k averaged
                model = {"model": model.members[0], **{f"mean of {k}": LandmarkEnsemble.from_models(
                    list(model.members[:k])) for k in range(2, args.members + 1)}}
            direction = lt.energy_direction(fold)
            rows += evaluate(model, [c for c in fold if c.split == "val"], direction, args.cv_delay)
        print_summary(f"speaker-grouped {args.cv}-fold CV on the train split ({args.feature}, {len(train)} clips"
                      + (f", predictions delayed {args.cv_delay} frames" if args.cv_delay else "") + ")",
                      summarize(rows))
        if args.members > 1:
            os.makedirs(args.out, exist_ok=True)
            path = os.path.join(args.out, f"cv{args.cv}-{args.feature}-members{args.members}-delay{args.cv_delay}.json")
            with open(path, "w") as f:
                json.dump({"summary": summarize(rows), "rows": rows}, f, indent=1)
            print(f"wrote {path}")
        return

    model, log = fit(clips)
    train_only = [c for c in clips if c.split == "train"]
    for c in train_only:  # the CV reads features as recorded and applies the offsets itself
        c.feats = original_feats[c.name]
    if args.teacher:  # the student learns the teacher's raw (undelayed) output, so it takes the teacher's delay
        from talkingface import checkpoints

        teacher_delay = int(checkpoints.read_checkpoint(args.teacher)[1]["info"].get("sync_delay", 0))
        sync = {"sync_delay": teacher_delay, "source": f"the teacher's ({os.path.basename(args.teacher)})"}
    elif args.no_sync_cv:
        sync = {"sync_delay": 0, "skipped": True}
    else:
        sync = lt.cross_validate_sync_delay(train_only, config, shifts, steps=args.steps, seed=args.seed,
                                            device=args.device, members=args.members)
    direction = lt.energy_direction(clips)
    val = [c for c in clips if c.split == "val"]
    rows = evaluate(model, val, direction)
    summary = summarize(rows)
    print_summary(f"validation speakers ({len(val)} clips, {config.data_key})", summary)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"landmarks-{args.feature}{'-causal' if args.causal else ''}"
                                  f"{'-distilled' if args.teacher else ''}.safetensors")
    info = {**log["info"], "feature": config.data_key, "av_correction": not args.no_av_correction,
            "val_summary": summary, "energy_direction": direction.tolist(),
            "sync_delay": sync["sync_delay"],
            **({} if args.no_sync_cv or args.teacher else {"sync_delay_cv": sync}),
            **({"sync_delay_source": sync["source"]} if args.teacher else {})}
    save_module(path, model, model.config, model="landmarks", info=info)
    with open(path.replace(".safetensors", ".json"), "w") as f:
        json.dump({"info": info, "history": log["history"], "val_rows": rows}, f, indent=1)
    print(f"wrote {path}")


def load_teacher(path: str):
    from talkingface import checkpoints
    from talkingface.landmarks import build

    model, meta = checkpoints.load_module(path, build, LandmarkConfig, model="landmarks")
    return model.eval()


def add_teacher_targets(args, clips: list, shifts: dict[str, int], teacher) -> dict:
    """Each training clip's ``teacher`` targets: the teacher's predictions from its own feature kind, shifted by
    the same audio/video offset as the student's features (validation clips never get any)."""
    kind = teacher.config.data_key
    for c in clips:
        if c.split != "train":
            continue
        feats = lt.shift(lt.load_features(os.path.join(args.data, c.name + ".npz"), kind), shifts.get(c.name, 0))
        if len(feats) != len(c.feats):
            raise SystemExit(f"{c.name}: {kind} has {len(feats)} frames, the student's features {len(c.feats)}")
        c.teacher = lt.distillation_targets(teacher, feats, smooth=args.teacher_smooth)
    return {"teacher": os.path.basename(args.teacher), "feature_kind": kind,
            **({"teacher_smooth": args.teacher_smooth} if args.teacher_smooth > 0 else {})}


if __name__ == "__main__":
    main()
