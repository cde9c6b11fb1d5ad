"""Training and landmark-level evaluation of the audio -> mouth landmark model (torch + numpy only).

Steps (``train``):
1. per clip, the resting mouth: the median shape over the 15 % of valid frames with the smallest opening;
   targets are offsets from it (speaker-independent, identity shape kept);
2. per training clip, the audio/video offset (several shared clips are 3-7 frames off, FINDINGS.md),
   estimated by first-pass models that never saw the clip's speaker (``estimate_av_offsets``); the
   clip's features are shifted by it (``apply_av_offsets``);
3. per speaker, the motion range: targets are divided by the speaker's per-coordinate standard deviation;
   ``cm_per_unit`` (the mean range over speakers) turns predictions back into centimetres;
4. a PCA basis of the normalized offsets (K components) is fitted and frozen into the model;
5. AdamW on random windows, loss = MSE of offsets + MSE of their frame-to-frame velocity, on valid frames.
"""
from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from .. import audio as audio_mod
from .. import metrics
from ..landmarks import LandmarkConfig, LandmarkEnsemble, LandmarkModel

log = logging.getLogger(__name__)

MAX_AV_LAG = 8  # frames searched for a clip's audio/video offset
MIN_CLIP_FRAMES = 25  # shorter clips are not trained on


@dataclass
class Clip:
    name: str
    speaker: str
    split: str
    feats: np.ndarray  # (T, F)
    mouth: np.ndarray  # (T, 59, 3) canonical cm
    valid: np.ndarray  # (T,) bool
    energy: np.ndarray  # (T,) dB
    neutral: np.ndarray  # (59, 3)
    teacher: np.ndarray | None = None  # (T, 59*3) a teacher model's normalized offsets (``distillation_targets``)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """y[t] = x[t + k], edge-padded. (T, ...) -> (T, ...)."""
    if k == 0:
        return x
    idx = np.clip(np.arange(len(x)) + k, 0, len(x) - 1)
    return x[idx]


def load_features(npz: str, key: str) -> np.ndarray:
    """Features ``key`` of a prepared clip or recording ``<name>.npz``: the array inside it, or the side file
    ``<name>.<key>.npy`` that ``add_stream_features`` writes."""
    with np.load(npz) as d:
        if key in d.files:
            return d[key]
    side = f"{npz[:-4]}.{key}.npy"
    if not os.path.exists(side):
        raise FileNotFoundError(f"'{npz}' has no '{key}' features (nor '{side}'): prepare them with "
                                f"scripts/prepare_data.py --add-stream-features --stream-window N")
    return np.load(side)


def load_clips(prepared: str, features: str, splits: tuple[str, ...] = ("train", "val")) -> list[Clip]:
    """The clips of a prepared dataset in ``splits``, with the features named ``features`` (a feature kind, or
    ``LandmarkConfig.data_key`` for streamable features with a given window)."""
    with open(os.path.join(prepared, "index.json")) as f:
        index = json.load(f)
    clips = []
    for e in index["clips"]:
        if e["split"] not in splits:
            continue
        d = np.load(os.path.join(prepared, e["clip"] + ".npz"))
        valid = d["valid"].astype(bool)
        if valid.mean() < 0.5:
            log.warning("skipping %s: face found in only %.0f%% of frames", e["clip"], 100 * valid.mean())
            continue
        mouth = d["mouth_canon"].astype(np.float32)
        feats = load_features(os.path.join(prepared, e["clip"] + ".npz"), features)
        clips.append(Clip(e["clip"], e["speaker"], e["split"], feats.astype(np.float32), mouth, valid,
                          d["energy"].astype(np.float32), metrics.neutral_mouth(mouth, valid)))
    return clips


def speaker_folds(clips: list[Clip], folds: int, seed: int, *, recorded: dict[str, np.ndarray] | None = None):
    """Speaker-grouped folds of ``clips`` (the training split): per fold k, yields (k, the held-out speakers, copies
    of the clips with the held-out speakers' as split "val" and the rest "train"). The speakers are shuffled with
    ``seed`` and dealt round-robin. ``recorded``: the held-out clips' features are replaced by these (as recorded,
    before any AV-offset shift)."""
    speakers = sorted({c.speaker for c in clips})
    np.random.default_rng(seed).shuffle(speakers)
    for k in range(folds):
        held = set(speakers[k::folds])
        out = []
        for c in clips:
            fields = {**c.__dict__, "split": "val" if c.speaker in held else "train"}
            if recorded is not None and c.speaker in held:
                fields["feats"] = recorded[c.name]
            out.append(Clip(**fields))
        yield k, held, out


