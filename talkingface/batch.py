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
(a hidden temporary named with the batch and the process, renamed on success) and the temporaries of dead
processes of the same batch are removed on restart (see ``remove_dead_temporaries``). A failed job is reported in
the summary and does not stop the others; a job whose worker died is retried a bounded number of times. Outputs
stay inside the output folder unless ``allow_outside=True``. Worker processes end with the process that started
them.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from . import checks
from .dub_options import DubOptions
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
    given = value
    try:
        if name == "face_point":
            if isinstance(value, str):
                value = [float(v) for v in value.replace(";", ",").split(",")]
            if len(value) != 2:
                raise ValueError(value)
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
        raise InputError(f"job option {name}={given!r} is not valid") from e


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


def models_in_use(checkpoints: str | None) -> str:
    """What made an output, as text: the weights' manifest and which of them (or which method) the pipeline uses
    by default (the mouth method changed from texture-v1 to warp: old outputs are redone, not skipped). A Ray
    node compares its own with the driver's."""
    from .checkpoints import DEFAULT_DIR, read_manifest
    from .pipeline import DEFAULT_MODELS

    manifest = read_manifest(Path(checkpoints) if checkpoints else DEFAULT_DIR)
    return json.dumps({"manifest": manifest, "use": DEFAULT_MODELS}, sort_keys=True)


