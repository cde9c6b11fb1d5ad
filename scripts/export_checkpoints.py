#!/usr/bin/env python3
"""Copy trained weights from runs/ into checkpoints/ under a new versioned name, record their SHA-256 in
checkpoints/MANIFEST.json, and write a training report next to them. The only way files get there.

    python scripts/export_checkpoints.py --landmarks runs/landmarks-whisper.safetensors --name landmarks-v1
    python scripts/export_checkpoints.py --texture runs/texture-128.safetensors --name texture-v1
    python scripts/export_checkpoints.py --mouth runs/mouth-refine.train.safetensors --name mouth-v2
    python scripts/export_checkpoints.py --ensemble runs/a/landmarks-x.safetensors,runs/b/landmarks-x.safetensors \
        --name landmarks-live-v5                  # models trained apart, averaged
    python scripts/export_checkpoints.py --name landmarks-v1 --sync-delay runs/sync-delay-landmarks-v1.json

The last form re-stamps an exported landmark checkpoint's metadata with the sync delay decided by
cross-validation on the training speakers (``scripts/train_landmarks.py --sync-delay-cv``): the tensors are
copied unchanged (checked), the file's SHA-256 in the manifest and its report are updated.
"""
import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from talkingface import checkpoints


def report(name: str, kind: str, meta: dict, history: list[dict]) -> str:
    info = meta["info"]
    lines = [f"# {name}: training report", "", f"- model: `{kind}`, config: `{json.dumps(meta['config'])}`"]
    if kind == "landmarks":
        videos = [c for c in info["train_clips"] if not c.startswith("audio:")]
        speakers = [s for s in info["train_speakers"] if not s.startswith("audio:")]
        lines += [
            f"- data: {len(videos)} training clips of {len(speakers)} speakers "
            f"(../shared/data/videos, speaker-disjoint from validation); feature: {info['feature']}",
            f"- training: {info['steps']} steps, batch {info['batch']} x {info['window']} frames, AdamW lr "
            f"{info['lr']}, weight decay {info['weight_decay']}, {info['seconds']} s on the machine that ran it",
            f"- PCA of speaker-normalized offsets: {meta['config']['n_pca']} components explain "
            f"{100 * info['pca_explained']:.1f} %",
            f"- audio/video offsets corrected on {len(info.get('av_shifts', {}))} training clips: "
            f"{json.dumps(info.get('av_shifts', {}))}",
        ]
        if "members" in info:
            lines.append(f"- an ensemble of {len(info['members'])} models of this recipe trained apart (seeds "
                         f"{', '.join(str(m['seed']) for m in info['members'])}), predictions averaged "
                         f"(`talkingface.landmarks.LandmarkEnsemble`); the time is all of them together, the losses "
                         f"below are the first member's")
        if "distillation" in info:
            d = info["distillation"]
            extra = d.get("extra_audio")
            lines.append(
                f"- distilled from `{d['teacher']}` (its predictions from `{d['feature_kind']}` features are targets "
                f"with weight {d['weight']}, the real mouths {1 - d['weight']:g}) on the training clips"
                + (f" and {extra['files']} speech recordings without video ({extra['seconds']} s, "
                   f"{extra['folder']}; one in five held out as the development set, files naming a validation "
                   f"speaker skipped" + (f"; played at speeds {', '.join(f'{v:g}' for v in extra['speeds'])}, "
                                         f"speed perturbation" if extra.get("speeds") else "") + ")" if extra else ""))
        if "sync_delay_source" in info:
            lines.append(f"- sync delay: {info['sync_delay']} frames at load, {info['sync_delay_source']} (the "
                         "student learns the teacher's undelayed output)")
        if "sync_delay_cv" in info:
            cv = info["sync_delay_cv"]
            lines.append(
                f"- sync delay: predictions are delayed {info['sync_delay']} frames at load, decided by "
                f"{cv['folds']}-fold cross-validation on the training speakers only (models of the same recipe, "
                f"{cv['steps']} steps, predicting held-out {cv['anchor']} clips, lab-synchronized, from their audio "
                f"as recorded; {len(cv['clips'])} clips): mean lag-0 r of mouth opening by delay "
                + ", ".join(f"{d}: {r:.3f}" for d, r in cv["r_by_delay"].items())
                + (f" ({cv['note']})" if cv.get("note") else ""))
        lines += [
            "", "## Validation at training time (speakers never trained on; landmark level, no sync delay)", "",
            "| method | r opening, lag 0 | best within +-2 | r width, lag 0 | best within +-2 | lip dist / iod |",
            "|---|---|---|---|---|---|",
        ]
        for m, s in info["val_summary"].items():
            lines.append(f"| {m} | {s['r_open_lag0']:.3f} | {s['r_open']:.3f} | {s['r_width_lag0']:.3f} | "
                         f"{s['r_width']:.3f} | {s['lip_dist']:.4f} |")
        keys = ("loss", "pos", "vel")
    else:
        lines += [
            f"- data: {info['train_frames']} frames of {len(info['train_clips'])} training clips (|yaw| < 35 deg)",
            f"- training: {info['steps']} steps, batch {info['batch']}, Adam lr {info['lr']}, L1-only warm-up "
            f"{info['warmup']} steps, adversarial weight {info['adv_weight']}, feature matching {info['fm_weight']}, "
            f"lip L1 weight {info['lip_weight']}, EMA {info['ema']}; {info['seconds']} s on the machine that ran it",
            f"- held-out speakers (reference = another frame of the clip): L1 in the painted area "
            f"{info['val_l1_mask']:.4f}, on the lips {info['val_l1_lips']:.4f} (images in [-1, 1])",
        ]
        keys = ("l1", "l1_lips", "adv", "fm", "d")
    lines += ["", "## Training losses", ""]
    if kind == "landmarks" and "distillation" in info:
        lines += ["`loss` is what was minimized (the teacher targets' error mixed with the real mouths' by the "
                  "distillation weight); `pos` and `vel` are the errors against the real mouths alone.", ""]
    lines += ["| step | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    picks = sorted({int(i) for i in np.linspace(0, len(history) - 1, min(12, len(history)))})
    for i in picks:
        h = history[i]
        lines.append(f"| {h['step']} | " + " | ".join(f"{h[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def mouth_report(name: str, config: dict, info: dict) -> str:
    h = info["history"]
    lines = [
        f"# {name}: training report", "",
        "The mouth stage: each frame's own pixels warped at native resolution to the target mouth (no weights), "
        "the opening filled from real mouth interiors, then this small refine network corrects a thin band "
        "around the lip opening (residual and alpha; pixels outside the band are the warped pixels, exactly).",
        "",
        f"- model: `mouth` (talkingface.mouth.RefineNet), config: `{json.dumps(config)}`",
        "- data: data/mouth from scripts/prepare_mouth_data.py (../shared/data videos, aligned 128 px mouth crops "
        "with FaceMesh points); pairs of frames of one clip: source A warped to the mouth of target B, "
        "interior from B's clip, a donor clip or A; target B is the ground truth",
        f"- held-out clips (never trained on): {', '.join(info.get('holdout', []))}",
        f"- training: {info['step']} steps, {info['seconds']:.0f} s of CPU training over {len(info['runs'])} run(s) "
        f"({', '.join(str(r.get('threads')) + ' threads' for r in info['runs'])}); the weights are the EMA; "
        "pyramid L1 + spectrum L1 in the band, hinge adversarial + feature matching after the warm-up",
        *[f"  - run {i + 1}: steps {r['start_step']}-{r.get('end_step', '?')}, {r.get('seconds', 0):.0f} s, started "
          f"{r.get('started', '?')}; adversarial weight {r.get('adv_weight', 0.05)}, feature matching "
          f"{r.get('fm_weight', 1.0)}, L1 inside the opening x{r.get('hole_l1', 1.0)}"
          for i, r in enumerate(info["runs"])],
        *([f"- forked at step {info['forked_from']['step']} from {info['forked_from']['file']}: the runs before "
           "that trained the parent's config, the runs after it this one"] if info.get("forked_from") else []),
        "", "## Held-out band L1 (images in [-1, 1], lower is better)", "",
        "| warp only (no network) | refined |", "|---|---|",
        f"| {info['val_warp_only']:.4f} | {info.get('val_refined', float('nan')):.4f} |",
        "", "## Training losses", "", "| step | l1 | freq | adv | fm | d | seconds |", "|---|---|---|---|---|---|---|",
    ]
    picks = sorted({int(i) for i in np.linspace(0, len(h) - 1, min(12, len(h)))}) if h else []
    for i in picks:
        r = h[i]
        lines.append(f"| {r['step']} | {r['l1']:.4f} | {r['freq']:.4f} | {r['adv']:.3f} | {r['fm']:.4f} | "
                     f"{r['d']:.3f} | {r['sec']:.0f} |")
    return "\n".join(lines) + "\n"


def export_mouth(source: Path, name: str, directory: Path) -> None:
    """The EMA weights of a mouth training checkpoint (scripts/train_mouth.py) as a runtime checkpoint."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from talkingface import mouth
    from talkingface.training.mouth_training import HOLDOUT_CLIPS

    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as f:
        info = json.loads(f.metadata()["info"])
    info.setdefault("holdout", list(HOLDOUT_CLIPS))
    config = mouth.RefineConfig(**info.get("config", {}))
    net = mouth.RefineNet(config)
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, strict=True)
    file = f"{name}.safetensors"
    if (directory / file).exists():
        raise SystemExit(f"{directory / file} exists: a new model gets a new version")
    keep = {k: info[k] for k in ("step", "seconds", "val_warp_only", "val_refined", "holdout", "runs", "forked_from")
            if k in info}
    checkpoints.save_module(directory / file, net.to(torch.float32), config, model="mouth", info=keep)
    (directory / f"{name}.md").write_text(mouth_report(name, config.to_dict(), info))
    checkpoints.add_to_manifest(directory, name, file, model="mouth",
                                info={"report": f"{name}.md", "config": config.to_dict()})
    print(f"exported {directory / file} ({(directory / file).stat().st_size / 1e6:.1f} MB)")


def export_ensemble(sources: list[Path], name: str, directory: Path) -> None:
    """Landmark models trained apart (same config and sync delay) as one checkpoint whose predictions are their
    mean (``landmarks.LandmarkEnsemble``); the report holds each member's own report."""
    from talkingface.landmarks import LandmarkConfig, LandmarkEnsemble, LandmarkModel

    models, metas = [], []
    for src in sources:
        model, meta = checkpoints.load_module(src, LandmarkModel, LandmarkConfig, model="landmarks")
        models.append(model)
        metas.append(meta)
    delays = {int(m["info"].get("sync_delay", 0)) for m in metas}
    if len(delays) != 1:
        raise SystemExit(f"the members have different sync delays {sorted(delays)}: they cannot be averaged")
    ens = LandmarkEnsemble.from_models(models)
    file = f"{name}.safetensors"
    if (directory / file).exists():
        raise SystemExit(f"{directory / file} exists: a new model gets a new version")
    info = {"sync_delay": delays.pop(),
            "members": [{"source": str(src), **m["info"]} for src, m in zip(sources, metas)]}
    if "sync_delay_source" in metas[0]["info"]:
        info["sync_delay_source"] = metas[0]["info"]["sync_delay_source"]
    checkpoints.save_module(directory / file, ens, ens.config, model="landmarks", info=info)
    parts = [f"# {name}: training report", "",
             f"An ensemble of {len(models)} landmark models of one config, trained apart; its prediction is the mean "
             f"of theirs (`talkingface.landmarks.LandmarkEnsemble`), with sync delay {info['sync_delay']}. config: "
             f"`{json.dumps(ens.config.to_dict())}`. Each member's report follows.", ""]
    for i, (src, meta) in enumerate(zip(sources, metas)):
        history = json.loads(src.with_suffix(".json").read_text())["history"]
        text = report(f"member {i + 1} (`{src}`)", "landmarks", meta, history)
        parts.append(text.replace("\n## ", "\n### ").replace("# member", "## member", 1))
    (directory / f"{name}.md").write_text("\n".join(parts))
    checkpoints.add_to_manifest(directory, name, file, model="landmarks",
                                info={"report": f"{name}.md", "config": ens.config.to_dict()})
    print(f"exported {directory / file} ({(directory / file).stat().st_size / 1e6:.1f} MB)")


def history_from_report(text: str) -> list[dict]:
    """The loss rows of a report's "Training losses" table (the report keeps them when the run's log is gone)."""
    section = text.split("## Training losses", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.strip().splitlines() if r.startswith("|")]  # prose before the table is skipped
    keys = [k.strip() for k in rows[0].strip("|").split("|")]
    return [{k: (int(v) if k == "step" else float(v)) for k, v in zip(keys, r.strip("|").split("|"), strict=True)}
            for r in rows[2:] if r.startswith("|")]


def restamp_sync_delay(directory: Path, name: str, cv_json: Path) -> None:
    """Rewrite ``name``'s metadata with the cross-validated sync delay; the tensors stay bit-identical."""
    models = checkpoints.read_manifest(directory)
    entry = models[name]
    path = checkpoints.resolve(name, directory)
    tensors, meta = checkpoints.read_checkpoint(path)
    if meta["model"] != "landmarks":
        raise SystemExit(f"{path} holds a {meta['model']} model: only landmark checkpoints have a sync delay")
    cv = json.loads(cv_json.read_text())
    info = {**meta["info"], "sync_delay": int(cv["sync_delay"]), "sync_delay_cv": cv}
    tmp = path.with_name(f".tmp-{path.name}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={
        "format_version": meta["format_version"] or checkpoints.FORMAT_VERSION, "model": meta["model"],
        "config": json.dumps(meta["config"]), "info": json.dumps(info)})
    again, _ = checkpoints.read_checkpoint(tmp)
    if set(again) != set(tensors) or any(not torch.equal(again[k], tensors[k]) for k in tensors):
        tmp.unlink()
        raise SystemExit("re-stamped tensors differ from the originals; nothing changed")
    tmp.replace(path)
    manifest = json.loads((directory / "MANIFEST.json").read_text())
    manifest["models"][name]["sha256"] = checkpoints.sha256_of(path)
    (directory / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if entry.get("report"):
        history = history_from_report((directory / entry["report"]).read_text())
        (directory / entry["report"]).write_text(report(name, "landmarks", {**meta, "info": info}, history))
    print(f"{path}: sync delay {info['sync_delay']} frames stored; SHA-256 {manifest['models'][name]['sha256']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--landmarks", help="runs/landmarks-*.safetensors")
    src.add_argument("--texture", help="runs/texture-*.safetensors")
    src.add_argument("--mouth", help="runs/mouth-refine.train.safetensors (the mouth stage's refine network)")
    src.add_argument("--ensemble", metavar="A,B[,...]", help="runs/landmarks-*.safetensors of one config, trained "
                     "apart: one checkpoint that averages them")
    src.add_argument("--sync-delay", metavar="JSON", help="re-stamp the exported landmark checkpoint --name with "
                     "the sync delay of scripts/train_landmarks.py --sync-delay-cv")
    ap.add_argument("--name", required=True, help="versioned name, e.g. landmarks-v1 (never reused)")
    ap.add_argument("--dir", default=str(checkpoints.DEFAULT_DIR))
    args = ap.parse_args()
    if args.sync_delay:
        restamp_sync_delay(Path(args.dir), args.name, Path(args.sync_delay))
        return
    if args.ensemble:
        directory = Path(args.dir)
        directory.mkdir(exist_ok=True)
        export_ensemble([Path(p) for p in args.ensemble.split(",")], args.name, directory)
        return
    if args.mouth:
        directory = Path(args.dir)
        directory.mkdir(exist_ok=True)
        export_mouth(Path(args.mouth), args.name, directory)
        return
    kind = "landmarks" if args.landmarks else "texture"
    source = Path(args.landmarks or args.texture)
    _, meta = checkpoints.read_checkpoint(source)
    if meta["model"] != kind:
        raise SystemExit(f"{source} holds a {meta['model']} model, not {kind}")
    history = json.loads(source.with_suffix(".json").read_text())["history"]
    directory = Path(args.dir)
    directory.mkdir(exist_ok=True)
    file = f"{args.name}.safetensors"
    if (directory / file).exists():
        raise SystemExit(f"{directory / file} exists: a new model gets a new version")
    shutil.copyfile(source, directory / file)
    (directory / f"{args.name}.md").write_text(report(args.name, kind, meta, history))
    checkpoints.add_to_manifest(directory, args.name, file, model=kind,
                                info={"report": f"{args.name}.md", "config": meta["config"]})
    print(f"exported {directory / file} ({(directory / file).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