def estimate_av_offsets(clips: list[Clip], config: LandmarkConfig, *, folds: int = 3, steps: int = 500,
                        max_lag: int = MAX_AV_LAG, min_gain: float = 0.08, seed: int = 0,
                        **train_kwargs) -> dict[str, int]:
    """Audio/video offset of every *training* clip, estimated by models that never saw its speaker.

    Speech energy is too blunt a clock (its correlation with opening peaks over several frames), and a
    model trained on a clip has learnt that clip's own misalignment. So the training speakers are split
    into ``folds``; a first-pass model trained on the other folds predicts each held-out clip's mouth
    opening, and the clip's offset is the lag (within +-max_lag) at which that prediction best matches the
    real opening, kept only when it beats lag 0 by ``min_gain`` in r. Returns {clip name: frames}, where
    a shift k means the clip's features are to be read as feats[t + k] (see ``apply_av_offsets``).
    """
    import torch

    iod = metrics.canonical_iod()
    offsets = {}
    for k, _, fold in speaker_folds([c for c in clips if c.split == "train"], folds, seed):
        model, _ = train(fold, config, steps=steps, seed=seed + k, **train_kwargs)
        for c in fold:
            if c.split != "val":
                continue
            pred = metrics.opening(c.neutral + model.predict(torch.from_numpy(c.feats)).numpy(), iod)
            real = metrics.opening(c.mouth, iod)
            rs = {lag: metrics.pearson(shift(pred, lag)[c.valid], real[c.valid])
                  for lag in range(-max_lag, max_lag + 1)}
            best = max(rs, key=rs.get)
            if best != 0 and rs[best] - rs[0] >= min_gain:
                offsets[c.name] = int(best)
                log.info("%s: audio/video offset %+d frames (r %.2f -> %.2f)", c.name, best, rs[0], rs[best])
    return offsets


# Clips recorded with lab-synchronized audio and video (GRID corpus): the absolute clock for the sync delay
SYNC_ANCHOR = "GRID"


def cross_validate_sync_delay(clips: list[Clip], config: LandmarkConfig, offsets: dict[str, int], *,
                              folds: int = 3, steps: int = 1000, max_delay: int = 4, anchor: str = SYNC_ANCHOR,
                              seed: int = 0, members: int = 1, **train_kwargs) -> dict:
    """The sync delay of a landmark model trained with ``offsets``, decided inside the training speakers only.

    The AV-offset correction aligns the training clips to each other (to the consensus of models that never
    saw each clip's speaker), not to an absolute clock, so a model trained on the corrected clips may lead
    or trail the true clock. The training speakers are split into ``folds``; per fold, a model trained with
    the shipped recipe (same offsets, same steps, ``members`` models averaged) on the other folds predicts the
    held-out fold's lab-synchronized clips (``anchor`` in the name) from their features *as recorded* (the true
    clock), and every delay d in 0..``max_delay`` (and the negative ones) is scored by the lag-0 Pearson r of mouth
    opening of the delayed prediction (out[t] = pred[t - d]) against the real opening. The delay with the
    best mean r over all held-out anchor clips is chosen. Validation clips are never read.

    Returns {"sync_delay": d, "r_by_delay": {d: mean r}, "clips": {name: {d: r}}, "folds", "steps", ...}.
    """
    iod = metrics.canonical_iod()
    train_clips = [c for c in clips if c.split == "train"]
    recorded = {c.name: c.feats for c in train_clips}
    delays = range(-max_delay, max_delay + 1)
    per_clip: dict[str, dict[int, float]] = {}
    for k, held, fold in speaker_folds(train_clips, folds, seed):
        if not any(anchor in c.name for c in train_clips if c.speaker in held):
            continue  # no anchor clip to score in this fold: nothing to learn from its model
        apply_av_offsets(fold, offsets)
        model, _ = train_members(fold, config, members, steps=steps, seed=seed + k, **train_kwargs)
        for c in fold:
            if c.split != "val" or anchor not in c.name:
                continue
            pred = metrics.opening(c.neutral + model.predict(torch.from_numpy(recorded[c.name])).numpy(), iod)
            real = metrics.opening(c.mouth, iod)
            per_clip[c.name] = {d: metrics.pearson(shift(pred, -d)[c.valid], real[c.valid]) for d in delays}
            log.info("fold %d, %s: lag-0 r by delay %s", k, c.name,
                     {d: round(r, 3) for d, r in per_clip[c.name].items()})
    if not per_clip:
        return {"sync_delay": 0, "r_by_delay": {}, "clips": {}, "folds": folds, "steps": steps,
                "anchor": anchor, "note": "no anchor clip among the training speakers"}
    mean_r = {d: float(np.mean([r[d] for r in per_clip.values()])) for d in delays}
    best = max(mean_r, key=lambda d: (round(mean_r[d], 6), -abs(d)))
    return {"sync_delay": int(best), "r_by_delay": mean_r, "clips": per_clip, "folds": folds, "steps": steps,
            "anchor": anchor, "seed": seed, **({"members": members} if members > 1 else {})}


