"""The llama.cpp backend on the real embedded GGUF (a few short generations: seconds with llama.cpp), its thread
default under joblib, and the openai backend against llama-cpp-python's real OpenAI-compatible server, including
one pipeline run through `llm=openai`.

Not marked slow on purpose: `make test` (CI) must exercise the llama.cpp backend and the real server (issue 9).
They skip, with the reason, when llama-cpp-python or the model wheels are missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from t2s.llm.base import GenParams, LLMRequest, ScoreRequest
from t2s.llm.cpu import busy_elsewhere, default_threads, usable_cores
from t2s.llm.llamacpp import ALIGN, LlamaCppLLM, canonical_reuse
from t2s.llm.openai import OpenAILLM

SCHEMA = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);"
SYSTEM = "You are an expert SQLite database engineer. Reply with the SQL in a ```sql code block and nothing else."


def sql_request(question: str, **params: Any) -> LLMRequest:
    return LLMRequest.chat([{"role": "system", "content": SYSTEM},
                            {"role": "user", "content": f"{SCHEMA}\nQuestion: {question}"}], GenParams(**params))


def test_llamacpp_answers_with_counts_stops_and_finish_reasons(embedded_llamacpp: LlamaCppLLM) -> None:
    llm = embedded_llamacpp
    plain, fenced, short, stopped = llm.generate([
        sql_request("How many singers are there?", max_new_tokens=48),
        sql_request("How many singers are there?", max_new_tokens=48, stop_after_fence=True),
        sql_request("List the names of singers older than 30.", max_new_tokens=3),
        sql_request("List the names of singers older than 30.", max_new_tokens=48, stop=(";",)),
    ])
    assert "count(*)" in plain.text.lower() and "singer" in plain.text.lower()
    assert plain.text.startswith("```sql") and plain.text.rstrip().endswith("```")
    rendered = llm.render(sql_request("How many singers are there?"))
    assert plain.prompt_tokens == len(llm.tokens(sql_request("How many singers are there?"))) > 40
    assert rendered.endswith("<|im_start|>assistant\n")
    assert plain.finish_reasons == ["stop"] and fenced.finish_reasons == ["stop"]
    assert fenced.text == plain.text.rstrip() and fenced.completion_tokens == plain.completion_tokens - 1  # no eos
    assert short.finish_reasons == ["length"] and short.completion_tokens == 3
    assert stopped.finish_reasons == ["stop"] and ";" not in stopped.text and "30" in stopped.text
    assert all(r.seconds > 0 for r in (plain, fenced, short, stopped))


def test_llamacpp_detokenizes_long_whitespace_tokens(embedded_llamacpp: LlamaCppLLM) -> None:
    """llama-cpp-python's own detokenize drops pieces longer than 32 bytes (deep SQL indentation vanished)."""
    embedded_llamacpp.load()
    text = "WHERE a IN (\n" + " " * 40 + "SELECT 'x  y'"
    ids = embedded_llamacpp._llama.tokenize(text.encode(), add_bos=False, special=False)
    assert embedded_llamacpp._detokenize(ids) == text


def test_llamacpp_sampling_is_seeded_and_outputs_keep_request_order(embedded_llamacpp: LlamaCppLLM) -> None:
    llm = embedded_llamacpp
    color = LLMRequest.chat([{"role": "user", "content": "Name one colour."}],
                            GenParams(max_new_tokens=6, temperature=1.0, n=3, seed=4))
    first, greedy = llm.generate([color, LLMRequest.chat([{"role": "user", "content": "Say hi."}],
                                                         GenParams(max_new_tokens=4, n=2))])
    again = llm.generate([color])[0]
    assert first.texts == again.texts and len(first.texts) == len(first.finish_reasons) == 3
    other = llm.generate([LLMRequest.chat([{"role": "user", "content": "Name one colour."}],
                                          GenParams(max_new_tokens=6, temperature=1.0, n=3, seed=5))])[0]
    assert other.texts != first.texts
    assert greedy.texts[0] == greedy.texts[1] and greedy.completion_tokens % 2 == 0
    # generated in prompt order ("Name..." < "Say..."), returned in request order
    assert "hi" in greedy.text.lower() or "hello" in greedy.text.lower()


