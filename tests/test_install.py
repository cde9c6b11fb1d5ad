"""An installed talkingface (a wheel, not the source checkout) finds its weights and examples from any folder."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_and_shipped_folder_goes_into_the_wheel():
    from talkingface import checkpoints

    st = _pyproject()["tool"]["setuptools"]
    on_disk = {".".join(p.relative_to(ROOT).parts[:-1]) for p in (ROOT / "talkingface").rglob("__init__.py")}
    assert on_disk <= set(st["packages"]), on_disk - set(st["packages"])
    for name, folder in checkpoints.SHIPPED.items():
        pkg = f"talkingface.shipped.{name}"
        assert st["package-dir"][pkg] == folder and pkg in st["packages"] and st["package-data"][pkg]
    assert st["package-data"]["talkingface.shipped.checkpoints"] == ["*"]  # every model, mouth-v2 too


def test_shipped_files_resolve_in_the_checkout():
    from talkingface import checkpoints, web

    assert checkpoints.DEFAULT_DIR == ROOT / "checkpoints"
    for entry in checkpoints.read_manifest().values():
        assert (checkpoints.DEFAULT_DIR / entry["file"]).is_file()
    for p in (web.EXAMPLE_PHOTO, web.EXAMPLE_AUDIO, web.EXAMPLE_DUB_VIDEO, web.EXAMPLE_DUB_AUDIO):
        assert p.is_file(), p


@pytest.mark.slow
def test_built_wheel_renders_from_another_folder(tmp_path):
    """Build the wheel, install it (without dependencies: this environment's are reused) into a fresh virtualenv
    and render the shipped example from an empty folder. .ci/run does the same with a full install."""
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(dist)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no setuptools for the build?): {r.stderr[-300:]}")
    wheel = next(dist.glob("talkingface-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    # the dependencies of this environment, after the wheel's own talkingface on sys.path
    (site / "zz_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(GLOG_minloglevel="2", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    where = subprocess.run([py, "-c", "import talkingface, talkingface.checkpoints as c, talkingface.web as w; "
                            "print(talkingface.__file__); print(c.DEFAULT_DIR); print(w.EXAMPLE_DUB_VIDEO.is_file())"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=300)
    file, ckpt, example = where.stdout.split()
    assert file.startswith(str(site)) and ckpt.startswith(str(site)) and example == "True", where.stderr
    photo = Path(ckpt).parent / "demo" / "astronaut.jpg"
    r = subprocess.run([py, "-m", "talkingface", "render", "--image", str(photo), "--audio",
                        str(Path(ckpt).parent / "demo" / "grid_lwbsza.wav"), "-o", "talk.mp4"],
                       capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (work / "talk.mp4").stat().st_size > 10_000
