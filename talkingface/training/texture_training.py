"""Training of the mouth texture GAN on prepared mouth crops (torch + numpy + opencv only).

One sample: a target frame t and a random reference frame t' of the same clip.
    ref    = crop[t']                      (identity, any mouth shape)
    masked = crop[t] with the generator mask blanked
    sketch = target mouth landmarks of frame t, drawn in the crop
    real   = crop[t]
Losses (generator): L1 over the painted area + extra L1 on the dilated lips (teeth and lip edges carry the
sync), hinge adversarial loss and discriminator feature matching. The discriminator also sees real crops
paired with *another* frame's sketch as fakes, so it learns to judge whether a mouth fits its landmarks.
An exponential moving average of the generator's weights is what gets exported.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from ..texture import MouthGenerator, PatchDiscriminator, TextureConfig, draw_sketch, lip_weight_map

log = logging.getLogger(__name__)


@dataclass
class CropClip:
    name: str
    crops: np.ndarray  # (T, S, S, 3) uint8
    points: np.ndarray  # (T, 59, 2) crop pixels
    frames: np.ndarray  # (T_ok,) usable frame indices


def load_crop_clips(prepared: str, split: str = "train", max_yaw: float = 35.0) -> list[CropClip]:
    with open(os.path.join(prepared, "index.json")) as f:
        index = json.load(f)
    out = []
    for e in index["clips"]:
        if e["split"] != split:
            continue
        d = np.load(os.path.join(prepared, e["clip"] + ".npz"))
        ok = np.flatnonzero(d["valid"] & (np.abs(d["yaw"]) < max_yaw))
        if len(ok) < 10:
            continue
        out.append(CropClip(e["clip"], d["crops"], d["mouth_crop"].astype(np.float32), ok))
    return out


class CropSampler:
    """Random (ref, real, sketch, lips) batches as float tensors in [-1, 1] (the generator masks real itself)."""

    def __init__(self, clips: list[CropClip], size: int, seed: int = 0):
        self.clips, self.size = clips, size
        self.rng = np.random.default_rng(seed)
        lens = np.array([len(c.frames) for c in clips], np.float64)
        self.p = lens / lens.sum()

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        refs, reals, sketches, lips = [], [], [], []
        s = self.size
        for ci in self.rng.choice(len(self.clips), size=batch, p=self.p):
            c = self.clips[ci]
            t, tr = self.rng.choice(c.frames, size=2)
            real, ref, pts = c.crops[t], c.crops[tr], c.points[t].copy()
            if real.shape[0] != s:
                k = s / real.shape[0]
                real = cv2.resize(real, (s, s), interpolation=cv2.INTER_AREA)
                ref = cv2.resize(ref, (s, s), interpolation=cv2.INTER_AREA)
                pts *= k
            if self.rng.random() < 0.5:  # mirror: crops are centred on the face's symmetry axis
                real, ref = real[:, ::-1], ref[:, ::-1]
                pts[:, 0] = s - pts[:, 0]
            gain = self.rng.uniform(0.85, 1.15)  # same photometric change on ref and target
            bias = self.rng.uniform(-12, 12)
            real = np.clip(real.astype(np.float32) * gain + bias, 0, 255)
            ref = np.clip(ref.astype(np.float32) * gain + bias, 0, 255)
            reals.append(real)
            refs.append(ref)
            sketches.append(draw_sketch(pts, s))
            lips.append(lip_weight_map(pts, s))
        real = torch.from_numpy(np.stack(reals)).permute(0, 3, 1, 2) / 127.5 - 1  # (B, 3, S, S)
        ref = torch.from_numpy(np.stack(refs)).permute(0, 3, 1, 2) / 127.5 - 1
        return {
            "ref": ref, "real": real,  # the generator's paint() hides real's mouth region itself
            "sketch": torch.from_numpy(np.stack(sketches))[:, None],  # (B, 1, S, S)
            "lips": torch.from_numpy(np.stack(lips))[:, None],
        }


def hinge_d(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def train(clips: list[CropClip], config: TextureConfig, *, steps: int, batch: int = 8, lr: float = 2e-4,
          adv_weight: float = 0.02, fm_weight: float = 1.0, lip_weight: float = 3.0, warmup: int = 500,
          ema: float = 0.999, seed: int = 0, device: str = "cpu", save_every: int = 500,
          save_fn=None, time_limit: float | None = None) -> tuple[MouthGenerator, dict]:
    """Returns the EMA generator and a log. ``save_fn(gen_ema, info)`` is called every ``save_every`` steps."""
    torch.manual_seed(seed)
    sampler = CropSampler(clips, config.size, seed)
    gen = MouthGenerator(config).to(device)
    disc = PatchDiscriminator(config).to(device)
    gen_ema = copy.deepcopy(gen).eval()
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    mask = gen.mask
    history = []
    t0 = time.time()
    step = 0
    for step in range(steps):
        b = {k: v.to(device) for k, v in sampler.sample(batch).items()}
        fake = gen.paint(b["ref"], b["real"], b["sketch"])  # (B, 3, S, S)
        use_adv = step >= warmup
        # 1. discriminator: real pairs vs generated and vs real-with-wrong-sketch
        if use_adv:
            wrong = b["sketch"].roll(1, dims=0)
            real_logits, _ = disc(b["real"], b["sketch"])
            fake_logits, _ = disc(fake.detach(), b["sketch"])
            mism_logits, _ = disc(b["real"], wrong)
            loss_d = hinge_d(real_logits, torch.cat([fake_logits, mism_logits]))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        # 2. generator
        diff = (fake - b["real"]).abs()
        l1 = (diff * mask).sum() / (mask.sum() * 3 * batch)
        l1_lips = (diff * b["lips"]).sum() / (b["lips"].sum() * 3 + 1)
        loss_g = l1 + lip_weight * l1_lips
        adv = fm = torch.zeros((), device=device)
        if use_adv:
            fake_logits, fake_feats = disc(fake, b["sketch"])
            with torch.no_grad():
                _, real_feats = disc(b["real"], b["sketch"])
            adv = -fake_logits.mean()
            fm = sum(F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats, strict=True)) / len(fake_feats)
            loss_g = loss_g + adv_weight * adv + fm_weight * fm
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(gen_ema.parameters(), gen.parameters(), strict=True):
                pe.lerp_(p, 1 - (ema if step > warmup else 0.9))
        if step % 50 == 0 or step == steps - 1:
            rec = {"step": step, "l1": l1.item(), "l1_lips": l1_lips.item(), "adv": adv.item(), "fm": fm.item(),
                   "d": loss_d.item() if use_adv else 0.0, "sec": round(time.time() - t0, 1)}
            history.append(rec)
            log.info("step %(step)d l1 %(l1).4f lips %(l1_lips).4f adv %(adv).3f fm %(fm).3f d %(d).3f %(sec).0fs", rec)
        if save_fn is not None and step > 0 and step % save_every == 0:
            save_fn(gen_ema, {"steps": step, "history": history})
        if time_limit is not None and time.time() - t0 > time_limit:
            log.info("time limit reached after %d steps", step + 1)
            break
    info = {"steps": step + 1, "batch": batch, "lr": lr, "adv_weight": adv_weight, "fm_weight": fm_weight,
            "lip_weight": lip_weight, "warmup": warmup, "ema": ema, "seconds": round(time.time() - t0, 1),
            "train_clips": [c.name for c in clips], "train_frames": int(sum(len(c.frames) for c in clips))}
    return gen_ema.cpu(), {"history": history, "info": info}


@torch.no_grad()
def validation_l1(gen: MouthGenerator, clips: list[CropClip], n: int = 256, seed: int = 123) -> dict:
    """Reconstruction error on held-out speakers (reference = another frame of the same clip)."""
    sampler = CropSampler(clips, gen.config.size, seed)
    b = sampler.sample(n)
    fake = torch.cat([gen.paint(b["ref"][i:i + 32], b["real"][i:i + 32], b["sketch"][i:i + 32])
                      for i in range(0, n, 32)])
    diff = (fake - b["real"]).abs()
    mask = gen.mask
    return {
        "val_l1_mask": float((diff * mask).sum() / (mask.sum() * 3 * n)),
        "val_l1_lips": float((diff * b["lips"]).sum() / (b["lips"].sum() * 3 + 1)),
    }