def job_key(job: DubJob, defaults: dict, models: str, cache: dict[str, str] | None = None) -> str:
    """Identity of a job's result: input contents, effective options and model weights."""
    cache = {} if cache is None else cache
    opts = {**defaults, **job.options}
    blob = json.dumps({"video": _file_hash(job.video, cache), "audio": _file_hash(job.audio, cache),
                       "options": opts, "models": models}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _output_path(job: DubJob, out_dir: Path) -> Path:
    """Where a job writes, resolved (symlinks and '..' followed) so that two spellings of one file compare equal."""
    if job.output:
        p = Path(job.output)
        p = p if p.is_absolute() else out_dir / p
    else:
        p = out_dir / f"{Path(job.video).stem}.{Path(job.audio).stem}.mp4"
    return Path(os.path.realpath(p))


# --- temporaries ----------------------------------------------------------------------------------
# A batch writes each output (and its JSON files) under a hidden name that carries the batch id (a hash of the
# resolved output folder), a hash of the host name and the writing process's PID:
#     .<name>.tfb-<batch id>-<host>-<pid>.mp4     (the encoder's own temporary: ..<name>.tfb-...tmp-XXXX.mp4)
# and renames it onto the real name when it is complete. A restarted batch removes only such files of its own
# output folder whose process is gone on this host: a render or another batch writing into the same folder
# keeps its live temporaries.
_TEMP = re.compile(r"\.tfb-([0-9a-f]{8})-([0-9a-f]{6})-(\d+)\.")


def batch_id(out_dir: str | os.PathLike) -> str:
    return hashlib.sha256(os.path.realpath(out_dir).encode()).hexdigest()[:8]


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temp_path(dst: Path, bid: str, suffix: str | None = None) -> Path:
    """The hidden name a process of batch ``bid`` writes ``dst`` under before renaming it."""
    return dst.with_name(f".{dst.stem}.tfb-{bid}-{host_tag()}-{os.getpid()}{suffix or dst.suffix or '.mp4'}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_dead_temporaries(folders: Iterable[Path], bid: str) -> int:
    """Remove the temporaries that dead processes of batch ``bid`` on this host left in ``folders``."""
    n, host = 0, host_tag()
    for folder in set(folders):
        try:
            names = [f for f in folder.iterdir() if f.name.startswith(".")]
        except OSError:
            continue
        for f in names:
            m = _TEMP.search(f.name)
            if not m or m[1] != bid or m[2] != host:
                continue
            pid = int(m[3])
            if pid == os.getpid() or pid_alive(pid):
                continue
            try:
                f.unlink()
                n += 1
            except OSError:
                pass
    return n


def _write_json_atomic(path: Path, data, bid: str) -> None:
    tmp = temp_path(path, bid, ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# --- worker side ----------------------------------------------------------------------------------
def die_with_parent(parent_pid: int) -> None:
    """Make this worker process end when its driver does, however the driver ends (SIGKILL included): the
    kernel's parent-death signal on Linux, and a thread that watches the parent PID everywhere."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the driver died before the signal was armed
        os._exit(1)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="talkingface-driver-watch", daemon=True).start()


# The pipeline of a worker *process* of a local pool. It is set only in processes that one dub_batch call's pool
# spawned (and that die with that pool), never in the process that calls dub_batch: each batch owns its models.
_worker_pipe = None


def _init_worker(checkpoints: str | None, device: str, threads: int, parent_pid: int) -> None:
    global _worker_pipe
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(max(1, threads))
    os.environ.setdefault("GLOG_minloglevel", "2")
    from .pipeline import load

    _worker_pipe = load(checkpoints, device=device)


def run_job(pipe, video: str, audio: str, output: str, options: dict, bid: str) -> dict:
    """Dub one job with ``pipe`` into a temporary named for this process, then rename it onto ``output``."""
    t0 = time.perf_counter()
    dst = Path(output)
    tmp = temp_path(dst, bid)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        res = pipe.dub(video, audio, output=str(tmp), options=DubOptions(**options))
        os.replace(tmp, dst)
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, TalkingFaceError):
            error = str(e)
        else:  # a bug must not take the other jobs down: report it with its type
            log.exception("job %s + %s crashed", video, audio)
            error = f"{type(e).__name__}: {e}"
        return {"status": "failed", "error": error, "seconds": round(time.perf_counter() - t0, 2), "worker": worker}
    return {"status": "done", "seconds": round(time.perf_counter() - t0, 2), "frames": res.n_frames,
            "frames_dubbed": res.frames_dubbed, "frames_no_face": res.frames_no_face,
            "frames_turned": res.frames_turned, "faces": res.n_faces, "face_box": res.face_box,
            "adapt": res.adapt, "error": None, "worker": worker}


def _run_in_worker(video: str, audio: str, output: str, options: dict, bid: str) -> dict:
    return run_job(_worker_pipe, video, audio, output, options, bid)


# --- executors ------------------------------------------------------------------------------------
def _worker_died(e: BaseException) -> dict:
    return {"status": "failed", "error": f"worker died: {type(e).__name__}: {e}", "retry": True}


def _run_in_process(todo, args_of, on_result, *, pipeline, checkpoints, device) -> None:
    pipe = pipeline
    if pipe is None:
        import torch

        from .pipeline import load

        torch.set_num_threads(max(1, os.cpu_count() or 1))
        pipe = load(checkpoints, device=device)
    try:
        for i in todo:
            on_result(i, run_job(pipe, *args_of(i)))
    finally:
        if pipeline is None:
            pipe.close()


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            p.kill()
        except (OSError, ValueError):
            pass


def _run_pool(todo, args_of, on_result, *, workers, checkpoints, device) -> None:
    import multiprocessing as mp

    queue = deque(todo)
    while queue:  # a worker that dies breaks the pool: the jobs it took down are retried in a new one
        n = min(workers, len(queue))
        threads = max(1, (os.cpu_count() or 1) // n)
        pool = ProcessPoolExecutor(n, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(checkpoints, device, threads, os.getpid()))
        try:
            pending = {pool.submit(_run_in_worker, *args_of(i)): i for i in queue}
            queue.clear()
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    i = pending.pop(fut)
                    try:
                        result = fut.result()
                    except BrokenProcessPool as e:  # the worker process died (out of memory, killed)
                        result = _worker_died(e)
                    except Exception as e:
                        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                    if on_result(i, result):
                        queue.append(i)
        except BaseException:
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)


# --- driver ---------------------------------------------------------------------------------------
def dub_batch(jobs: Iterable[DubJob | dict] | str | os.PathLike, out_dir: str | os.PathLike, *,
              workers: int | None = None, options: DubOptions | dict | None = None, checkpoints: str | None = None,
              device: str = "cpu", pipeline=None, progress: bool | Callable[[dict], None] = True,
              allow_outside: bool = False, retries: int = 2, executor: str = "local", ray_address: str | None = None,
              cpus_per_worker: float = 1, gpus_per_worker: float | None = None) -> list[dict]:
    """Dub every job into ``out_dir``; returns (and writes to OUT/batch_summary.json) one record per job.

    jobs: a job file (.csv/.tsv/.json, see read_jobs) or DubJob objects or dicts with the same keys.

    workers: parallel processes (each loads the models once; torch threads are split between them; default 1).
        They end with the calling process, however it ends. With executor="ray": Ray worker actors (default: as
        many as the cluster's CPUs/GPUs/memory hold).
    executor: "local" (this machine's processes) or "ray": the same batch on a Ray cluster (talkingface.cluster;
        needs the ``cluster`` extra). ray_address: "local" (a private Ray instance on this machine), "auto" (the
        cluster this machine joined) or a cluster address; None: ray.init's default. cpus_per_worker /
        gpus_per_worker: resources each Ray worker declares (GPUs only with device="cuda", default 1).
    options: defaults for every job (a job's own options override them).
    pipeline: an already loaded Pipeline to use in-process (workers must be 1). Otherwise each call loads its own
        models (and frees them at the end); nothing is shared between calls.
    progress: True for a progress bar and one log line per job on stderr, or a callable receiving each finished
        job's record.
    allow_outside: let a job's ``output`` (absolute, or with '..') name a file outside ``out_dir``; by default such
        a job fails with an error naming it.
    retries: how many times a job whose worker died (killed, out of memory) is run again before it is reported
        as failed. A job that fails by itself (bad input) is not retried.
    """
    if executor not in ("local", "ray"):
        raise InputError(f"executor must be 'local' or 'ray', not {executor!r}")
    workers = checks.number("workers", workers)
    cpus_per_worker = checks.number("cpus_per_worker", cpus_per_worker)
    gpus_per_worker = checks.number("gpus_per_worker", gpus_per_worker)
    if executor == "ray" and pipeline is not None:
        raise InputError("pipeline= runs in this process; it cannot be used with executor='ray'")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, a read-only or missing place: one line, not a traceback
        raise InputError(f"cannot make the output folder '{out_dir}': {e.strerror or e}") from None
    out = Path(os.path.realpath(out))
    bid = batch_id(out)
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
    models = models_in_use(checkpoints)
    outputs = [_output_path(j, out) for j in job_list]
    dupes = {str(p) for p in outputs if outputs.count(p) > 1}
    if dupes:
        raise InputError(f"several jobs write the same output: {', '.join(sorted(dupes))}")
    inputs = {os.path.realpath(p) for j in job_list for p in (j.video, j.audio)}
    removed = remove_dead_temporaries({p.parent for p in outputs} | {out, state}, bid)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted run", removed)

    cache: dict[str, str] = {}
    records: list[dict] = []
    todo: list[int] = []
    for i, (job, dst) in enumerate(zip(job_list, outputs, strict=True)):
        rec = {"video": job.video, "audio": job.audio, "output": str(dst), "options": job.options, "status": "pending",
               "seconds": None, "frames": None, "frames_no_face": None, "error": None, "attempts": 0}
        try:
            if not allow_outside and not dst.is_relative_to(out):
                raise InputError(f"output '{job.output}' is outside the output folder '{out}' (allow it with "
                                 "--allow-outside-out-dir, or allow_outside=True)")
            if str(dst) in inputs:
                raise InputError(f"output '{dst}' is an input file of this batch; refusing to overwrite it")
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
            if rec["status"] == "pending":  # the folder exists and takes the file; an extension the encoder writes
                checks.output_file(dst, inputs=[("video", job.video), ("audio", job.audio)])
        except (TalkingFaceError, TypeError) as e:
            rec.update(status="failed", error=str(e))
        records.append(rec)
        if rec["status"] == "pending":
            todo.append(i)
    summary_path = out / SUMMARY
    summary = {"cost": 0.0, "last": 0.0, "stale": False}

    def write_summary(force: bool = False) -> None:
        """Rewrite the summary; a large one (10,000 jobs: ~6 MB, ~0.3-0.6 s of JSON) at most every 20 times its
        own writing time, so that the driver, which feeds the workers between writes, keeps up with them."""
        now = time.perf_counter()
        if not force and now - summary["last"] < 20 * summary["cost"]:
            summary["stale"] = True
            return
        _write_json_atomic(summary_path, records, bid)
        summary.update(cost=time.perf_counter() - now, last=time.perf_counter(), stale=False)

    write_summary(force=True)

    bar = None
    t_start = time.perf_counter()
    counts = {"done": 0, "failed": 0}
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=len(job_list), unit="job", desc="dub", initial=len(job_list) - len(todo),
                   disable=not sys.stderr.isatty())

    def say(line: str) -> None:
        if progress is True:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)

    def on_result(i: int, result: dict) -> bool:
        """Record a finished attempt; True when the job is to be run again."""
        rec = records[i]
        rec["attempts"] += 1
        name = f"{Path(rec['video']).name} + {Path(rec['audio']).name}"
        if result.get("retry") and rec["attempts"] <= retries:
            say(f"retry: {name} (attempt {rec['attempts']} of {retries + 1}): {result['error']}")
            rec["error"] = result["error"]
            return True
        rec.update({k: v for k, v in result.items() if k != "retry"})
        if rec["status"] == "done":
            rec["error"] = None
            dst = Path(rec["output"])
            _write_json_atomic(state / f"{rec['key']}.json", {**rec, "size": dst.stat().st_size}, bid)
            say(f"done: {name} -> {dst.name} ({rec['frames']} frames, {rec['seconds']} s, {rec.get('worker')})")
        else:
            say(f"failed: {name}: {rec['error']}")
        counts["done" if rec["status"] == "done" else "failed"] += 1
        write_summary()
        if bar is not None:
            bar.update(1)
            minutes = (time.perf_counter() - t_start) / 60
            left = len(todo) - counts["done"] - counts["failed"]
            bar.set_postfix_str(f"done {counts['done']}, failed {counts['failed']}, left {left}, "
                                f"{(counts['done'] + counts['failed']) / max(minutes, 1e-9):.1f} jobs/min")
        elif callable(progress):
            progress(rec)
        return False

    def args_of(i: int) -> tuple:
        return (job_list[i].video, job_list[i].audio, records[i]["output"], {**defaults, **job_list[i].options}, bid)

    try:
        if not todo:
            pass
        elif executor == "ray":
            from . import cluster

            stats = cluster.run(todo, args_of, on_result, bid=bid, address=ray_address, workers=workers,
                                cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                                checkpoints=checkpoints, device=device, models=models, say=say,
                                folders=sorted({str(p.parent) for p in outputs} | {str(out)}))
            log.info("ray: %s", stats)
        elif pipeline is not None or (workers or 1) <= 1 or len(todo) <= 1:
            _run_in_process(todo, args_of, on_result, pipeline=pipeline, checkpoints=checkpoints, device=device)
        else:
            _run_pool(todo, args_of, on_result, workers=workers or 1, checkpoints=checkpoints, device=device)
    finally:
        if summary["stale"]:
            write_summary(force=True)
        if bar is not None:
            bar.close()
        remove_dead_temporaries({p.parent for p in outputs} | {out, state}, bid)
    return records
