"""Training of the mouth refine network (talkingface.mouth.RefineNet) on pairs of frames of one clip.

A sample: target frame B, source frame A of the same clip (at least 5 frames apart, similar head pose, the
mouth shape preferably different: the network must not learn to copy), and an interior source C (another
frame of the same clip whose mouth is at least as open as B's, as the dubbing bank would give; or a frame of
another clip, as the photo-mode donors would; or A itself). A's crop is warped to the geometry the renderer
would compute (A's mesh with B's 59 mouth points, spread by ``warp.spread_matrix``), the opening is filled
from C and blended as the renderer does, with compositing settings drawn around the defaults
(``mouth.compose_crop``, ``mouth.MouthOptions``), and the network learns to turn that into B inside the band
around the lips.

Losses (no pretrained perceptual network exists offline): L1 inside the band on a 3-level image pyramid,
a focal-frequency-style spectrum L1 of the band region, and after ``warmup`` steps a hinge patch
discriminator on the band region with feature matching. An exponential moving average of the weights is
what gets exported. Checkpoints (safetensors, with the optimizer state) are written every few minutes, and
``--resume`` continues from the last one, so training can run in the background across sessions.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F

from .. import face, mouth, warp

log = logging.getLogger(__name__)

# speakers held out of training for the report's validation numbers (refine vs warp-only on unseen people)
HOLDOUT_CLIPS = ("OpenTalker__DPE__d", "Weizhi-Zhong__IP_LAP__129", "rizkiarm__LipNet__GRID_brbk7n")


@dataclass
class MouthClip:
    name: str
    crops: np.ndarray  # (T, S, S, 3) uint8
    points: np.ndarray  # (T, 478, 2) float32 crop pixels
    frame: np.ndarray  # (T,) source frame numbers
    yaw: np.ndarray
    opening: np.ndarray  # (T,) inner-lip gap / crop side


def load_clips(folder: str, names: tuple[str, ...] | None = None, exclude: tuple[str, ...] = ()) -> list[MouthClip]:
    with open(os.path.join(folder, "index.json")) as f:
        index = json.load(f)
    out = []
    for e in index["clips"]:
        if (names is not None and e["clip"] not in names) or e["clip"] in exclude or e["frames"] < 12:
            continue
        d = np.load(os.path.join(folder, e["clip"] + ".npz"))
        pts = d["points"]
        up = pts[:, list(mouth._UP_MID)].mean(1)
        lo = pts[:, list(mouth._LO_MID)].mean(1)
        opening = np.linalg.norm(lo - up, axis=1) / d["crops"].shape[1]
        out.append(MouthClip(e["clip"], d["crops"], pts, d["frame"], d["yaw"], opening.astype(np.float32)))
    return out


class PairSampler:
    def __init__(self, clips: list[MouthClip], seed: int = 0):
        self.clips = clips
        self.rng = np.random.default_rng(seed)
        lens = np.array([len(c.frame) for c in clips], np.float64)
        self.p = lens / lens.sum()
        self.spread = warp.spread_matrix()

    def _pick_source(self, c: MouthClip, b: int) -> int:
        far = np.flatnonzero((np.abs(c.frame - c.frame[b]) >= 5) & (np.abs(c.yaw - c.yaw[b]) < 10))
        if len(far) == 0:
            far = np.flatnonzero(np.arange(len(c.frame)) != b)
        cand = self.rng.choice(far, size=min(4, len(far)), replace=False)
        if self.rng.random() < 0.6:  # prefer a different mouth: the network must not learn to copy
            return int(cand[np.argmax(np.abs(c.opening[cand] - c.opening[b]))])
        return int(cand[0])

    def _pick_interior(self, c: MouthClip, a: int, b: int) -> mouth.InteriorSource:
        r = self.rng.random()
        if r < 0.5:  # dubbing: the person's own frame with the nearest opening at least as large
            ok = np.flatnonzero(np.abs(c.frame - c.frame[b]) >= 4)
            if len(ok):
                d = c.opening[ok] - c.opening[b]
                score = np.where(d >= 0, d, 3 * -d) + self.rng.uniform(0, 0.01, len(ok))
                k = int(ok[np.argmin(score)])
                return mouth.InteriorSource(c.crops[k], c.points[k])
        if r < 0.8:  # photo mode: a donor (another clip), open
            d = self.clips[int(self.rng.integers(len(self.clips)))]
            k = int(self.rng.choice(np.argsort(d.opening)[-max(1, len(d.opening) // 5):]))
            return mouth.InteriorSource(d.crops[k], d.points[k])
        return mouth.InteriorSource(c.crops[a], c.points[a])

    def sample_one(self) -> dict[str, np.ndarray]:
        c = self.clips[int(self.rng.choice(len(self.clips), p=self.p))]
        b = int(self.rng.integers(len(c.frame)))
        a = self._pick_source(c, b)
        src_pts = c.points[a][: face.N_MESH].astype(np.float64)
        d = c.points[b][face.MOUTH].astype(np.float64) - src_pts[face.MOUTH]
        tgt_pts = src_pts + self.spread @ d
        # compositing settings around the defaults (mouth.MouthOptions): the network learns to finish any of them
        opts = mouth.MouthOptions(feather_cm=self.rng.uniform(0.03, 0.15), seam_alpha=self.rng.uniform(0.15, 0.45),
                                  fill_reach_cm=self.rng.uniform(0.1, 0.3))
        comp = mouth.compose_crop(c.crops[a], src_pts, tgt_pts, self._pick_interior(c, a, b), opts)
        real = c.crops[b].astype(np.float32)
        x = mouth.refine_input(comp["image"], comp["hole"], comp["band"], comp["stretch"])
        y = real.transpose(2, 0, 1) / 127.5 - 1.0
        if self.rng.random() < 0.5:  # mirror
            x, y = x[:, :, ::-1], y[:, :, ::-1]
        gain, bias = self.rng.uniform(0.85, 1.15), self.rng.uniform(-0.08, 0.08)
        x = x.copy()
        x[:3] = np.clip(x[:3] * gain + bias, -1, 1)
        y = np.clip(y * gain + bias, -1, 1)
        if self.rng.random() < 0.15:  # black-and-white footage exists: show the network some
            x[:3] = x[:3].mean(0, keepdims=True)
            y = np.repeat(y.mean(0, keepdims=True), 3, axis=0)
        return {"x": x.astype(np.float32), "y": np.ascontiguousarray(y, np.float32)}

    def sample(self, batch: int) -> dict[str, torch.Tensor]:
        items = [self.sample_one() for _ in range(batch)]
        return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


def pyramid_l1(out: torch.Tensor, real: torch.Tensor, w: torch.Tensor, levels: int = 3) -> torch.Tensor:
    loss = 0.0
    for i in range(levels):
        if i:
            out, real, w = (F.avg_pool2d(t, 2) for t in (out, real, w))
        loss = loss + ((out - real).abs() * w).sum() / (w.sum() * 3 + 1e-6)
    return loss / levels


def spectrum_l1(out: torch.Tensor, real: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    fo = torch.fft.rfft2(out * w, norm="ortho")
    fr = torch.fft.rfft2(real * w, norm="ortho")
    return (fo - fr).abs().mean()


@torch.no_grad()
def band_l1(net: mouth.RefineNet | None, batch: dict[str, torch.Tensor]) -> float:
    """Mean absolute error inside the band (images in [-1, 1]); net=None: the warped input itself."""
    x, y = batch["x"], batch["y"]
    w = x[:, 4:5]
    out = x[:, :3] if net is None else mouth.RefineNet.apply(x, *net(x))
    return float(((out - y).abs() * w).sum() / (w.sum() * 3))


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def _state(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, meta = {}, {"param_groups": sd["param_groups"], "steps": {}}
    for k, st in sd["state"].items():
        for name, v in st.items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"{prefix}.{k}.{name}"] = v.contiguous()
            else:
                meta["steps"][f"{k}.{name}"] = float(v)
    return tensors, meta


def _load_state(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, v in tensors.items():
        if key.startswith(prefix + "."):
            _, k, name = key.split(".", 2)
            state.setdefault(int(k), {})[name] = v
    for key, v in meta["steps"].items():
        k, name = key.split(".", 1)
        state.setdefault(int(k), {})[name] = torch.tensor(v)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: str, gen, gen_ema, disc, opt_g, opt_d, info: dict) -> None:
    tensors = {f"gen.{k}": v.contiguous() for k, v in gen.state_dict().items()}
    tensors.update({f"ema.{k}": v.contiguous() for k, v in gen_ema.state_dict().items()})
    tensors.update({f"disc.{k}": v.contiguous() for k, v in disc.state_dict().items()})
    tg, mg = _state("opt_g", opt_g)
    td, md = _state("opt_d", opt_d)
    tensors.update(tg)
    tensors.update(td)
    meta = {"info": json.dumps(info), "opt_g": json.dumps(mg), "opt_d": json.dumps(md)}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    os.replace(tmp, path)


def train(clips: list[MouthClip], holdout: list[MouthClip], config: mouth.RefineConfig, *, out: str,
          steps: int, batch: int = 8, lr: float = 2e-4, warmup: int = 1500, adv_weight: float = 0.05,
          fm_weight: float = 1.0, freq_weight: float = 1.0, hole_l1: float = 1.0, ema: float = 0.999, seed: int = 0,
          save_minutes: float = 4.0, time_limit: float | None = None, resume: bool = False) -> dict:
    """Train (or resume) and keep ``out`` (a training checkpoint) current. Returns the final info dict.

    hole_l1: weight of the L1 losses inside the lip opening relative to the rest of the band (the interior comes
    from another frame or person, so its exact teeth cannot be predicted: full L1 there pulls towards a blurred
    average, and the adversarial and feature-matching losses are what make it look real)."""
    torch.manual_seed(seed)
    gen = mouth.RefineNet(config)
    disc = mouth.PatchDiscriminator(config)
    gen_ema = copy.deepcopy(gen).eval()
    opt_g = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    info = {"step": 0, "seconds": 0.0, "history": [], "runs": [], "config": config.to_dict()}
    if resume and os.path.exists(out):
        from safetensors import safe_open

        tensors = load_file(out)
        with safe_open(out, "pt") as f:
            meta = f.metadata()
        info = json.loads(meta["info"])
        if info.setdefault("config", config.to_dict()) != config.to_dict():
            raise ValueError(f"{out} was trained with config {info['config']}, not {config.to_dict()}: resume with "
                             "the same network, or train a new one under another --out")
        gen.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("gen.")})
        gen_ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        disc.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("disc.")})
        _load_state("opt_g", opt_g, tensors, json.loads(meta["opt_g"]))
        _load_state("opt_d", opt_d, tensors, json.loads(meta["opt_d"]))
        log.info("resumed from %s at step %d (%.0f s trained)", out, info["step"], info["seconds"])
    sampler = PairSampler(clips, seed + info["step"])
    val = PairSampler(holdout, 123).sample(96) if holdout else None
    if val is not None and "val_warp_only" not in info:
        info["val_warp_only"] = band_l1(None, val)
    run = {"start_step": info["step"], "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "threads": torch.get_num_threads(), "adv_weight": adv_weight, "fm_weight": fm_weight,
           "freq_weight": freq_weight, "hole_l1": hole_l1}
    info["runs"].append(run)
    t_run = time.time()
    t_saved = t_run
    secs0 = info["seconds"]
    step = info["step"]
    while step < steps:
        b = sampler.sample(batch)
        x, y = b["x"], b["y"]
        w = x[:, 4:5] * (1 - (1 - hole_l1) * x[:, 3:4])  # the band, the opening weighted by hole_l1
        region = F.max_pool2d(x[:, 4:5], 9, 1, 4)  # the discriminator sees the band and a little around it
        residual, alpha = gen(x)
        fake = mouth.RefineNet.apply(x, residual, alpha)
        use_adv = step >= warmup
        loss_d = torch.zeros(())
        if use_adv:
            real_logits, _ = disc(y, region)
            fake_logits, _ = disc(fake.detach(), region)
            loss_d = hinge_d(real_logits, fake_logits)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        l1 = pyramid_l1(fake, y, w)
        freq = spectrum_l1(fake, y, w)
        loss = l1 + freq_weight * freq
        adv = fm = torch.zeros(())
        if use_adv:
            fake_logits, fake_feats = disc(fake, region)
            with torch.no_grad():
                _, real_feats = disc(y, region)
            adv = -fake_logits.mean()
            fm = sum(F.l1_loss(a, r) for a, r in zip(fake_feats, real_feats, strict=True)) / len(fake_feats)
            loss = loss + adv_weight * adv + fm_weight * fm
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        with torch.no_grad():
            k = ema if step > 500 else 0.9
            for pe, p in zip(gen_ema.parameters(), gen.parameters(), strict=True):
                pe.lerp_(p, 1 - k)
        step += 1
        info["step"] = step
        info["seconds"] = round(secs0 + time.time() - t_run, 1)
        if step % 50 == 0:
            rec = {"step": step, "l1": round(l1.item(), 4), "freq": round(freq.item(), 4),
                   "adv": round(adv.item(), 3), "fm": round(fm.item(), 4), "d": round(loss_d.item(), 3),
                   "sec": info["seconds"]}
            info["history"].append(rec)
            log.info("step %(step)d l1 %(l1).4f freq %(freq).4f adv %(adv).3f fm %(fm).4f d %(d).3f %(sec).0fs", rec)
        done = step >= steps or (time_limit is not None and time.time() - t_run > time_limit)
        if done or time.time() - t_saved > save_minutes * 60:
            if val is not None:
                info["val_refined"] = band_l1(gen_ema, val)
                log.info("held-out band L1: warp only %.4f, refined %.4f", info["val_warp_only"], info["val_refined"])
            run.update(end_step=step, seconds=round(time.time() - t_run, 1))
            save_checkpoint(out, gen, gen_ema, disc, opt_g, opt_d, info)
            t_saved = time.time()
        if done:
            break
    return info
