"""One CUDA GPU: LoRA SFT of the embedded model on Spider train, optional GRPO, and EX before and after on the same dev
questions, with wall seconds per phase (issue 13 item 7, issue 24). Two ways to run it:

**A researcher's own GPU machine (with the package registries)**, as before:

    python benchmarks/gpu_recipe.py                            # pip install, then every phase on all 972 dev questions
    python benchmarks/gpu_recipe.py --questions 100            # the fixed 100-question sample instead
    python benchmarks/gpu_recipe.py --dry-run --backend hf     # CPU, tiny random model, the hf branch, a few steps

**The workplace's borrowed GPU machine** (no network, at most 64 MiB per call, 15 minutes of GPU time in all;
docs/training.md, "The borrowed GPU machine"):

    python benchmarks/gpu_recipe.py --prepare   # here: wheels, model chunks, Spider subset into .gpu_bundle/ (ignored)
    python benchmarks/gpu_recipe.py --plan      # here: one line per call (carry, upload bytes, command) + the budget
    python3 benchmarks/gpu_recipe.py --stage K  # there, call K of the plan: inventory; the last call joins the model
                                                # chunks, checks the sha256, installs the wheels offline, runs the phases

Phases: `install` (researcher mode only: pip install -e '.[model]', '.[gpu]' with `--backend vllm`), `imports`
(workplace mode: every bundled module imports), `convert` (the GGUF to a safetensors checkpoint, once), `base` (EX
with the base model), `sft` (t2s train train=sft on Spider train: LoRA r=16 q/k/v/o, bf16-mixed, batch 16,
`--sft-steps`), `sft_eval`, then, when `--grpo-steps` > 0, `grpo` (from the SFT adapter, group 8, KL 0.1) and
`grpo_eval`. Evaluation goes through `t2s.run.runner.run` with the adapter plugged in by config (`llm.adapter=<dir>`),
generation by vLLM (`--backend vllm`, default when importable) or batched transformers (`--backend hf`,
`llm=embedded_hf`). Results: a table on stdout, `<out>/gpu_recipe.json`, and with `--results DIR` (the workplace's
$OUT) the figures, the SFT adapter and the curves copied there after every phase, within what comes back from a call
(8 files of at most 16 MiB).

This module imports only the standard library at the top: `--stage` runs on the bare GPU machine before any wheel is
installed. `t2s` is imported by the phases alone.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
#: one call's upload (the working tree that travels + the carried paths), device README "Limits"
UPLOAD_LIMIT = 64 * MIB
#: one model chunk at most (issue 24)
CHUNK_MAX = 60 * MIB
#: room kept free in every call for the working tree growing between `--prepare` and the calls
UPLOAD_MARGIN = 1 * MIB
#: room the manifest (carried by every call) may take
MANIFEST_ROOM = 64 * 1024
#: what the whole plan may take of the 15 minutes of GPU time (issue 24), and one command at most
BUDGET_LIMIT_S = 13 * 60
COMMAND_LIMIT_S = 600
#: what comes back from one call's $OUT
RETURN_FILES = 8
RETURN_FILE_MAX = 16 * MIB
BUNDLE = ".gpu_bundle"
STEP_TIMEOUT_S = 120

# ----------------------------------------------------------------------------------------- the GPU machine's Python
#: distributions the GPU machine has (/work/.library/device/KINDS.md, "Python packages already there", read
#: 2026-11-17); names normalized as pip does (lower case, '-')
GPU_PREINSTALLED = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())

#: the wheels `--prepare` brings (versions from requirements.lock), with what needs each on the recipe's path
BUNDLE_WHEELS: dict[str, str] = {
    "hydra-core": "config composition (t2s run / t2s train)",
    "omegaconf": "hydra-core",
    "antlr4-python3-runtime": "omegaconf's interpolation grammar (sdist only on PyPI: built here, pure Python)",
    "sqlglot": "SQL parsing in the pipeline and the scorer",
    "trl": "the GRPO recipe (t2s.train.grpo_trainer)",
    "datasets": "trl",
    "dill": "datasets",
    "multiprocess": "datasets",
    "gguf": "transformers reads the embedded GGUF with it (model conversion)",
    "datasketch": "value_retriever=lsh, profiles (lazy; small, pure Python)",
    "rapidfuzz": "value_retriever=lsh re-ranking (lazy; compiled: cp312 manylinux x86_64)",
}
#: t2s dependencies deliberately not shipped: none of them is imported on the recipe's path (t2s imports each lazily)
NOT_SHIPPED: dict[str, str] = {
    "wandb": "logger=wandb only (t2s.track imports it lazily); compiled and large",
    "faiss-cpu": "example_retriever / field retrieval indexes only (lazy); ~30 MB compiled",
    "openai": "llm=openai only (lazy); pulls pydantic-core and jiter, compiled",
    "llama-cpp-python": "llm=embedded (llama.cpp, CPU) only; the recipe uses llm=embedded_hf",
    "vllm": "--backend vllm only; too large for the uploads",
    "hydra-joblib-launcher": "sweeps (-m) only",
    "hydra-submitit-launcher": "sweeps on SLURM only",
    "fastapi": "t2s serve only",
}
#: the interpreter and platform of the GPU machine, for `pip download` and marker evaluation
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64", "manylinux_2_28_x86_64")


def _norm(name: str) -> str:
    """A distribution name normalized as pip compares them."""
    return name.lower().replace("_", "-").replace(".", "-")


# -------------------------------------------------------------------------------------------------------- budget
@dataclass(frozen=True)
class Budget:
    """Seconds of GPU time per step of the workplace plan, on one H100. ESTIMATES: no GPU was lent when they were
    written down (docs/training.md, "Budget"); replace them with the `measured` figures of a run's gpu_recipe.json."""

    machine_start_s: float = 90.0  # device README: "a minute or more"
    upload_bytes_per_s: float = 10e6  # estimate for the transfer of one call's upload
    call_overhead_s: float = 5.0  # command start, inventory, sha256 of the carried chunk
    call_gap_s: float = 10.0  # idle between one reply and the next call (held, counted; the machine waits 30 s)
    final_idle_s: float = 5.0  # the last reply until give_back
    install_s: float = 10.0  # pip install --no-index of the bundled wheels, tar extraction
    join_hash_s: float = 5.0  # 491 MB read, written and hashed
    imports_s: float = 15.0  # torch, transformers, hydra, trl imported once in the phases process
    convert_s: float = 60.0  # GGUF -> bf16 safetensors: CPU-bound (about 1 min on an idle 2-core machine here)
    eval_setup_s: float = 15.0  # model to the GPU, schemas, gold results
    eval_s_per_question: float = 0.3  # hf batched greedy generation, batch 64, <= 256 new tokens, + SQL execution
    sft_setup_s: float = 45.0  # rows for 7,000 questions (schemas of 140 databases, tokenization), model load
    sft_examples_per_s: float = 25.0  # LoRA r=16, bf16-mixed, 2 x 8 rows padded to ~1,400 tokens (docs/training.md)
    sft_val_s: float = 10.0  # one validation: 64 held-out questions, greedy, <= 128 new tokens
    sft_val_every: int = 100
    sft_batch: int = 16
    grpo_setup_s: float = 30.0
    grpo_s_per_step: float = 6.0  # 4 prompts x 8 completions x <= 192 tokens by hf generate, + the update
    collect_s: float = 10.0  # results copied to $OUT and brought back (< 20 MB)
    #: SFT speed divisor the default step budget must survive (the estimate may be 2x optimistic)
    sft_safety: float = 2.0