def test_llamacpp_reuses_the_prompt_prefix(embedded_llamacpp: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prompt that shares a long prefix with the previous one evaluates only the new tokens (counted, not timed:
    timings on a shared 2-core machine are too noisy to assert on)."""
    llm = embedded_llamacpp
    schema = "\n".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, value REAL, t{i - 1}_id INTEGER);"
                       for i in range(1, 13))
    ask = lambda q: LLMRequest.chat([{"role": "user", "content": f"{schema}\nQuestion: {q}"}],  # noqa: E731
                                    GenParams(max_new_tokens=1))
    llm.generate([sql_request("warm up", max_new_tokens=1)])
    evaluated: list[int] = []
    real_eval = llm._llama.eval
    monkeypatch.setattr(llm._llama, "eval", lambda tokens: (evaluated.append(len(tokens)), real_eval(tokens))[1])
    cold = llm.generate([ask("How many rows has t3?")])[0]
    cold_tokens, evaluated[:] = sum(evaluated), []
    warm = llm.generate([ask("How many rows has t4?")])[0]
    assert cold.prompt_tokens > 250 and warm.prompt_tokens == cold.prompt_tokens
    assert cold_tokens >= cold.prompt_tokens - ALIGN  # only the chat template's first tokens were shared
    # the question's tail and the assistant turn start, from the last aligned chunk boundary before them
    assert sum(evaluated) <= ALIGN + 12, evaluated
    assert warm.text == cold.text


def test_canonical_reuse_keeps_only_chunks_a_cold_evaluation_makes() -> None:
    body = list(range(200))
    assert canonical_reuse([], body, set(), align=64) == 0
    # full chunks are kept up to the common prefix; a partial chunk only when it ends where the body ends
    assert canonical_reuse(list(range(150)), body, {64, 128, 150}, align=64) == 128
    assert canonical_reuse(list(range(300)), body, {64, 128, 192, 200}, align=64) == 200
    assert canonical_reuse(list(range(300)), body[:150], {64, 128, 150}, align=64) == 150
    assert canonical_reuse(list(range(300)), body[:160], {64, 128, 150}, align=64) == 128  # 150 ended another body
    assert canonical_reuse(list(range(100)) + [-1] * 50, body, {64, 128}, align=64) == 64  # diverges at 100
    assert canonical_reuse(list(range(300)), body, set(), align=64) == 0  # nothing evaluated canonically


def test_llamacpp_seeded_samples_do_not_depend_on_the_cache(embedded_llamacpp: LlamaCppLLM) -> None:
    """The same request and seed give the same samples after another prompt with a shared prefix, after itself
    (its whole prompt cached) and after an unrelated one: the prompt is evaluated the same way every time."""
    llm = embedded_llamacpp
    schema = "\n".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, value REAL);" for i in range(1, 13))
    ask = lambda q, seed: LLMRequest.chat(  # noqa: E731
        [{"role": "user", "content": f"{schema}\nQuestion: {q}"}],
        GenParams(max_new_tokens=8, temperature=1.0, n=2, seed=seed))
    llm.generate([LLMRequest.chat([{"role": "user", "content": "Say hi."}], GenParams(max_new_tokens=2))])
    first = llm.generate([ask("How many rows has t3?", 7)])[0]
    llm.generate([ask("How many rows has t4?", 1)])  # shares the schema prefix
    again = llm.generate([ask("How many rows has t3?", 7)])[0]
    cached = llm.generate([ask("How many rows has t3?", 7)])[0]  # its own prompt fully cached
    assert first.texts == again.texts == cached.texts and len(first.texts) == 2


def test_llamacpp_scores_continuations(embedded_llamacpp: LlamaCppLLM) -> None:
    llm = embedded_llamacpp
    question = [{"role": "user", "content": "Is 2 + 2 equal to 4? Answer with A (yes) or B (no) only."}]
    requests = [ScoreRequest.chat(question, ["A", "B", "A (yes)", ""]), ScoreRequest.chat(question, ["B", "A"])]
    ab, ba = llm.score(requests)
    assert ab.logprobs[0] > ab.logprobs[1] and ab.logprobs[2] < ab.logprobs[0] < 0 and ab.logprobs[3] == 0.0
    # every readout is evaluated the same way (the prompt's body canonically, its last token alone), so the same
    # continuation after the same prompt scores exactly the same, in any order and whatever the cache held: what
    # llama.cpp guarantees on every CPU (the same computation), not one CPU's rounding
    assert ba.logprobs == [ab.logprobs[1], ab.logprobs[0]]
    llm.generate([sql_request("How many singers are there?", max_new_tokens=4)])  # the cache now holds another prompt
    assert [r.logprobs for r in llm.score(requests[::-1])] == [ba.logprobs, ab.logprobs]
    assert ab.prompt_tokens == len(llm.tokens(ScoreRequest.chat(question, ["A"])))
    # the greedy answer's text scores higher than a made-up one
    answer = llm.generate([LLMRequest.chat(question, GenParams(max_new_tokens=4))])[0].text
    best, worse = llm.score([ScoreRequest.chat(question, [answer, "Banana"])])[0].logprobs
    assert best > worse


def test_llamacpp_renders_exactly_the_hf_chat_text(embedded_llamacpp: LlamaCppLLM, embedded_gguf_file: Path) -> None:
    """Same prompt text and tokens as transformers' tokenizer of the same GGUF (what the hf backend converts)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(embedded_gguf_file.parent), gguf_file=embedded_gguf_file.name)
    conversations = [
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{SCHEMA}\nQuestion: How many?"}],
        [{"role": "user", "content": "Only a user turn, with unicode: café, 東京, and ```fences```"}],
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
         {"role": "user", "content": "u2"}],
    ]
    for messages in conversations:
        request = LLMRequest.chat(messages)
        hf_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert embedded_llamacpp.render(request) == hf_text
        assert embedded_llamacpp.tokens(request) == tok(hf_text, add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def parallel_llamacpp(embedded_gguf_file: Path) -> Any:
    """A llama.cpp backend decoding 3 sequences together (continuous batching)."""
    from conftest_llm import project_cache

    llm = LlamaCppLLM(model="embedded", cache_dir=str(project_cache()), n_ctx=2048, parallel=3)
    llm.load()
    yield llm
    llm.close()


def test_parallel_decoding_keeps_stops_counts_and_request_order(parallel_llamacpp: LlamaCppLLM) -> None:
    """More requests than sequences, with different lengths: every completion ends exactly as one-at-a-time
    decoding ends it, and each response answers its own request."""
    llm = parallel_llamacpp
    tables = "\n".join(f"CREATE TABLE shop{i} (id INTEGER PRIMARY KEY, name TEXT, city TEXT);" for i in range(1, 6))
    ask = lambda i, **p: LLMRequest.chat(  # noqa: E731
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{tables}\nQuestion: How many rows "
                                                 f"does table shop{i} have?"}], GenParams(**{"max_new_tokens": 48, **p}))
    plain, fenced, short, stopped = llm.generate([
        sql_request("How many singers are there?", max_new_tokens=48),
        sql_request("How many singers are there?", max_new_tokens=48, stop_after_fence=True),
        sql_request("List the names of singers older than 30.", max_new_tokens=3),
        sql_request("List the names of singers older than 30.", max_new_tokens=48, stop=(";",)),
    ])
    assert "count(*)" in plain.text.lower() and plain.text.rstrip().endswith("```")
    assert plain.finish_reasons == ["stop"] and fenced.finish_reasons == ["stop"]
    assert fenced.text == plain.text.rstrip() and fenced.completion_tokens == plain.completion_tokens - 1  # no eos
    assert short.finish_reasons == ["length"] and short.completion_tokens == 3
    assert stopped.finish_reasons == ["stop"] and ";" not in stopped.text and "30" in stopped.text
    answers = llm.generate([ask(i) for i in (5, 1, 4, 2, 3)])
    for i, answer in zip((5, 1, 4, 2, 3), answers):
        assert f"shop{i}" in answer.text and answer.seconds > 0, (i, answer.text)


