"""Selection and search (issue 12): execution-result clustering on real SQLite databases under the scoring
semantics, the majority and adaptive-tournament selectors and the ensemble and MCTS generators with the scripted LLM."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import step_instruction
from t2s_plugins.generator.ensemble import EnsembleGenerator
from t2s_plugins.generator.mcts import MCTSGenerator, Node, Tree, uct
from t2s_plugins.schema_format.ddl import DDLFormat
from t2s_plugins.selector.adaptive_tournament import AdaptiveTournamentSelector, parse_choice
from t2s_plugins.selector.majority import MajoritySelector

from t2s.db.execute import SQLExecutor
from t2s.db.types import ExecResult
from t2s.env import Env
from t2s.llm import base as llm_base
from t2s.llm.pool import LLMPool
from t2s.llm.scripted import ScriptedLLM
from t2s.select import SelectionLog, cluster_results, cluster_tasks, decide_order, format_result
from t2s.testing import stage_contract
from t2s.types import Candidate, Example, Task

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite database: people with duplicate ages, and pets."""
    path = tmp_path_factory.mktemp("seldb") / "people.sqlite"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE person (id INTEGER PRIMARY KEY, name TEXT, age INTEGER, city TEXT);
        INSERT INTO person VALUES (1, 'Ann', 30, 'Oslo'), (2, 'Bob', 25, 'Rome'), (3, 'Cid', 30, 'Oslo'),
                                  (4, 'Dee', 41, 'Rome');
        CREATE TABLE pet (id INTEGER PRIMARY KEY, owner INTEGER REFERENCES person(id), kind TEXT);
        INSERT INTO pet VALUES (1, 1, 'cat'), (2, 1, 'dog'), (3, 4, 'cat');
    """)
    con.commit()
    con.close()
    return str(path)


@pytest.fixture(scope="module")
def executor() -> Any:
    with SQLExecutor(timeout=5.0, max_rows=1000) as ex:
        yield ex


def make_env(tmp_path: Path, executor: SQLExecutor, llms: dict[str, dict[str, Any]] | None = None) -> Env:
    """A real environment over the scripted LLM(s) (no response cache) and the real executor."""
    configs = {name: {"_target_": "t2s.llm.scripted.ScriptedLLM", **cfg}
               for name, cfg in (llms or {"generator": {"default": "SELECT 1"}}).items()}
    return Env(llms=LLMPool(configs=configs, cache_path=None), executor=executor, schema_format=DDLFormat(),
               cache_dir=tmp_path / "cache", run_dir=tmp_path / "run")


def make_task(db: str, sqls: list[str], ranks: list[int] | None = None, qid: str = "q1",
              question: str = "Who is 30?") -> Task:
    ex = Example(qid=qid, question=question, db_id="people", db_path=db)
    ranks = ranks or [0] * len(sqls)
    return Task(example=ex, candidates=[Candidate(sql=s, origin="generator/test", id=f"c{i}", meta={"member_rank": r})
                                        for i, (s, r) in enumerate(zip(sqls, ranks))])


def run_sql(executor: SQLExecutor, db: str, sqls: list[str]) -> list[ExecResult]:
    return executor.execute_many([(db, s) for s in sqls])


def groups(clusters: Any) -> list[list[int]]:
    return [c.members for c in clusters]


# ---------------------------------------------------------------------- clustering (real SQLite)


def test_row_order_counts_only_when_the_pool_orders(db: str, executor: SQLExecutor) -> None:
    sqls = ["SELECT name FROM person ORDER BY age, name", "SELECT name FROM person ORDER BY age DESC, name",
            "SELECT name FROM person"]
    res = run_sql(executor, db, sqls)
    # two of three executing candidates order: order matters, so the three results are three answers
    assert decide_order(sqls, [True] * 3) is True
    assert groups(cluster_results(sqls, res)) == [[0], [1], [2]]
    # forced off: multisets of rows, one answer
    assert groups(cluster_results(sqls, res, order="never")) == [[0, 1, 2]]
    # a pool that mostly does not order compares multisets
    sqls2 = ["SELECT name FROM person ORDER BY age, name", "SELECT name FROM person", "SELECT name FROM person ORDER BY id DESC"[:23]]
    res2 = run_sql(executor, db, sqls2)
    assert groups(cluster_results(sqls2, res2)) == [[0, 1, 2]]


def test_duplicates_follow_the_scoring_semantics(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    env = make_env(tmp_path, executor)
    sqls = ["SELECT age FROM person", "SELECT DISTINCT age FROM person", "SELECT age FROM person GROUP BY age"]
    # spider: DISTINCT is removed before execution (as the scorer does), rows are multisets
    task = make_task(db, sqls)
    (spider,) = cluster_tasks(env, [task], semantics="spider")
    assert groups(spider) == [[0, 1], [2]]
    # keep_distinct: the DISTINCT result has fewer rows, a different multiset
    (kept,) = cluster_tasks(env, [task], semantics="spider", keep_distinct=True)
    assert groups(kept) == [[0], [1, 2]]
    # bird: row sets, duplicates ignored
    (bird,) = cluster_tasks(env, [task], semantics="bird")
    assert groups(bird) == [[0, 1, 2]]


def test_columns_permute_under_spider_not_under_bird(db: str, executor: SQLExecutor) -> None:
    sqls = ["SELECT name, age FROM person", "SELECT age, name FROM person"]
    res = run_sql(executor, db, sqls)
    assert groups(cluster_results(sqls, res, semantics="spider")) == [[0, 1]]
    assert groups(cluster_results(sqls, res, semantics="bird")) == [[0], [1]]


def test_failures_never_share_a_cluster_with_results_and_empty_results_agree(db: str, executor: SQLExecutor) -> None:
    sqls = ["SELECT nope FROM person", "SELECT nope FROM person", "SELECT name FROM person WHERE age > 99",
            "SELECT city FROM person WHERE age > 500", "SELECT missing FROM nowhere"]
    res = run_sql(executor, db, sqls)
    cl = cluster_results(sqls, res)
    assert groups(cl) == [[0, 1], [2, 3], [4]]
    assert [c.executes for c in cl] == [False, True, False]
    # no SQL at all: never executed, its own group
    assert cluster_results(["", "SELECT 1"], [None, res[2]])[0].executes is False


def test_format_result_truncates_rows_and_cells(db: str, executor: SQLExecutor) -> None:
    (r,) = run_sql(executor, db, ["SELECT name, city FROM person ORDER BY id"])
    text = format_result(r, max_rows=2, max_cell_chars=3)
    assert text.startswith("4 rows, columns (name, city): ('An..., 'Os...); ('Bo...") and text.endswith(" ...")
    assert format_result(ExecResult(error="no such table: x")).startswith("error: no such table")


# ---------------------------------------------------------------------- majority


def test_majority_takes_the_largest_cluster_and_its_shortest_sql(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    env = make_env(tmp_path, executor)
    sel = MajoritySelector()
    sel.name = "majority"
    sel.setup(env)
    task = make_task(db, [
        "SELECT name FROM person WHERE age = 30",
        "SELECT name  FROM person WHERE age = 30 AND id > 0",
        "SELECT p.name FROM person AS p WHERE p.age = 30",
        "SELECT name FROM person WHERE age = 25",
    ])
    sel.run([task])
    assert task.final_sql == "SELECT name FROM person WHERE age = 30"
    rec = SelectionLog.read(env.run_dir / "selection" / "majority.jsonl")["q1"]
    assert rec["winner_size"] == 3 and rec["margin"] == 2 and rec["clusters"][0]["ids"] == ["c0", "c1", "c2"]


def test_majority_breaks_ties_by_member_rank_and_failures_never_win(db: str, executor: SQLExecutor,
                                                                     tmp_path: Path) -> None:
    env = make_env(tmp_path, executor)
    sel = MajoritySelector()
    sel.setup(env)
    # two clusters of one: the better-ranked member (rank 0) wins although it comes second and is longer
    task = make_task(db, ["SELECT name FROM person WHERE age=25", "SELECT name FROM person WHERE age = 41"], ranks=[2, 0])
    # three identical failing candidates against one that runs
    bad = make_task(db, ["SELECT x FROM nowhere"] * 3 + ["SELECT name FROM person WHERE age = 25 ORDER BY name"], qid="q2")
    sel.run([task, bad])
    assert task.final_sql == "SELECT name FROM person WHERE age = 41"
    assert bad.final_sql == "SELECT name FROM person WHERE age = 25 ORDER BY name"


# ---------------------------------------------------------------------- adaptive tournament

def judge_prefers(sql: str, key: str = "answer", a: Any = None, b: Any = None) -> list[dict[str, Any]]:
    """Rules by the judge template's fields (not its wording): prefer `sql` in either position. `key` "answer" gives a
    structured answer ({choice: A}), written in the template's reply format; "scores" gives log-probabilities."""
    exact = "^" + re.escape(sql) + "$"
    return [{"template": "tournament", "when": {"sql_a": exact}, key: a if a is not None else {"choice": "A"}},
            {"template": "tournament", "when": {"sql_b": exact}, key: b if b is not None else {"choice": "B"}}]