def is_dev_recording(name: str) -> bool:
    """One in five audio-only recordings (fixed by a hash of the name) is never trained on: the development set on
    which distillation variants are compared (the validation speakers stay untouched for reporting)."""
    return zlib.crc32(name.encode()) % 5 == 0


def audio_only_clips(folder: str, prepared_audio: str, features: str, teacher: LandmarkModel, *,
                     dev: bool = False, speed: float = 1.0, smooth: float = 0.0) -> list[Clip]:
    """Speech recordings without video as training clips for distillation: the student's features and the
    teacher's predictions as ``teacher`` targets; no mouth (``valid`` all False). Features are computed once
    into ``prepared_audio`` (``prepare.prepare_audio_folder``). ``dev``: the held-out recordings instead
    (``is_dev_recording``). ``speed`` != 1: the recordings played faster or slower (``prepare.change_speed``;
    ``prepared_audio`` must be a folder of their own); a development recording stays out at every speed.
    ``smooth``: the teacher's targets smoothed as the offline render smooths its track (``distillation_targets``)."""
    from .prepare import prepare_audio_folder

    clips = []
    tag = "" if speed == 1.0 else f"@speed{speed:g}"
    window = audio_mod.StreamWindow.from_key(features) or audio_mod.LIVE_WINDOW
    for name in prepare_audio_folder(folder, prepared_audio, window, speed=speed):
        if is_dev_recording(name) != dev:
            continue
        path = os.path.join(prepared_audio, name + ".npz")
        d = np.load(path)
        feats = load_features(path, features).astype(np.float32)
        n = len(feats)
        if n < MIN_CLIP_FRAMES:
            continue
        p = teacher.config.n_points
        clips.append(Clip(f"audio:{name}{tag}", f"audio:{name}", "train", feats, np.zeros((n, p, 3), np.float32),
                          np.zeros(n, bool), d["energy"].astype(np.float32), np.zeros((p, 3), np.float32),
                          teacher=distillation_targets(teacher, load_features(path, teacher.config.data_key)[:n],
                                                       smooth=smooth)))
    return clips


def apply_av_offsets(clips: list[Clip], offsets: dict[str, int]) -> None:
    """Shift the features of the training clips named in ``offsets`` in place (validation clips never)."""
    for c in clips:
        if c.split == "train" and offsets.get(c.name):
            c.feats = shift(c.feats, offsets[c.name])


def speaker_scales(clips: list[Clip]) -> dict[str, np.ndarray]:
    """Per-speaker std of the mouth offsets, per coordinate (59*3,), floored to avoid blowing up noise."""
    by_spk: dict[str, list[np.ndarray]] = {}
    for c in clips:
        off = (c.mouth - c.neutral)[c.valid].reshape(-1, c.mouth.shape[1] * 3)
        by_spk.setdefault(c.speaker, []).append(off)
    return {spk: metrics.motion_range(np.concatenate(offs), 0.0).astype(np.float32) for spk, offs in by_spk.items()}


def fit_pca(clips: list[Clip], scales: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray, float]:
    data = np.concatenate(
        [((c.mouth - c.neutral).reshape(len(c.mouth), -1) / scales[c.speaker])[c.valid] for c in clips]
    )
    mean = np.zeros(data.shape[1], np.float32)  # keep 0 = resting mouth: no mean shift
    u, s, vt = np.linalg.svd(data - mean, full_matrices=False)
    explained = float((s[:k] ** 2).sum() / (s**2).sum())
    return vt[:k].astype(np.float32), mean, explained


