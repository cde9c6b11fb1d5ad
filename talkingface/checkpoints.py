"""Weights on disk: safetensors only, with the model's config inside, listed in a manifest with SHA-256.

A checkpoint file holds the tensors of one module and, in the safetensors metadata, ``config`` (the
model's frozen config dataclass as JSON), ``model`` (its kind) and free-form ``info`` (training facts).
``checkpoints/MANIFEST.json`` maps a versioned name (``landmarks-v1``) to its file and SHA-256; every
load through the manifest verifies the hash first. Pickles are never read.

Where shipped files are (:func:`shipped`, the one resolver every module uses): in a source checkout, the
repository's ``checkpoints/``, ``demo/`` and ``tests/fixtures/``; in an installed wheel, the same files inside the
package, ``talkingface/shipped/{checkpoints,demo,fixtures}`` (package data: pyproject.toml maps those folders
into the wheel, everything in ``checkpoints/`` included). An installed talkingface therefore works from any
folder, offline.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import CheckpointError

FORMAT_VERSION = "1"
_PACKAGE = Path(__file__).resolve().parent
# shipped data -> its folder in the repository (the wheel holds it in talkingface/shipped/<name>)
SHIPPED = {"checkpoints": "checkpoints", "demo": "demo", "fixtures": "tests/fixtures"}


def shipped(name: str) -> Path:
    """Folder of shipped data: ``checkpoints`` (weights + MANIFEST.json), ``demo`` (the example photo and
    speech) or ``fixtures`` (the GRID clip the page's dubbing example and the benchmark use)."""
    inside = _PACKAGE / "shipped" / name  # an installed wheel
    return inside if inside.is_dir() else _PACKAGE.parent / SHIPPED[name]  # a source checkout (also editable)


DEFAULT_DIR = shipped("checkpoints")
C = TypeVar("C")


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_module(path: str | os.PathLike, module: torch.nn.Module, config: Any, *, model: str,
                info: dict | None = None) -> str:
    """Write ``module``'s state (parameters and buffers) atomically; returns the file's SHA-256."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "model": model,
        "config": json.dumps(config.to_dict()),
        "info": json.dumps(info or {}),
    }
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return sha256_of(path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata of a safetensors checkpoint."""
    path = str(path)
    if not path.endswith(".safetensors"):
        raise CheckpointError(f"'{path}' is not a .safetensors file: only safetensors weights are loaded")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint '{path}' does not exist") from e
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"checkpoint '{path}' could not be read: {e}") from e
    try:
        decoded = {
            "model": meta["model"],
            "config": json.loads(meta["config"]),
            "info": json.loads(meta.get("info", "{}")),
            "format_version": meta.get("format_version"),
        }
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint '{path}' has no valid talkingface metadata ({e})") from e
    return tensors, decoded


def config_from_dict(cls: type[C], data: dict) -> C:
    """Build a config dataclass, ignoring keys it does not know (forward compatibility)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


def load_module(path: str | os.PathLike, module_cls: type, config_cls: type, *, model: str):
    """Build ``module_cls(config)`` from a checkpoint and load its state strictly. Returns (module, meta)."""
    tensors, meta = read_checkpoint(path)
    if meta["model"] != model:
        raise CheckpointError(f"checkpoint '{path}' holds a {meta['model']!r} model, expected {model!r}")
    config = config_from_dict(config_cls, meta["config"])
    module = module_cls(config)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint '{path}' does not match {module_cls.__name__}: {e}") from e
    module.eval()
    return module, meta


# --- manifest ----------------------------------------------------------------------------------------

def read_manifest(directory: str | os.PathLike = DEFAULT_DIR) -> dict[str, dict]:
    path = Path(directory) / "MANIFEST.json"
    if not path.exists():
        raise CheckpointError(f"no checkpoint manifest at '{path}'")
    with open(path) as f:
        return json.load(f)["models"]


def resolve(name: str, directory: str | os.PathLike = DEFAULT_DIR) -> Path:
    """Path of a named checkpoint after verifying its SHA-256 against the manifest."""
    models = read_manifest(directory)
    if name not in models:
        raise CheckpointError(f"no checkpoint named {name!r} in '{directory}' (have: {', '.join(sorted(models))})")
    entry = models[name]
    path = Path(directory) / entry["file"]
    if not path.exists():
        raise CheckpointError(f"checkpoint file '{path}' listed in the manifest is missing")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise CheckpointError(f"checkpoint '{path}' is corrupt or modified: SHA-256 {digest[:12]}... "
                              f"does not match the manifest's {entry['sha256'][:12]}...")
    return path


def add_to_manifest(directory: str | os.PathLike, name: str, file: str, *, model: str, info: dict) -> None:
    """Record ``file`` (inside ``directory``) under ``name``; names are versioned and never overwritten."""
    directory = Path(directory)
    path = directory / "MANIFEST.json"
    data = json.loads(path.read_text()) if path.exists() else {"format_version": FORMAT_VERSION, "models": {}}
    if name in data["models"]:
        raise CheckpointError(f"checkpoint name {name!r} exists already: a new model gets a new version")
    data["models"][name] = {"file": file, "sha256": sha256_of(directory / file), "model": model, **info}
    tmp = path.with_name(".MANIFEST.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
