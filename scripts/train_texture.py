#!/usr/bin/env python3
"""Train the mouth texture GAN on a prepared dataset (scripts/prepare_data.py).

    python scripts/train_texture.py                         # 128 px, width 16, 6000 steps on CPU -> runs/
    python scripts/train_texture.py --steps 40000 --batch 64 --device cuda   # on a GPU machine

Saves the EMA generator to runs/texture-<size>.safetensors every --save-every steps (so a long run can be
stopped at any time) and at the end, with a JSON log of losses and held-out-speaker L1 beside it.
"""
import argparse
import json
import logging
import os

import torch

from talkingface.checkpoints import save_module
from talkingface.texture import TextureConfig
from talkingface.training import texture_training as tt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--warmup", type=int, default=500, help="L1-only steps before the adversarial loss starts")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    ap.add_argument("--save-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: all cores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))

    config = TextureConfig(size=args.size, width=args.width)
    train_clips = tt.load_crop_clips(args.data, "train")
    val_clips = tt.load_crop_clips(args.data, "val")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"texture-{args.size}.safetensors")

    def save(gen, partial: dict) -> None:
        facts = partial["info"] if "info" in partial else {"steps": partial["steps"]}
        info = {"data": args.data, **facts, **tt.validation_l1(gen.cpu(), val_clips)}
        gen.to(args.device)
        save_module(path, gen, config, model="texture", info=info)
        with open(path.replace(".safetensors", ".json"), "w") as f:
            json.dump({"info": info, "history": partial["history"]}, f, indent=1)
        logging.info("saved %s (%s)", path, {k: v for k, v in info.items() if k.startswith("val")})

    gen, log = tt.train(train_clips, config, steps=args.steps, batch=args.batch, lr=args.lr, warmup=args.warmup,
                        seed=args.seed, device=args.device, save_every=args.save_every, save_fn=save,
                        time_limit=args.time_limit)
    save(gen, log)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
