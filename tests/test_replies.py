"""Prompt and parser together (issue 22 item 4): every template names the format of its replies, the scripted LLM
answers structured rules through it, and a test written that way survives a reworded template.

The structured rules (`template`, `when`, `answer`) are the pairing of DSPy's `DummyLM` with its `ChatAdapter`: the
test states the answer's fields, the reply format writes them the way the template asks, the stage's own parser reads
them back. The request remembers its template and fields outside its text, so cache keys do not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_correction import QUESTIONS, run_stage, world  # noqa: F401  (world: the fixture the CHASE runs use)

from t2s.generation import SQL_REPLY, parse_sql, sql_request
from t2s.llm.base import GenParams, LLMRequest, ScoreRequest
from t2s.llm.cache import request_key
from t2s.llm.scripted import ScriptedLLM
from t2s.prompts import load_prompt, prompt_files
from t2s.types import Example, Task

#: the templates whose stages are in this package's scope; each names its reply format
PAIRED = ("zero_shot_v1", "zero_shot_v2", "few_shot_v1", "chase_fix_v1", "chase_fix_v2", "tournament_v1",
          "column_summary_v1", "value_keywords_v1")
ZERO_SHOT_FIELDS = {"dialect": "SQLite", "schema": "CREATE TABLE singer (name TEXT);",
                    "question": "How many singers are there?", "evidence_block": "", "values_block": "",
                    "examples_block": "", "findings_block": ""}


def test_the_templates_in_scope_name_a_reply_format() -> None:
    assert [t for t in PAIRED if load_prompt(t).reply_format() is None] == []


@pytest.mark.parametrize("name", sorted(n for n, p in prompt_files().items() if "reply:" in p.read_text()))
def test_every_reply_format_reads_back_what_it_writes(name: str) -> None:
    fmt = load_prompt(name).reply_format()
    assert fmt is not None
    assert fmt.parse(fmt.render(fmt.example)) == {**fmt.defaults, **fmt.example}


def test_a_reply_format_refuses_an_answer_that_does_not_fit() -> None:
    with pytest.raises(ValueError, match=r"unknown \['query'\], missing \['sql'\]"):
        SQL_REPLY.render({"query": "SELECT 1"})
    assert SQL_REPLY.render({"sql": "SELECT 1"}) == "```sql\nSELECT 1\n```" and parse_sql("```sql\nSELECT 1\n```") == "SELECT 1"


def test_a_rendered_request_keeps_its_cache_key_and_identity() -> None:
    messages = load_prompt("zero_shot_v1").render(**ZERO_SHOT_FIELDS)
    tagged = LLMRequest.chat(messages, GenParams(max_new_tokens=64))
    plain = LLMRequest.chat([dict(m) for m in messages], GenParams(max_new_tokens=64))
    assert tagged.source is not None and tagged.source.template == "zero_shot_v1" and plain.source is None
    assert tagged.source.field_map()["question"] == "How many singers are there?"
    # the key the code before the pairing computed for this request (its prompt text is unchanged)
    key = "473a05771cf308959ad7adc6129f1c36140ca1a33b447a14970a7cd44b8914eb"
    assert request_key("scripted", "m", tagged) == request_key("scripted", "m", plain) == key
    assert tagged == plain and hash(tagged) == hash(plain)
    assert ScoreRequest.chat(messages, ["A"]).source == tagged.source


def _zero_shot(llm: ScriptedLLM, question: str, template: str = "zero_shot_v1") -> str:
    task = Task(example=Example(qid="q", question=question, db_id="d", db_path="/x"))
    from t2s.db.types import DatabaseSchema, SchemaView

    view = SchemaView("full", DatabaseSchema("d", []), "CREATE TABLE singer (name TEXT);")
    request = sql_request(load_prompt(template), task, view, GenParams())
    return parse_sql(llm.generate([request])[0].text)


def test_structured_rules_match_by_template_and_fields_and_answer_in_the_reply_format() -> None:
    llm = ScriptedLLM(rules=[
        {"template": "zero_shot_v1", "when": {"question": "singers"}, "answer": {"sql": "SELECT count(*) FROM singer"}},
        {"template": "zero_shot", "answers": [{"sql": "SELECT 1"}, {"sql": "SELECT 2"}]},
    ], default=None)
    assert _zero_shot(llm, "How many singers are there?") == "SELECT count(*) FROM singer"
    # by name: any version of the template; successive answers, the last repeats
    assert [_zero_shot(llm, "Other?", t) for t in ("zero_shot_v2", "zero_shot_v1", "zero_shot_v1")] == [
        "SELECT 1", "SELECT 2", "SELECT 2"]
    assert llm.sources[0] is not None and llm.sources[0].template == "zero_shot_v1"
    # a request not rendered from a template matches no structured rule
    with pytest.raises(LookupError, match="no rule matches"):
        llm.generate([LLMRequest(prompt="How many singers are there?")])


def test_structured_rules_score_the_rendered_answer() -> None:
    llm = ScriptedLLM(rules=[{"template": "tournament", "answer": {"choice": "B"}}])
    messages = load_prompt("tournament_v1").render(dialect="SQLite", schema="s", question="q", evidence_block="",
                                                  sql_a="SELECT 1", sql_b="SELECT 2", result_a="1", result_b="2")
    assert llm.logprobs(ScoreRequest.chat(messages, ["A", "B"]), ["A", "B"]) == [-30.0, 0.0]
    assert llm.generate([LLMRequest.chat(messages)])[0].text == "B"


@pytest.mark.parametrize(("rule", "error"), [
    ({"when": {"question": "x"}, "match": "x", "reply": "y"}, "need `template`"),
    ({"template": "zero_shot", "reply": "x", "answer": {"sql": "y"}}, "not both"),
    ({"template": "zero_shot", "when": {"question": "("}, "answer": {"sql": "y"}}, "bad regex.*field 'question'"),
    ({"template": "zero_shot", "answer": "SELECT 1"}, "maps the reply format's fields"),
    ({"template": "zero_shot", "expand": True, "reply": "x"}, "groups of `match`"),
])
def test_a_malformed_structured_rule_is_refused_when_built(rule: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ScriptedLLM(rules=[rule])


def test_a_structured_rule_naming_an_unknown_field_or_answer_field_fails_loudly(tmp_path: Path) -> None:
    typo = ScriptedLLM(rules=[{"template": "zero_shot", "when": {"questoin": "x"}, "answer": {"sql": "SELECT 1"}}])
    with pytest.raises(ValueError, match=r"rendered without field\(s\) \['questoin'\]"):
        _zero_shot(typo, "x")
    wrong = ScriptedLLM(rules=[{"template": "zero_shot", "answer": {"query": "SELECT 1"}}])
    with pytest.raises(ValueError, match=r"rule 1: answer .* does not fit"):
        _zero_shot(wrong, "x")
    data = yaml.safe_load(Path(prompt_files()["zero_shot_v1"]).read_text())
    del data["reply"]
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(data))
    bare = ScriptedLLM(rules=[{"template": "zero_shot", "answer": {"sql": "SELECT 1"}}])
    with pytest.raises(LookupError, match="names no reply format"):
        _zero_shot(bare, "x", str(tmp_path / "bare.yaml"))


# ---------------------------------------------------------------------- rewording a template breaks no such test


def reworded_chase(tmp_path: Path) -> Path:
    """chase_fix_v2 with every word of its system, user and block wording changed (same id, fields and reply)."""
    data = yaml.safe_load(Path(prompt_files()["chase_fix_v2"]).read_text())
    data["system"] = ("You repair SQL for a {dialect} database whose tables cannot change. Diagnose the failure in "
                      "one sentence, then give the fixed {dialect} query inside a ```sql block.")
    data["user"] = ("Task: {question}\n{evidence_block}{findings_block}\nFailing SQL: {sql}\n{problem_block}"
                    "{columns_block}\nTables:\n{schema}\nNow fix it.")
    data["blocks"]["error"] = {"header": "\nDatabase said: ", "item": "{error}", "footer": "\n"}
    data["blocks"]["empty"] = {"header": "\n", "item": "Zero rows came back.", "footer": "\n"}
    data["blocks"]["columns"] = {"header": "\nExisting columns:\n", "item": "* {table} has {columns}", "footer": "\n"}
    path = tmp_path / "reworded_chase_fix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_prompt(str(path)).id == "chase_fix_v2"
    return path


#: the structured rule of tests/test_correction.py's first CHASE test: by the template's fields, not its wording
FIX_NME = {"template": "chase_fix_v2", "when": {"problem_block": "no such column: nme",
                                                "columns_block": r"singer\b.*singer_id, name, country, age"},
           "answer": {"reflection": "The column is name, not nme.", "sql": QUESTIONS["france"][1]}}
#: the same rule as it was written before, against the prompt's wording
FIX_NME_BY_WORDING = {"match": "no such column: nme\n\nThese are the only columns of the tables involved:\n"
                               "- singer: singer_id, name, country, age\n",
                      "reply": "The column is `name`, not `nme`.\n```sql\n" + QUESTIONS["france"][1] + "\n```"}


@pytest.mark.parametrize("prompt", ["chase_fix_v2", "reworded"])
def test_a_structured_chase_test_passes_with_the_template_reworded(world: dict[str, Path], session_cache: Path,  # noqa: F811
                                                                   tmp_path: Path, prompt: str) -> None:
    option = str(reworded_chase(tmp_path)) if prompt == "reworded" else prompt
    preds = {"france": "SELECT nme FROM singer WHERE country = 'France'"}
    metrics, recs = run_stage(world, session_cache, preds, [FIX_NME], ["fixer=chase", f"fixer.prompt={option}"],
                              f"chase_{prompt}")
    assert metrics["attribution"]["fixer/chase"]["fixed"] == 1 and recs["france"]["correct"]
    assert recs["france"]["candidates"][0]["meta"]["prompt"] == "chase_fix_v2"
    if prompt == "reworded":  # the rule written against the wording no longer matches: the fix is not made
        metrics, _ = run_stage(world, session_cache, preds, [FIX_NME_BY_WORDING],
                               ["fixer=chase", f"fixer.prompt={option}"], "chase_by_wording")
        assert metrics["attribution"]["fixer/chase"]["fixed"] == 0


def test_a_structured_judge_rule_passes_with_the_judge_template_reworded(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(prompt_files()["tournament_v1"]).read_text())
    data["user"] = "Q: {question}\n{schema}\n{evidence_block}\nFirst: {sql_a} -> {result_a}\nSecond: {sql_b} -> {result_b}"
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(data))
    llm = ScriptedLLM(rules=[{"template": "tournament", "when": {"sql_b": "Oslo"}, "answer": {"choice": "B"}},
                             {"template": "tournament", "answer": {"choice": "A"}}])
    from t2s_plugins.selector.adaptive_tournament.prompts import parse_choice

    for path in (prompt_files()["tournament_v1"], tmp_path / "judge.yaml"):
        messages = load_prompt(str(path)).render(dialect="SQLite", schema="s", question="q", evidence_block="",
                                                 sql_a="SELECT 1", sql_b="SELECT 'Oslo'", result_a="1", result_b="2")
        assert parse_choice(llm.generate([LLMRequest.chat(messages)])[0].text) == "B"


def test_a_structured_chase_answer_fits_the_constrained_reply_format(world: dict[str, Path],  # noqa: F811
                                                                     session_cache: Path) -> None:
    """Under decoding=sql the scripted LLM holds each reply to the request's grammar: the reply format's canonical
    repair (reflection, then one ```sql fence) is one the constrained model could write."""
    preds = {"france": "SELECT nme FROM singer WHERE country = 'France'"}
    metrics, recs = run_stage(world, session_cache, preds, [FIX_NME], ["fixer=chase", "decoding=sql"], "chase_sql")
    assert metrics["attribution"]["fixer/chase"]["fixed"] == 1
    assert recs["france"]["candidates"][0]["meta"]["decoding"] == "sql"
