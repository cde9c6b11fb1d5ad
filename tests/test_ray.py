"""Batch dubbing on a real local Ray instance (2 CPUs, started and stopped here): the same outputs as the local
batch, a worker SIGKILLed mid-job replaced and its job redone without partial or duplicate output, a bad job
failing alone, a rerun skipping everything. Skipped when Ray (the ``cluster`` extra) is not installed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need the cluster extra: pip install 'talkingface[cluster]'")

from talkingface import batch, media  # noqa: E402
from talkingface.batch import DubJob, dub_batch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_ray():
    from talkingface import cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster.connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def short_jobs(tmp_path_factory, grid_video_path):
    """Four 1-second GRID dubs (cut from the two shipped GRID recordings), small output to keep it quick."""
    folder = tmp_path_factory.mktemp("ray_inputs")
    jobs = []
    for k, (name, start) in enumerate([("grid_sbwe5n", 0.3), ("grid_sbwe5n", 1.3), ("grid_lwbsza", 0.3),
                                       ("grid_lwbsza", 1.3)]):
        wav = media.load_audio(ROOT / "demo" / f"{name}.wav")
        cut = folder / f"{name}_{k}.wav"
        media._write_wav16(str(cut), wav[int(start * 16000): int((start + 1.0) * 16000)], 16000)
        jobs.append(DubJob(grid_video_path, str(cut), f"job{k}.mp4", {"max_size": 160}))
    bad = folder / "not_a_video.mp4"
    bad.write_text("this is not a video\n")
    return jobs, DubJob(str(bad), jobs[0].audio, "bad.mp4")


def _frames(path) -> np.ndarray:
    return np.stack(list(media.iter_video_frames(path)))


def test_ray_batch_matches_local_and_survives_a_killed_worker(local_ray, short_jobs, pipeline, tmp_path):
    jobs, bad = short_jobs
    out = tmp_path / "ray"
    killed: list[int] = []
    stop = threading.Event()

    def kill_first_writer():  # SIGKILL the first worker seen writing an output (its temporary names its PID)
        while not stop.is_set() and not killed:
            for p in out.iterdir() if out.is_dir() else []:
                m = batch._TEMP.search(p.name)
                if m and int(m[3]) != os.getpid():
                    os.kill(int(m[3]), signal.SIGKILL)
                    killed.append(int(m[3]))
                    break
            stop.wait(0.02)

    watcher = threading.Thread(target=kill_first_writer)
    watcher.start()
    try:
        records = dub_batch(jobs + [bad], out, executor="ray", workers=2, progress=False)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was seen writing"
    assert [r["status"] for r in records] == ["done"] * 4 + ["failed"]
    assert "not_a_video.mp4" in records[4]["error"] and records[4]["attempts"] == 1  # bad input: not retried
    assert sorted(r["attempts"] for r in records[:4]) == [1, 1, 1, 2]  # the killed job ran again, once
    assert all(not r["worker"].endswith(f":{killed[0]}") for r in records[:4])  # ... on a replacement worker
    # nothing partial or temporary left, one output per job
    assert sorted(p.name for p in out.iterdir()) == sorted([batch.STATE_DIR, batch.SUMMARY] +
                                                         [f"job{k}.mp4" for k in range(4)])
    # the same frames as the local batch
    local = dub_batch(jobs, tmp_path / "local", pipeline=pipeline, progress=False)
    assert [r["status"] for r in local] == ["done"] * 4
    for r, loc in zip(records[:4], local, strict=True):
        a, b = _frames(r["output"]), _frames(loc["output"])
        assert a.shape == b.shape and a.shape[0] == r["frames"] == 25
        assert np.array_equal(a, b), f"{r['output']}: max difference {np.abs(a.astype(int) - b).max()}"
    # a rerun skips everything (no worker is started)
    again = dub_batch(jobs, out, executor="ray", progress=False)
    assert [r["status"] for r in again] == ["skipped"] * 4


def test_ray_is_not_imported_without_ray(tmp_path, grid_video_path):
    code = ("import sys, talkingface, talkingface.cli, talkingface.batch as b\n"
            f"b.dub_batch([b.DubJob({grid_video_path!r}, 'missing.wav')], {str(tmp_path / 'o')!r}, progress=False)\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_killed_ray_driver_takes_its_workers_and_the_rerun_resumes(local_ray, short_jobs, tmp_path):
    """`talkingface batch --ray local` SIGKILLed after its first job: its Ray workers end with it, nothing
    partial is left, and the same batch run again skips the finished job and does the other."""
    import json
    import time

    jobs = short_jobs[0][:2]
    job_file = tmp_path / "jobs.json"
    job_file.write_text(json.dumps([{"video": j.video, "audio": j.audio, "output": j.output, **j.options}
                                    for j in jobs]))
    out = tmp_path / "out"
    code = "import sys; from talkingface.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, "batch", str(job_file), "--out-dir", str(out), "--ray",
                             "local", "--workers", "1"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    summary = out / batch.SUMMARY
    try:
        deadline = time.time() + 300
        first = None
        while time.time() < deadline and proc.poll() is None and first is None:
            if summary.is_file():
                first = next((r for r in json.loads(summary.read_text()) if r["status"] == "done"), None)
            time.sleep(0.05)
        assert first is not None, "the first job did not finish"
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone
        proc.wait()
        worker = int(first["worker"].rsplit(":", 1)[1])
        deadline = time.time() + 60
        while time.time() < deadline and batch.pid_alive(worker):
            time.sleep(0.2)
        assert not batch.pid_alive(worker), "a Ray worker outlived its driver"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of its session is left
        except ProcessLookupError:
            pass
        proc.wait()
    records = dub_batch(jobs, out, executor="ray", workers=1, progress=False)
    assert [r["status"] for r in records] == ["skipped", "done"]
    assert sorted(p.name for p in out.iterdir()) == sorted([batch.STATE_DIR, batch.SUMMARY, "job0.mp4", "job1.mp4"])


def test_ray_refuses_what_the_cluster_cannot_hold_before_starting_a_worker(local_ray, short_jobs, tmp_path):
    """--device cuda on a cluster without GPUs, and a worker larger than the cluster: a clear error naming what is
    missing, no worker started, nothing written but the summary of pending jobs."""
    from talkingface.errors import InputError

    jobs = short_jobs[0][:1]
    with pytest.raises(InputError, match="needs 1 GPU per worker; the Ray cluster has 0"):
        dub_batch(jobs, tmp_path / "gpu", executor="ray", device="cuda", progress=False)
    with pytest.raises(InputError, match="a worker needs 64 CPU; the Ray cluster has 2"):
        dub_batch(jobs, tmp_path / "cpu", executor="ray", cpus_per_worker=64, progress=False)
    for out in (tmp_path / "gpu", tmp_path / "cpu"):
        assert sorted(p.name for p in out.iterdir()) == sorted([batch.STATE_DIR, batch.SUMMARY])
        assert not list((out / batch.STATE_DIR).iterdir())


def test_a_worker_with_other_checkpoints_than_the_driver_stops_the_batch(local_ray, short_jobs, tmp_path):
    """The resume keys name the driver's weights: a node that would load other weights must not write outputs
    under them. The worker compares its own models_in_use with the driver's and refuses to start."""
    from talkingface import cluster
    from talkingface.errors import TalkingFaceError

    job = short_jobs[0][0]
    out = tmp_path / "out"
    out.mkdir()
    results = []
    with pytest.raises(TalkingFaceError, match="differ from the driver's"):
        cluster.run([0], lambda i: (job.video, job.audio, str(out / "x.mp4"), {}, "0" * 8),
                    lambda i, r: results.append(r), bid="0" * 8, folders=[str(out)], workers=1,
                    models=batch.models_in_use(None) + " (another node's)")
    assert not results and not list(out.iterdir())
