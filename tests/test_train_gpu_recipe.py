"""benchmarks/gpu_recipe.py: the workplace plan rehearsed on CPU, so the GPU commands cannot rot (issue 24).

`test_workplace_plan_rehearsed_on_cpu` runs the plan as the borrowed GPU machine would: `--prepare` in a copy of
the working tree (a small stand-in file for the 491 MB GGUF, a tiny wheel built here for the downloaded ones, the
Spider files a dry run needs), `--plan --json`, then every call's own command in a second copy that plays the GPU
machine: the carried paths are copied in as the device tool does, a cold restart wipes what earlier calls left, a
damaged chunk is refused, and the last call joins the chunks, checks the sha256, installs the wheel with pip
--no-index --no-deps into the bundle's target, and runs the phases with `--dry-run --backend hf` (the tiny model in
the `llm=embedded_hf` branch, not `llm=tiny`). The commands run under `python -S` on a view of this virtualenv that
holds only what the GPU machine has (its preinstalled packages, with what their versions here need) plus what the
bundle declares, so an import the GPU machine cannot satisfy fails here first. About 50 s on 2 busy cores.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import requires_spider

from t2s.config import PROJECT_ROOT

MIB = 1024 * 1024


def _recipe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_recipe", PROJECT_ROOT / "benchmarks" / "gpu_recipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gpu_recipe = _recipe()


# ------------------------------------------------------------------------------------------- plan arithmetic
def test_the_real_model_packs_into_calls_under_64_mib() -> None:
    """491,400,064 bytes, ~6.5 MB of wheels and ~6.3 MB of Spider, a 2.1 MB tree: 8 calls, each under 64 MiB."""
    extras = {".gpu_bundle/wheels": 6_500_000, ".gpu_bundle/spider.tar.gz": 6_300_000}
    tree = 2_100_000
    calls = gpu_recipe.pack_calls(491_400_064, extras, tree)
    assert sum(c["chunk"] for c in calls) == 491_400_064
    assert all(0 < c["chunk"] <= 60 * MIB for c in calls)
    uploads = [tree + gpu_recipe.MANIFEST_ROOM + c["chunk"] + sum(extras[e] for e in c["extras"]) for c in calls]
    assert max(uploads) <= 64 * MIB - gpu_recipe.UPLOAD_MARGIN
    assert sorted(e for c in calls for e in c["extras"]) == sorted(extras)
    assert len(calls) == 8
    with pytest.raises(ValueError, match="no room"):
        gpu_recipe.pack_calls(100, {}, 64 * MIB)


def test_default_step_budget_keeps_the_plan_under_13_minutes() -> None:
    uploads = [64 * MIB] * 8
    steps = gpu_recipe.derive_sft_steps(uploads, 100, 0)
    assert 100 <= steps <= 437
    assert gpu_recipe.plan_seconds(uploads, 100, steps, 0)["total"] <= gpu_recipe.BUDGET_LIMIT_S
    slow = gpu_recipe.plan_seconds(uploads, 100, steps, 0, safety=gpu_recipe.BUDGET.sft_safety)
    assert slow["total"] <= gpu_recipe.BUDGET_LIMIT_S and slow["final_command"] <= gpu_recipe.COMMAND_LIMIT_S
    assert gpu_recipe.plan_seconds(uploads, 972, 2000, 30)["total"] > gpu_recipe.BUDGET_LIMIT_S


def test_gpu_overrides_compose_and_bind() -> None:
    """The GPU run's exact overrides compose (the hf branch is `llm=embedded_hf`, which has `device`) and every
    train.* key binds to its recipe's settings class, without loading a model."""
    from t2s.config import compose_config
    from t2s.train.app import build_recipe, compose_train_config

    args = gpu_recipe.parser().parse_args(["--questions", "100", "--sft-steps", "300", "--grpo-steps", "5",
                                           "--backend", "hf", "--cache", "/tmp/unused"])
    cfg = compose_config(gpu_recipe.eval_overrides(args, "/tmp/adapter"))
    assert cfg.llm._target_ == "t2s.llm.hf.HFLLM" and cfg.llm.device == "cuda" and cfg.llm.model == "embedded"
    assert cfg.dataset.name == "spider_dev_sample100" and cfg.llm.adapter == "/tmp/adapter"
    sft = build_recipe(compose_train_config(gpu_recipe.train_overrides(args, "sft")))
    assert sft.max_steps == 300 and sft.accelerator == "gpu" and sft.precision == "bf16-mixed"
    grpo = build_recipe(compose_train_config(gpu_recipe.train_overrides(args, "grpo")))
    assert grpo.max_steps == 5 and grpo.use_vllm is False
    assert gpu_recipe.dataset_overrides(None) == ["dataset=spider_dev"]
    assert gpu_recipe.dataset_overrides(50) == ["dataset=spider_dev", "dataset.sample=50", "dataset.seed=100"]