def test_parallel_sampling_is_seeded_and_shares_the_prompt(parallel_llamacpp: LlamaCppLLM,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """n samples of one prompt evaluate the prompt once (the other sequences copy its KV cache); the same seed
    gives the same samples, also when the prompt is still in the cache from the call before (a call with samples starts from
    an empty cache, so a call's samples depend only on its requests); another seed others; greedy n=2 decodes once
    and repeats it."""
    llm = parallel_llamacpp
    schema = "\n".join(f"CREATE TABLE t{i} (id INTEGER PRIMARY KEY, name TEXT, value REAL);" for i in range(1, 13))
    sample = lambda seed: LLMRequest.chat(  # noqa: E731
        [{"role": "user", "content": f"{schema}\nWrite one SQL query over these tables."}],
        GenParams(max_new_tokens=8, temperature=1.0, n=3, seed=seed))
    decoder = llm._decoder
    assert decoder is not None
    batches: list[int] = []
    real = decoder._decode
    monkeypatch.setattr(decoder, "_decode", lambda entries: (batches.append(len(entries)), real(entries))[1])
    first = llm.generate([sample(4)])[0]
    prompt_tokens = first.prompt_tokens
    assert prompt_tokens > 150 and len(first.texts) == 3 and len(set(first.texts)) > 1
    assert sum(batches) <= prompt_tokens + 3 * 8, batches  # the prompt once, then one token per sequence and step
    assert max(batches[1:]) <= 3
    assert llm.generate([sample(4)])[0].texts == first.texts
    assert llm.generate([sample(5)])[0].texts != first.texts
    greedy = llm.generate([sql_request("How many singers are there?", max_new_tokens=24, n=2)])[0]
    assert greedy.texts[0] == greedy.texts[1] and greedy.completion_tokens % 2 == 0


def test_llamacpp_config_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gguf"):
        LlamaCppLLM(model="Qwen/Qwen2.5", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="n_threads"):
        LlamaCppLLM(model="embedded", n_threads=0, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="parallel"):
        LlamaCppLLM(model="embedded", parallel=0, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="llm=embedded_hf llm.adapter"):
        LlamaCppLLM(model="embedded", adapter=str(tmp_path), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LlamaCppLLM(model=str(tmp_path / "none.gguf"), cache_dir=str(tmp_path)).gguf_path()
    assert LlamaCppLLM(model="embedded", cache_dir=str(tmp_path)).model_id == "qwen2.5-coder-0.5b@1d9614638d18"


def test_busy_elsewhere_sees_runnable_threads_now_not_a_minute_ago(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import io

    real_open = builtins.open
    readings = iter(["2.00 2.00 1.90 3/120 77\n", "2.00 2.00 1.90 1/120 77\n", "2.00 2.00 1.90 1/120 77\n"])

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        return io.StringIO(next(readings)) if path == "/proc/loadavg" else real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    # the load average says 2 (a job that just ended), the runnable count says only this reader: nothing else runs
    assert busy_elsewhere(samples=3, interval=0) == 0
    readings = iter(["0.10 0.10 0.10 3/120 77\n"] * 3)
    assert busy_elsewhere(samples=3, interval=0) == 2


def _threads_in_worker() -> int:
    return default_threads()


def test_default_threads_follow_the_environment_and_joblib(monkeypatch: pytest.MonkeyPatch) -> None:
    from joblib import Parallel, delayed

    monkeypatch.delenv("T2S_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("t2s.llm.cpu.busy_elsewhere", lambda: 0)  # only this process is busy
    assert default_threads() == usable_cores()
    monkeypatch.setattr("t2s.llm.cpu.busy_elsewhere", lambda: usable_cores() + 7)  # a crowded machine
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("T2S_NUM_THREADS", "5")
    assert default_threads() == 5
    monkeypatch.delenv("T2S_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    # the Hydra joblib launcher runs jobs in loky workers; joblib gives each cores // n_jobs threads
    found = Parallel(n_jobs=2, backend="loky")(delayed(_threads_in_worker)() for _ in range(2))
    assert found == [max(1, usable_cores() // 2)] * 2


# ---------------------------------------------------------------------------------- openai backend, real server
def test_openai_backend_against_the_llama_cpp_server(llama_server: Any, embedded_llamacpp: LlamaCppLLM,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T2S_LOCAL_KEY", raising=False)
    llm = OpenAILLM(model=llama_server.model, base_url=llama_server.url, api_key_env="T2S_LOCAL_KEY",
                    max_concurrency=2, max_retries=0)
    chat, raw = llm.generate([sql_request("How many singers are there?", max_new_tokens=40),
                              LLMRequest(prompt="SELECT count(*) FROM", params=GenParams(max_new_tokens=4))])
    assert "count(*)" in chat.text.lower() and chat.finish_reasons == ["stop"]
    local = embedded_llamacpp.generate([sql_request("How many singers are there?", max_new_tokens=40)])[0]
    assert chat.text == local.text and chat.prompt_tokens == local.prompt_tokens  # same GGUF, same template
    assert raw.finish_reasons == ["length"] and raw.completion_tokens == 4 and raw.prompt_tokens > 0
    llm.close()


def test_pipeline_runs_through_llm_openai(llama_server: Any, make_cfg: Any, tmp_path: Path) -> None:
    from t2s.run.runner import run

    cfg = make_cfg(["llm=openai", f"llm.base_url={llama_server.url}", f"llm.model={llama_server.model}",
                    "llm.max_retries=0", "llm.timeout=600", "dataset.limit=3", "run.llm_cache=false"])
    metrics = run(cfg, run_dir=tmp_path / "run")
    preds = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 3 and metrics["n"] == 3
    assert all(p["final_sql"].upper().startswith("SELECT") for p in preds), [p["final_sql"] for p in preds]
    assert metrics["correct"] >= 2  # the three first demo questions are easy single-table ones


@pytest.mark.slow
def test_hf_and_llamacpp_agree_on_the_embedded_model(embedded_llamacpp: LlamaCppLLM) -> None:
    """Same prompt tokens, same greedy SQL, same finish reasons; the fence stop works on hf too; scores agree."""
    from conftest_llm import project_cache

    from t2s.llm.hf import HFLLM

    hf = HFLLM(model="embedded", cache_dir=str(project_cache()), batch_size=2)
    requests = [sql_request(q, max_new_tokens=48, stop_after_fence=fence)
                for q in ("How many singers are there?", "List the names of singers older than 30.")
                for fence in (False, True)]
    assert [hf.render(r) for r in requests] == [embedded_llamacpp.render(r) for r in requests]
    ours, theirs = hf.generate(requests), embedded_llamacpp.generate(requests)
    assert [r.prompt_tokens for r in ours] == [r.prompt_tokens for r in theirs]
    assert [r.text for r in ours] == [r.text for r in theirs]
    assert [r.finish_reasons for r in ours] == [r.finish_reasons for r in theirs] == [["stop"]] * 4
    assert [r.completion_tokens for r in ours] == [r.completion_tokens for r in theirs]
    question = [{"role": "user", "content": "Is 2 + 2 equal to 4? Answer with A (yes) or B (no) only."}]
    a = hf.score([ScoreRequest.chat(question, ["A", "B"])])[0].logprobs
    b = embedded_llamacpp.score([ScoreRequest.chat(question, ["A", "B"])])[0].logprobs
    assert a == pytest.approx(b, abs=0.3)  # bf16 vs the GGUF's quantized kernels
