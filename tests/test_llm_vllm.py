"""The vLLM backend on a GPU with the embedded model: batched generation with n samples, finish reasons, scoring.

Skips, with the reason, where vLLM or a CUDA GPU is absent (this project's CI machine has neither); run it on a
GPU machine after `pip uninstall -y faiss-cpu && pip install -e '.[gpu]'`.
"""

from __future__ import annotations

import importlib.util

import pytest
from conftest_llm import project_cache

from t2s.llm.base import GenParams, LLMRequest, ScoreRequest


def _skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip uninstall -y faiss-cpu && pip install -e '.[gpu]')"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU: the vllm backend needs one"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]

SCHEMA = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);"


@pytest.fixture(scope="module")
def vllm_llm():  # type: ignore[no-untyped-def]
    from t2s.llm.vllm import VLLM

    llm = VLLM(model="embedded", dtype="bfloat16", gpu_memory_utilization=0.4, max_model_len=2048,
               cache_dir=str(project_cache()))
    yield llm
    llm.close()


def test_vllm_generates_batches_with_n_samples_and_reasons(vllm_llm) -> None:  # type: ignore[no-untyped-def]
    ask = lambda q, **p: LLMRequest.chat([{"role": "user", "content": f"{SCHEMA}\nQuestion: {q}"}],  # noqa: E731
                                         GenParams(**p))
    greedy, sampled, short = vllm_llm.generate([
        ask("How many singers are there?", max_new_tokens=48),
        ask("How many singers are there?", max_new_tokens=48, temperature=0.8, n=4, seed=3),
        ask("List all singers.", max_new_tokens=2),
    ])
    assert "count(" in greedy.text.lower() and greedy.finish_reasons == ["stop"]
    assert len(sampled.texts) == len(sampled.finish_reasons) == 4
    assert vllm_llm.generate([ask("How many singers are there?", max_new_tokens=48, temperature=0.8, n=4,
                                  seed=3)])[0].texts == sampled.texts
    assert short.finish_reasons == ["length"] and short.completion_tokens == 2


def test_vllm_scores_like_the_hf_backend(vllm_llm) -> None:  # type: ignore[no-untyped-def]
    from t2s.llm.hf import HFLLM

    request = ScoreRequest.chat([{"role": "user", "content": "Is 2 + 2 = 4? Answer A (yes) or B (no)."}], ["A", "B"])
    got = vllm_llm.score([request])[0]
    want = HFLLM(model="embedded", cache_dir=str(project_cache())).score([request])[0]
    assert got.prompt_tokens == want.prompt_tokens
    assert got.logprobs == pytest.approx(want.logprobs, abs=0.15)  # bf16 kernels differ