def _masked_losses(pred: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error of positions and of frame-to-frame velocities over the frames where m (B, W, 1) is 1."""
    loss_pos = ((pred - y) ** 2 * m).sum() / (m.sum() * y.shape[-1] + 1e-6)
    mv = m[:, 1:] * m[:, :-1]
    loss_vel = (((pred[:, 1:] - pred[:, :-1]) - (y[:, 1:] - y[:, :-1])) ** 2 * mv).sum() / (
        mv.sum() * y.shape[-1] + 1e-6)
    return loss_pos, loss_vel


def distillation_targets(teacher: LandmarkModel, feats: np.ndarray, smooth: float = 0.0) -> np.ndarray:
    """A teacher model's normalized offsets (T, P*3) for features of its own kind (no sync delay: the student
    learns the teacher's raw output and is given the teacher's delay).

    smooth: the zero-phase temporal smoothing the offline render applies to its mouth track
    (``mouth.smooth_track``, ``MouthOptions.smooth``); a live student taught the smoothed track learns to produce
    it with its few frames of lookahead, since it cannot smooth with the future itself. Linear per coordinate, so
    smoothing the normalized offsets equals smoothing the track."""
    with torch.no_grad():
        out = teacher(torch.from_numpy(np.ascontiguousarray(feats, np.float32))[None])[0].flatten(1).numpy()
    if smooth > 0:
        from ..mouth import smooth_track

        out = smooth_track(out, smooth)
    return out


def train(clips: list[Clip], config: LandmarkConfig, *, steps: int = 3000, batch: int = 32, window: int = 80,
          lr: float = 2e-3, weight_decay: float = 1e-2, feat_noise: float = 0.1, seed: int = 0,
          device: str = "cpu", distill: float = 0.0) -> tuple[LandmarkModel, dict]:
    """``distill`` > 0: the loss mixes the real mouths (weight 1 - distill) with the clips' ``teacher`` targets
    (weight distill; a teacher's predictions, on every frame, also on audio-only clips without a face)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    train_clips = [c for c in clips if c.split == "train" and len(c.feats) >= MIN_CLIP_FRAMES
                   and (c.valid.any() or (distill > 0 and c.teacher is not None))]
    labelled = [c for c in train_clips if c.valid.any()]  # audio-only clips (teacher targets only) have no mouth
    scales = speaker_scales(labelled)
    basis, mean, explained = fit_pca(labelled, scales, config.n_pca)
    model = LandmarkModel(config).to(device)
    model.pca_basis.copy_(torch.from_numpy(basis))
    model.pca_mean.copy_(torch.from_numpy(mean))
    model.cm_per_unit.copy_(torch.from_numpy(np.mean(list(scales.values()), axis=0).astype(np.float32)))
    targets = [((c.mouth - c.neutral).reshape(len(c.mouth), -1) / scales[c.speaker]).astype(np.float32)
               if c.valid.any() else np.zeros((len(c.feats), c.mouth.shape[1] * 3), np.float32) for c in train_clips]
    teach = [c.teacher.astype(np.float32) if distill > 0 and c.teacher is not None else np.zeros_like(t)
             for c, t in zip(train_clips, targets)]
    has_teacher = [distill > 0 and c.teacher is not None for c in train_clips]
    weights = np.array([len(c.feats) for c in train_clips], np.float64)
    weights /= weights.sum()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = []
    t0 = time.time()
    model.train()
    for step in range(steps):
        xs, ys, ms, ts, tms = [], [], [], [], []
        for i in rng.choice(len(train_clips), size=batch, p=weights):
            c = train_clips[i]
            s = rng.integers(0, max(1, len(c.feats) - window + 1))
            pad = max(0, s + window - len(c.feats))  # clips shorter than a window (GRID: 3 s) are padded,
            xs.append(np.pad(c.feats[s : s + window], ((0, pad), (0, 0)), mode="edge"))  # padding masked out
            ys.append(np.pad(targets[i][s : s + window], ((0, pad), (0, 0)), mode="edge"))
            ms.append(np.pad(c.valid[s : s + window], (0, pad)))
            ts.append(np.pad(teach[i][s : s + window], ((0, pad), (0, 0)), mode="edge"))
            tms.append(np.pad(np.full(min(window, len(c.feats) - s), has_teacher[i]), (0, pad)))
        x = torch.from_numpy(np.stack(xs)).to(device)  # (B, W, F)
        y = torch.from_numpy(np.stack(ys)).to(device)  # (B, W, P*3)
        m = torch.from_numpy(np.stack(ms)).float().to(device)[..., None]  # (B, W, 1)
        x = x + feat_noise * x.std() * torch.randn_like(x)
        pred = model(x).flatten(2)  # (B, W, P*3)
        loss_pos, loss_vel = _masked_losses(pred, y, m)
        loss = loss_pos + 2.0 * loss_vel
        if distill > 0:
            t = torch.from_numpy(np.stack(ts)).to(device)
            tm = torch.from_numpy(np.stack(tms)).float().to(device)[..., None]
            t_pos, t_vel = _masked_losses(pred, t, tm)
            loss = (1 - distill) * loss + distill * (t_pos + 2.0 * t_vel)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            history.append({"step": step, "loss": loss.item(), "pos": loss_pos.item(), "vel": loss_vel.item()})
            log.info("step %d loss %.4f (pos %.4f vel %.4f)", step, *(history[-1][k] for k in ("loss", "pos", "vel")))
    info = {
        "steps": steps, "batch": batch, "window": window, "lr": lr, "weight_decay": weight_decay,
        "pca_explained": explained, "train_clips": [c.name for c in train_clips],
        "train_speakers": sorted(scales), "seconds": round(time.time() - t0, 1),
        "final_loss": history[-1]["loss"],
    }
    return model.cpu().eval(), {"history": history, "info": info}