BUDGET = Budget()


def sft_seconds(steps: int, b: Budget = BUDGET, *, safety: float = 1.0) -> float:
    """Estimated SFT seconds for `steps` optimizer steps (setup, training at examples/s / `safety`, validations)."""
    if steps <= 0:
        return 0.0
    return (b.sft_setup_s + steps * b.sft_batch / (b.sft_examples_per_s / safety)
            + math.ceil(steps / b.sft_val_every) * b.sft_val_s)


def final_call_phases(questions: int, sft_steps: int, grpo_steps: int, b: Budget = BUDGET, *,
                      safety: float = 1.0) -> list[tuple[str, float]]:
    """(phase, estimated seconds) of the last call's command, in order."""
    evaluate = b.eval_setup_s + questions * b.eval_s_per_question
    rows = [("install wheels + data", b.install_s), ("join + sha256", b.join_hash_s), ("imports", b.imports_s),
            ("convert", b.convert_s), ("base", evaluate), ("sft", sft_seconds(sft_steps, b, safety=safety)),
            ("sft_eval", evaluate)]
    if grpo_steps > 0:
        rows += [("grpo", b.grpo_setup_s + grpo_steps * b.grpo_s_per_step), ("grpo_eval", evaluate)]
    rows.append(("collect", b.collect_s))
    return rows


def upload_call_seconds(upload_bytes: int, b: Budget = BUDGET) -> float:
    """Estimated seconds of one call's upload and its own command (no gap)."""
    return upload_bytes / b.upload_bytes_per_s + b.call_overhead_s


def plan_seconds(uploads: list[int], questions: int, sft_steps: int, grpo_steps: int, b: Budget = BUDGET, *,
                 safety: float = 1.0) -> dict[str, float]:
    """The whole plan's estimated GPU seconds: start, every call's upload, the gaps, the last call's phases, idle."""
    transfer = sum(upload_call_seconds(u, b) for u in uploads)
    gaps = b.call_gap_s * max(len(uploads) - 1, 0)
    final = sum(s for _, s in final_call_phases(questions, sft_steps, grpo_steps, b, safety=safety))
    total = b.machine_start_s + transfer + gaps + final + b.final_idle_s
    return {"machine_start": b.machine_start_s, "uploads": transfer, "gaps": gaps, "final_command": final,
            "final_idle": b.final_idle_s, "total": total}


def derive_sft_steps(uploads: list[int], questions: int, grpo_steps: int, b: Budget = BUDGET) -> int:
    """The default step budget: the most steps (a multiple of 10, at most one epoch of 437) for which the plan stays
    under 13 minutes and the last command under 10 minutes minus 40 s even if SFT runs `b.sft_safety` times slower
    than estimated."""
    best = 0
    for steps in range(10, 438, 10):
        est = plan_seconds(uploads, questions, steps, grpo_steps, b, safety=b.sft_safety)
        if est["total"] <= BUDGET_LIMIT_S and est["final_command"] <= COMMAND_LIMIT_S - 40:
            best = steps
    return best


# ---------------------------------------------------------------------------------------------- packing the calls
def pack_calls(model_size: int, extras: dict[str, int], tree_bytes: int, *, limit: int = UPLOAD_LIMIT,
               chunk_max: int = CHUNK_MAX, margin: int = UPLOAD_MARGIN) -> list[dict[str, Any]]:
    """The fewest calls that carry the model (in chunks of at most `chunk_max`) and the `extras` (path -> bytes).

    Every call also sends the working tree (`tree_bytes`) and the manifest; `margin` is kept free in each. Extras go
    to the last calls, largest first, into the call with the most room; chunks fill the calls in order, so the last
    call (the one that runs the phases) carries the smallest. Returns [{"chunk": bytes, "extras": [path]}] per call.
    """
    room0 = limit - tree_bytes - MANIFEST_ROOM - margin
    if room0 <= 0:
        raise ValueError(f"the working tree alone ({tree_bytes:,} B) leaves no room in a {limit:,} B upload")
    for n in range(max(1, math.ceil(model_size / min(chunk_max, room0))), 1000):
        rooms = [room0] * n
        placed: list[list[str]] = [[] for _ in range(n)]
        ok = True
        for path, size in sorted(extras.items(), key=lambda kv: -kv[1]):
            i = max(range(n), key=lambda j: (rooms[j], j))
            if rooms[i] < size:
                ok = False
                break
            rooms[i] -= size
            placed[i].append(path)
        caps = [min(chunk_max, r) for r in rooms]
        if not ok or sum(caps) < model_size:
            continue
        left, calls = model_size, []
        for i in range(n):
            take = min(caps[i], left)
            left -= take
            calls.append({"chunk": take, "extras": placed[i]})
        return calls
    raise ValueError("no plan of fewer than 1,000 calls fits")


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of the working tree that travels with every call: tracked and untracked-not-ignored files, `shared/`.

    Outside a git checkout (a copy, as in the tests): every file but the bundle, caches and outputs."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True)
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode().split("\0") if n]
    else:
        skip = {BUNDLE, ".git", ".venv", ".cache", "outputs", "__pycache__", ".pytest_cache", "shared"}
        names = [str(f.relative_to(root)) for f in root.rglob("*")
                 if f.is_file() and not skip & set(f.relative_to(root).parts)]
    total = 0
    for name in names:
        p = root / name
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    shared = root / "shared"
    if shared.is_dir():
        total += sum(f.stat().st_size for f in shared.rglob("*") if f.is_file())
    return total