# ------------------------------------------------------------------------------------------------ rehearsal
def _copy_tree(dest: Path) -> None:
    """The working tree as the device tool sends it: tracked and untracked-not-ignored files."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=PROJECT_ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        src = PROJECT_ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _fake_wheel(dest: Path) -> Path:
    """A real, minimal wheel (pure Python, py3-none-any) standing in for the downloaded ones."""
    dest.mkdir(parents=True, exist_ok=True)
    wheel = dest / "t2s_rehearsal_probe-1.0-py3-none-any.whl"
    files = {
        "t2s_rehearsal_probe/__init__.py": b"VALUE = 42\n",
        "t2s_rehearsal_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: t2s-rehearsal-probe\nVersion: 1.0\n",
        "t2s_rehearsal_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                   b"Tag: py3-none-any\n",
    }
    record = "".join(f"{n},sha256={hashlib.sha256(b).hexdigest()},{len(b)}\n" for n, b in files.items())
    files["t2s_rehearsal_probe-1.0.dist-info/RECORD"] = (record + "t2s_rehearsal_probe-1.0.dist-info/RECORD,,\n").encode()
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return wheel


def _requirement_closure(names: set[str]) -> set[str]:
    """`names` and everything their installed versions here require (no extras)."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(gpu_recipe._norm(req.name))
    return seen


def gpu_site_view(dest: Path) -> Path:
    """A `site-packages` of symbolic links to the distributions of this virtualenv that the GPU machine would have:
    its preinstalled packages (with what their versions here require: huggingface_hub 2.x needs httpx2 here, 1.33
    there does not) and the bundle's wheels. Used with `python -S`, so nothing else is importable."""
    allowed = _requirement_closure(set(gpu_recipe.GPU_PREINSTALLED)) | {
        gpu_recipe._norm(n) for n in gpu_recipe.BUNDLE_WHEELS}
    owners: dict[tuple[str, str], set[str]] = {}
    tops: dict[str, set[tuple[str, str]]] = {}
    for dist in md.distributions():
        name = gpu_recipe._norm(dist.metadata["Name"])
        base = str(dist.locate_file(""))
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if parts and parts[0] != ".." and not parts[0].endswith(".pth") and parts[0] != "__pycache__":
                owners.setdefault((base, parts[0]), set()).add(name)
                tops.setdefault(name, set()).add((base, parts[0]))
    site = dest / "site-packages"
    site.mkdir(parents=True)
    for name in sorted(allowed & set(tops)):
        for base, top in sorted(tops[name]):
            src, link = Path(base) / top, site / top
            if not src.exists():
                continue
            if owners[(base, top)] <= allowed:
                if not link.exists():
                    link.symlink_to(src)
                continue
            link.mkdir(exist_ok=True)  # a folder shared with a distribution the GPU machine lacks (google/)
            for f in md.distribution(name).files or []:
                parts = Path(str(f)).parts
                if len(parts) > 1 and parts[0] == top and not (link / parts[1]).exists():
                    (link / parts[1]).symlink_to(Path(base) / top / parts[1])
    return site


def _upload(call: dict[str, Any], here: Path, device: Path) -> None:
    """What the device tool does with `carry`: each path replaces the one there (a folder whole)."""
    for rel in call["carry"]:
        src, dst = here / rel, device / rel
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)


