"""When completions end (fence, loops, stop strings) on every backend's shared helpers and on the hf backend with
the tiny model; finish reasons through the cache; scoring on the hf backend and through the cache."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from t2s.llm.base import LLM, GenParams, LLMRequest, LLMResponse, ScoreRequest, ScoreResponse
from t2s.llm.cache import CachedLLM, ResponseCache, score_key
from t2s.llm.hf import HFLLM
from t2s.llm.stops import CompletionMonitor, fence_end, find_loop, finish_text, text_finish_reason

QUESTIONS = ["How many singers are there?", "SELECT name FROM", "x",
             "List the stadiums with capacity over 5000 ordered by name"]


def chat(q: str, **params: Any) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": q}], GenParams(**params))


# --------------------------------------------------------------------------------------------- shared helpers
def test_find_loop_sees_periodic_tails_only() -> None:
    loop = "WHERE author_id IN (SELECT author_id FROM authors "
    text = "SELECT name FROM papers " + loop * 8
    assert find_loop(text, min_span=192, max_period=256) == len(loop)
    assert find_loop(text[:-len(loop) * 5], min_span=192, max_period=256) is None  # three periods: too short yet
    tokens = [5, 6, 7] + [1, 2, 3, 4] * 12
    assert find_loop(tokens) == 4
    assert find_loop(tokens[:-1] + [9]) is None  # the tail broke the pattern
    assert find_loop(list(range(200))) is None
    assert find_loop([0] * 47) is None and find_loop([0] * 48) == 1
    sql = "SELECT T1.name, T2.title, T3.year FROM a AS T1 JOIN b AS T2 ON T1.id = T2.a_id JOIN c AS T3 ON T3.id = T2.c"
    assert find_loop(sql) is None


def test_fence_end_and_finish_text() -> None:
    assert fence_end("```sql\nSELECT 1\n```\nmore") == len("```sql\nSELECT 1\n```")
    assert fence_end("Here:\n```sql\nSELECT 1\n``` and") == len("Here:\n```sql\nSELECT 1\n```")
    assert fence_end("```sql\nSELECT 1") is None and fence_end("```") is None and fence_end("no fence") is None
    fenced = GenParams(stop_after_fence=True)
    assert finish_text("```sql\nSELECT 1\n```\nThis query counts", fenced) == ("```sql\nSELECT 1\n```", "stop")
    assert finish_text("```sql\nSELECT 1\n```\nThis", GenParams()) == ("```sql\nSELECT 1\n```\nThis", None)
    assert finish_text("SELECT 1; -- done", GenParams(stop=(";",))) == ("SELECT 1", "stop")
    looping = "```sql\nSELECT a FROM t WHERE a IN (SELECT a FROM t WHERE a IN (" + "SELECT a FROM t WHERE a IN (" * 20
    assert text_finish_reason(looping, "length", GenParams()) == (looping, "loop")
    assert text_finish_reason("SELECT 1", "length", GenParams()) == ("SELECT 1", "length")
    assert text_finish_reason("SELECT 1", "stop", GenParams()) == ("SELECT 1", "stop")


# ------------------------------------------------------------------------------------------------ hf backend
def test_hf_finish_reasons_and_rows_leaving_the_batch(make_tiny_llm: Callable[..., HFLLM]) -> None:
    """Rows stop at different chunks (stop strings), leave the batch, and still match one-by-one generation."""
    llm = make_tiny_llm(batch_size=4)
    free = llm.generate([chat(q, max_new_tokens=80) for q in QUESTIONS])
    assert all(len(r.finish_reasons) == 1 for r in free)
    assert [r.finish_reasons[0] for r in free] == ["length" if r.completion_tokens == 80 else "stop" for r in free]
    # a stop string that some completions reach late (after the first 32-token chunk) and others never
    stop = next(free[1].text[i:i + 3] for i in range(len(free[1].text) // 2, len(free[1].text)) if
                free[1].text[i:i + 3].strip() == free[1].text[i:i + 3])
    requests = [chat(q, max_new_tokens=80, stop=(stop,)) for q in QUESTIONS]
    batched = llm.generate(requests)
    single = [llm.generate([r])[0] for r in requests]
    assert [(r.texts, r.completion_tokens, r.finish_reasons) for r in batched] == \
           [(r.texts, r.completion_tokens, r.finish_reasons) for r in single]
    assert batched[1].finish_reasons == ["stop"] and batched[1].completion_tokens > 32
    assert stop not in batched[1].text and free[1].text.startswith(batched[1].text)
    sampled = llm.generate([chat(QUESTIONS[0], max_new_tokens=40, temperature=1.0, n=3, seed=1)])[0]
    assert len(sampled.finish_reasons) == 3 and set(sampled.finish_reasons) <= {"stop", "length", "loop"}


def test_hf_loop_detector_ends_a_looping_row(tiny_model_path: Path, tmp_path: Path,
                                             make_tiny_llm: Callable[..., HFLLM]) -> None:
    """A model that repeats one token forever is stopped after 48 tokens with reason "loop"; others are not held."""
    from safetensors.torch import load_file, save_file

    looping = tmp_path / "tiny-loop"
    shutil.copytree(tiny_model_path, looping)
    weights = load_file(looping / "model.safetensors")
    weights["model.norm.weight"] = torch.zeros_like(weights["model.norm.weight"])  # all logits equal: argmax 0
    save_file(weights, looping / "model.safetensors", metadata={"format": "pt"})
    llm = make_tiny_llm(model=str(looping))
    out = llm.generate([chat(QUESTIONS[0], max_new_tokens=300), chat(QUESTIONS[1], max_new_tokens=300, n=2)])
    assert [r.finish_reasons for r in out] == [["loop"], ["loop", "loop"]]
    assert out[0].completion_tokens == 48 and out[1].completion_tokens == 96


def test_completion_monitor_stops_at_the_closing_fence_and_loops() -> None:
    pieces = ["```", "sql", "\n", "SELECT", " 1", "\n", "```", "\n", "This"]
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    monitor = CompletionMonitor(GenParams(stop_after_fence=True), decode)
    reasons = [monitor.check(list(range(k))) for k in range(1, len(pieces) + 1)]
    assert reasons.index("stop") == 6  # the token that closes the block
    assert all(r is None for r in reasons[:6])
    assert CompletionMonitor(GenParams(), decode).check(list(range(7))) is None
    assert CompletionMonitor(GenParams(), decode).check([3, 4] * 24) == "loop"


def test_loops_that_indent_deeper_each_time_are_loops() -> None:
    """Demo question 17 on llama.cpp: `WHERE a IN (\n<indent> SELECT a FROM t WHERE a IN (` with a longer
    indentation token each level ran to the token limit while the detector compared whitespace too."""
    words = {0: "\n", 1: " SELECT", 2: " a", 3: " FROM", 4: " t", 5: " WHERE", 6: " IN", 7: " ("}
    indent = {100 + level: " " * (4 * level) for level in range(40)}
    decode = lambda ids: "".join(words.get(i) or indent[i] for i in ids)  # noqa: E731
    tokens: list[int] = []
    for level in range(12):
        tokens += [0, 100 + level, 1, 2, 0, 100 + level, 3, 4, 0, 100 + level, 5, 2, 6, 7]
    monitor = CompletionMonitor(GenParams(), decode)
    first = next(k for k in range(1, len(tokens) + 1) if monitor.check(tokens[:k]) == "loop")
    assert first < 100  # the whitespace-free part repeats every 8 tokens; 48 of them decide
    assert find_loop(tokens) is None  # compared with whitespace, it never repeats
    text = decode(tokens)
    assert text_finish_reason(text, "length", GenParams())[1] == "loop"
    # a long answer whose only repetition is whitespace is not a loop
    assert CompletionMonitor(GenParams(), decode).check([0, 100, 1, 2] + [0, 101] * 40 + [3, 4]) is None


def test_hf_score_matches_a_plain_forward_pass(tiny_model_path: Path, make_tiny_llm: Callable[..., HFLLM]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm = make_tiny_llm(batch_size=3)
    requests = [ScoreRequest.chat([{"role": "user", "content": q}], ["SELECT", "SELECT name FROM singer", "x", ""])
                for q in QUESTIONS[:2]] + [ScoreRequest(prompt="SELECT name FROM", continuations=(" singer",))]
    scores = llm.score(requests)
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    for req, resp in zip(requests, scores):
        if req.prompt is None:
            text = tok.apply_chat_template(req.message_dicts(), tokenize=False, add_generation_prompt=True)
            prompt = tok(text, add_special_tokens=False)["input_ids"]
        else:
            prompt = tok(req.prompt)["input_ids"]
        assert resp.prompt_tokens == len(prompt) and resp.seconds > 0
        for cont, got in zip(req.continuations, resp.logprobs):
            ids = tok(cont, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([prompt + ids])).logits[0]
            lp = torch.log_softmax(logits, -1)
            want = sum(float(lp[len(prompt) + k - 1, t]) for k, t in enumerate(ids))
            assert got == pytest.approx(want, abs=1e-4)
    assert scores[0].logprobs[3] == 0.0 and scores[0].logprobs[1] < scores[0].logprobs[0] < 0
    assert llm.supports_scoring


# ----------------------------------------------------------------------------------------------------- cache
class CountingScorer(LLM):
    backend = "hf"
    supports_scoring = True

    def __init__(self, inner: HFLLM) -> None:
        self.inner, self.scored = inner, 0

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        return self.inner.generate(requests)

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        self.scored += len(requests)
        return self.inner.score(requests)


def test_cache_keeps_finish_reasons_and_scores(make_tiny_llm: Callable[..., HFLLM], tmp_path: Path) -> None:
    backend = CountingScorer(make_tiny_llm())
    llm = CachedLLM(backend, ResponseCache(tmp_path / "c.sqlite"))
    gen = [chat(QUESTIONS[0], max_new_tokens=5), chat(QUESTIONS[2], max_new_tokens=60)]
    first = llm.generate(gen)
    again = CachedLLM(backend, ResponseCache(tmp_path / "c.sqlite")).generate(gen)
    assert all(r.cached for r in again)
    assert [r.finish_reasons for r in again] == [r.finish_reasons for r in first] and first[0].finish_reasons == ["length"]
    req = ScoreRequest.chat([{"role": "user", "content": "A or B?"}], ["A", "B"])
    s1 = llm.score([req, req])
    assert backend.scored == 1 and [r.cached for r in s1] == [False, True] and s1[0].logprobs == s1[1].logprobs
    reopened = CachedLLM(backend, ResponseCache(tmp_path / "c.sqlite"))
    s2 = reopened.score([req, ScoreRequest.chat([{"role": "user", "content": "A or B?"}], ["B", "A"])])
    assert backend.scored == 2 and s2[0].cached and not s2[1].cached
    assert s2[0].logprobs == s1[0].logprobs and s2[1].logprobs == pytest.approx(s1[0].logprobs[::-1])
    assert s2[0].model == backend.model_id and reopened.supports_scoring
    assert reopened.stats.score_calls == 2 and reopened.stats.cached_score_calls == 1
    assert score_key("hf", "m", req) != score_key("hf", "m", ScoreRequest(prompt="A or B?", continuations=("A", "B")))


def test_cache_file_from_before_finish_reasons_still_opens(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, backend TEXT NOT NULL, model_id TEXT NOT NULL, "
                 "request TEXT NOT NULL, texts TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens "
                 "INTEGER NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL)")
    conn.execute("INSERT INTO responses VALUES ('k', 'hf', 'm', '{}', '[\"SELECT 1\"]', 3, 4, 0.5, 0)")
    conn.commit()
    conn.close()
    cache = ResponseCache(path)
    assert cache.get("k").finish_reasons == []  # type: ignore[union-attr]
    cache.put_many([("k2", "hf", "m", {}, LLMResponse(["x"], 1, 1, 0.1, finish_reasons=["loop"]))])
    assert cache.get("k2").finish_reasons == ["loop"]  # type: ignore[union-attr]


def test_backends_without_scoring_say_what_to_use() -> None:
    class Plain(LLM):
        backend = "plain"

        @property
        def model_id(self) -> str:
            return "p"

        def generate(self, requests: list[LLMRequest]) -> list[LLMResponse]:
            return []

    assert not Plain().supports_scoring
    with pytest.raises(NotImplementedError, match="llm=hf, llamacpp"):
        Plain().score([ScoreRequest(prompt="q", continuations=("A",))])