def path_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file())


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 * MIB):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------------- prepare
def lock_versions(root: Path = ROOT) -> dict[str, str]:
    """Pinned versions of requirements.lock, by normalized name."""
    pins: dict[str, str] = {}
    for line in (root / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name.strip())] = version.strip()
    return pins


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download_wheels(dest: Path, root: Path = ROOT) -> None:
    """Every `BUNDLE_WHEELS` entry at its locked version, for CPython 3.12 manylinux x86_64, into `dest` (PyPI).

    pip download --only-binary=:all: --no-deps; an sdist-only release (antlr4-python3-runtime 4.9.3) is built here
    into a py3-none-any wheel with pip wheel. A wheel already in `dest` is kept.
    """
    pins = lock_versions(root)
    dest.mkdir(parents=True, exist_ok=True)
    platforms = [a for p in GPU_PLATFORMS for a in ("--platform", p)]
    for name in BUNDLE_WHEELS:
        stem = _norm(name).replace("-", "_")
        if any(_norm(w.name.split("-")[0]).replace("-", "_") == stem for w in dest.glob("*.whl")):
            continue
        spec = f"{name}=={pins[_norm(name)]}" if _norm(name) in pins else name
        try:
            _pip("download", "-q", "--only-binary=:all:", "--no-deps", "--python-version", GPU_PYTHON,
                 "--implementation", "cp", *platforms, "-d", str(dest), spec)
        except subprocess.CalledProcessError:
            print(f"[prepare] {spec}: no wheel on PyPI; building a pure-Python wheel from the sdist", flush=True)
            _pip("wheel", "-q", "--no-deps", "-w", str(dest), spec)


def wheel_metadata(wheel: Path) -> tuple[str, str, list[str], list[str]]:
    """(name, version, Requires-Dist lines, top-level modules) of a wheel file."""
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name).decode()
    fields = [line.split(":", 1) for line in meta.splitlines() if ":" in line and not line.startswith(" ")]
    name = next(v.strip() for k, v in fields if k == "Name")
    version = next(v.strip() for k, v in fields if k == "Version")
    requires = [v.strip() for k, v in fields if k == "Requires-Dist"]
    tops: set[str] = set()
    for n in names:
        first = n.split("/")[0]
        if first.endswith((".dist-info", ".data")):
            continue
        if "/" in n:
            tops.add(first)
        elif first.endswith((".py", ".so")):
            tops.add(first.split(".")[0])
    return name, version, requires, sorted(t for t in tops if not t.startswith("_"))