@requires_spider
def test_workplace_plan_rehearsed_on_cpu(tmp_path: Path) -> None:
    here, device, out = tmp_path / "here", tmp_path / "device", tmp_path / "OUT"
    for d in (here, device, out):
        d.mkdir()
    _copy_tree(here)
    _copy_tree(device)
    site = gpu_site_view(tmp_path / "gpu-python")
    wheels = _fake_wheel(tmp_path / "wheels").parent
    standin = tmp_path / "standin.gguf"
    standin.write_bytes(os.urandom(2 * MIB + 12345))
    env = {**os.environ, "PYTHONPATH": str(site), "OUT": str(out), "T2S_DATA": os.environ["T2S_DATA"]}
    python = [sys.executable, "-S"]

    def run(cwd: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)

    tree = gpu_recipe.tree_bytes(here)
    limit = tree + gpu_recipe.MANIFEST_ROOM + 3 * MIB  # each call: the tree, the manifest and 3 MiB of bundle
    prepared = run(here, ["benchmarks/gpu_recipe.py", "--prepare", "--dry-run", "--model-file", str(standin),
                          "--wheel-dir", str(wheels), "--upload-limit", str(limit), "--chunk-max", str(MIB),
                          "--margin", "0"])
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert "call 1/" in prepared.stdout and "upload" in prepared.stdout
    listed = run(here, ["benchmarks/gpu_recipe.py", "--plan", "--json"])
    assert listed.returncode == 0, listed.stdout + listed.stderr
    plan = json.loads(listed.stdout)
    calls = plan["calls"]
    assert len(calls) >= 3 and all(c["upload_bytes"] <= limit for c in calls)
    assert all(".gpu_bundle/manifest.json" in c["carry"] for c in calls)
    over = run(here, ["benchmarks/gpu_recipe.py", "--plan", "--sft-steps", "5000"])
    assert over.returncode == 1 and "13 min" in over.stderr
    (here / "grown.bin").write_bytes(b"\0" * (3 * MIB))  # the working tree grew after --prepare
    grown = run(here, ["benchmarks/gpu_recipe.py", "--plan"])
    assert grown.returncode == 1 and "OVER" in grown.stdout and "uploads" in grown.stderr
    (here / "grown.bin").unlink()

    def call(i: int) -> subprocess.CompletedProcess[str]:
        c = calls[i - 1]
        _upload(c, here, device)
        argv = shlex.split(c["command"])
        assert argv[:2] == ["python3", "benchmarks/gpu_recipe.py"]  # the GPU machine's interpreter runs the same
        return run(device, argv[1:])

    first = call(1)
    assert first.returncode == 0 and "fresh machine" in first.stdout, first.stdout + first.stderr
    again = call(1)
    assert again.returncode == 0 and "call 1 ran here before" in again.stdout
    shutil.rmtree(device / ".gpu_bundle")  # the machine went back: a fresh one keeps nothing ignored
    cold = call(2)
    assert cold.returncode == 3 and "start the uploads over with call 1" in cold.stderr, cold.stdout + cold.stderr
    for i in range(1, len(calls)):
        assert call(i).returncode == 0
    part01 = device / plan["calls"][0]["carry"][1]
    good = part01.read_bytes()
    part01.write_bytes(b"x" + good[1:])
    damaged = call(len(calls))
    assert damaged.returncode == 4 and "damaged" in damaged.stderr
    assert call(1).returncode == 0
    last = call(len(calls))
    assert last.returncode == 0, last.stdout[-6000:] + last.stderr[-3000:]

    assert "joined" in last.stdout and "installed offline" in last.stdout
    joined = device / ".gpu_bundle" / "cache" / "gguf" / "standin.gguf"
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == hashlib.sha256(standin.read_bytes()).hexdigest()
    assert (device / ".gpu_bundle" / "site-packages" / "t2s_rehearsal_probe" / "__init__.py").is_file()
    results = json.loads((out / "gpu_recipe.json").read_text())
    assert results["imports"]["failed"] == {} and results["imports"]["versions"]["t2s-rehearsal-probe"] == "1.0"
    for phase in ("base", "sft_eval", "grpo_eval"):
        assert results[phase]["ex"] is not None and results[phase]["llm_target"] == "t2s.llm.hf.HFLLM"
    assert results["sft"]["steps"] == 2 and results["grpo"]["steps"] == 1
    assert all(isinstance(results[p]["seconds"], float) for p in ("convert", "base", "sft", "sft_eval", "grpo"))
    back = [p for p in out.rglob("*") if p.is_file()]
    assert len(back) <= gpu_recipe.RETURN_FILES and all(p.stat().st_size <= 16 * MIB for p in back)
    assert {"gpu_recipe.json", "run.log", "adapter_model.safetensors", "sft_curves.json"} <= {p.name for p in back}
    assert results["sft_adapter_sha256"] == hashlib.sha256(
        (out / "sft_adapter" / "adapter_model.safetensors").read_bytes()).hexdigest()
