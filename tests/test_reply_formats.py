"""The constrained reply formats of the stages that parse structured replies or write SQL (issue 23, items 3 and 5):
SHARE's SAM, LOM and regeneration, PV's probe and repair, the dual linker's column lists and the MCTS SQL steps.

Each stage runs end to end (`t2s.run.runner.run`) on a small real SQLite database with a scripted LLM. The scripted
LLM refuses a reply that its request's constraint rejects (`ConstraintViolation`), so a run whose scripted replies are
in the stage's reply format proves that the format and the stage's parser agree, and a reply outside the format cannot
be given. Under `decoding=free` nothing changes: the requests are pinned by their response-cache keys, computed with
the code before these stages took `decoding` (so cached runs make no new LLM call). And with the tiny random-weight
model the constrained stages' outputs parse.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config

from t2s.llm.base import LLMRequest, LLMResponse
from t2s.llm.cache import request_key
from t2s.llm.scripted import ScriptedLLM
from t2s.llm.structured import ConstraintViolation
from t2s.run.runner import run

DB_SQL = """
CREATE TABLE singer (singer_id INTEGER PRIMARY KEY, name TEXT, country TEXT, age INTEGER);
CREATE TABLE concert (concert_id INTEGER PRIMARY KEY, title TEXT, year INTEGER,
                      singer_id INTEGER REFERENCES singer(singer_id));
INSERT INTO singer VALUES (1,'Ana','France',52),(2,'Bo','France',45),(3,'Cy','Germany',30),(4,'Di','Spain',25),
                          (5,'Ed','Germany',20);