# the judge prefers the query filtering on Oslo, wherever it is shown, else says A
JUDGE_RULES = [*judge_prefers("SELECT name FROM person WHERE city = 'Oslo'"),
               {"template": "tournament", "answer": {"choice": "A"}}]


def tournament(tmp_path: Path, executor: SQLExecutor, rules: list[dict[str, Any]], **kw: Any) -> tuple[Any, Env]:
    """A tournament judged by the scripted LLM. Reply rules judge by generated answers (`scoring=generate`, the
    default here); tests of log-probability judging pass `scores:` rules and `scoring="logprob"`."""
    env = make_env(tmp_path, executor, {"generator": {"rules": rules, "default": "A"}})
    kw.setdefault("scoring", "generate")
    sel = AdaptiveTournamentSelector(**kw)
    sel.name = "adaptive_tournament"
    sel.setup(env)
    return sel, env


def test_unanimous_pool_takes_the_fast_path_without_a_model_call(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    sel, env = tournament(tmp_path, executor, JUDGE_RULES)
    task = make_task(db, ["SELECT name FROM person WHERE age = 30 AND 1=1", "SELECT name FROM person WHERE age = 30",
                          "SELECT nope FROM person"])
    sel.run([task])
    assert task.final_sql == "SELECT name FROM person WHERE age = 30"
    assert task.usage.llm_calls == 0
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    assert rec["fast_path"] is True and rec["comparisons"] == [] and rec["unanimous"] is False


def test_round_robin_orders_representatives_and_the_judge_decides(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    sel, env = tournament(tmp_path, executor, JUDGE_RULES)
    oslo = "SELECT name FROM person WHERE city = 'Oslo'"
    task = make_task(db, [
        "SELECT name FROM person WHERE age = 25",                     # cluster of 1 (Bob)
        "SELECT name FROM person WHERE age = 30",                     # cluster of 2 (Ann, Cid) ...
        oslo,                                                         # ... same rows as the age = 30 query
        "SELECT name FROM person WHERE age = 30 AND city = 'Oslo'",
        "SELECT name FROM person WHERE city = 'Rome'",                # cluster of 2 (Bob, Dee)
        "SELECT name FROM person WHERE age <> 30",
    ], ranks=[0, 1, 1, 1, 2, 2])
    sel.run([task])
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    # clusters: {c1,c2,c3} (3), {c4,c5} (2), {c0} (1); representatives: the shortest SQL of each, size order
    assert [c["ids"] for c in rec["clusters"]] == [["c1", "c2", "c3"], ["c4", "c5"], ["c0"]]
    assert rec["representatives"] == ["c1", "c5", "c0"]
    # 3 games; the first-listed (larger cluster) is always shown as A; the judge says A every time
    assert [(c["a"], c["b"]) for c in rec["comparisons"]] == [("c1", "c5"), ("c1", "c0"), ("c5", "c0")]
    assert rec["wins"] == {"c1": 2, "c5": 1, "c0": 0} and rec["winner"] == "c1" and rec["margin"] == 1
    assert task.final_sql == "SELECT name FROM person WHERE age = 30"
    assert task.usage.llm_calls == 3 and not rec["fast_path"]


def test_the_judge_can_overturn_the_majority_and_both_orders_doubles_the_games(db: str, executor: SQLExecutor,
                                                                                tmp_path: Path) -> None:
    oslo = "SELECT name FROM person WHERE city = 'Oslo' AND id < 4"
    rules = [*judge_prefers(oslo), {"template": "tournament", "answer": {"choice": "A"}}]
    sel, env = tournament(tmp_path, executor, rules, both_orders=True)
    task = make_task(db, ["SELECT name FROM person WHERE age = 25", "SELECT name FROM person WHERE age=25",
                          "SELECT name FROM person WHERE city = 'Oslo' AND id < 2", oslo])
    sel.run([task])
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    # the two age = 25 queries form the largest cluster, but the judge prefers the Oslo query in both positions
    assert rec["representatives"][0] == "c1"
    assert len(rec["comparisons"]) == 6  # 3 pairs x 2 orders
    assert task.final_sql == oslo and rec["wins"]["c3"] == 4


def test_ties_go_to_the_larger_cluster_then_member_rank(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    # an unreadable judge gives no points: every representative has 0 wins
    sel, env = tournament(tmp_path, executor, [{"template": "tournament", "reply": "I cannot tell"}])
    task = make_task(db, ["SELECT name FROM person WHERE age = 41", "SELECT name FROM person WHERE age = 25",
                          "SELECT name FROM person WHERE age = 25 AND 1"], ranks=[0, 3, 3])
    ranked = make_task(db, ["SELECT name FROM person WHERE age = 41", "SELECT name FROM person WHERE age = 25"],
                       ranks=[1, 0], qid="q2")
    sel.run([task, ranked])
    assert task.final_sql == "SELECT name FROM person WHERE age = 25"  # the cluster of 2 beats rank 0
    assert ranked.final_sql == "SELECT name FROM person WHERE age = 25"  # equal size: member rank 0
    recs = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")
    assert all(c["winner"] is None for c in recs["q1"]["comparisons"]) and recs["q1"]["margin"] == 0


def test_at_most_m_representatives_play(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    sel, env = tournament(tmp_path, executor, JUDGE_RULES, max_representatives=3)
    task = make_task(db, [f"SELECT name FROM person WHERE id = {i}" for i in range(1, 5)] + ["SELECT 1"])
    sel.run([task])
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    assert len(rec["representatives"]) == 3 and rec["capped"] == 2 and len(rec["comparisons"]) == 3
    assert task.usage.llm_calls == 3


def test_parse_choice() -> None:
    assert parse_choice("B") == "B" and parse_choice(" Candidate A is right") == "A"
    assert parse_choice("Answer: b.") == "B" and parse_choice("neither") is None


class ScoringScripted(ScriptedLLM):
    """The scripted LLM with the scoring interface (`score` from its `logprobs` rules)."""

    supports_scoring = True

    def score(self, requests: list[Any]) -> list[Any]:
        return [llm_base.ScoreResponse(logprobs=self.logprobs(r, list(r.continuations)),  # type: ignore[attr-defined]
                                       prompt_tokens=len(str(r.messages).split()), seconds=0.0) for r in requests]


@pytest.mark.skipif(not hasattr(llm_base, "ScoreRequest"), reason="LLM scoring (ScoreRequest) has not landed yet")
def test_judge_by_log_probability_when_the_backend_scores(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    rules = [{"template": "tournament", "when": {"sql_b": "^SELECT name FROM person WHERE age = 41$"},
              "scores": {"A": -3.0, "B": -0.2}},
             {"template": "tournament", "scores": {"A": -0.1, "B": -2.0}}]
    env = Env(llms=LLMPool(configs={"generator": {"_target_": f"{__name__}.ScoringScripted", "rules": rules}},
                           cache_path=None),
              executor=executor, schema_format=DDLFormat(), cache_dir=tmp_path / "c", run_dir=tmp_path / "r")
    sel = AdaptiveTournamentSelector(scoring="logprob")
    sel.name = "adaptive_tournament"
    sel.setup(env)
    task = make_task(db, ["SELECT name FROM person WHERE age = 25", "SELECT name FROM person WHERE age=25",
                          "SELECT name FROM person WHERE age = 41"])
    sel.run([task])
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    assert task.final_sql == "SELECT name FROM person WHERE age = 41"
    assert rec["judge"] == "logprob" and rec["comparisons"][0]["logprob_b"] == -0.2


# ---------------------------------------------------------------------- ensemble


def zs(**kw: Any) -> dict[str, Any]:
    return {"_target_": "t2s_plugins.generator.zero_shot.ZeroShotGenerator", **kw}


def test_ensemble_batches_members_per_llm_and_tags_every_candidate(db: str, executor: SQLExecutor,
                                                                   tmp_path: Path) -> None:
    env = make_env(tmp_path, executor, {
        "generator": {"rules": [{"template": "zero_shot", "when": {"schema": "CREATE TABLE"}, "answer": {"sql": "SELECT 'ddl'"}},
                                {"template": "zero_shot", "when": {"schema": r"\| name"}, "answer": {"sql": "SELECT 'md'"}}],
                      "default": "SELECT 0"},
        "other": {"default": "```sql\nSELECT 'other'\n```"}})
    gen = EnsembleGenerator(members={"ddl": zs(n=2, temperature=0.8), "md": {**zs(), "_schema_format_": "markdown"},
                                     "other": zs(llm="other")})
    gen.name = "ensemble"
    res = stage_contract(gen, env, [make_task(db, []).example, make_task(db, [], qid="q2").example])
    # members sharing `generator` went in one call of 4 requests; `other` in its own
    assert sorted(gen.last_batcher.flushes) == [("generator", 4), ("other", 2)]
    t = res.tasks[0]
    assert [(c.meta["member"], c.meta["member_rank"], c.sql) for c in t.candidates] == [
        ("ddl", 0, "SELECT 'ddl'"), ("ddl", 0, "SELECT 'ddl'"), ("md", 1, "SELECT 'md'"), ("other", 2, "SELECT 'other'")]
    assert {c.origin for c in t.candidates} == {"generator/ensemble:ddl", "generator/ensemble:md", "generator/ensemble:other"}
    assert t.candidates[2].meta["schema_format"] == "markdown"


def test_ensemble_member_views_and_config_errors(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    from t2s.run.checks import ConfigError

    with pytest.raises(ConfigError, match=r"members\.bad.*unknown key"):
        EnsembleGenerator(members={"bad": zs(temprature=0.5)})
    with pytest.raises(ConfigError, match="no conf/schema_format/yaml"):
        EnsembleGenerator(members={"m": {**zs(), "_schema_format_": "yaml"}})
    env = make_env(tmp_path, executor)
    gen = EnsembleGenerator(members={"s1": {**zs(), "_views_": ["S1"]}, "all": zs()})
    gen.name = "ensemble"
    gen.setup(env)
    task = make_task(db, [])
    full = env.full_view(task.example)
    task.schemas = [type(full)(name="S1", schema=full.schema, text="T1"), type(full)(name="S2", schema=full.schema, text="T2")]
    gen.run([task])
    assert [(c.meta["member"], c.schema_view) for c in task.candidates] == [("s1", "S1"), ("all", "S1"), ("all", "S2")]


# ---------------------------------------------------------------------- MCTS


def test_uct_prefers_unvisited_then_value_plus_exploration() -> None:
    a = Node(id=1, parent=0, action="plan", text="", depth=1, visits=0)
    b = Node(id=2, parent=0, action="plan", text="", depth=1, visits=4, value=2.0)
    c = Node(id=3, parent=0, action="plan", text="", depth=1, visits=1, value=0.4)
    assert uct(a, 5, 1.4) == float("inf")
    assert uct(b, 5, 0.0) > uct(c, 5, 0.0)          # pure exploitation: 0.5 > 0.4
    assert uct(c, 5, 1.4) > uct(b, 5, 1.4)          # exploration favours the less visited child


#: by template and fields, answered in each template's reply format (SQL_REPLY for mcts_sql / mcts_revise, STEP_REPLY)
MCTS_RULES = [
    # revisions: an error is fixed, an empty result stays empty
    {"template": "mcts_revise", "when": {"result": "^error"},
     "answer": {"sql": "SELECT name FROM person WHERE city = 'Oslo'"}},
    {"template": "mcts_revise", "answer": {"sql": "SELECT name FROM person WHERE age = 31"}},
    # reasoning steps: two different "plans", one "values" answer
    {"template": "mcts_step", "when": {"instruction": step_instruction("plan")},
     "answers": [{"text": "plan: filter on age"}, {"text": "plan: filter on city"}]},
    {"template": "mcts_step", "when": {"instruction": step_instruction("values")}, "answer": {"text": "person.age = 30"}},
    # SQL written after the age plan runs; after the city plan it fails; straight SQL returns no rows
    {"template": "mcts_sql", "when": {"steps_block": "plan: filter on age"},
     "answer": {"sql": "SELECT name FROM person WHERE age = 30"}},
    {"template": "mcts_sql", "when": {"steps_block": "plan: filter on city"}, "answer": {"sql": "SELECT nam FROM person"}},
    {"template": "mcts_sql", "answer": {"sql": "SELECT name FROM person WHERE age = 99"}},
]


def mcts_env(tmp_path: Path, executor: SQLExecutor) -> Env:
    return make_env(tmp_path, executor, {"generator": {"rules": MCTS_RULES, "default": "nothing"}})


def test_mcts_expansion_rollout_rewards_and_backup(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    env = mcts_env(tmp_path, executor)
    gen = MCTSGenerator(simulations=1, branching=2, max_depth=4, actions=["values", "plan"])
    gen.name = "mcts"
    gen.setup(env)
    task = make_task(db, [])
    (tree,) = gen.search([task])
    root = tree.nodes[0]
    # expansion of the root: values (2 identical samples merged), plan (2 different), sql (2 identical merged)
    kids = [tree.nodes[k] for k in root.children]
    assert [(k.action, k.text) for k in kids] == [("values", "person.age = 30"), ("plan", "plan: filter on age"),
                                                  ("plan", "plan: filter on city"), ("sql", "SELECT name FROM person WHERE age = 99")]
    # rollout from the first new reasoning child (values) writes SQL as its child
    (roll,) = [tree.nodes[k] for k in kids[0].children]
    assert roll.action == "sql" and roll.status == "empty" and roll.reward == pytest.approx(0.2)
    assert kids[3].status == "empty"
    # backup: the root saw both new SQL nodes
    assert root.visits == 2 and root.value == pytest.approx(0.4)
    assert kids[0].visits == 1 and kids[1].visits == 0


def test_mcts_selection_follows_uct_and_the_budget_bounds_the_calls(db: str, executor: SQLExecutor,
                                                                    tmp_path: Path) -> None:
    env = mcts_env(tmp_path, executor)
    gen = MCTSGenerator(simulations=4, branching=2, max_depth=4, actions=["values", "plan"], c=3.0)
    gen.name = "mcts"
    gen.setup(env)
    task = make_task(db, [])
    (tree,) = gen.search([task])
    root = tree.nodes[0]
    # simulation 1 expands the root (values, 2 plans, sql) and rolls out from `values`; simulations 2 and 3 take the
    # unvisited plan children in order (UCT: +inf), simulation 4 the best by UCT: the plan whose SQL has rows
    plan_age, plan_city = (n for n in tree.nodes if n.action == "plan")
    assert plan_age.expanded and plan_city.expanded and plan_age.visits == 2 and plan_city.visits == 1
    best = max((n for n in tree.nodes if n.sql), key=lambda n: (n.reward or 0, -n.id))
    assert best.sql == "SELECT name FROM person WHERE age = 30" and best.status == "rows"
    # 4 simulations: root visits = one per backed-up reward (2 in the first, 1 in each later one)
    assert root.visits == 5 and root.value == pytest.approx(0.2 + 0.2 + 1.0 + 0.0 + 1.0)
    # the budget bounds the calls: one expansion (<= 3 actions) + one rollout per simulation
    assert 4 <= task.usage.llm_calls <= 4 * (3 + 1)
    # a larger budget repeats the first simulations (same tree prefix) and goes on: revisions of the failing SQL
    gen8 = MCTSGenerator(simulations=8, branching=2, max_depth=4, actions=["values", "plan"], c=3.0)
    gen8.setup(mcts_env(tmp_path / "b", executor))
    (tree8,) = gen8.search([make_task(db, [])])
    assert [(n.action, n.text) for n in tree8.nodes[: len(tree.nodes)]] == [(n.action, n.text) for n in tree.nodes]
    assert len(tree8.nodes) > len(tree.nodes) and tree8.nodes[0].visits > root.visits
    assert any(n.action == "revise" and n.sql == "SELECT name FROM person WHERE city = 'Oslo'" and n.status == "rows"
               for n in tree8.nodes)


def test_mcts_candidates_best_first_and_tree_saved(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    env = mcts_env(tmp_path, executor)
    gen = MCTSGenerator(simulations=3, actions=["plan"])
    gen.name = "mcts"
    res = stage_contract(gen, env, [make_task(db, []).example])
    cands = res.tasks[0].candidates
    assert cands[0].sql == "SELECT name FROM person WHERE age = 30"
    values = [c.meta["mcts"]["value"] for c in cands]
    assert values == sorted(values, reverse=True)
    saved = json.loads((env.run_dir / cands[0].meta["tree"]).read_text())
    assert saved["qid"] == "q1" and {"text", "visits", "value", "mean", "reward"} <= set(saved["nodes"][0])
    assert sum(1 for n in saved["nodes"] if n["sql"] is not None) == len(cands)


def test_mcts_depth_limit_and_config_errors() -> None:
    gen = MCTSGenerator(max_depth=2, actions=["rephrase", "values", "plan"])
    tree = Tree(nodes=[Node(id=0, parent=None, action="root", text="", depth=0)])
    root = tree.nodes[0]
    assert gen.valid_actions(tree, root) == ["rephrase", "values", "plan", "sql"]
    step = tree.add(root, "values", "x")
    assert gen.valid_actions(tree, step) == ["sql"]           # depth 1 = max_depth - 1: only SQL
    sql = tree.add(step, "sql", "SELECT", sql="SELECT", status="error")
    assert gen.valid_actions(tree, sql) == []                 # depth 2 = max_depth: terminal
    with pytest.raises(ValueError, match="not a reasoning action"):
        MCTSGenerator(actions=["sql"])


def test_member_contributions_count_unique_correct_questions(tmp_path: Path) -> None:
    from t2s.select import member_contributions

    def cand(member: str) -> dict[str, Any]:
        return {"sql": "x", "origin": f"generator/ensemble:{member}", "meta": {"member": member}}

    rows = [{"qid": "1", "candidates": [cand("a"), cand("a"), cand("b")], "candidate_correct": [False, True, False]},
            {"qid": "2", "candidates": [cand("a"), cand("b")], "candidate_correct": [True, True]},
            {"qid": "3", "candidates": [cand("a"), cand("b")], "candidate_correct": [False, False]}]
    p = tmp_path / "predictions.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert member_contributions(p) == {"a": {"candidates": 4, "correct": 2, "questions": 2, "unique": 1},
                                       "b": {"candidates": 3, "correct": 1, "questions": 1, "unique": 0}}


def test_an_mcts_member_runs_inside_the_ensemble(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    env = mcts_env(tmp_path, executor)
    gen = EnsembleGenerator(members={
        "search": {"_target_": "t2s_plugins.generator.mcts.generator.MCTSGenerator", "simulations": 2, "actions": ["plan"]},
        "direct": zs()})
    gen.name = "ensemble"
    res = stage_contract(gen, env, [make_task(db, []).example, make_task(db, [], qid="q2").example])
    for t in res.tasks:
        members = [c.meta["member"] for c in t.candidates]
        assert members[0] == "search" and members[-1] == "direct" and "mcts" in t.candidates[0].meta
    # the scripted "plan" replies are consumed in batch order: the first question got the age plan, whose SQL runs
    assert res.tasks[0].candidates[0].sql == "SELECT name FROM person WHERE age = 30"


def test_the_judge_can_score_a_and_b_by_log_probability(db: str, executor: SQLExecutor, tmp_path: Path) -> None:
    oslo = "SELECT name FROM person WHERE city = 'Oslo' AND id < 4"
    rules = [*judge_prefers(oslo, "scores", {"A": -0.1, "B": -3.0}, {"A": -3.0, "B": -0.1}),
             {"template": "tournament", "scores": {"A": -0.5, "B": -1.0}}]
    sel, env = tournament(tmp_path, executor, rules, scoring="logprob")
    task = make_task(db, ["SELECT name FROM person WHERE age = 25", "SELECT name FROM person WHERE age=25",
                          "SELECT name FROM person WHERE city = 'Oslo' AND id < 2", oslo])
    sel.run([task])
    rec = SelectionLog.read(env.run_dir / "selection" / "adaptive_tournament.jsonl")["q1"]
    assert task.final_sql == oslo and rec["wins"]["c3"] == 2
    assert task.usage.llm_calls == 3 and task.usage.completion_tokens == 0  # scored, not generated
