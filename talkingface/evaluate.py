"""``talkingface eval``: landmark- and video-level evaluation on the speaker-disjoint validation clips.

Landmark level: the shipped pipeline's audio -> mouth stage (features, LSTM, silence gate) driven by each
clip's own audio, against the clip's real FaceMesh mouth in the normalized space, with the clip's own
resting mouth as the neutral. Baselines in the same run: a static mouth, and offsets proportional to
speech energy (direction fitted on the training clips, stored with the landmark checkpoint).
Video level: each clip rendered from its first frame + its own audio, the output re-tracked with FaceMesh
and scored the same way; plus the mouth-crop sharpness (variance of the Laplacian) of output vs real.
"""
from __future__ import annotations

import argparse
import json
import logging
import os

import cv2
import numpy as np

from . import checkpoints, face, media, metrics
from .pipeline import DEFAULT_MODELS, Pipeline, RenderOptions, load

log = logging.getLogger(__name__)
MEASURES = ("r_open_lag0", "r_open", "lag_open", "r_width_lag0", "r_width", "lag_width", "lip_dist")


def _val_entries(data: str) -> list[dict]:
    with open(os.path.join(data, "index.json")) as f:
        index = json.load(f)
    return [e for e in index["clips"] if e["split"] == "val"]


def _landmark_info(checkpoint_dir: str | None, name: str | None = None) -> dict:
    path = checkpoints.resolve(name or DEFAULT_MODELS["landmarks"], checkpoint_dir or checkpoints.DEFAULT_DIR)
    return checkpoints.read_checkpoint(path)[1]["info"]


