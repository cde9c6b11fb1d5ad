#!/usr/bin/env python3
"""Train the mouth refine network (talkingface.mouth.RefineNet); resumable, for long CPU runs in the background.

    python scripts/prepare_mouth_data.py                                  # -> data/mouth
    python scripts/train_mouth.py --time-limit 3600 --threads 1           # -> runs/mouth-refine.train.safetensors
    python scripts/train_mouth.py --resume --time-limit 3600              # continue where it stopped
    python scripts/export_checkpoints.py --mouth runs/mouth-refine.train.safetensors --name mouth-v2
"""
import argparse
import logging
import os

import torch

from talkingface import mouth
from talkingface.training.mouth_training import HOLDOUT_CLIPS, load_clips, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/mouth")
    ap.add_argument("--out", default="runs/mouth-refine.train.safetensors")
    ap.add_argument("--steps", type=int, default=40000, help="total steps (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--time-limit", type=float, default=None, help="stop this run after so many seconds")
    ap.add_argument("--save-minutes", type=float, default=4.0, help="checkpoint interval (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="continue from --out")
    ap.add_argument("--adv-weight", type=float, default=0.05, help="adversarial loss weight (default: %(default)s)")
    ap.add_argument("--fm-weight", type=float, default=1.0, help="feature-matching weight (default: %(default)s)")
    ap.add_argument("--lowpass", type=int, default=1,
                    help="colour residual averaged over N x N pixels (1: full resolution; default: %(default)s)")
    ap.add_argument("--hole-l1", type=float, default=1.0,
                    help="L1 weight inside the lip opening, relative to the band (default: %(default)s)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    clips = load_clips(args.data, exclude=HOLDOUT_CLIPS)
    holdout = load_clips(args.data, names=HOLDOUT_CLIPS)
    logging.info("%d training clips (%d frames), %d held-out clips", len(clips), sum(len(c.frame) for c in clips),
                 len(holdout))
    train(clips, holdout, mouth.RefineConfig(lowpass=args.lowpass), out=args.out, steps=args.steps, batch=args.batch,
          time_limit=args.time_limit, save_minutes=args.save_minutes, resume=args.resume,
          adv_weight=args.adv_weight, fm_weight=args.fm_weight, hole_l1=args.hole_l1)


if __name__ == "__main__":
    main()
