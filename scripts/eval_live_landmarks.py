#!/usr/bin/env python3
"""What the live path costs in lip sync, at the landmark level, on the validation speakers (never trained on):
the offline model (bidirectional, 30 s Whisper windows) against the live one (unidirectional, streamable
features), each with the sync delay stored in its checkpoint (decided by cross-validation on the training
speakers), and without it. Nothing is tuned here.

    python scripts/eval_live_landmarks.py            # -> prints a markdown table
"""
import argparse

import numpy as np
import torch

from talkingface import checkpoints
from talkingface.landmarks import LandmarkConfig, LandmarkModel
from talkingface.training import landmark_training as lt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--models", default="landmarks-v1,landmarks-live-v1")
    ap.add_argument("--checkpoints", default=str(checkpoints.DEFAULT_DIR))
    args = ap.parse_args()
    print("| model | features | sync delay | r opening, lag 0 | best within +-2 | r width, lag 0 | lip dist / iod |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model, meta = checkpoints.load_module(checkpoints.resolve(name, args.checkpoints), LandmarkModel,
                                              LandmarkConfig, model="landmarks")
        delay = int(meta.get("info", {}).get("sync_delay", 0))
        clips = lt.load_clips(args.data, model.config.feature_kind, splits=("val",))
        for d in sorted({0, delay}):
            rows = []
            for c in clips:
                off = model.predict(torch.from_numpy(c.feats)).numpy()
                rows.append(lt.score(c.neutral + lt.shift(off, -d), c.mouth, c.valid))
            m = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            print(f"| {name} | {model.config.feature_kind} | {d} | {m['r_open_lag0']:.3f} | {m['r_open']:.3f} | "
                  f"{m['r_width_lag0']:.3f} | {m['lip_dist']:.4f} |")
    print(f"\n({len(clips)} validation clips; mean over clips)")


if __name__ == "__main__":
    main()
