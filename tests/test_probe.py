"""The PV-SQL prober (`prober=pv`) on the scripted LLM and real SQLite databases (the demo's `library`).

One batch of seven questions, each scripted for one path of the probe loop: a probe that runs (LIMIT forced) and
stops, a malformed reply then a good probe, a failing probe and a write attempt, a model that probes every round
to the limit, one that is done at once, one that repeats its probe, and one that never answers in the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config

from t2s.data.base import load_dataset
from t2s.db.types import ExecResult
from t2s.run.pipeline import build_stage
from t2s.run.runner import make_env
from t2s.testing import stage_contract

# the first seven demo questions (all on `library`), each with its scripted replies, round after round: answers in
# `pv_probe_v1`'s reply format (`PROBE_REPLY`: sql, asked, done), or literal replies where the model leaves the format
SCRIPT: dict[str, list[Any]] = {
    "How many book titles": [{"asked": "see some titles", "sql": "SELECT title FROM books"}, {"done": True}],
    "authors from Japan": ["I would like to look at the data first.",
                           "PURPOSE: how countries are written\n```sql\nSELECT DISTINCT country FROM authors "
                           "WHERE country LIKE 'J%' LIMIT 3\n```",
                           "DONE"],
    "published after the year 2000": [{"sql": "SELECT no_such_column FROM books LIMIT 2"},
                                      {"sql": "DELETE FROM books"},
                                      {"sql": "SELECT published_year FROM books LIMIT 1"}],
    "no email address": [{"asked": f"round {i}", "sql": f"SELECT name, email FROM members LIMIT {i}"}
                         for i in range(1, 9)],
    "not been returned yet": [{"done": True}],
    "each genre": [{"sql": "SELECT genre FROM books LIMIT 2"}],
    "the most pages": ["Let me think.", "Still thinking."],
}


def probe_rule(question: str, script: list[Any]) -> dict[str, Any]:
    """The rule of one question's probe rounds: by template and question, not by the prompt's wording."""
    said = "answers" if all(isinstance(x, dict) for x in script) else "replies"
    return {"template": "pv_probe", "when": {"question": question}, said: script}


@pytest.fixture(scope="module")
def probed(session_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("probe")
    rules = [probe_rule(q, script) for q, script in SCRIPT.items()]
    (tmp / "rules.yaml").write_text(yaml.safe_dump({"rules": rules, "default": None}))
    cfg = compose_config(["llm=scripted", f"llm.path={tmp / 'rules.yaml'}", "prober=pv", "dataset.limit=7",
                          "run.llm_cache=false"], cache_dir=session_cache)
    data = load_dataset(cfg)
    env = make_env(cfg, data.examples, tmp / "run")
    stage = build_stage("prober", cfg.prober, "pv")
    batches: list[int] = []
    generate = env.generate

    def counting(name: str, items: Any) -> Any:
        batches.append(len(items))
        return generate(name, items)

    env.generate = counting  # type: ignore[method-assign]
    result = stage_contract(stage, env, data.examples)
    env.generate = generate  # type: ignore[method-assign]
    llm = env.llm("generator").inner
    yield {t.example.question: t for t in result.tasks}, batches, llm
    env.close()


def _task(probed: Any, fragment: str) -> Any:
    return next(t for q, t in probed[0].items() if fragment in q)


def test_a_probe_runs_with_a_forced_limit_and_the_model_stops(probed: Any) -> None:
    t = _task(probed, "How many book titles")
    (f,) = t.findings
    assert f.sql == "SELECT title FROM books LIMIT 5" and f.status == "ok"
    assert f.asked == "see some titles" and f.origin == "prober/pv"
    assert len(f.rows) == 5 and f.columns == ["title"]
    assert f.note.startswith("5 row(s) (title): ('")
    assert t.trace[0].llm_calls == 2  # the probe, then DONE


def test_a_malformed_reply_is_a_finding_and_the_next_probe_finds_the_value(probed: Any) -> None:
    t = _task(probed, "authors from Japan")
    bad, good = t.findings
    assert bad.status == "malformed" and bad.sql == "" and "look at the data" in bad.note
    assert good.status == "ok" and ["Japan"] in good.rows and "'Japan'" in good.note
    assert t.trace[0].llm_calls == 3


def test_errors_and_write_attempts_are_findings_and_failures_stop_the_question(probed: Any) -> None:
    t = _task(probed, "published after the year 2000")
    err, rejected, ok = t.findings
    assert err.status == "error" and "no_such_column" in err.note
    assert rejected.status == "rejected" and rejected.sql == "DELETE FROM books"
    assert ok.status == "ok" and ok.rows
    # an execution error is not a failed reply and the write attempt is the first of max_failures=2, so probing
    # goes on; the fourth reply repeats the third probe, which ends it
    assert t.trace[0].llm_calls == 4


def test_a_model_that_keeps_probing_stops_at_the_round_limit(probed: Any) -> None:
    t = _task(probed, "no email address")
    assert len(t.findings) == 5 and t.trace[0].llm_calls == 5
    assert [f.sql for f in t.findings] == [f"SELECT name, email FROM members LIMIT {i}" for i in range(1, 6)]
    assert any(f.status == "ok" and any(r[1] is None for r in f.rows) for f in t.findings)
    # each round shows every earlier probe and what it returned
    last = [c for c in probed[2].calls if "no email address" in c][-1]
    assert "Turn 5 of 5" in last and "4. SELECT name, email FROM members LIMIT 4" in last


def test_done_at_once_and_a_repeated_probe_stop_early(probed: Any) -> None:
    done = _task(probed, "not been returned yet")
    assert done.findings == [] and done.trace[0].llm_calls == 1
    repeat = _task(probed, "each genre")
    assert len(repeat.findings) == 1 and repeat.trace[0].llm_calls == 2


def test_malformed_replies_in_a_row_stop_the_question(probed: Any) -> None:
    t = _task(probed, "the most pages")
    assert [f.status for f in t.findings] == ["malformed", "malformed"] and t.trace[0].llm_calls == 2


def test_each_round_is_one_batch_over_the_questions_still_probing(probed: Any) -> None:
    _, batches, _ = probed
    assert batches == [7, 6, 3, 2, 1]


def test_probe_checks_and_notes() -> None:
    from t2s_plugins.prober.pv import check_probe, describe, parse_reply

    assert check_probe("SELECT a FROM t", 3) == ("SELECT a FROM t LIMIT 3", "ok", "")
    assert check_probe("SELECT a FROM t LIMIT 50", 3)[0] == "SELECT a FROM t LIMIT 50"
    assert check_probe("SELECT a FROM t UNION SELECT b FROM u", 3)[0].endswith("LIMIT 3")
    assert check_probe("UPDATE t SET a = 1", 3)[1] == "rejected"
    assert check_probe("SELECT FROM WHERE (", 3)[1] == "malformed"
    assert parse_reply("DONE").done and not parse_reply("DONE").sql
    r = parse_reply("PURPOSE: look\n```sql\nSELECT 1\n```")
    assert (r.sql, r.asked, r.done) == ("SELECT 1", "look", False)
    status, note = describe(ExecResult(rows=[("x" * 100, b"\x00\x01")], columns=["a", "b"], truncated=True))
    assert status == "ok" and note.startswith("1+ row(s) (a, b): ('") and "<2 bytes>" in note and len(note) <= 300
    assert describe(ExecResult(rows=[], columns=["a"]))[0] == "empty"
    assert describe(ExecResult(timed_out=True))[0] == "timeout"
