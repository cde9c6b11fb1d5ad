"""Batch dubbing on a Ray cluster: the executor behind ``dub_batch(..., executor="ray")`` and ``talkingface batch
--ray local|auto|ADDRESS``.

The driver (the process that calls dub_batch) keeps everything that makes a batch resumable: the job list, the
resume keys and records, the JSON summary, the retries. Ray only runs jobs: a fixed set of worker actors, each
loading the pipeline once (CPU threads = its CPUs; the CUDA pipeline and ``num_gpus`` when ``device="cuda"``),
each given one job at a time, so at most one job per worker is in flight and the driver's memory stays flat
whatever the number of jobs. Workers read the inputs and write the outputs themselves (atomically: a hidden
temporary named with their host and PID, renamed on success), so on a real cluster the job file's paths and the
output folder must be on a filesystem every node sees at the same path.

Faults: a worker that dies mid-job (SIGKILL, out of memory, a lost node) is replaced by a new actor and its job
is run again, at most ``retries`` more times; a job whose input is bad fails alone (its worker goes on); the
driver killed and restarted resumes from the records like the local batch (its actors end with it: they are
not detached). Ray is imported only here, so without ``executor="ray"`` nothing imports it.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from .errors import InputError, TalkingFaceError

log = logging.getLogger(__name__)

#: peak resident memory of one dubbing worker is ~1.0-1.3 GB (docs/DUBBING.md, memory benchmark); declared to Ray
#: so that it does not pack more workers onto a node than its memory holds
DEFAULT_WORKER_MEMORY_GB = 1.5


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise InputError("--ray needs Ray: pip install 'talkingface[cluster]'") from e
    return ray


class DubWorker:
    """One Ray actor: loads the pipeline once and dubs the jobs it is given, one at a time."""

    def __init__(self, checkpoints: str | None, device: str, threads: int, bid: str, folders: list[str],
                 models: str | None = None):
        t0 = time.perf_counter()
        os.environ.setdefault("GLOG_minloglevel", "2")
        import torch

        from . import batch
        from .checkpoints import DEFAULT_DIR
        from .pipeline import load

        if models is not None:  # the resume keys name the driver's weights: a node must load the same ones
            if batch.models_in_use(checkpoints) != models:
                raise TalkingFaceError(f"the checkpoints on {socket.gethostname()} differ from the driver's "
                                       f"({checkpoints or DEFAULT_DIR}): install the same talkingface and weights")

        torch.set_num_threads(max(1, threads))
        self.pipe = load(checkpoints, device=device)
        self.bid = bid
        # temporaries that dead workers left on this node (the driver can only tell for its own node)
        batch.remove_dead_temporaries([Path(f) for f in folders], bid)
        self.load_seconds = round(time.perf_counter() - t0, 2)

    def ready(self) -> dict:
        return {"worker": f"{socket.gethostname()}:{os.getpid()}", "pid": os.getpid(),
                "load_seconds": self.load_seconds}

    def run(self, video: str, audio: str, output: str, options: dict, bid: str) -> dict:
        from .batch import run_job

        return run_job(self.pipe, video, audio, output, options, bid)


def connect(address: str | None, **init_kwargs):
    """Connect to Ray: ``"local"`` starts a private instance on this machine, ``"auto"`` joins the cluster this
    machine is part of (``ray start``), anything else is a cluster address (``host:6379`` or ``ray://host:10001``);
    None joins a running cluster if there is one, else starts a local instance (ray.init's default). Returns
    (ray, whether this call started the connection, seconds it took)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False, 0.0
    t0 = time.perf_counter()
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False, **init_kwargs}
    saved = os.environ.get("PYTHONPATH")
    try:
        if address == "local":
            # the workers of a private instance import the same talkingface as this process
            here = str(Path(__file__).resolve().parent.parent)
            os.environ["PYTHONPATH"] = os.pathsep.join([here] + ([saved] if saved else []))
            for attempt in range(3):
                try:
                    ray.init(address="local", **kwargs)
                    break
                except Exception as e:  # noqa: BLE001 - Ray gives its raylet 30 s to start: a loaded machine misses it
                    if "timed out during startup" not in str(e):
                        raise
                    ray.shutdown()
                    if attempt == 2:
                        raise TalkingFaceError(f"a local Ray instance did not start (3 tries): {e}") from e
                    log.warning("a local Ray instance did not start in time (%s); trying again", e)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise InputError(f"cannot connect to the Ray cluster at '{address}': {e}") from e
    finally:
        if address == "local":
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
    return ray, True, time.perf_counter() - t0


def _is_worker_death(ray, e: BaseException) -> bool:
    exc = ray.exceptions
    kinds = tuple(getattr(exc, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                                            "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError",
                                            "ObjectLostError") if hasattr(exc, n))
    return isinstance(e, kinds)


def run(todo: list[int], args_of: Callable[[int], tuple], on_result: Callable[[int, dict], bool], *, bid: str,
        folders: list[str], address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1,
        gpus_per_worker: float | None = None, memory_gb: float = DEFAULT_WORKER_MEMORY_GB,
        checkpoints: str | None = None, device: str = "cpu", models: str | None = None,
        say: Callable[[str], None] = log.info) -> dict:
    """Run the jobs ``todo`` on Ray actors; ``on_result(i, result)`` records each attempt and says (True) when the
    job must run again. Returns timings: connect, first worker ready, all workers ready, workers, replaced."""
    ray, started, t_connect = connect(address)
    t0 = time.perf_counter()
    stats = {"connect_seconds": round(t_connect, 2), "workers": 0, "replaced": 0}
    actors: list = []
    try:
        cuda = device.startswith("cuda")
        gpus = (gpus_per_worker if gpus_per_worker is not None else 1.0) if cuda else 0
        res = ray.cluster_resources()
        if cuda and res.get("GPU", 0) < gpus:
            raise InputError(f"--device cuda needs {gpus:g} GPU per worker; the Ray cluster has {res.get('GPU', 0):g}")
        if res.get("CPU", 0) < cpus_per_worker:
            raise InputError(f"a worker needs {cpus_per_worker:g} CPU; the Ray cluster has {res.get('CPU', 0):g}")
        if memory_gb and res.get("memory", 0) < memory_gb * 2**30:  # a small machine: declaring it would never fit
            say(f"ray: the cluster offers {res.get('memory', 0) / 2**30:.1f} GB of memory, less than the "
                f"{memory_gb:g} GB a worker declares; declaring none")
            memory_gb = 0
        fits = [res.get("CPU", 0) // cpus_per_worker]
        if gpus:
            fits.append(res.get("GPU", 0) // gpus)
        if memory_gb:
            fits.append(res.get("memory", 0) // (memory_gb * 2**30))
        capacity = int(max(1, min(fits)))
        if workers is None:  # as many as the cluster holds, and no more than there are jobs
            workers = capacity
        elif workers > capacity:  # a worker that can never be placed would hold its job forever
            say(f"ray: the cluster holds {capacity} worker(s) of this size now, not {workers}; using {capacity}")
            workers = capacity
        n = max(1, min(workers, len(todo)))
        opts = {"num_cpus": cpus_per_worker, "num_gpus": gpus, "max_restarts": 0, "max_task_retries": 0}
        if memory_gb:
            opts["memory"] = int(memory_gb * 2**30)
        actor_cls = ray.remote(**opts)(DubWorker)
        threads = max(1, int(round(cpus_per_worker)))

        def spawn():
            a = actor_cls.remote(checkpoints, device, threads, bid, folders, models)
            return a, a.ready.remote()

        say(f"ray: {n} worker(s) x {cpus_per_worker:g} CPU{f' + {gpus:g} GPU' if gpus else ''} on a cluster with "
            f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU (connected in {t_connect:.1f} s)")
        waiting: dict = {}  # ready() ref -> actor slot
        for k in range(n):
            a, r = spawn()
            actors.append(a)
            waiting[r] = k
        queue = deque(todo)
        idle = list(range(n))
        running: dict = {}  # job ref -> (job index, actor slot)
        ready_times: list[float] = []
        while queue or running:
            while queue and idle:
                k = idle.pop(0)
                i = queue.popleft()
                running[actors[k].run.remote(*args_of(i))] = (i, k)
            refs = list(running) + list(waiting)
            done, _ = ray.wait(refs, num_returns=1)
            ref = done[0]
            if ref in waiting:
                k = waiting.pop(ref)
                try:
                    info = ray.get(ref)
                    ready_times.append(time.perf_counter() - t0)
                    say(f"ray: worker {k} ready on {info['worker']} (models loaded in {info['load_seconds']} s)")
                except Exception as e:  # noqa: BLE001 - reported with the job it was running, or below
                    if not _is_worker_death(ray, e) or "creation task" in str(e):
                        raise TalkingFaceError(f"a Ray worker could not start: {e}") from e
                continue
            i, k = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001
                if not _is_worker_death(ray, e):
                    result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
                elif "creation task" in str(e):
                    raise TalkingFaceError(f"a Ray worker could not start: {e}") from e
                else:  # the worker process is gone: a new actor takes its place, the job runs again
                    result = {"status": "failed", "error": f"worker died: {type(e).__name__}: "
                                                           f"{str(e).splitlines()[0] if str(e) else ''}", "retry": True}
                    ray.kill(actors[k], no_restart=True)
                    for r in [r for r, s in waiting.items() if s == k]:
                        del waiting[r]
                    actors[k], r = spawn()
                    waiting[r] = k
                    stats["replaced"] += 1
            if on_result(i, result):
                queue.append(i)
            idle.append(k)
        stats.update(workers=n, first_ready_seconds=round(ready_times[0], 2) if ready_times else None,
                     all_ready_seconds=round(ready_times[-1], 2) if len(ready_times) >= n else None)
        return stats
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()
