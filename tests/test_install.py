"""The package as a user installs it (issue 21, item 1): a wheel built from the tracked files carries the configs,
experiments, prompts, demo SQL and plugins (as `t2s_plugins`), stores no symlink, leaves torch a range, and runs
from outside the checkout in a virtualenv of its own.

The virtualenv reuses this project's installed dependencies through a path entry (no download, no build of them),
but not its editable t2s: the t2s that runs is the wheel's, and the checkout is not on its path.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from t2s.config import PROJECT_ROOT, SOURCE_ROOT

pytestmark = pytest.mark.skipif(SOURCE_ROOT is None, reason="needs the source checkout (builds its wheel)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tracked files (as a fresh clone has them), without build isolation."""
    src = tmp_path_factory.mktemp("src") / "t2s"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        rel = name.decode()
        source = PROJECT_ROOT / rel
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())
    out = tmp_path_factory.mktemp("dist")
    import setuptools

    # this environment's setuptools when it is new enough for pyproject.toml (SPDX license: >= 77), else pip's
    # isolated build environment (which fetches it from PyPI once)
    isolation = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(out), str(src)],
                   check=True, capture_output=True)
    (built,) = out.glob("t2s-*.whl")
    return built


def test_the_wheel_carries_configs_prompts_and_plugins_and_no_symlink(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        links = [i.filename for i in z.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
        metadata = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert not links
    tracked = lambda folder: {p.relative_to(PROJECT_ROOT / folder).as_posix()  # noqa: E731
                              for p in (PROJECT_ROOT / folder).rglob("*.yaml")}
    assert {f"t2s/conf/{n}" for n in tracked("conf") if not n.startswith("experiment/")} <= names
    assert {f"t2s/conf/experiment/{n}" for n in tracked("experiments")} <= names
    assert {f"t2s/prompts/{p.name}" for p in (PROJECT_ROOT / "t2s" / "prompts").glob("*.yaml")} <= names
    # the method packages' own templates (plugins/<stage>/<method>/*.yaml)
    assert {f"t2s_plugins/{n}" for n in tracked("plugins")} <= names and "t2s_plugins/corrector/share/share_bam_v1.yaml" in names
    assert {f"t2s/demo/sql/{p.name}" for p in (PROJECT_ROOT / "t2s" / "demo" / "sql").glob("*.sql")} <= names
    assert "t2s_plugins/generator/zero_shot.py" in names and "t2s/serve/static/index.html" in names
    assert not any(n.startswith(("plugins/", "conf/", "experiments/", "tests/")) for n in names)
    torch = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: torch")]
    assert torch and "==" not in torch[0] and ">=" in torch[0], torch


def test_the_installed_wheel_runs_from_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # this project's dependencies as a plain path entry: their .pth files (the editable t2s finder) are not run
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "T2S_CACHE"))}
    env["T2S_CACHE"] = str(tmp_path / "cache")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import t2s, t2s_plugins, t2s.config as c; "
                            "print(t2s.__file__); print(c.CONF_DIR); print(c.SOURCE_ROOT)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(purelib)) and where[1] == str(purelib / "t2s" / "conf") and where[2] == "None"
    prompt = subprocess.run([str(venv / "bin" / "python"), "-c", "from t2s.prompts import load_prompt; "
                             "print(load_prompt('share_bam_v1').path)"], cwd=work, env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert prompt == str(purelib / "t2s_plugins" / "corrector" / "share" / "share_bam_v1.yaml")
    t2s = str(venv / "bin" / "t2s")
    listed = subprocess.run([t2s, "plugins"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0 and "zero_shot" in listed.stdout, listed.stderr[-2000:]
    ran = subprocess.run([t2s, "run", "llm=tiny", "dataset.limit=2", "run.progress=false"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-3000:]
    (metrics,) = (work / "outputs").rglob("metrics.json")  # relative paths are taken from the working directory
    assert json.loads(metrics.read_text())["scored"] == 2
    experiment = subprocess.run([t2s, "run", "experiment=zero_shot_demo", "llm=tiny", "dataset.limit=1",
                                 "run.progress=false"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert experiment.returncode == 0, experiment.stderr[-3000:]


def test_a_run_directory_made_before_the_plugins_moved_still_resumes(session_cache: Path, tmp_path: Path) -> None:
    """Run directories recorded `_target_: plugins.<stage>...` before the package became `t2s_plugins`: the same
    command re-reports them instead of refusing a "different configuration"."""
    import t2s

    overrides = [f"paths.cache_dir={session_cache}", "llm=tiny", "embedder=hashing", "run.progress=false",
                 "dataset.limit=2"]
    run_dir = tmp_path / "run"
    first = t2s.run_pipeline(overrides, run_dir)
    for name in ("run.json", "config.yaml"):  # as the old code wrote them
        f = run_dir / name
        text = f.read_text()
        assert "t2s_plugins." in text
        f.write_text(text.replace("t2s_plugins.", "plugins."))
    again = t2s.run_pipeline(overrides, run_dir)
    assert again["scored"] == first["scored"] == 2 and again["ex"] == first["ex"]


def test_the_gpu_lock_pins_every_requirement_of_the_gpu_lane_within_its_range() -> None:
    """requirements-gpu.lock (`make lock-gpu`) satisfies pyproject's ranges for the base requirements and the `gpu`
    extra, and agrees with the CPU lock on torch (the resolver check itself, `pip install --dry-run -c
    requirements-gpu.lock '.[gpu]'`, needs PyPI and is run by `make lock-gpu`)."""
    import tomllib

    from packaging.requirements import Requirement

    from t2s.track.lockfile import canonical, read_lock

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    gpu = read_lock(PROJECT_ROOT / "requirements-gpu.lock")
    cpu = read_lock(PROJECT_ROOT / "requirements.lock")
    for line in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]:
        req = Requirement(line)
        name = canonical(req.name)
        assert name in gpu, f"{req.name} is not in requirements-gpu.lock: run make lock-gpu"
        assert req.specifier.contains(gpu[name], prereleases=True), (line, gpu[name])
    assert gpu["torch"] == cpu["torch"] and "faiss-gpu" not in gpu
    majors = {v.split(".")[0] for k, v in gpu.items() if k.startswith("nvidia-cuda-runtime")}
    assert majors == {"13"}, majors