def retrack(frames, size: int, *, nose_rows: list | None = None, extra: dict | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-track rendered frames: mouth (T, 59, 3) canonical, valid (T,), mouth crops (T, S, S, 3) with black
    borders. ``nose_rows``, when a list, receives per frame the image row just above the nose bottom (or -1);
    ``extra``, when a dict, receives "affine" (T, 2, 3) image -> crop and "lips" (T, 40, 2) image pixels."""
    mouths, valid, crops, affines, lips = [], [], [], [], []
    with face.FaceTracker(static=False, max_faces=1) as tracker:
        for fr in frames:
            faces = tracker.detect(fr)
            if not faces:
                mouths.append(mouths[-1] if mouths else np.zeros((len(face.MOUTH), 3)))
                crops.append(crops[-1] if crops else np.zeros((size, size, 3), np.uint8))
                affines.append(affines[-1] if affines else np.zeros((2, 3)))
                lips.append(lips[-1] if lips else np.zeros((metrics.N_LIPS, 2)))
                valid.append(False)
                if nose_rows is not None:
                    nose_rows.append(-1)
                continue
            lm = faces[0].landmarks
            ff = face.FaceFrame.fit(lm)
            mouths.append(ff.to_canonical(lm[face.MOUTH]))
            affines.append(ff.crop_affine(size))
            lips.append(lm[face.MOUTH[: metrics.N_LIPS], :2])
            crops.append(face.warp_crop(fr, affines[-1], size, replicate_border=False))
            valid.append(True)
            if nose_rows is not None:
                nose_rows.append(int(lm[face.NOSE_LINE, 1].min()))
    if extra is not None:
        extra["affine"], extra["lips"] = np.asarray(affines, np.float64), np.asarray(lips, np.float32)
    return np.asarray(mouths, np.float32), np.asarray(valid), np.asarray(crops)


def changed_mask(out: np.ndarray, ref: np.ndarray, *, threshold: float = 6.0) -> np.ndarray:
    """Pixels (H, W) bool that a method changed: grey difference of ``out`` and ``ref`` (RGB uint8, same
    geometry), smoothed over 5x5 so codec noise does not count, above ``threshold`` grey levels; closed over
    small holes."""
    g = cv2.absdiff(cv2.cvtColor(out, cv2.COLOR_RGB2GRAY), cv2.cvtColor(ref, cv2.COLOR_RGB2GRAY))
    m = (cv2.GaussianBlur(g.astype(np.float32), (5, 5), 0) > threshold).astype(np.uint8)
    return cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0


def crop_masks(masks: list[np.ndarray], out_affines: np.ndarray, real_affines: np.ndarray, real_shape,
               size: int) -> np.ndarray:
    """Image-space changed masks of the output frames -> (T, S, S) masks in the output's aligned crops, less
    the crop pixels that fall outside the real frame under the real crop's affine (black there on that side):
    the same pixels, with the same borders, on both sides of a crop sharpness ratio."""
    ones = np.ones(real_shape[:2], np.uint8)
    out = []
    for m, a_out, a_real in zip(masks, out_affines, real_affines, strict=True):
        mc = cv2.warpAffine(m.astype(np.uint8), a_out, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        inside = cv2.warpAffine(ones, a_real, (size, size), flags=cv2.INTER_NEAREST, borderValue=0)
        out.append((mc > 0) & (inside > 0))
    return np.asarray(out)


def evaluate(pipe: Pipeline, data: str, out: str, *, video: bool = True, max_clips: int | None = None,
             energy_direction: np.ndarray | None = None, train_speakers: list[str] | None = None) -> dict:
    from .audio import speech_energy
    from .metrics import neutral_mouth
    from .training.landmark_training import baseline_tracks, score  # the training measures

    os.makedirs(out, exist_ok=True)
    entries = _val_entries(data)[:max_clips]
    overlap = {e["speaker"] for e in entries} & set(train_speakers or [])
    if overlap:
        raise ValueError(f"validation speakers {sorted(overlap)} were seen in training: the split is not honest")
    rows, plots = [], []
    # the frame strip shows real footage: prefer a GRID clip (CC BY 4.0, redistributable) for it
    strip_entry = next((e for e in entries if "GRID" in e["clip"]), entries[0] if entries else None)
    for e in entries:
        d = np.load(os.path.join(data, e["clip"] + ".npz"))
        real, valid = d["mouth_canon"].astype(np.float32), d["valid"].astype(bool)
        neutral = neutral_mouth(real, valid)
        wav = media.load_audio(e["source"])
        energy = speech_energy(wav)
        track = pipe.predict_mouth(wav, neutral, energy=energy)
        n = min(len(track), len(real))
        track, real_n, valid_n, energy = track[:n], real[:n], valid[:n], energy[:n]
        baselines = baseline_tracks(neutral, energy, energy_direction)
        for method, pred in {"model": track, **baselines}.items():
            rows.append({"clip": e["clip"], "speaker": e["speaker"], "level": "landmark", "method": method,
                         **score(pred, real_n, valid_n)})
        if len(plots) < 4:
            iod = metrics.canonical_iod()
            plots.append((e["clip"], metrics.opening(real_n, iod), metrics.opening(track, iod),
                          metrics.opening(baselines.get("energy", baselines["static"]), iod)))
        if video:
            real_frames = list(media.iter_video_frames(e["source"], fps=25))
            first = real_frames[0]
            res = pipe.render(first, wav, output=os.path.join(out, f"{e['clip']}.mp4"), return_frames=True,
                              options=RenderOptions(max_size=max(first.shape[:2])))
            ex_out, ex_real = {}, {}
            mouth_out, valid_out, crops_out = retrack(res.frames, pipe.crop_size, extra=ex_out)
            _, valid_rt, crops_real = retrack(real_frames, pipe.crop_size, extra=ex_real)
            m = min(len(mouth_out), n, len(crops_real))
            ok = valid_out[:m] & valid_n[:m]
            s = score(mouth_out[:m], real_n[:m], ok)
            # sharpness on the pixels the render changed (output vs the photo it started from), in both sides'
            # aligned crops, with black borders excluded on both sides
            both = ok & valid_rt[:m]
            masks = crop_masks([changed_mask(res.frames[i], first, threshold=2.0) for i in np.flatnonzero(both)],
                               ex_out["affine"][:m][both], ex_real["affine"][:m][both], first.shape, pipe.crop_size)
            rows.append({"clip": e["clip"], "speaker": e["speaker"], "level": "video", "method": "model", **s,
                         "sharpness_ratio": metrics.sharpness_ratio(crops_out[:m][both], crops_real[:m][both],
                                                                    masks),
                         "tracked": float(valid_out.mean())})
            if e is strip_entry:
                _strip(d["crops"][:m], crops_out[:m], os.path.join(out, "strip.png"))
    summary = _summarize(rows)
    _plot_openings(plots, os.path.join(out, "opening.png"))
    _write_results(out, "results", summary, rows, format_table(summary, len(entries)))
    return summary


def _write_results(out: str, stem: str, summary: dict, rows: list[dict], table: str) -> None:
    """OUT/<stem>.json (summary and per-clip rows) and OUT/<stem>.md (the table, also printed)."""
    with open(os.path.join(out, stem + ".json"), "w") as f:
        json.dump({"summary": summary, "rows": rows}, f, indent=1)
    with open(os.path.join(out, stem + ".md"), "w") as f:
        f.write(table + "\n")
    print(table)


def _sync(opening: np.ndarray, valid: np.ndarray, energy: np.ndarray) -> tuple[float, int]:
    """The data README's crude sync score: best Pearson r of mouth opening and speech energy within +-8
    frames over the frames with a face, and that lag."""
    n = min(len(opening), len(energy))
    ok = valid[:n]
    return metrics.pearson_lagged(opening[:n][ok], energy[:n][ok], max_lag=8)


def _summarize(rows: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for level in ("landmark", "video"):
        for method in ("model", "static", "energy"):
            rs = [r for r in rows if r["level"] == level and r["method"] == method]
            if not rs:
                continue
            keys = MEASURES + (("sharpness_ratio",) if level == "video" else ())
            out[f"{level}/{method}"] = {k: float(np.nanmean([r[k] for r in rs])) for k in keys}
    return out


def _r(s: dict, key: str) -> str:
    """'lag-0 r | best r within +-2 frames (mean best lag)' cells of a summary row."""
    lag = s.get(f"lag_{key}")
    lag_txt = f" ({lag:+.1f})" if lag is not None and np.isfinite(lag) else ""
    return f"{s[f'r_{key}_lag0']:.3f} | {s[f'r_{key}']:.3f}{lag_txt}"


R_HEAD = "r opening, lag 0 | best within +-2 (lag) | r width, lag 0 | best within +-2 (lag)"
R_EXPLAIN = ("r = Pearson of the predicted and the real per-frame measure at lag 0 (the headline); beside it the "
             "best r over lags -2..+2 frames and the mean of that best lag (+ = the mouth comes late)")


def format_table(summary: dict, n_clips: int) -> str:
    lines = [f"Validation: {n_clips} clips of speakers never trained on. {R_EXPLAIN}; lip_dist = mean "
             "lip-landmark error / inter-ocular distance (lower is better); sharpness ratio on the pixels the "
             "render changed.", "",
             f"| level | method | {R_HEAD} | lip dist | sharpness ratio |", "|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        level, method = key.split("/")
        sharp = f"{s['sharpness_ratio']:.2f}" if "sharpness_ratio" in s else ""
        lines.append(f"| {level} | {method} | {_r(s, 'open')} | {_r(s, 'width')} | {s['lip_dist']:.4f} | {sharp} |")
    if "landmark/model" in summary:
        m = summary["landmark/model"]
        for b in ("static", "energy"):
            if f"landmark/{b}" in summary:
                s = summary[f"landmark/{b}"]
                lines.append(f"\nmodel vs {b}: lag-0 r opening {m['r_open_lag0'] - s['r_open_lag0']:+.3f}, lag-0 r "
                             f"width {m['r_width_lag0'] - s['r_width_lag0']:+.3f}, lip dist "
                             f"{m['lip_dist'] - s['lip_dist']:+.4f}")
    return "\n".join(lines)


def _plot_openings(plots: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not plots:
        return
    fig, axes = plt.subplots(len(plots), 1, figsize=(10, 2.2 * len(plots)), squeeze=False)
    for ax, (name, real, pred, base) in zip(axes[:, 0], plots, strict=True):
        t = np.arange(len(real)) / 25
        ax.plot(t, real, label="real", color="k", lw=1.2)
        ax.plot(t, pred, label="model", color="tab:red", lw=1.2)
        ax.plot(t, base, label="energy baseline", color="tab:blue", lw=0.8, alpha=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("opening / iod")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _strip(real_crops: np.ndarray, out_crops: np.ndarray, path: str, n: int = 8) -> None:
    """Top row: real mouth crops; bottom row: the rendered frames' mouth crops at the same times."""
    idx = np.linspace(0, len(out_crops) - 1, n).astype(int)
    top = np.concatenate([real_crops[i] for i in idx], axis=1)
    bottom = np.concatenate([out_crops[i] for i in idx], axis=1)
    cv2.imwrite(path, cv2.cvtColor(np.concatenate([top, bottom], axis=0), cv2.COLOR_RGB2BGR))


def evaluate_dub(pipe: Pipeline, data: str, out: str, *, max_clips: int | None = None,
                 energy_direction: np.ndarray | None = None, adapt_steps: int = 150,
                 only: list[str] | None = None, cross: bool = True) -> dict:
    """Dubbing on the validation clips (all at 25 fps, so frames line up with the prepared real tracks).

    self-dub: clip A dubbed with its own audio, re-tracked, against A's real mouth (as the landmark level).
    cross-dub: clip A dubbed with the audio of clip B (another validation speaker): sync of the output's mouth
    opening with B's speech energy (best Pearson r within +-8 frames, and its lag), and with A's own audio,
    which must drop. Untouched region: PSNR of the rows above the nose between the input and the output
    video, beside the PSNR of a plain re-encode of the input at the same quality (the floor set by H.264).
    Methods: the model, the model after --adapt, and the static-mouth and energy-driven baselines (``only``:
    a subset of them; ``cross=False``: self-dubs only, no cross-dub or real-video sync rows).
    """
    from .audio import speech_energy
    from .dub import DubOptions
    from .training.landmark_training import baseline_tracks, score

    dub_dir = os.path.join(out, "dub")
    os.makedirs(dub_dir, exist_ok=True)
    entries = _val_entries(data)[:max_clips]
    if not entries:
        from .errors import InputError

        raise InputError(f"no validation clips in '{data}'")
    # cross-dub partner: the next clip (cyclically) of another speaker
    partners = {}
    for i, e in enumerate(entries):
        others = [entries[(i + k) % len(entries)] for k in range(1, len(entries))]
        partners[e["clip"]] = next((o for o in others if o["speaker"] != e["speaker"]), others[0] if others else e)
    wavs = {e["clip"]: media.load_audio(e["source"]) for e in entries}
    energies = {clip: speech_energy(wav) for clip, wav in wavs.items()}
    methods = {"model": {}, "model+adapt": {"adapt": True, "adapt_steps": adapt_steps}, "static": {}, "energy": {}}
    if energy_direction is None:
        methods.pop("energy")
    if only:
        unknown = set(only) - set(methods)
        if unknown:
            raise ValueError(f"unknown dubbing methods {sorted(unknown)} (have: {', '.join(methods)})")
        methods = {k: v for k, v in methods.items() if k in only}
    rows = []
    for e in entries:
        d = np.load(os.path.join(data, e["clip"] + ".npz"))
        real, valid_real = d["mouth_canon"].astype(np.float32), d["valid"].astype(bool)
        src = list(media.iter_video_frames(e["source"], fps=25))
        reenc = os.path.join(dub_dir, f"{e['clip']}.reencode.mp4")
        h, w = src[0].shape[:2]
        with media.VideoWriter(reenc, 25, w - w % 2, h - h % 2) as vw:
            for fr in src:
                vw.write(np.ascontiguousarray(fr[: h - h % 2, : w - w % 2]))
        reenc_frames = list(media.iter_video_frames(reenc, fps=25))
        b = partners[e["clip"]]
        for method, extra in methods.items():
            def baseline(wav, neutral, _m=method):
                return baseline_tracks(neutral, speech_energy(wav), energy_direction)[_m]

            mouth_fn = baseline if method in ("static", "energy") else None
            kinds = (("self", wavs[e["clip"]]),) if extra.get("adapt") or not cross else (
                ("self", wavs[e["clip"]]), ("cross", wavs[b["clip"]]))
            for kind, wav in kinds:  # --adapt is measured where it matters (sharpness, self-dub): it costs minutes
                path = os.path.join(dub_dir, f"{e['clip']}.{kind}.{method}.mp4")
                res = pipe.dub(e["source"], wav, output=path, mouth_fn=mouth_fn,
                               options=DubOptions(fps=25, length="trim", **extra))
                outf = list(media.iter_video_frames(path, fps=25))
                nose: list = []
                mouth_out, valid_out, crops_out = retrack(outf, pipe.crop_size, nose_rows=nose)
                row = {"clip": e["clip"], "speaker": e["speaker"], "method": method, "kind": kind,
                       "tracked": float(valid_out.mean()), "fps": res.n_frames / res.timings["total"]}
                if res.adapt:
                    row["adapt_l1_before"], row["adapt_l1_after"] = res.adapt["l1_before"], res.adapt["l1_after"]
                iod = metrics.canonical_iod()
                opening = metrics.opening(mouth_out, iod)
                if kind == "self":
                    m = min(len(mouth_out), len(real))
                    ok = valid_out[:m] & valid_real[:m]
                    row.update(score(mouth_out[:m], real[:m], ok))
                    k = min(m, len(src), len(reenc_frames))
                    row["sharpness_ratio"] = _dub_sharpness(outf[:k], src[:k], reenc_frames[:k], ok[:k])
                    psnr, psnr_enc = [], []
                    for i, top in enumerate(nose[: min(len(src), len(outf), len(reenc_frames))]):
                        if top > 20:
                            top -= 8
                            psnr.append(metrics.psnr(src[i][:top, : outf[i].shape[1]], outf[i][:top]))
                            psnr_enc.append(metrics.psnr(src[i][:top, : outf[i].shape[1]], reenc_frames[i][:top]))
                    row["psnr_above_nose"] = float(np.median(psnr)) if psnr else float("nan")
                    row["psnr_reencode"] = float(np.median(psnr_enc)) if psnr_enc else float("nan")
                else:
                    for who, clip in (("new", b["clip"]), ("orig", e["clip"])):
                        row[f"sync_{who}"], row[f"sync_{who}_lag"] = _sync(opening, valid_out, energies[clip])
                rows.append(row)
                log.info("%s", row)
    if cross:
        rows += sync_reference(entries, partners, data, energies)
    summary = {}
    for method in (*methods, "real video"):
        for kind in ("self", "cross"):
            rs = [r for r in rows if r["method"] == method and r["kind"] == kind]
            if not rs:
                continue
            keys = [k for k in rs[0] if k not in ("clip", "speaker", "method", "kind")]
            summary[f"{kind}/{method}"] = {
                k: float(np.nanmean(v)) if np.isfinite(v := np.array([r[k] for r in rs], float)).any() else float("nan")
                for k in keys}
    _write_results(out, "dub_results", summary, rows, format_dub_table(summary, len(entries)))
    return summary


def _dub_sharpness(outf: list, src: list, reenc: list, ok: np.ndarray) -> float:
    """Sharpness ratio of dubbed frames against the input frames (same geometry) over the pixels the dub
    changed: where the output differs from a plain re-encode of the input (both went through one H.264
    encode, so the codec's own noise does not count)."""
    idx = [i for i in np.flatnonzero(ok) if outf[i].shape == src[i].shape == reenc[i].shape]
    if not idx:
        return float("nan")
    masks = np.asarray([changed_mask(outf[i], reenc[i]) for i in idx])
    return metrics.sharpness_ratio(np.asarray([outf[i] for i in idx]), np.asarray([src[i] for i in idx]), masks)


def sync_reference(entries: list[dict], partners: dict, data: str, energies: dict) -> list[dict]:
    """The sync measure on the real input videos, not dubbed: the real mouth against its own audio (what
    in-sync real speech scores) and against the partner's audio (what a wrong audio track scores: the floor
    of a best-of-17-lags correlation on clips of a few seconds)."""
    rows = []
    iod = metrics.canonical_iod()
    for e in entries:
        d = np.load(os.path.join(data, e["clip"] + ".npz"))
        opening, valid = metrics.opening(d["mouth_canon"].astype(np.float32), iod), d["valid"].astype(bool)
        row = {"clip": e["clip"], "speaker": e["speaker"], "method": "real video", "kind": "cross"}
        for who, clip in (("new", partners[e["clip"]]["clip"]), ("orig", e["clip"])):
            row[f"sync_{who}"], row[f"sync_{who}_lag"] = _sync(opening, valid, energies[clip])
        row["fps"] = float("nan")
        rows.append(row)
    return rows


def format_dub_table(summary: dict, n_clips: int) -> str:
    lines = [f"Dubbing, {n_clips} validation clips (speakers never trained on), output at 25 fps.", "",
             "Self-dub (clip dubbed with its own audio, output re-tracked, against the real mouth). " + R_EXPLAIN
             + "; sharpness ratio over the pixels the dub changed; --adapt's held-out L1 on a contiguous block "
             "of time, before -> after:", "",
             f"| method | {R_HEAD} | lip dist | sharpness ratio | PSNR above nose (re-encode only) | adapt L1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, s in summary.items():
        if key.startswith("self/"):
            adapt = (f"{s['adapt_l1_before']:.3f} -> {s['adapt_l1_after']:.3f}" if "adapt_l1_before" in s else "")
            lines.append(f"| {key[5:]} | {_r(s, 'open')} | {_r(s, 'width')} | {s['lip_dist']:.4f} | "
                         f"{s['sharpness_ratio']:.2f} | {s['psnr_above_nose']:.1f} dB ({s['psnr_reencode']:.1f} dB) | "
                         f"{adapt} |")
    lines += ["", "Cross-dub (clip A dubbed with clip B's audio): sync = best Pearson r of mouth opening and speech "
              "energy within +-8 frames (mean lag in frames, + = mouth late):", "",
              "| method | sync with new audio (lag) | sync with the original audio (lag) | fps (2-core CPU) |",
              "|---|---|---|---|"]
    for key, s in summary.items():
        if key.startswith("cross/"):
            name = "real input video, not dubbed (reference)" if key == "cross/real video" else key[6:]
            fps = f"{s['fps']:.1f}" if np.isfinite(s["fps"]) else ""
            lines.append(f"| {name} | {s['sync_new']:.3f} ({s['sync_new_lag']:+.1f}) | {s['sync_orig']:.3f} "
                         f"({s['sync_orig_lag']:+.1f}) | {fps} |")
    return "\n".join(lines)


LIP_BOX = (96, 64)  # (w, h) the lip box is resampled to for PSNR, SSIM and flicker


def lip_box(lips: np.ndarray, shape, widen: float = 1.3) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a 3:2 box around lip points (n, 2) image px: the points' width times ``widen`` (the
    lips' plus 30 %), clipped."""
    c = (lips.min(0) + lips.max(0)) / 2
    half_w = widen / 2 * float(np.ptp(lips[:, 0]))
    half_h = half_w * LIP_BOX[1] / LIP_BOX[0]
    h, w = shape[:2]
    x0, x1 = int(max(0, c[0] - half_w)), int(min(w, c[0] + half_w + 1))
    y0, y1 = int(max(0, c[1] - half_h)), int(min(h, c[1] + half_h + 1))
    return x0, y0, x1, y1


def lip_region(lips: np.ndarray, shape) -> np.ndarray:
    """(H, W) bool: the lips themselves, between the outer and the inner lip contour (face.MOUTH order)."""
    n = len(face.LIPS_OUTER)
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(lips[:n]).astype(np.int32)], 1)
    cv2.fillPoly(m, [np.round(lips[n: 2 * n]).astype(np.int32)], 0)
    return m > 0


