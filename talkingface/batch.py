"""Batch dubbing: many (video, audio) jobs, parallel workers, resumable, with a JSON summary.

    import talkingface
    jobs = talkingface.batch.read_jobs("jobs.csv")          # or a list of dicts / DubJob
    summary = talkingface.dub_batch(jobs, "dubbed/", workers=2)

A job file is CSV (header ``video,audio[,output][,<option>...]``) or JSON (a list of objects with the same
keys). Option columns are DubOptions fields (``face_index``, ``length``, ``fps``, ``max_size``, ``adapt``, ...;
``face`` is accepted for ``face_index``). Relative paths are relative to the job file.

Resume: every finished job leaves a record in ``OUT/.talkingface-batch/`` keyed by the SHA-256 of the input
video and audio *content*, the job's options and the model weights. A job whose key has a record and whose
output is still there is skipped, so a killed batch restarts where it stopped; outputs are written atomically
(a hidden temporary file renamed on success) and temporaries a killed run left behind are removed on restart.
A failed job is reported in the summary and does not stop the others.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .dub import DubOptions
from .errors import InputError, TalkingFaceError

log = logging.getLogger(__name__)

STATE_DIR = ".talkingface-batch"
SUMMARY = "batch_summary.json"
_ALIASES = {"face": "face_index"}
_FIELDS = {f.name: f for f in dataclasses.fields(DubOptions)}


@dataclass
class DubJob:
    video: str
    audio: str
    output: str | None = None  # default: OUT/<video stem>.<audio stem>.mp4
    options: dict = field(default_factory=dict)  # DubOptions fields


def _coerce(name: str, value):
    """A CSV/JSON value -> the type of DubOptions.<name>."""
    if name not in _FIELDS:
        raise InputError(f"unknown job option '{name}' (known: {', '.join(sorted(_FIELDS))})")
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    default = _FIELDS[name].default
    try:
        if name == "face_point":
            if isinstance(value, str):
                value = [float(v) for v in value.replace(";", ",").split(",")]
            return (float(value[0]), float(value[1]))
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.strip().lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return value.strip().lower() in ("1", "true", "yes")
            return bool(value)
        if name in ("face_index", "adapt_steps", "batch_size", "crf", "max_size"):
            return int(value)
        if name in ("fps", "max_angle", "motion_scale", "smooth", "max_seconds"):
            return float(value)
        return str(value)
    except (TypeError, ValueError, IndexError) as e:
        raise InputError(f"job option {name}={value!r} is not valid") from e


def make_job(entry: dict, base: str | os.PathLike = ".") -> DubJob:
    entry = {(_ALIASES.get(k.strip(), k.strip()) if isinstance(k, str) else k): v for k, v in entry.items()}
    for key in ("video", "audio"):
        if not entry.get(key):
            raise InputError(f"a job has no '{key}': {entry}")
    def path(p):
        return str(p) if os.path.isabs(str(p)) else str(Path(base) / str(p))
    options = {k: _coerce(k, v) for k, v in entry.items() if k not in ("video", "audio", "output")}
    options = {k: v for k, v in options.items() if v is not None}
    return DubJob(path(entry["video"]), path(entry["audio"]), entry.get("output") or None, options)


def read_jobs(path: str | os.PathLike) -> list[DubJob]:
    """Jobs from a .csv or .json file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"job file '{p}' does not exist")
    base = p.resolve().parent
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"job file '{p}' is not UTF-8 text") from e
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"job file '{p}' is not valid JSON: {e}") from e
        if isinstance(data, dict) and "jobs" in data:
            data = data["jobs"]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise InputError(f"job file '{p}' must hold a list of job objects")
        rows = data
    elif p.suffix.lower() in (".csv", ".tsv"):
        rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if p.suffix.lower() == ".tsv" else ","))
        if rows and (None in rows[0] or "video" not in rows[0]):
            raise InputError(f"job file '{p}' needs a header line with at least: video,audio")
    else:
        raise InputError(f"job file '{p}' must be .csv, .tsv or .json")
    if not rows:
        raise InputError(f"job file '{p}' lists no jobs")
    return [make_job(r, base) for r in rows]