INSERT INTO concert VALUES (1,'Spring',2014,1),(2,'Summer',2015,1),(3,'Fall',2015,3),(4,'Winter',2016,4);
"""

QUESTIONS = {
    "france": ("What are the names of singers from France?", "SELECT name FROM singer WHERE country = 'France'"),
    "oldest": ("What are the names of the 2 oldest singers?", "SELECT name FROM singer ORDER BY age DESC LIMIT 2"),
}


def fence(sql: str, prose: str = "") -> str:
    return f"{prose}\n```sql\n{sql}\n```" if prose else f"```sql\n{sql}\n```"


SAM_REPLY = "```\n1. singer.country\n2. singer.name\n```"
LOM_REPLY = "```\ndf1 = df.where(element = singer.country, filter = 'France')\nres = df1.select(singer.name)\n```"

#: per stage: the overrides that select it, the questions' first SQL, and the scripted rules (every reply in the
#: stage's constrained reply format)
STAGES: dict[str, dict[str, Any]] = {
    "share": {
        "overrides": ["corrector=share"],
        "preds": {"france": "SELECT name FROM singer WHERE country = 'Germany'"},
        "rules": [{"template": "share_sam", "answer": {"answers": ["singer.country", "singer.name"]}},  # SAM_REPLY
                  {"template": "share_lom", "answer": {"trajectory": LOM_REPLY[4:-4]}},  # LOM_REPLY
                  {"template": "share_regen", "answer": {"sql": "SELECT name FROM singer WHERE country = 'France'"}}],
    },
    "pv_probe": {
        "overrides": ["prober=pv"],
        "preds": {"france": QUESTIONS["france"][1]},
        "rules": [{"template": "pv_probe", "when": {"round": "^1$"},
                   "answer": {"asked": "how countries are written", "sql": "SELECT DISTINCT country FROM singer LIMIT 5"}},
                  {"template": "pv_probe", "when": {"round": "^2$"}, "answer": {"done": True}}],
    },
    "pv_repair": {
        "overrides": ["verifier=pv"],
        "preds": {"oldest": "SELECT name FROM singer ORDER BY age DESC"},
        "rules": [{"template": "pv_repair", "when": {"violations": "no LIMIT"}, "answer": {"sql": QUESTIONS["oldest"][1]}}],
    },
    "dual": {
        "overrides": ["schema_linker=dual"],
        "preds": {"france": QUESTIONS["france"][1]},
        "rules": [{"template": "dual_link_s2", "answer": {"columns": []}},  # NONE
                  {"template": "dual_link_s1", "answer": {"columns": ["singer.name", "singer.country"]}}],
    },
    "mcts": {
        "overrides": ["generator=mcts", "generator.simulations=2", "generator.branching=1"],
        "preds": None,
        # the replies the free requests were pinned with: a SQL or revise prompt after a reasoning step (its steps
        # block not empty) was answered with the step's text too, so those stay literal replies
        "rules": [{"template": "mcts_step", "answer": {"text": "singer.country = 'France'"}},
                  {"template": "mcts_sql", "when": {"steps_block": r"\S"}, "reply": "singer.country = 'France'"},
                  {"template": "mcts_revise", "when": {"steps_block": r"\S"}, "reply": "singer.country = 'France'"},
                  {"template": "mcts_revise", "answer": {"sql": QUESTIONS["france"][1]}},
                  {"template": "mcts_sql", "answer": {"sql": "SELECT name FROM singer WHERE country = 'France'"}}],
    },
}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    db_dir = tmp_path / "dbs" / "concerts"
    db_dir.mkdir(parents=True)
    con = sqlite3.connect(db_dir / "concerts.sqlite")
    con.executescript(DB_SQL)
    con.commit()
    con.close()
    return {"root": tmp_path, "db_dir": tmp_path / "dbs", "db": db_dir / "concerts.sqlite"}


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[LLMRequest]:
    """Every request the scripted LLM is sent, in order."""
    seen: list[LLMRequest] = []
    generate = ScriptedLLM.generate

    def recording(self: ScriptedLLM, requests: list[LLMRequest]) -> list[LLMResponse]:
        seen.extend(requests)
        return generate(self, requests)

    monkeypatch.setattr(ScriptedLLM, "generate", recording)
    return seen


def run_stage(world: dict[str, Path], session_cache: Path, stage: str, extra: list[str] | None = None,
              rules: list[dict[str, Any]] | None = None, name: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """One run of `stage` (a key of STAGES) over its questions with a scripted LLM; the metrics and the records."""
    spec = STAGES[stage]
    root = world["root"]
    name = name or stage
    qids = list(spec["preds"] or {"france": ""})
    (root / f"{name}.q.jsonl").write_text("".join(json.dumps({"id": k, "question": QUESTIONS[k][0],
                                                              "db_id": "concerts", "sql": QUESTIONS[k][1]}) + "\n"
                                                  for k in qids))
    (root / f"{name}.rules.yaml").write_text(yaml.safe_dump({"rules": rules or spec["rules"], "default": "no idea"}))
    overrides = ["dataset=jsonl", f"dataset.path={root / f'{name}.q.jsonl'}", f"dataset.db_dir={world['db_dir']}",
                 "llm=scripted", f"llm.path={root / f'{name}.rules.yaml'}", "run.llm_cache=false"]
    if spec["preds"]:
        (root / f"{name}.preds.jsonl").write_text("".join(json.dumps({"qid": k, "sql": s}) + "\n"
                                                          for k, s in spec["preds"].items()))
        overrides += ["generator=from_file", f"generator.path={root / f'{name}.preds.jsonl'}"]
    cfg = compose_config([*overrides, *spec["overrides"], *(extra or [])], cache_dir=session_cache)
    metrics = run(cfg, run_dir=root / name)
    records = {r["qid"]: r for r in map(json.loads, (root / name / "predictions.jsonl").read_text().splitlines())}
    return metrics, records


def keys_digest(requests: list[LLMRequest]) -> str:
    """One hash of the requests' response-cache keys, in the order they were sent."""
    keys = [request_key("scripted", "pinned", r) for r in requests]
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------- free decoding changes nothing
#: the digest of every stage's requests under free decoding, computed with the code before the stages took
#: `decoding` (the parent of commit 66d818c): equal digests mean the same messages and GenParams, so cached runs make 0 new calls
FREE_DIGESTS = {
    "share": "2f65ae7a3987dd4c",
    "pv_probe": "8d664d9124b5147a",
    "pv_repair": "87f535e4acdcc8a0",
    "dual": "d1ebbcaff544e321",
    "mcts": "8ebff3e765c3620a",
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_free_decoding_sends_the_requests_it_sent_before(stage: str, world: dict[str, Path], session_cache: Path,
                                                         recorded: list[LLMRequest]) -> None:
    run_stage(world, session_cache, stage, ["decoding=free"])
    assert recorded and all(r.params.constraint is None for r in recorded)
    assert keys_digest(recorded) == FREE_DIGESTS[stage]


# ------------------------------------------------------------------------------ constrained: in and out of format
def refused(request: LLMRequest, reply: str) -> bool:
    """Whether a (scripted) model held to `request`'s constraint cannot give `reply`."""
    try:
        ScriptedLLM(rules=[{"match": ".", "reply": reply}]).generate([request])
    except ConstraintViolation:
        return True
    return False


def by_template(requests: list[LLMRequest], template: str, **fields: str) -> list[LLMRequest]:
    """The requests rendered from `template` (its id or name) with `fields` equal to the given values."""
    return [r for r in requests if r.source is not None and template in (r.source.template, r.source.name)
            and all(r.source.field_map().get(k) == v for k, v in fields.items())]


def test_share_replies_in_their_formats_fix_the_candidate(world: dict[str, Path], session_cache: Path,
                                                          recorded: list[LLMRequest]) -> None:
    """SAM's numbered references, LOM's trajectory and the regenerated SELECT, each under its constraint, are what
    the parsers read: the chain runs to the end and fixes the filter."""
    metrics, recs = run_stage(world, session_cache, "share", ["decoding=sql"])
    assert metrics["attribution"]["corrector/share"]["fixed"] == 1
    cand = recs["france"]["candidates"][0]
    assert cand["origin"] == "corrector/share" and cand["meta"]["decoding"] == "sql"
    assert cand["meta"]["steps"][0]["sam_answers"] == ["singer.country", "singer.name"]
    sam, = by_template(recorded, "share_sam")
    lom, = by_template(recorded, "share_lom")
    regen, = by_template(recorded, "share_regen")
    assert all(r.params.constraint is not None for r in (sam, lom, regen))
    # SAM: SQL instead of answers (what the 0.5B model wrote in 95 of 95 replies), a column the table lacks, a
    # column where a table.column is masked by a table, one answer too many or too few
    for reply in ("SELECT count(*) FROM singer", "```\n1. singer.nation\n2. singer.name\n```",
                  "```\n1. singer.country\n2. concert.name\n```", "```\n1. singer\n2. singer.name\n```",
                  "```\n1. singer.country\n```", "```\n1. singer.country\n2. singer.name\n3. singer.age\n```"):
        assert refused(sam, reply), reply
    assert not refused(sam, "```\n1. SINGER.Country\n2. singer.name\n```")  # names in any case
    # LOM: prose, a name the schema lacks, SQL, a non-canonical statement
    for reply in ("The trajectory looks fine to me!", LOM_REPLY.replace("singer.country", "singer.nation"),
                  fence("SELECT name FROM singer"), LOM_REPLY.replace("element = ", "element=")):
        assert refused(lom, reply), reply
    assert not refused(lom, "```\ndf1 = df.where(element = singer.age, op = '>', filter = 30).orderby(by = "
                            "singer.age, asc = False).limit(2)\nres = df1.select(singer.name, count(*))\n```")
    # the regeneration: one SELECT of the database in the ```sql fence
    for reply in ("```sql\nCREATE TABLE singer (name TEXT)\n```", fence("SELECT nation FROM singer"),
                  "SELECT name FROM singer WHERE country = 'France'"):
        assert refused(regen, reply), reply


def test_share_llm_bam_writes_a_trajectory_of_the_database(world: dict[str, Path], session_cache: Path,
                                                           recorded: list[LLMRequest]) -> None:
    bam_reply = ("```\ndf1 = df.where(element = singer.country, filter = 'Germany')\n"
                 "res = df1.select(singer.name)\n```")
    rules = [{"template": "share_bam", "answer": {"trajectory": bam_reply[4:-4]}}, *STAGES["share"]["rules"]]
    metrics, _ = run_stage(world, session_cache, "share", ["corrector=share_llm", "decoding=sql"], rules=rules,
                           name="share_llm")
    assert metrics["attribution"]["corrector/share_llm"]["fixed"] == 1
    bam, = by_template(recorded, "share_bam")
    assert refused(bam, "Here it is:\n```python\n" + bam_reply[4:])  # prose and another fence language


def test_a_pv_probe_is_one_select_with_a_limit(world: dict[str, Path], session_cache: Path,
                                               recorded: list[LLMRequest]) -> None:
    """The probe reply's two forms (PURPOSE + one LIMIT-ed SELECT, or DONE) under the constraint are what
    `parse_reply` reads; the final answer written as the probe (the 0.5B model's habit) cannot be given."""
    run_stage(world, session_cache, "pv_probe", ["decoding=sql"])
    probes = by_template(recorded, "pv_probe", round="1")
    assert len(probes) == 1 and probes[0].params.constraint is not None
    assert len(by_template(recorded, "pv_probe", round="2")) == 1  # the first probe ran, and the model said DONE after it
    probe = probes[0]
    for reply in ("PURPOSE: the answer\n" + fence("SELECT name FROM singer WHERE country = 'France'"),  # no LIMIT
                  "PURPOSE: rows\n" + fence("SELECT country FROM singer LIMIT 50"),  # more rows than probe_rows
                  "PURPOSE: rows\n" + fence("SELECT nation FROM singer LIMIT 5"),
                  "I think we are DONE.", fence("SELECT country FROM singer LIMIT 5")):
        assert refused(probe, reply), reply
    assert not refused(probe, "PURPOSE: top ages\n" + fence("SELECT age FROM singer ORDER BY age DESC LIMIT 3"))


def test_a_pv_probe_finding_comes_from_the_constrained_reply(world: dict[str, Path], session_cache: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from t2s_plugins.prober.pv.prober import PVProber

    findings: list[Any] = []
    run_stage_ = PVProber.run

    def keep(self: PVProber, tasks: list[Any]) -> None:
        run_stage_(self, tasks)
        findings.extend(f for t in tasks for f in t.findings)

    monkeypatch.setattr(PVProber, "run", keep)
    run_stage(world, session_cache, "pv_probe", ["decoding=sql"], name="pv_probe_finding")
    finding, = findings
    assert finding.status == "ok" and finding.asked == "how countries are written"
    assert finding.sql == "SELECT DISTINCT country FROM singer LIMIT 5" and ["France"] in finding.rows


def test_a_pv_repair_is_one_select_of_the_database(world: dict[str, Path], session_cache: Path,
                                                   recorded: list[LLMRequest]) -> None:
    metrics, recs = run_stage(world, session_cache, "pv_repair", ["decoding=sql"])
    assert metrics["attribution"]["verifier/pv"]["fixed"] == 1
    assert recs["oldest"]["candidates"][0]["meta"]["decoding"] == "sql"
    repair, = recorded
    assert refused(repair, "```sql\nSELECT name FROM singers ORDER BY age DESC LIMIT 2\n```")
    assert refused(repair, "Add a LIMIT.")
    assert refused(repair, QUESTIONS["oldest"][1])  # not fenced
    assert not refused(repair, fence(QUESTIONS["oldest"][1] + ";"))


def test_the_dual_linkers_column_lists_are_lines_of_candidates(world: dict[str, Path], session_cache: Path,
                                                               recorded: list[LLMRequest],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Pass 1's and pass 2's replies under the constraint (candidate table.column lines; pass 2 also NONE) are what
    `parse_column_choice` reads; prose, SQL, bullets, names the database lacks and pass-1 columns in pass 2 cannot
    be given."""
    from t2s_plugins.schema_linker.dual import DualSchemaLinker

    outcomes: dict[str, Any] = {}
    run_linker = DualSchemaLinker.run

    def keep(self: DualSchemaLinker, tasks: list[Any]) -> None:
        run_linker(self, tasks)
        outcomes.update(self.outcomes)
        outcomes["views"] = {v.name: v.text for t in tasks for v in t.schemas}

    monkeypatch.setattr(DualSchemaLinker, "run", keep)
    run_stage(world, session_cache, "dual", ["decoding=sql"])
    assert outcomes["france"] == {"s1": "ok", "s2": "none"}
    assert "concert" not in outcomes["views"]["S1"] and "country" in outcomes["views"]["S1"]
    s1, = by_template(recorded, "dual_link_s1")
    s2, = by_template(recorded, "dual_link_s2")
    for reply in ("The name and the country.", "SELECT name FROM singer", "- singer.name", "singer.nation",
                  "concert.name", "singer.name\n", "NONE"):
        assert refused(s1, reply), reply
    assert not refused(s1, "SINGER.Name\nconcert.year\nsinger.country")
    assert not refused(s1, "SINGER.Name, concert.year, singer.country")  # the comma list the 0.5B writes
    for reply in ("singer.name", "singer.country\nsinger.age", "none"):  # pass 1's columns are no candidates
        assert refused(s2, reply), reply
    assert not refused(s2, "singer.age\nconcert.singer_id")


def test_a_column_list_writes_a_name_that_is_not_plain_as_the_parser_reads_it() -> None:
    from t2s.context.column_choice import parse_column_choice
    from t2s.context.fields import Field
    from t2s.decoding import choice_list_constraint, qualified_names
    from t2s.llm.structured import text_matcher

    fields = [Field(table="singer", column="Home Town", text=""), Field(table="singer", column="name", text="")]
    c = choice_list_constraint(qualified_names({"singer": ["Home Town", "name"]}, quote='"'), most=2)
    assert text_matcher().problem(c, 'singer."Home Town"') is None
    assert text_matcher().problem(c, "singer.Home Town") is not None
    assert parse_column_choice('singer."Home Town"\nsinger.name', fields).columns == (("singer", "Home Town"),
                                                                                      ("singer", "name"))


MCTS_RULES = [{"template": "mcts_revise", "answer": {"sql": QUESTIONS["france"][1]}},
              {"template": "mcts_sql", "answer": {"sql": "SELECT name FROM singer WHERE country = 'Mars';"}},
              {"template": "mcts_step", "answer": {"text": "Filter singer.country = 'France', return the names."}}]


def test_mcts_sql_steps_are_selects_and_reasoning_steps_stay_prose(world: dict[str, Path], session_cache: Path,
                                                                   recorded: list[LLMRequest]) -> None:
    _, recs = run_stage(world, session_cache, "mcts", ["decoding=sql", "generator.simulations=5"], rules=MCTS_RULES,
                        name="mcts_sql")
    cands = recs["france"]["candidates"]
    assert cands and all(c["meta"]["decoding"] == "sql" for c in cands)
    assert recs["france"]["correct"]  # the revision of an empty answer ranks first
    steps = by_template(recorded, "mcts_step")
    sqls = by_template(recorded, "mcts_sql")
    revises = by_template(recorded, "mcts_revise")
    assert steps and sqls and revises
    assert all(r.params.constraint is None for r in steps)  # free text by design, never parsed
    assert all(r.params.constraint is not None for r in sqls + revises)
    for request in (sqls[0], revises[0]):
        assert refused(request, "The query should filter on the country.")
        assert refused(request, fence("SELECT nation FROM singer"))
        assert not refused(request, fence("SELECT count(*) FROM singer"))


# --------------------------------------------------------------------------------------------- configuration
CONSTRAINED_STAGES = ["corrector=share", "prober=pv", "verifier=pv", "schema_linker=dual", "generator=mcts"]


def test_the_decoding_group_reaches_the_stages_that_parse_replies(session_cache: Path) -> None:
    from t2s.decoding import SqlGrammarArtifact
    from t2s.run.pipeline import build_stage

    cfg = compose_config(["decoding=sql", *CONSTRAINED_STAGES, "corrector.decoding=free"], cache_dir=session_cache)
    stages = {k: build_stage(k, cfg[k]) for k in ("corrector", "prober", "verifier", "schema_linker", "generator")}
    assert {k: s.decoding.mode for k, s in stages.items()} == {
        "corrector": "free", "prober": "sql", "verifier": "sql", "schema_linker": "sql", "generator": "sql"}
    for k in ("prober", "verifier", "generator"):
        assert SqlGrammarArtifact in [type(a) for a in stages[k].artifacts()], k
    assert stages["corrector"].artifacts() == []
    # the linker's reply format needs no SQL grammar: it lists its field index only
    assert SqlGrammarArtifact not in [type(a) for a in stages["schema_linker"].artifacts()]
    cfg = compose_config(["decoding=free", *CONSTRAINED_STAGES], cache_dir=session_cache)
    assert all(build_stage(k, cfg[k]).decoding.free for k in ("corrector", "prober", "verifier", "generator"))


def test_free_decoding_keeps_the_fingerprint_of_runs_made_before_these_stages_took_it(session_cache: Path) -> None:
    from omegaconf import OmegaConf

    from t2s.run.store import fingerprint, result_config

    def plain(overrides: list[str]) -> dict[str, Any]:
        out = OmegaConf.to_container(compose_config(overrides, cache_dir=session_cache), resolve=True)
        assert isinstance(out, dict)
        out.pop("hydra", None)
        return result_config(out)

    cfg = plain(CONSTRAINED_STAGES)
    before = json.loads(json.dumps(cfg))
    before.pop("decoding")
    for stage in ("corrector", "prober", "verifier", "schema_linker", "generator"):
        before[stage].pop("decoding")
    assert fingerprint(before) == fingerprint(cfg)
    assert fingerprint(plain([*CONSTRAINED_STAGES, "decoding=sql"])) != fingerprint(cfg)


# ------------------------------------------------------------------ the tiny model under constrained decoding
def test_the_tiny_models_constrained_replies_parse(world: dict[str, Path], session_cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The random-weight model (`llm=tiny`) under `decoding=sql` in every constrained stage: each reply that ends
    (not cut by max_new_tokens) is in its format, and the stage's parser reads it; the grammar, not the model,
    guarantees it. Cut replies are counted apart."""
    from t2s_plugins.corrector.share import parse_mask_answers, parse_trajectory_reply
    from t2s_plugins.corrector.share.trajectory import TrajectoryError
    from t2s_plugins.corrector.share.trajectory.text import _Parser
    from t2s_plugins.prober.pv.prober import check_probe
    from t2s_plugins.prober.pv.prompts import parse_reply
    from test_decoding import names_problem

    from t2s.context.column_choice import parse_column_choice
    from t2s.context.fields import Field
    from t2s.db.introspect import introspect
    from t2s.env import Env
    from t2s.generation import parse_sql
    from t2s.llm.structured import text_matcher

    seen: list[tuple[LLMRequest, LLMResponse]] = []
    generate = Env.generate

    def recording(self: Env, name: str, items: Any) -> list[LLMResponse]:
        responses = generate(self, name, items)
        seen.extend((req, resp) for (_, req), resp in zip(items, responses))
        return responses

    monkeypatch.setattr(Env, "generate", recording)
    root = world["root"]
    (root / "q.jsonl").write_text("".join(json.dumps({"id": k, "question": q, "db_id": "concerts", "sql": s}) + "\n"
                                          for k, (q, s) in QUESTIONS.items()))
    # SHARE and PV's repair on fixed first answers (a wrong filter; "the 2 oldest" without ORDER BY / LIMIT, which
    # PV's checklist flags), then the prober, the dual linker and MCTS writing their own
    (root / "preds.jsonl").write_text(json.dumps({"qid": "france", "sql": "SELECT name FROM singer WHERE country = "
                                                  "'Germany'"}) + "\n" + json.dumps(
        {"qid": "oldest", "sql": "SELECT name FROM singer WHERE age > 40"}) + "\n")
    common = ["dataset=jsonl", f"dataset.path={root / 'q.jsonl'}", f"dataset.db_dir={world['db_dir']}",
              "decoding=sql", "run.llm_cache=false"]
    run(compose_config([*common, "generator=from_file", f"generator.path={root / 'preds.jsonl'}", "corrector=share",
                        "verifier=pv", "verifier.max_rounds=1",
                        "verifier.max_new_tokens=256"], cache_dir=session_cache), run_dir=root / "tiny_fix")
    run(compose_config([*common, "prober=pv", "prober.max_rounds=1", "prober.max_new_tokens=256",
                        "schema_linker=dual", "schema_linker.max_new_tokens=48", "generator=mcts",
                        "generator.simulations=1", "generator.branching=1", "generator.max_depth=2",
                        "generator.max_new_tokens=256", "generator.step_tokens=8"], cache_dir=session_cache),
        run_dir=root / "tiny_write")
    schema = introspect(world["db"], "concerts")
    candidates = [Field(table=t.name, column=c.name, text="") for t in schema.tables for c in t.columns]
    finished: dict[str, int] = {}
    cut: dict[str, int] = {}
    for req, resp in seen:
        c = req.params.constraint
        if c is None:
            continue
        kind = c.name.rsplit(":", 2)[0]
        for text, reason in zip(resp.texts, resp.finish_reasons):
            if reason != "stop":
                cut[kind] = cut.get(kind, 0) + 1
                problem = text_matcher().problem(c, text)  # a prefix of the format (or a whole reply that could go on)
                assert problem is None or problem.startswith("the text ends before"), (kind, text)
                continue
            finished[kind] = finished.get(kind, 0) + 1
            assert text_matcher().problem(c, text) is None, (kind, text)
            if kind == "corrector/share:sam":
                assert parse_mask_answers(text) and all("." in a or a in ("singer", "concert")
                                                        for a in parse_mask_answers(text)), text
            elif kind == "corrector/share:lom":
                try:
                    parse_trajectory_reply(text)
                except TrajectoryError as e:  # the syntax holds; only the structure check (`validate`) may refuse
                    for line in text.strip("`\n").splitlines():
                        _Parser(line).statement()
                    assert "line" in str(e) or "statement" in str(e), e
            elif kind == "prober/pv":
                reply = parse_reply(text)
                assert reply.done or check_probe(reply.sql, 5)[1] == "ok", text
                if reply.sql:
                    assert names_problem(reply.sql, schema) is None and re.search(r"\bLIMIT\s+[1-5]\s*$", reply.sql, re.I), text
            elif kind.startswith("schema_linker/dual"):
                assert parse_column_choice(text, candidates).status in ("ok", "none"), text
            else:  # SHARE's regeneration, PV's repair, MCTS's SQL steps
                sql = parse_sql(text)
                assert names_problem(sql, schema) is None, (kind, text)
    print("finished", finished, "cut", cut)
    assert sum(finished.values()) > sum(cut.values())
    assert {"corrector/share:sam", "prober/pv", "schema_linker/dual", "generator/mcts:sql"} <= set(finished) | set(cut)


def test_llama_cpp_and_the_hf_matcher_read_the_reply_formats_alike(world: dict[str, Path], embedded_llamacpp: Any,
                                                                   make_tiny_llm: Any) -> None:
    """The reply formats' grammars are read alike by llama.cpp's grammar sampler (the embedded GGUF's vocabulary)
    and llguidance (the tiny model's, the hf backend's matcher)."""
    from t2s_plugins.corrector.share.trajectory.grammar import mask_answers_grammar, trajectory_grammar
    from t2s_plugins.prober.pv.prober import PROBE_REPLY, PROBE_RULES

    from t2s.db.introspect import introspect
    from t2s.decoding import choice_list_constraint, limited_select, qualified_names
    from t2s.llm.base import Constraint
    from t2s.sql.grammar import sql_grammar

    schema = introspect(world["db"], "concerts")
    probe = PROBE_REPLY.replace("{query}", f"({limited_select(5)})")
    cases = [
        (Constraint.grammar(mask_answers_grammar(["column", "table"], schema)),
         ["```\n1. singer.country\n2. concert\n```"], ["```\n1. singer\n2. concert\n```", "SELECT 1"]),
        (Constraint.grammar(trajectory_grammar(schema)),
         [LOM_REPLY, "```\ntmp_res1 = df.select(avg(singer.age))\ndf1 = df.where(element = singer.age, op = '>', "
                     "filter = tmp_res1)\nres = df1.select(singer.name).orderby(by = singer.age, asc = True)\n```"],
         [LOM_REPLY.replace("singer.country", "singer.nation"), "Looks fine."]),
        (Constraint.grammar(f"root ::= {probe}\n{PROBE_RULES}{sql_grammar(schema).rules}"),
         ["DONE", "PURPOSE: countries\n" + fence("SELECT DISTINCT country FROM singer LIMIT 5")],
         ["PURPOSE: answer\n" + fence("SELECT name FROM singer"), fence("SELECT name FROM singer LIMIT 2")]),
        (choice_list_constraint(qualified_names({"singer": ["name", "country"]}, quote='"'), most=2, empty="NONE"),
         ["singer.name\nsinger.country", "singer.name, singer.country", "singer.name,singer.country", "NONE"],
         ["- singer.name", "singer.age", "singer.name; singer.country", "singer.name,\n singer.country"]),
    ]
    tiny = make_tiny_llm()
    for constraint, good, bad in cases:
        for text in good:
            assert embedded_llamacpp.grammar_problem(constraint, text) is None, text
            assert tiny.grammar_problem(constraint, text) is None, text
        for text in bad:
            assert embedded_llamacpp.grammar_problem(constraint, text) is not None, text
            assert tiny.grammar_problem(constraint, text) is not None, text