def missing_requirements(wheels: list[Path]) -> list[str]:
    """Requirements of the bundled wheels (no extras; markers for Python 3.12 on Linux) that neither the bundle nor
    the GPU machine's preinstalled packages provide."""
    from packaging.requirements import Requirement

    env = {"python_version": GPU_PYTHON, "python_full_version": f"{GPU_PYTHON}.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    have = set(GPU_PREINSTALLED) | {_norm(wheel_metadata(w)[0]) for w in wheels}
    missing = []
    for w in wheels:
        name = wheel_metadata(w)[0]
        for line in wheel_metadata(w)[2]:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if _norm(req.name) not in have:
                missing.append(f"{name} needs {req}")
    return missing


def spider_files(spider: Path, *, dev_questions: str, train: bool, train_limit: int | None) -> list[Path]:
    """The Spider files the phases read: dev.json, train_spider.json, tables.json and the `.sqlite` files of every dev
    database (all of them: the seeded sample is drawn after questions without a database are dropped, so a partial
    set would change the sample) and of the training questions' databases (the first `train_limit`, or all)."""
    dev = json.loads((spider / dev_questions).read_text())
    dbs = {e["db_id"] for e in dev}
    files = [spider / "dev.json", spider / "tables.json"]
    if train:
        rows = json.loads((spider / "train_spider.json").read_text())
        # the loader drops questions without a database before `limit`: count the first ones that have one
        runnable = [e for e in rows if (spider / "database" / e["db_id"]).is_dir()]
        dbs |= {e["db_id"] for e in (runnable[:train_limit] if train_limit else runnable)}
        files.append(spider / "train_spider.json")
    for db in sorted(dbs):
        files += sorted((spider / "database" / db).glob("*.sqlite"))
    return files


def pack_data(files: list[Path], spider: Path, dest: Path) -> None:
    """A reproducible `spider/...` tar.gz of `files` (sorted, mtime 0, owner 0): the same input gives the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(files):
            info = tar.gettarinfo(str(f), arcname=f"spider/{f.relative_to(spider)}")
            info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
            with open(f, "rb") as fh:
                tar.addfile(info, fh)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(buf.getvalue())
    os.replace(tmp, dest)


def _model_stream(model_file: Path | None) -> tuple[Iterator[bytes], int, str, str]:
    """(block stream, size, expected sha256, name) of the model: a given file (a stand-in in the tests) or the
    embedded GGUF streamed from its installed wheels (t2s.llm.models), never assembled twice on disk."""
    if model_file is not None:
        size, sha = model_file.stat().st_size, sha256_file(model_file)

        def one() -> Iterator[bytes]:
            with open(model_file, "rb") as f:
                while block := f.read(16 * MIB):
                    yield block

        return one(), size, sha, model_file.name
    from t2s.llm.models import EMBEDDED_MODELS, gguf_parts

    spec = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
    parts = gguf_parts(spec)

    def many() -> Iterator[bytes]:
        for p in parts:
            with open(p, "rb") as f:
                while block := f.read(16 * MIB):
                    yield block

    assert spec.size is not None
    return many(), spec.size, spec.sha256, f"{spec.name}-{spec.hash12}.gguf"


def write_chunks(stream: Iterator[bytes], sizes: list[int], dest: Path, expected_sha: str) -> list[dict[str, Any]]:
    """Split the stream into files `dest/partNN` of the given sizes, hashing each and the whole; the whole must hash
    to `expected_sha` (else nothing is kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("part*"):
        old.unlink()
    whole = hashlib.sha256()
    chunks: list[dict[str, Any]] = []
    pending = b""
    it = iter(stream)
    for i, size in enumerate(sizes, start=1):
        path = dest / f"part{i:02d}"
        h, written = hashlib.sha256(), 0
        with open(path, "wb") as out:
            while written < size:
                if not pending:
                    pending = next(it)
                take = pending[: size - written]
                pending = pending[len(take):]
                out.write(take)
                h.update(take)
                whole.update(take)
                written += len(take)
        chunks.append({"path": str(path.relative_to(ROOT)), "size": size, "sha256": h.hexdigest()})
    if whole.hexdigest() != expected_sha:
        for c in chunks:
            (ROOT / c["path"]).unlink()
        raise RuntimeError(f"the model's chunks hash to {whole.hexdigest()}, expected {expected_sha}: source damaged")
    return chunks


def prepare(args: argparse.Namespace) -> int:
    """`--prepare`: the bundle under `.gpu_bundle/` (wheels, Spider subset, model chunks, manifest.json); prints the
    plan and returns `plan`'s exit code."""
    bundle = ROOT / BUNDLE
    bundle.mkdir(exist_ok=True)
    wheels_dir = bundle / "wheels"
    if args.wheel_dir:
        wheels_dir.mkdir(exist_ok=True)
        for old in wheels_dir.glob("*.whl"):
            old.unlink()
        for w in sorted(Path(args.wheel_dir).glob("*.whl")):
            shutil.copy2(w, wheels_dir / w.name)
    else:
        download_wheels(wheels_dir)
    wheels = sorted(wheels_dir.glob("*.whl"))
    missing = missing_requirements(wheels) if not args.wheel_dir else []
    if missing:
        print("[prepare] the GPU machine would lack:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    spider = Path(os.environ.get("T2S_DATA", ROOT.parent / "shared" / "data")) / "spider"
    data_files = spider_files(spider, dev_questions="dev.json", train=True,
                              train_limit=8 if args.dry_run else None)
    data_path = bundle / "spider.tar.gz"
    pack_data(data_files, spider, data_path)
    stream, model_size, model_sha, model_name = _model_stream(Path(args.model_file) if args.model_file else None)
    wheels_rel, data_rel = str(wheels_dir.relative_to(ROOT)), str(data_path.relative_to(ROOT))
    extras = {wheels_rel: path_bytes(wheels_dir), data_rel: path_bytes(data_path)}
    tree = tree_bytes()
    calls = pack_calls(model_size, extras, tree, limit=args.upload_limit, chunk_max=args.chunk_max,
                       margin=args.margin)
    chunks = write_chunks(stream, [c["chunk"] for c in calls if c["chunk"]], bundle / "model", model_sha)
    uploads = [tree + MANIFEST_ROOM + c["chunk"] + sum(extras[e] for e in c["extras"]) for c in calls]
    phases = phase_settings(args, uploads=uploads)
    manifest_rel = f"{BUNDLE}/manifest.json"
    planned, k = [], 0
    for i, c in enumerate(calls, start=1):
        carry = [manifest_rel]
        if c["chunk"]:
            carry.append(chunks[k]["path"])
            k += 1
        planned.append({"index": i, "carry": [*carry, *c["extras"]]})
    manifest = {
        "version": 1,
        "model": {"name": model_name, "size": model_size, "sha256": model_sha,
                  "target": f"gguf/{model_name}", "stand_in": bool(args.model_file)},
        "chunks": chunks,
        "wheels": {"path": wheels_rel, "files": [{"name": w.name, "size": w.stat().st_size, "sha256": sha256_file(w),
                                                  "dist": wheel_metadata(w)[0], "version": wheel_metadata(w)[1],
                                                  "modules": wheel_metadata(w)[3]} for w in wheels]},
        "data": {"path": data_rel, "size": data_path.stat().st_size, "sha256": sha256_file(data_path),
                 "files": len(data_files)},
        "calls": planned,
        "phases": phases,
        "limits": {"upload": args.upload_limit, "chunk": args.chunk_max, "margin": args.margin},
        "tree_bytes_at_prepare": tree,
        "not_shipped": NOT_SHIPPED,
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"[prepare] {bundle}: {len(chunks)} model chunks, {len(wheels)} wheels, {len(data_files)} data files")
    return plan(args)


def phase_settings(args: argparse.Namespace, manifest: dict[str, Any] | None = None, *,
                   uploads: list[int] | None = None) -> dict[str, Any]:
    """The phases' settings: command-line values first, then the manifest's, then the defaults (workplace mode:
    the 100-question sample; SFT steps derived from the budget and the calls' `uploads`; no GRPO)."""
    saved = (manifest or {}).get("phases", {})
    dry = bool(args.dry_run or saved.get("dry_run"))
    questions = args.questions or saved.get("questions") or (2 if dry else 100)
    grpo = args.grpo_steps if args.grpo_steps is not None else saved.get("grpo_steps", 1 if dry else 0)
    sft = args.sft_steps or saved.get("sft_steps") or (2 if dry else None)
    if sft is None:
        if uploads is None:
            uploads = upload_sizes(manifest, tree_bytes()) if manifest else [UPLOAD_LIMIT] * 8
        sft = derive_sft_steps(uploads, questions, grpo)
    return {"dry_run": dry, "backend": "hf", "questions": int(questions), "sft_steps": int(sft),
            "grpo_steps": int(grpo)}


# ---------------------------------------------------------------------------------------------------------- plan
def load_manifest(root: Path = ROOT) -> dict[str, Any]:
    """`.gpu_bundle/manifest.json`, or SystemExit telling to run --prepare."""
    path = root / BUNDLE / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"no {path}: run `python benchmarks/gpu_recipe.py --prepare` first")
    return dict(json.loads(path.read_text()))


def upload_sizes(manifest: dict[str, Any], tree: int, root: Path = ROOT) -> list[int]:
    """Bytes each call sends: the working tree plus its carried paths (as they are now on disk)."""
    return [tree + sum(path_bytes(root / p) for p in call["carry"] if (root / p).exists())
            for call in manifest["calls"]]


def plan(args: argparse.Namespace) -> int:
    """`--plan`: one line per call (what it carries, its upload bytes, its command), then the budget.

    Exit 1 when a call's upload is over the limit, the estimated plan is over 13 minutes of GPU time, or the last
    command over 10 minutes."""
    manifest = load_manifest()
    phases = phase_settings(args, manifest)
    limit = int(manifest["limits"]["upload"])
    tree = tree_bytes()
    uploads = upload_sizes(manifest, tree)
    calls = manifest["calls"]
    problems = [f"call {c['index']} carries {p}, which is not here: run --prepare again"
                for c in calls for p in c["carry"] if not (ROOT / p).exists()]
    rows = []
    for call, up in zip(calls, uploads):
        i, n = call["index"], len(calls)
        last = i == n
        command = stage_command(i, phases if last else None, manifest)
        est = upload_call_seconds(up) + (sum(s for _, s in final_call_phases(
            phases["questions"], phases["sft_steps"], phases["grpo_steps"])) if last else 0.0)
        timeout = COMMAND_LIMIT_S if last else STEP_TIMEOUT_S
        carried = up - tree
        rows.append({"call": i, "carry": call["carry"], "upload_bytes": up, "carried_bytes": carried,
                     "tree_bytes": tree, "timeout_s": timeout, "estimated_s": round(est, 1), "command": command})
        flag = "" if up <= limit else f"  OVER {limit:,} B"
        if up > limit:
            problems.append(f"call {i} uploads {up:,} B > {limit:,} B")
        if not args.plan_json:
            print(f"call {i}/{n}  upload {up:,} B (tree {tree:,} + carried {carried:,}){flag}  "
                  f"carry={json.dumps(call['carry'])}  timeout_s={timeout}  ~{est:.0f} s  command: {command}")
    est = plan_seconds(uploads, phases["questions"], phases["sft_steps"], phases["grpo_steps"])
    if est["total"] > BUDGET_LIMIT_S:
        problems.append(f"the plan is estimated at {est['total']:.0f} s > {BUDGET_LIMIT_S} s (13 min)")
    if est["final_command"] > COMMAND_LIMIT_S:
        problems.append(f"the last command is estimated at {est['final_command']:.0f} s > {COMMAND_LIMIT_S} s")
    slow = plan_seconds(uploads, phases["questions"], phases["sft_steps"], phases["grpo_steps"],
                        safety=BUDGET.sft_safety)
    warnings = [] if slow["final_command"] <= COMMAND_LIMIT_S else [
        f"at 1/{BUDGET.sft_safety:g} of the estimated SFT speed the last command would take "
        f"{slow['final_command']:.0f} s > {COMMAND_LIMIT_S} s: a rerun of the last call resumes it"]
    if args.plan_json:
        print(json.dumps({"calls": rows, "budget": est, "phases": phases, "problems": problems,
                          "warnings": warnings}, indent=1))
    else:
        print(f"phases: {json.dumps(phases)}")
        print("last call: " + ", ".join(f"{p} {s:.0f} s" for p, s in final_call_phases(
            phases["questions"], phases["sft_steps"], phases["grpo_steps"])))
        print(f"budget (ESTIMATES for one H100, docs/training.md): start {est['machine_start']:.0f} + uploads "
              f"{est['uploads']:.0f} + gaps {est['gaps']:.0f} + last command {est['final_command']:.0f} + idle "
              f"{est['final_idle']:.0f} = {est['total']:.0f} s ({est['total'] / 60:.1f} min) of {BUDGET_LIMIT_S} s")
        print("if a call reports missing parts (a fresh machine), repeat the calls it names, then the last; "
              "call give_back right after the last reply")
        for w in warnings:
            print(f"warning: {w}")
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
    return 1 if problems else 0


def stage_command(index: int, phases: dict[str, Any] | None, manifest: dict[str, Any]) -> str:
    """The shell command of call `index` on the GPU machine (the last one names the phases' settings)."""
    cmd = f"python3 benchmarks/gpu_recipe.py --stage {index}"
    if phases is not None:
        saved = manifest.get("phases", {})
        for key, flag in (("questions", "--questions"), ("sft_steps", "--sft-steps"), ("grpo_steps", "--grpo-steps")):
            if phases[key] != saved.get(key):
                cmd += f" {flag} {phases[key]}"
    return cmd


# --------------------------------------------------------------------------------------- the GPU machine: --stage
def _marker(root: Path, name: str) -> Path:
    return root / BUNDLE / "state" / name


def _verified(root: Path, rel: str, size: int, sha: str, *, rehash: bool) -> str:
    """'ok', 'absent' or 'damaged' for a bundle file; `rehash` re-reads it, else a marker of an earlier check with
    the same size and mtime is trusted."""
    path = root / rel
    if not path.is_file():
        return "absent"
    st = path.stat()
    if st.st_size != size:
        return "damaged"
    mark = _marker(root, rel.replace("/", "_") + ".ok")
    stamp = f"{sha} {st.st_size} {st.st_mtime_ns}"
    if not rehash and mark.is_file() and mark.read_text() == stamp:
        return "ok"
    if sha256_file(path) != sha:
        return "damaged"
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.write_text(stamp)
    return "ok"


def _bundle_items(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Every carried file but the manifest: chunks, wheels (one per file), the data archive; with the call that
    carries each."""
    call_of: dict[str, int] = {}
    for call in manifest["calls"]:
        for p in call["carry"]:
            call_of[p] = call["index"]
    items = [{**c, "call": call_of[c["path"]]} for c in manifest["chunks"]]
    wheels = manifest["wheels"]
    items += [{"path": f"{wheels['path']}/{w['name']}", "size": w["size"], "sha256": w["sha256"],
               "call": call_of[wheels["path"]]} for w in wheels["files"]]
    data = manifest["data"]
    items.append({"path": data["path"], "size": data["size"], "sha256": data["sha256"], "call": call_of[data["path"]]})
    return items


def stage(args: argparse.Namespace, root: Path = ROOT) -> int:
    """`--stage K` on the GPU machine: list what is there (verifying this call's files), say what is missing and
    which calls to repeat; the last call then joins, checks, installs and runs the phases. Idempotent: a repeated call
    finds its files and says so, a repeated last call reuses the joined model, the installed wheels and finished
    phases (runs resume from their directories).

    Exit codes: 0 done, 3 parts missing (a fresh machine: repeat the calls named), 4 a damaged file."""
    manifest = load_manifest(root)
    calls = manifest["calls"]
    n, k = len(calls), args.stage
    if not 1 <= k <= n:
        print(f"[stage] --stage must be 1..{n}", file=sys.stderr)
        return 2
    log = _marker(root, "calls.log")
    earlier = log.read_text().split() if log.is_file() else []
    host = f"{platform.node()} python {platform.python_version()}"
    print(f"[stage {k}/{n}] {host}; " + (f"earlier calls on this machine: {' '.join(earlier)}" if earlier else
                                        "fresh machine: no earlier call left anything here"), flush=True)
    if str(k) in earlier:
        print(f"[stage {k}/{n}] call {k} ran here before: its files are checked again")
    status: dict[str, str] = {}
    for item in _bundle_items(manifest):
        mine = item["call"] == k
        status[item["path"]] = _verified(root, item["path"], item["size"], item["sha256"], rehash=mine)
        note = "this call's" if mine else f"from call {item['call']}"
        print(f"  {status[item['path']]:8} {item['path']} ({item['size']:,} B, {note})")
    bad = [p for p, s in status.items() if s == "damaged"]
    if bad:
        print(f"[stage {k}/{n}] damaged: {', '.join(bad)}: repeat the calls that carry them", file=sys.stderr)
        return 4
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"{k}\n")
    items = _bundle_items(manifest)
    redo = sorted({it["call"] for it in items if status[it["path"]] == "absent"})
    have = sum(1 for s in status.values() if s == "ok")
    print(f"[stage {k}/{n}] {have} of {len(status)} files here" +
          (f"; missing those of calls {redo}" if redo else "; all here"))
    if k < n:
        before = [c for c in redo if c < k]
        if before:
            print(f"[stage {k}/{n}] the files of calls {before} are gone (a fresh machine): start the uploads over "
                  f"with call {before[0]}; this call's files stay", file=sys.stderr)
            return 3
        print(f"[stage {k}/{n}] next: call {k + 1}")
        return 0
    if redo:
        print(f"[stage {k}/{n}] cannot run the phases: repeat calls {redo} (a fresh machine starts the uploads "
              "over), then this one", file=sys.stderr)
        return 3
    return finish(manifest, args, root)


def join_model(manifest: dict[str, Any], cache: Path, root: Path = ROOT) -> Path:
    """The chunks joined into `<cache>/<target>` while hashing; the file appears only with the manifest's sha256
    (the cache path `t2s.llm.models.assemble_gguf` looks for first, so no model wheel is needed)."""
    model = manifest["model"]
    target = cache / model["target"]
    mark = _marker(root, "model.ok")
    if target.is_file() and mark.is_file() and mark.read_text() == f"{model['sha256']} {target.stat().st_mtime_ns}":
        print(f"[stage] model: {target} already joined and checked")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for c in manifest["chunks"]:
            with open(root / c["path"], "rb") as f:
                while block := f.read(16 * MIB):
                    h.update(block)
                    out.write(block)
    if h.hexdigest() != model["sha256"] or tmp.stat().st_size != model["size"]:
        tmp.unlink()
        raise RuntimeError(f"joined model: sha256 {h.hexdigest()}, expected {model['sha256']}")
    os.replace(tmp, target)
    mark.write_text(f"{model['sha256']} {target.stat().st_mtime_ns}")
    print(f"[stage] model: {len(manifest['chunks'])} chunks joined into {target}, sha256 {h.hexdigest()[:12]}… ok")
    return target


def unpack_data(manifest: dict[str, Any], dest: Path, root: Path = ROOT) -> None:
    """The Spider archive extracted into `dest/spider` once per archive hash."""
    mark = _marker(root, "data.ok")
    if mark.is_file() and mark.read_text() == manifest["data"]["sha256"] and (dest / "spider").is_dir():
        print(f"[stage] data: {dest / 'spider'} already extracted")
        return
    shutil.rmtree(dest / "spider", ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / manifest["data"]["path"]) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(dest, filter="data")
        else:  # pragma: no cover - the GPU machine is 3.12; members are plain files we packed
            tar.extractall(dest)
    mark.write_text(manifest["data"]["sha256"])
    print(f"[stage] data: {manifest['data']['files']} files into {dest / 'spider'}")


def install_wheels(manifest: dict[str, Any], target: Path, root: Path = ROOT) -> None:
    """`pip install --no-index --no-deps --target <target>` of the bundled wheels, once per set of wheel hashes."""
    files = manifest["wheels"]["files"]
    stamp = " ".join(sorted(w["sha256"] for w in files))
    mark = _marker(root, "wheels.ok")
    if mark.is_file() and mark.read_text() == stamp and target.is_dir():
        print(f"[stage] wheels: already installed in {target}")
        return
    shutil.rmtree(target, ignore_errors=True)
    paths = [str(root / manifest["wheels"]["path"] / w["name"]) for w in files]
    subprocess.run([sys.executable, *_interpreter_flags(), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--target", str(target), *paths],
                   check=True)
    mark.write_text(stamp)
    print(f"[stage] wheels: {len(files)} installed offline into {target}")


def _interpreter_flags() -> list[str]:
    """The interpreter flags a child must repeat to see the same packages (`-S`: no site-packages, `-s`, `-E`)."""
    flags = []
    if sys.flags.no_site:
        flags.append("-S")
    if sys.flags.no_user_site:
        flags.append("-s")
    if sys.flags.ignore_environment:
        flags.append("-E")
    return flags


def finish(manifest: dict[str, Any], args: argparse.Namespace, root: Path = ROOT) -> int:
    """The last call: join + sha256, data, offline wheel install, then the phases in a child process whose output
    also goes to `$OUT/run.log`; returns the child's exit code."""
    bundle = root / BUNDLE
    # "site-packages" in the path: dill (datasets' fingerprints) pickles modules elsewhere by value, and fails
    cache, site, out = bundle / "cache", bundle / "site-packages", bundle / "out"
    results = Path(os.environ.get("OUT") or bundle / "results")
    results.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    join_model(manifest, cache, root)
    t_join = time.perf_counter() - t0
    unpack_data(manifest, bundle / "data", root)
    install_wheels(manifest, site, root)
    t_ready = time.perf_counter() - t0
    phases = phase_settings(args, manifest)
    cmd = [sys.executable, *_interpreter_flags(), str(root / "benchmarks" / "gpu_recipe.py"), "--no-install",
           "--backend", "hf", "--questions", str(phases["questions"]), "--sft-steps", str(phases["sft_steps"]),
           "--grpo-steps", str(phases["grpo_steps"]), "--out", str(out), "--cache", str(cache),
           "--results", str(results), "--bundle-manifest", str(bundle / "manifest.json"),
           "--stage-seconds", json.dumps({"join_hash": round(t_join, 1), "ready": round(t_ready, 1)})]
    if phases["dry_run"]:
        cmd.append("--dry-run")
    env = {**os.environ, "T2S_DATA": str(bundle / "data"), "T2S_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    print(f"[stage] phases: {json.dumps(phases)}", flush=True)
    with open(results / "run.log", "w") as logf, subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                                                                   stderr=subprocess.STDOUT, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            sys.stdout.write(line)
            logf.write(line)
        rc = child.wait()
    print(f"[stage] phases exited {rc}; results in {results}")
    return rc


# ---------------------------------------------------------------------------------------------------- the phases
def _phase(name: str, results: dict[str, Any], fn: Any) -> Any:
    """Run one phase, timing it into `results[name]["seconds"]`; a dict it returns is merged into `results[name]`."""
    t0 = time.perf_counter()
    value = fn()
    results[name] = {**(value if isinstance(value, dict) else {}), "seconds": round(time.perf_counter() - t0, 1)}
    print(f"[gpu_recipe] {name}: {results[name]['seconds']} s", flush=True)
    return value


def dataset_overrides(questions: int | None) -> list[str]:
    """The dev questions evaluated: all 972 (None), the fixed 100-question sample (100), or a seeded sample of N with
    the sample's seed (a larger sample contains a smaller one)."""
    if questions is None or questions >= 972:
        return ["dataset=spider_dev"]
    if questions == 100:
        return ["dataset=spider_dev_sample100"]
    return ["dataset=spider_dev", f"dataset.sample={questions}", "dataset.seed=100"]


def llm_overrides(args: argparse.Namespace) -> list[str]:
    """The evaluation LLM: vLLM, or the embedded model through transformers (`llm=embedded_hf`: the config that has
    `device`; `llm=embedded` is llama.cpp's); the dry run puts the tiny random model into the same branch on CPU."""
    if args.backend == "vllm" and not args.dry_run:
        return ["llm=vllm", "llm.model=embedded", "llm.dtype=bfloat16"]
    if args.dry_run:
        return ["llm=embedded_hf", "llm.model=tiny", "llm.device=cpu", "llm.dtype=float32", "llm.batch_size=8",
                "llm.num_threads=1", "generator.max_new_tokens=8"]
    return ["llm=embedded_hf", "llm.device=cuda", "llm.dtype=bfloat16", "llm.batch_size=64"]


def eval_overrides(args: argparse.Namespace, adapter: str | None) -> list[str]:
    """`t2s run` overrides of one evaluation."""
    overrides = [*dataset_overrides(args.questions), "embedder=hashing", "run.progress=false", "run.batch_size=64",
                 f"paths.cache_dir={args.cache}", *llm_overrides(args)]
    if adapter:
        overrides.append(f"llm.adapter={adapter}")
    return overrides


def evaluate(args: argparse.Namespace, adapter: str | None, run_dir: Path) -> dict[str, Any]:
    """EX (percent) and exact match of the zero-shot pipeline with the base model (+ adapter) on the dev questions,
    and which questions were right (qid -> bool, from predictions.jsonl)."""
    from t2s.config import compose_config
    from t2s.run.runner import run

    cfg = compose_config(eval_overrides(args, adapter))
    metrics = run(cfg, run_dir=run_dir)
    correct: dict[str, bool] = {}
    preds = run_dir / "predictions.jsonl"
    if preds.is_file():
        for line in preds.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            ok = row.get("correct", row.get("ex"))
            if "qid" in row and ok is not None:
                correct[str(row["qid"])] = bool(ok)
    return {"ex": float(metrics.get("ex") or 0.0), "exact_match": metrics.get("exact_match"),
            "llm_target": str(cfg.llm._target_), "questions": len(correct) or None, "correct": correct}


def train_overrides(args: argparse.Namespace, recipe: str) -> list[str]:
    """`t2s train` overrides of one phase (dry run: the tiny model through the same llm group, a few steps, CPU)."""
    common = [f"paths.cache_dir={args.cache}", "dataset=spider_train"]
    if args.dry_run:
        common += ["llm=embedded_hf", "llm.model=tiny", "dataset.limit=8", "train.data.max_prompt_tokens=320",
                   "train.data.val_size=2"]
        if recipe == "sft":
            return [*common, "train=sft", f"train.max_steps={args.sft_steps or 2}", "train.val_every=2",
                    "train.batch_size=4", "train.val_max_new_tokens=8", "train.max_completion_tokens=64",
                    "train.num_threads=1"]
        return [*common, "train=grpo", f"train.max_steps={args.grpo_steps}", "train.group_size=2",
                "train.max_completion_tokens=8", "train.num_threads=1"]
    common += ["llm=embedded_hf", "train.data.max_prompt_tokens=1536", "train.data.val_size=64"]
    if recipe == "sft":
        # effective batch 16 as 2 micro-batches of 8: 8 x 1,536 tokens keeps the fp32 logits (vocabulary 151,936)
        # and activations well inside 80 GB
        return [*common, "train=sft", "train.accelerator=gpu", "train.precision=bf16-mixed", "train.batch_size=8",
                "train.grad_accum=2",
                f"train.max_steps={args.sft_steps}", "train.warmup_steps=20", "train.lr=2e-4", "train.peft.r=16",
                "train.peft.alpha=32", "train.val_every=100", "train.val_batch_size=64", "train.patience=0",
                "train.checkpoint_every=100"]
    return [*common, "train=grpo", "train.accelerator=gpu", "train.bf16=true", f"train.max_steps={args.grpo_steps}",
            "train.group_size=8", "train.prompts_per_step=4", "train.beta=0.1", "train.lr=5e-6",
            "train.max_completion_tokens=192", f"train.use_vllm={str(args.backend == 'vllm').lower()}"]


def check_imports(manifest_path: Path) -> dict[str, Any]:
    """Import every module of the bundled wheels and trl's GRPO classes (trl 1.x must accept the machine's
    transformers); record the versions of what the recipe leans on. A failure is recorded, not raised."""
    import importlib
    import importlib.metadata as md

    manifest = json.loads(manifest_path.read_text())
    report: dict[str, Any] = {"failed": {}, "versions": {}}
    for w in manifest["wheels"]["files"]:
        for module in w["modules"]:
            try:
                importlib.import_module(module)
            except Exception as e:  # noqa: BLE001 - the report says what failed and why
                report["failed"][module] = f"{type(e).__name__}: {e}"
    if any(_norm(w["dist"]) == "trl" for w in manifest["wheels"]["files"]):
        try:
            from trl import GRPOConfig, GRPOTrainer  # noqa: F401
        except Exception as e:  # noqa: BLE001
            report["failed"]["trl.GRPOTrainer"] = f"{type(e).__name__}: {e}"
    names = {w["dist"] for w in manifest["wheels"]["files"]} | {
        "torch", "transformers", "peft", "accelerate", "pytorch-lightning", "huggingface-hub", "fsspec", "pyarrow",
        "tokenizers", "safetensors", "numpy"}
    for name in sorted(names):
        try:
            report["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            report["versions"][name] = None
    for module, error in report["failed"].items():
        print(f"[gpu_recipe] import {module} FAILED: {error}", flush=True)
    return report


def convert_model(args: argparse.Namespace) -> str:
    """The base model's checkpoint directory (the embedded GGUF converted once; the tiny model in a dry run)."""
    from t2s.llm.models import resolve_model

    return str(resolve_model("tiny" if args.dry_run else "embedded", args.cache))


def collect(results: dict[str, Any], out: Path, dest: Path) -> None:
    """Copy what should come back into `dest` (the workplace's $OUT): gpu_recipe.json, the SFT adapter, the curves;
    at most `RETURN_FILES` files (run.log, written by --stage, counts) of at most 16 MiB each; an adapter file over
    16 MiB is saved in bf16, else split. What was left out is listed in the JSON."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [(out / "sft" / "adapter" / "adapter_model.safetensors", "sft_adapter/adapter_model.safetensors"),
              (out / "sft" / "adapter" / "adapter_config.json", "sft_adapter/adapter_config.json"),
              (out / "sft" / "curves.json", "sft_curves.json"), (out / "sft" / "curves.png", "sft_curves.png"),
              (out / "grpo" / "rewards.jsonl", "grpo_rewards.jsonl")]
    slots = RETURN_FILES - 2  # gpu_recipe.json and run.log
    copied, left_out = [], []
    for src, name in wanted:
        if not src.is_file():
            continue
        if len(copied) >= slots:
            left_out.append(name)
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.stat().st_size <= RETURN_FILE_MAX:
            shutil.copy2(src, target)
        elif src.suffix == ".safetensors":
            _save_bf16(src, target)
        else:
            left_out.append(f"{name} ({src.stat().st_size:,} B)")
            continue
        copied.append(name)
    adapter = out / "sft" / "adapter" / "adapter_model.safetensors"
    if adapter.is_file():
        results["sft_adapter_sha256"] = sha256_file(adapter)
    results["returned"] = {"files": ["gpu_recipe.json", "run.log", *copied], "left_out": left_out}
    (dest / "gpu_recipe.json").write_text(json.dumps(results, indent=2, default=str))


def _save_bf16(src: Path, target: Path) -> None:
    """A safetensors file with its float tensors cast to bf16 (half the bytes); split into parts if still too big."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    save_file(tensors, str(target))
    if target.stat().st_size > RETURN_FILE_MAX:
        raise RuntimeError(f"{src} is over {RETURN_FILE_MAX:,} B even in bf16: lower train.peft.r")


def run_phases(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase in order; the results are written after each (and collected into `--results`) so a command killed
    at its time limit still brings back the phases it finished."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"dry_run": args.dry_run, "backend": args.backend, "questions": args.questions,
                               "sft_steps": args.sft_steps, "grpo_steps": args.grpo_steps,
                               "estimates": asdict(BUDGET)}
    if args.stage_seconds:
        results["stage"] = json.loads(args.stage_seconds)

    def save() -> None:
        results["total_seconds"] = round(sum(v["seconds"] for v in results.values()
                                             if isinstance(v, dict) and "seconds" in v), 1)
        (out / "gpu_recipe.json").write_text(json.dumps(results, indent=2, default=str))
        if args.results:
            collect(results, out, Path(args.results))

    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU visible; use --dry-run on CPU")
        results["device"] = torch.cuda.get_device_name(0)
        if not args.no_install:
            extras = ".[model,gpu]" if args.backend == "vllm" else ".[model]"
            _phase("install", results, lambda: subprocess.run(
                [sys.executable, "-m", "pip", "install", "-q", "-e", extras], cwd=ROOT, check=True))
    if args.bundle_manifest:
        _phase("imports", results, lambda: check_imports(Path(args.bundle_manifest)))
        save()
    from t2s.train.app import compose_train_config, train

    _phase("convert", results, lambda: {"model": convert_model(args)})
    _phase("base", results, lambda: evaluate(args, None, out / "eval_base"))
    save()
    sft = _phase("sft", results, lambda: train(compose_train_config(train_overrides(args, "sft")), out / "sft"))
    results["sft"] = {**{k: sft.get(k) for k in ("steps", "examples_per_second", "peak_rss_mb", "best")},
                      "seconds": results["sft"]["seconds"]}
    save()
    _phase("sft_eval", results, lambda: evaluate(args, sft["adapter"], out / "eval_sft"))
    save()
    if args.grpo_steps > 0:
        grpo = _phase("grpo", results, lambda: train(compose_train_config(
            [*train_overrides(args, "grpo"), f"train.init_adapter={sft['adapter']}"]), out / "grpo"))
        results["grpo"] = {**{k: grpo.get(k) for k in ("steps", "seconds_per_step", "mean_reward")},
                           "seconds": results["grpo"]["seconds"]}
        save()
        _phase("grpo_eval", results, lambda: evaluate(args, grpo["adapter"], out / "eval_grpo"))
    save()
    print("| phase | EX | seconds |\n|---|---|---|")
    for name in ("install", "imports", "convert", "base", "sft", "sft_eval", "grpo", "grpo_eval"):
        if name in results:
            ex_value = results[name].get("ex")
            print(f"| {name} | {'' if ex_value is None else f'{ex_value:.1f}'} | {results[name]['seconds']} |")
    print(f"| total | | {results['total_seconds']} |")
    return results


def parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare", action="store_true", help="workplace: build .gpu_bundle/ here (needs PyPI)")
    mode.add_argument("--plan", action="store_true", help="workplace: print the calls and the budget; exit 1 if over")
    mode.add_argument("--stage", type=int, metavar="K", help="workplace, on the GPU machine: call K of the plan")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a few steps and questions")
    p.add_argument("--backend", choices=["vllm", "hf"], default=None,
                   help="generation backend (default: vllm when importable, else hf; the dry run: hf)")
    p.add_argument("--questions", type=int, default=None,
                   help="dev questions evaluated: 100 = the fixed sample, N = a seeded sample (default: all 972; "
                        "workplace: 100)")
    p.add_argument("--sft-steps", type=int, default=None,
                   help="SFT optimizer steps of batch 16 (default 437 = 1 epoch; workplace: from the budget)")
    p.add_argument("--grpo-steps", type=int, default=None, help="GRPO steps (default 30; workplace: 0 = no GRPO)")
    p.add_argument("--out", default=str(ROOT / "outputs" / "gpu_recipe"))
    p.add_argument("--cache", default=os.environ.get("T2S_CACHE", str(ROOT / ".cache")))
    p.add_argument("--results", default=None, help="copy figures, adapter and curves here after each phase")
    p.add_argument("--no-install", action="store_true", help="skip the pip install phase")
    p.add_argument("--bundle-manifest", default=None, help=argparse.SUPPRESS)
    p.add_argument("--stage-seconds", default=None, help=argparse.SUPPRESS)
    p.add_argument("--json", dest="plan_json", action="store_true", help="--plan as JSON")
    # --prepare only: a stand-in model and local wheels (tests, no network), smaller limits (tests)
    p.add_argument("--model-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--wheel-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--upload-limit", type=int, default=UPLOAD_LIMIT, help=argparse.SUPPRESS)
    p.add_argument("--chunk-max", type=int, default=CHUNK_MAX, help=argparse.SUPPRESS)
    p.add_argument("--margin", type=int, default=UPLOAD_MARGIN, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> Any:
    """Dispatch: --prepare / --plan / --stage return an exit code; the phases return their results dict."""
    args = parser().parse_args(argv)
    if args.prepare:
        return prepare(args)
    if args.plan:
        return plan(args)
    if args.stage is not None:
        return stage(args)
    if args.backend is None:
        args.backend = "hf" if args.dry_run or not importlib.util.find_spec("vllm") else "vllm"
    if args.dry_run:
        args.questions = args.questions or 2
        args.sft_steps = args.sft_steps or 2
        args.grpo_steps = 1 if args.grpo_steps is None else args.grpo_steps
    else:
        args.sft_steps = args.sft_steps or 437
        args.grpo_steps = 30 if args.grpo_steps is None else args.grpo_steps
    return run_phases(args)


if __name__ == "__main__":
    code = main()
    sys.exit(code if isinstance(code, int) else 0)