def _file_hash(path: str, cache: dict[str, str]) -> str:
    if path not in cache:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise InputError(f"cannot read '{path}': {e.strerror or e}") from e
        cache[path] = h.hexdigest()
    return cache[path]


def job_key(job: DubJob, defaults: dict, models: str, cache: dict[str, str] | None = None) -> str:
    """Identity of a job's result: input contents, effective options and model weights."""
    cache = {} if cache is None else cache
    opts = {**defaults, **job.options}
    blob = json.dumps({"video": _file_hash(job.video, cache), "audio": _file_hash(job.audio, cache),
                       "options": opts, "models": models}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _output_path(job: DubJob, out_dir: Path) -> Path:
    if job.output:
        p = Path(job.output)
        return p if p.is_absolute() else out_dir / p
    return out_dir / f"{Path(job.video).stem}.{Path(job.audio).stem}.mp4"


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _remove_stale_temporaries(folders: Iterable[Path]) -> int:
    """Hidden ``.<name>.tmp-<hex>.mp4`` files that a killed run left (media.VideoWriter's naming)."""
    n = 0
    for folder in set(folders):
        if not folder.is_dir():
            continue
        for f in folder.glob(".*.tmp-*"):
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


# --- worker side ----------------------------------------------------------------------------------
_PIPE = None


def _init_worker(checkpoints: str | None, device: str, threads: int) -> None:
    global _PIPE
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("GLOG_minloglevel", "2")
    from .pipeline import load

    _PIPE = load(checkpoints, device=device)


def _run_job(video: str, audio: str, output: str, options: dict) -> dict:
    t0 = time.perf_counter()
    try:
        res = _PIPE.dub(video, audio, output=output, options=DubOptions(**options))
    except TalkingFaceError as e:
        return {"status": "failed", "error": str(e), "seconds": round(time.perf_counter() - t0, 2)}
    except Exception as e:  # a bug must not take the other jobs down: report it with its type
        log.exception("job %s + %s crashed", video, audio)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "seconds": round(time.perf_counter() - t0, 2)}
    return {"status": "done", "seconds": round(time.perf_counter() - t0, 2), "frames": res.n_frames,
            "frames_dubbed": res.frames_dubbed, "frames_no_face": res.frames_no_face,
            "frames_turned": res.frames_turned, "faces": res.n_faces, "face_box": res.face_box,
            "adapt": res.adapt, "error": None}