def texture_measures(outf: list, real: list, reenc: list, lips: np.ndarray, ok: np.ndarray, *,
                     changed: bool = True, out_lips: np.ndarray | None = None) -> dict:
    """Dubbing texture measures of output frames against the real ones (same geometry), over the frames ``ok``:
    lip-box PSNR and SSIM (grey, resampled to 96 x 64), sharpness ratio over the lip-box pixels the method
    changed (``changed=False``: all lip-box pixels, for the re-encode ceiling), mean CIELAB Delta E of the lip
    pixels (the real lips' pixels in both: lips drawn elsewhere count as colour error), with ``out_lips`` (the
    output's own re-tracked lip points) also the Delta E between the mean colours of each frame's own lips
    (colour alone), and flicker: mean absolute frame-to-frame change of the lip box, output / real."""
    psnr, ssim, de, de_own, masks, boxes_o, boxes_r, keep = [], [], [], [], [], [], [], []
    for i in np.flatnonzero(ok[: min(len(outf), len(real), len(reenc))]):
        o, r = outf[i], real[i]
        if o.shape != r.shape:
            continue
        x0, y0, x1, y1 = lip_box(lips[i], r.shape)
        if x1 - x0 < 8 or y1 - y0 < 6:
            continue
        bo = cv2.resize(cv2.cvtColor(o[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), LIP_BOX, interpolation=cv2.INTER_AREA)
        br = cv2.resize(cv2.cvtColor(r[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY), LIP_BOX, interpolation=cv2.INTER_AREA)
        psnr.append(min(metrics.psnr(bo, br), 100.0))
        ssim.append(metrics.ssim(bo, br))
        region = lip_region(lips[i], r.shape)
        if region.any():
            de.append(metrics.delta_e(o, r, region))
            own = lip_region(out_lips[i], o.shape) if out_lips is not None else None
            if own is not None and own.any():
                de_own.append(metrics.mean_colour_delta_e(o, own, r, region))
        box = np.zeros(r.shape[:2], bool)
        box[y0:y1, x0:x1] = True
        masks.append(box & changed_mask(o, reenc[i]) if changed else box)
        boxes_o.append(bo.astype(np.float32))
        boxes_r.append(br.astype(np.float32))
        keep.append(i)
    if not keep:
        return {k: float("nan") for k in ("lip_psnr", "lip_ssim", "sharpness_ratio", "delta_e", "delta_e_own",
                                          "flicker_ratio")}
    consecutive = [j for j in range(1, len(keep)) if keep[j] == keep[j - 1] + 1]
    fo = [np.abs(boxes_o[j] - boxes_o[j - 1]).mean() for j in consecutive]
    fr = [np.abs(boxes_r[j] - boxes_r[j - 1]).mean() for j in consecutive]
    return {
        "lip_psnr": float(np.mean(psnr)), "lip_ssim": float(np.mean(ssim)),
        "sharpness_ratio": metrics.sharpness_ratio(np.asarray([outf[i] for i in keep]),
                                                   np.asarray([real[i] for i in keep]), np.asarray(masks)),
        "delta_e": float(np.mean(de)) if de else float("nan"),
        "delta_e_own": float(np.mean(de_own)) if de_own else float("nan"),
        "flicker_ratio": float(np.mean(fo) / max(np.mean(fr), 1e-9)) if consecutive else float("nan"),
    }


def target_fidelity(shown: np.ndarray, target: np.ndarray | None, ok: np.ndarray,
                    real: np.ndarray | None = None) -> dict:
    """How faithfully the output shows the mouth it was asked to: r of the re-tracked opening against the target
    track's opening (lag 0) and the gain, std of the shown opening / std of the target's. Self-dubbing rewards a
    stage that fails to move the lips (the input's own mouth is the real one); this does not. With ``real``
    (the real mouth track) also ``r_asked``: the target track's own lag-0 r against it, what a renderer that
    shows exactly its track would score (one scoring above it shows some of the input's own mouth). All NaN
    without a target covering the frames of ``ok``."""
    nan = {"r_target": float("nan"), "gain_target": float("nan"), **({} if real is None else {"r_asked": float("nan")})}
    if target is None or len(target) < len(ok):
        return nan
    iod = metrics.canonical_iod()
    a, b = metrics.opening(shown, iod)[ok], metrics.opening(target[: len(ok)], iod)[ok]
    if len(a) < 3 or b.std() == 0:
        return nan
    out = {"r_target": metrics.pearson(a, b), "gain_target": float(a.std() / b.std())}
    if real is not None:
        from .training.landmark_training import score

        out["r_asked"] = score(target[: len(ok)], real, ok)["r_open_lag0"]
    return out


def evaluate_dub_texture(data: str, out: str, methods: list[str], *, checkpoint_dir: str | None = None,
                         device: str = "cpu", max_clips: int | None = None, landmarks: str | None = None,
                         dub_options: dict | None = None) -> dict:
    """Issue 9's texture table: each validation clip dubbed with its own audio by each mouth texture method
    (``talkingface.load(texture=name)``), plus a plain re-encode of the input as the ceiling. Per method, mean
    over clips of ``texture_measures`` and the re-tracked mouth opening's r against the real track (lag 0, and
    the best within +-2 frames with its lag), and the end-to-end fps. OUT/dub_texture.md and .json.
    A method may carry mouth-stage options (``mouth.parse_method``): "warp:feather_cm=0:smooth=0" is the warp
    stage with those settings, so two settings compare in one run. dub_options: ``DubOptions`` fields for every
    dub (e.g. {"own_expression": False})."""
    from .dub import DubOptions
    from .errors import CheckpointError
    from .training.landmark_training import score

    dub_dir = os.path.join(out, "dub")
    os.makedirs(dub_dir, exist_ok=True)
    entries = _val_entries(data)[:max_clips]
    pipes: dict[str, Pipeline] = {}
    skipped = {}
    from .mouth import parse_method

    for name in methods:  # a name, or a name with mouth options: "warp:feather_cm=0.12:smooth=0.3"
        texture, mouth_options = parse_method(name)
        try:
            pipes[name] = load(checkpoint_dir, device=device, texture=texture, mouth_options=mouth_options,
                               landmarks=landmarks or DEFAULT_MODELS["landmarks"])
        except CheckpointError as e:
            skipped[name] = str(e)
            log.warning("skipping texture method %s: %s", name, e)
            print(f"skipping texture method {name}: {e}")
    size = next(iter(pipes.values())).crop_size if pipes else 128
    rows = []
    for e in entries:
        d = np.load(os.path.join(data, e["clip"] + ".npz"))
        real, valid_real = d["mouth_canon"].astype(np.float32), d["valid"].astype(bool)
        src = list(media.iter_video_frames(e["source"], fps=25))
        ex: dict = {}
        _, valid_src, _ = retrack(src, size, extra=ex)
        reenc_path = os.path.join(dub_dir, f"{e['clip']}.reencode.mp4")
        h, w = src[0].shape[:2]
        with media.VideoWriter(reenc_path, 25, w - w % 2, h - h % 2) as vw:
            for fr in src:
                vw.write(np.ascontiguousarray(fr[: h - h % 2, : w - w % 2]))
        reenc = list(media.iter_video_frames(reenc_path, fps=25))
        runs = [("re-encode (ceiling)", reenc, float("nan"), None)]
        for name, pipe in pipes.items():
            if name in skipped:
                continue
            path = os.path.join(dub_dir, f"{e['clip']}.self.{name.replace(':', '_')}.mp4")
            try:
                res = pipe.dub(e["source"], media.load_audio(e["source"]), output=path,
                               options=DubOptions(fps=25, length="trim", **(dub_options or {})))
            except (AttributeError, TypeError) as err:
                if pipe.painter is None:
                    raise
                skipped[name] = f"dubbing with the mouth stage failed: {err!r} (dub.py has no mouth-stage painter yet?)"
                print(f"skipping texture method {name}: {skipped[name]}")
                continue
            runs.append((name, list(media.iter_video_frames(path, fps=25)), res.n_frames / res.timings["total"],
                         res.mouth_canonical))
        for name, outf, fps, target in runs:
            ex_out: dict = {}
            mouth_out, valid_out, _ = retrack(outf, size, extra=ex_out)
            m = min(len(mouth_out), len(real), len(src))
            ok = valid_out[:m] & valid_real[:m] & valid_src[:m]
            s = score(mouth_out[:m], real[:m], ok)
            row = {"clip": e["clip"], "speaker": e["speaker"], "method": name, "fps": fps,
                   "r_open_lag0": s["r_open_lag0"], "r_open": s["r_open"], "lag_open": s["lag_open"],
                   **target_fidelity(mouth_out[:m], target, ok, real[:m]),
                   **texture_measures(outf, src, reenc, ex["lips"], ok, changed=name != "re-encode (ceiling)",
                                      out_lips=ex_out["lips"])}
            rows.append(row)
            log.info("%s", row)
    names = ["re-encode (ceiling)", *(n for n in pipes if n not in skipped)]
    summary = {}
    for name in names:
        rs = [r for r in rows if r["method"] == name]
        if rs:
            keys = [k for k in rs[0] if k not in ("clip", "speaker", "method")]
            summary[name] = {k: float(np.nanmean(v)) if np.isfinite(v := np.array([r[k] for r in rs], float)).any()
                             else float("nan") for k in keys}
    _write_results(out, "dub_texture", summary, rows, format_texture_table(summary, len(entries), skipped))
    return summary


def format_texture_table(summary: dict, n_clips: int, skipped: dict | None = None) -> str:
    lines = [f"Dubbing texture, {n_clips} validation clips (speakers never trained on), each dubbed with its own "
             "audio; measures against the real frames (mean over clips). Lip box: 30 % wider than the real lips, "
             "grey, 96 x 64. Sharpness ratio: variance of the Laplacian over the lip-box pixels the method "
             "changed (re-encode: all lip-box pixels), output / real. Delta E: CIE76 in CIELAB over the real "
             "lip pixels (lips drawn elsewhere count); lip colour: Delta E between the mean CIELAB colours of the "
             "output's own (re-tracked) lips and the real lips, per frame (colour alone). r vs target: re-tracked "
             "mouth opening against the mouth track the method was asked to show, lag 0 (gain: std ratio); self-"
             "dubbing rewards a method that fails to move the lips, this does not; asked-for track: r of that track "
             "itself against the real one (a method scoring above it shows some of the input's own mouth). "
             "Flicker: mean absolute frame-to-frame change of the lip box, output / real. r: re-tracked mouth "
             "opening against the real track, lag 0 (best within +-2 frames, mean best lag).", "",
             "| method | lip-box PSNR | lip-box SSIM | sharpness ratio | lip Delta E | lip colour Delta E | "
             "flicker / real | r opening, lag 0 (best, lag) | r vs target (gain) | asked-for track: r lag 0 | fps |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        fps = f"{s['fps']:.1f}" if np.isfinite(s["fps"]) else ""
        lines.append(f"| {name} | {s['lip_psnr']:.1f} dB | {s['lip_ssim']:.3f} | {s['sharpness_ratio']:.2f} | "
                     f"{s['delta_e']:.1f} | {s.get('delta_e_own', float('nan')):.1f} | {s['flicker_ratio']:.2f} | "
                     f"{s['r_open_lag0']:.3f} ({s['r_open']:.3f}, "
                     f"{s['lag_open']:+.1f}) | {s.get('r_target', float('nan')):.3f} "
                     f"({s.get('gain_target', float('nan')):.2f}) | {s.get('r_asked', float('nan')):.3f} | {fps} |")
    for name, why in (skipped or {}).items():
        lines.append(f"\n{name}: not evaluated ({why})")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .errors import InputError

    given = [f for f in ("average_range", "average_expression") if getattr(args, f, False)]
    if given and not getattr(args, "texture_methods", None):
        raise InputError(f"--{given[0].replace('_', '-')} applies to the dubbing texture table (--dub "
                         f"--texture-methods)")
    if not os.path.exists(os.path.join(args.data, "index.json")):
        raise InputError(f"no prepared dataset at '{args.data}': run scripts/prepare_data.py first")
    if getattr(args, "texture_methods", None):
        evaluate_dub_texture(args.data, args.out, [m.strip() for m in args.texture_methods.split(",") if m.strip()],
                             checkpoint_dir=args.checkpoints, device=args.device, max_clips=args.max_clips,
                             landmarks=getattr(args, "landmarks", None),
                             dub_options={"own_range": not getattr(args, "average_range", False),
                                          "own_expression": not getattr(args, "average_expression", False)})
        return 0
    landmarks = getattr(args, "landmarks", None) or DEFAULT_MODELS["landmarks"]
    pipe = load(args.checkpoints, device=args.device, landmarks=landmarks)
    info = _landmark_info(args.checkpoints, landmarks)
    direction = np.asarray(info["energy_direction"], np.float32) if "energy_direction" in info else None
    if getattr(args, "dub", False):
        only = [m.strip() for m in args.methods.split(",") if m.strip()] if getattr(args, "methods", None) else None
        evaluate_dub(pipe, args.data, args.out, max_clips=args.max_clips, energy_direction=direction,
                     adapt_steps=args.adapt_steps, only=only, cross=not getattr(args, "no_cross", False))
        return 0
    evaluate(pipe, args.data, args.out, video=not args.no_video, max_clips=args.max_clips,
             energy_direction=direction, train_speakers=info.get("train_speakers"))
    return 0