def train_members(clips: list[Clip], config: LandmarkConfig, members: int = 1, *, seed: int = 0,
                  **train_kwargs) -> tuple[LandmarkModel | LandmarkEnsemble, dict]:
    """``members`` models of one recipe trained apart (seeds ``seed``, ``seed + 1``, ...); more than one: their
    ensemble (``LandmarkEnsemble``, predictions averaged). The log is the first member's, with each member's
    ``info`` under ``info["members"]``."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    models, logs = [], []
    for i in range(members):
        if members > 1:
            log.info("member %d of %d (seed %d)", i + 1, members, seed + i)
        model, lg = train(clips, config, seed=seed + i, **train_kwargs)
        models.append(model)
        logs.append(lg)
    if members == 1:
        return models[0], logs[0]
    info = {**logs[0]["info"], "seconds": round(sum(lg["info"]["seconds"] for lg in logs), 1),
            "members": [{"seed": seed + i, **lg["info"]} for i, lg in enumerate(logs)]}
    return LandmarkEnsemble.from_models(models), {"history": logs[0]["history"], "info": info}


# --- landmark-level evaluation --------------------------------------------------------------------------

def energy_direction(clips: list[Clip]) -> np.ndarray:
    """Energy baseline: least-squares map from z-scored speech energy to mouth offsets (59, 3), fitted on
    the training clips (``offset_t = z(energy_t) * d``, clipped at 0 for silence)."""
    num, den = 0.0, 0.0
    for c in clips:
        if c.split != "train":
            continue
        z = energy_z(c.energy)[c.valid]
        off = (c.mouth - c.neutral)[c.valid]
        num = num + (z[:, None, None] * off).sum(0)
        den += float((z**2).sum())
    return (num / max(den, 1e-6)).astype(np.float32)


def baseline_tracks(neutral: np.ndarray, energy: np.ndarray, direction: np.ndarray | None) -> dict[str, np.ndarray]:
    """The baselines for one clip of T frames: a static resting mouth, and offsets along ``direction``
    proportional to speech energy (when a direction is given). Each (T, 59, 3)."""
    tracks = {"static": np.repeat(neutral[None], len(energy), axis=0)}
    if direction is not None:
        tracks["energy"] = neutral + energy_z(energy)[:, None, None] * direction
    return tracks


def energy_z(energy: np.ndarray) -> np.ndarray:
    z = (energy - np.median(energy)) / (energy.std() + 1e-6)
    return np.clip(z, 0, None)


def score(pred: np.ndarray, real: np.ndarray, valid: np.ndarray) -> dict:
    """Measures of a predicted mouth track (T, 59, 3) against the real one, canonical space."""
    iod = metrics.canonical_iod()
    p_op, r_op = metrics.opening(pred, iod)[valid], metrics.opening(real, iod)[valid]
    p_w, r_w = metrics.width(pred, iod)[valid], metrics.width(real, iod)[valid]
    r_open, lag_open = metrics.pearson_lagged(p_op, r_op)
    r_width, lag_width = metrics.pearson_lagged(p_w, r_w)
    return {
        "r_open": r_open, "r_open_lag0": metrics.pearson(p_op, r_op), "lag_open": lag_open,
        "r_width": r_width, "r_width_lag0": metrics.pearson(p_w, r_w), "lag_width": lag_width,
        "lip_dist": metrics.lip_distance(pred[valid], real[valid], iod),
    }