# --- driver ---------------------------------------------------------------------------------------
def dub_batch(jobs: Iterable[DubJob | dict] | str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 1,
              options: DubOptions | dict | None = None, checkpoints: str | None = None, device: str = "cpu",
              pipeline=None, progress: bool | Callable[[dict], None] = True) -> list[dict]:
    """Dub every job into ``out_dir``; returns (and writes to OUT/batch_summary.json) one record per job.

    jobs: a job file (.csv/.tsv/.json, see read_jobs) or DubJob objects or dicts with the same keys.

    workers: parallel processes (each loads the models once; torch threads are split between them).
    options: defaults for every job (a job's own options override them).
    pipeline: an already loaded Pipeline to use in-process (workers must be 1).
    progress: True for a progress bar, or a callable receiving each finished job's record.
    """
    from .checkpoints import DEFAULT_DIR, read_manifest

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_DIR
    state.mkdir(exist_ok=True)
    if isinstance(jobs, (str, os.PathLike)):
        jobs = read_jobs(jobs)
    job_list = [j if isinstance(j, DubJob) else make_job(j) for j in jobs]
    if not job_list:
        raise InputError("no jobs to run")
    defaults = dataclasses.asdict(options) if isinstance(options, DubOptions) else dict(options or {})
    for k in defaults:
        if k not in _FIELDS:
            raise InputError(f"unknown option '{k}'")
    manifest = read_manifest(Path(checkpoints) if checkpoints else DEFAULT_DIR)
    models = json.dumps(manifest, sort_keys=True)
    outputs = [_output_path(j, out) for j in job_list]
    dupes = {str(p) for p in outputs if outputs.count(p) > 1}
    if dupes:
        raise InputError(f"several jobs write the same output: {', '.join(sorted(dupes))}")
    removed = _remove_stale_temporaries(p.parent for p in outputs)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)

    cache: dict[str, str] = {}
    records: list[dict] = []
    todo: list[int] = []
    for i, (job, dst) in enumerate(zip(job_list, outputs, strict=True)):
        rec = {"video": job.video, "audio": job.audio, "output": str(dst), "options": job.options, "status": "pending",
               "seconds": None, "frames": None, "frames_no_face": None, "error": None}
        try:
            for p, what in ((job.video, "video"), (job.audio, "audio")):
                if not os.path.isfile(p):
                    raise InputError(f"{what} file '{p}' does not exist")
            opts = {**defaults, **job.options}
            DubOptions(**opts)  # validate before any work
            rec["key"] = key = job_key(job, defaults, models, cache)
            done = state / f"{key}.json"
            if done.is_file() and dst.is_file():
                prev = json.loads(done.read_text())
                if prev.get("output") == str(dst) and prev.get("size") == dst.stat().st_size:
                    rec.update({k: prev.get(k) for k in ("seconds", "frames", "frames_dubbed", "frames_no_face",
                                                         "frames_turned", "faces")})
                    rec["status"] = "skipped"
                    rec["note"] = "already done (same inputs, options and models)"
            if not dst.parent.is_dir():
                raise InputError(f"output folder '{dst.parent}' does not exist")
        except (TalkingFaceError, TypeError) as e:
            rec.update(status="failed", error=str(e))
        records.append(rec)
        if rec["status"] == "pending":
            todo.append(i)
    summary_path = out / SUMMARY
    _write_json_atomic(summary_path, records)

    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(job_list), unit="job", desc="dub", initial=len(job_list) - len(todo),
                   disable=not sys.stderr.isatty())

    def finish(i: int, result: dict) -> None:
        rec = records[i]
        rec.update(result)
        if rec["status"] == "done":
            dst = Path(rec["output"])
            _write_json_atomic(state / f"{rec['key']}.json", {**rec, "size": dst.stat().st_size})
        _write_json_atomic(summary_path, records)
        if bar is not None:
            bar.update(1)
            if rec["status"] == "failed":
                bar.write(f"failed: {Path(rec['video']).name} + {Path(rec['audio']).name}: {rec['error']}")
        elif callable(progress):
            progress(rec)

    def args_of(i: int) -> tuple:
        return (job_list[i].video, job_list[i].audio, records[i]["output"], {**defaults, **job_list[i].options})

    try:
        if workers <= 1 or len(todo) <= 1:
            global _PIPE
            saved = _PIPE
            if pipeline is not None:
                _PIPE = pipeline
            elif _PIPE is None and todo:
                _init_worker(checkpoints, device, os.cpu_count() or 1)
            try:
                for i in todo:
                    finish(i, _run_job(*args_of(i)))
            finally:
                if pipeline is not None:
                    _PIPE = saved
        else:
            import multiprocessing as mp

            n = min(workers, len(todo))
            threads = max(1, (os.cpu_count() or 1) // n)
            with ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                     initargs=(checkpoints, device, threads)) as pool:
                pending = {pool.submit(_run_job, *args_of(i)): i for i in todo}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            i = pending.pop(fut)
                            try:
                                result = fut.result()
                            except Exception as e:  # the worker process died (out of memory, killed)
                                result = {"status": "failed", "error": f"worker died: {type(e).__name__}: {e}"}
                            finish(i, result)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        if bar is not None:
            bar.close()
    return records
