"""Monte Carlo tree search over reasoning steps and SQL: rStar-style test-time search ("rStar-Math: Small LLMs Can
Master Math Reasoning with Self-Evolved Deep Thinking", arXiv 2501.04519) with an action space after "Alpha-SQL:
Zero-Shot Text-to-SQL using Monte Carlo Tree Search" (arXiv 2502.17248)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from t2s_plugins.generator.mcts.prompts import SearchPrompts

from t2s.artifacts import Artifact
from t2s.db.types import ExecResult
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.generation import parse_sql
from t2s.llm import base as llm_base
from t2s.llm.base import GenParams, LLMRequest
from t2s.select import format_result
from t2s.stages import Generator
from t2s.types import Candidate, Task

#: the reasoning actions the default step prompt words (a path takes each at most once, in the configured order)
REASONING_ACTIONS = ("rephrase", "values", "plan")


@dataclass
class Node:
    """One node of a question's search tree.

    `action` is what created it ("root", a reasoning action, "sql" or "revise"); `text` the model's output for that
    step (for SQL nodes, the SQL). `visits` and `value` (sum of backed-up rewards) drive UCT; SQL nodes also carry
    their execution `status` ("rows", "empty", "error") and execution `reward`; `ppm` is the process preference
    model's probability that a reasoning step is right (None without a PPM).
    """

    id: int
    parent: int | None
    action: str
    text: str
    depth: int
    sql: str | None = None
    status: str | None = None
    reward: float | None = None
    ppm: float | None = None
    #: the execution result as shown to the revise prompt (SQL nodes)
    result: str | None = None
    visits: int = 0
    value: float = 0.0
    children: list[int] = field(default_factory=list)
    expanded: bool = False

    @property
    def mean(self) -> float:
        return self.value / self.visits if self.visits else 0.0


@dataclass
class Tree:
    """A question's search tree: nodes by id (0 is the root), in creation order."""

    nodes: list[Node]

    def add(self, parent: Node, action: str, text: str, **kw: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, action=action, text=text, depth=parent.depth + 1, **kw)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """Root to `node`, both included."""
        out = [node]
        while out[-1].parent is not None:
            out.append(self.nodes[out[-1].parent])
        return out[::-1]

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [dataclasses.asdict(n) for n in self.nodes]}


def uct(child: Node, parent_visits: int, c: float) -> float:
    """UCT score: mean value + c * sqrt(ln N_parent / N_child); an unvisited child scores +inf."""
    if child.visits == 0:
        return math.inf
    return child.mean + c * math.sqrt(math.log(max(1, parent_visits)) / child.visits)


class MCTSGenerator(Generator):
    """SQL by tree search: reasoning steps proposed by the generator LLM, SQL leaves rewarded by execution.

    Actions (a path uses each reasoning action at most once, in the order of `actions`): the reasoning steps named in
    `actions` (`rephrase` the question, list relevant `values` / columns, `plan` the query; worded in
    `mcts_step_v1.yaml` beside this module), `sql` (write the query from the steps so far) and `revise` (rewrite a query
    that failed or returned no rows; one per path). A node at depth `max_depth - 1` can only take `sql`.

    One simulation per question and round, all questions of the batch in lockstep (one `env.generate` per phase):
    1. selection: from the root, the child with the highest UCT (`c`), unvisited children first, down to a node not
       yet expanded (or a terminal SQL node, whose reward is backed up again);
    2. expansion: every valid action of that node, `branching` samples each (temperature `temperature`; identical
       outputs merged), SQL children executed read-only right away;
    3. rollout: from the first new reasoning child, one SQL written greedily-or-sampled (`rollout_temperature`) and
       kept in the tree as its child;
    4. backup: every new SQL node's reward — rows: `reward_rows`, no rows: `reward_empty`, error / timeout / no SQL:
       `reward_error`, mixed with the PPM's mean over the path's reasoning steps when `ppm_llm` is set
       (`(1 - ppm_weight) * execution + ppm_weight * ppm`) — is added to every node on its path (visits + 1).
    The PPM (`ppm_llm`, a named LLM, null = none) scores each new reasoning step by the log-probabilities of "Yes" and
    "No" (`mcts_ppm_v1.yaml`); it needs a backend that scores continuations.

    Every SQL node becomes a candidate (duplicates kept, so a vote counts them), ordered by the node's mean value
    (best first, so `selector=first` takes the search's answer), with `meta["mcts"]` (node id, path of actions,
    visits, mean value, execution reward and status). The whole tree (node text, visits, value, reward, PPM score)
    is written to `<run_dir>/mcts/<qid>.json` (`meta["tree"]`) for inspection.

    `decoding` (conf/decoding/, `${decoding}` by default): free, or under `sql` / `sql_strict` the SQL-writing steps
    (`sql`, `revise` and the rollouts) constrained to one SELECT of the database's grammar (`t2s.decoding`), in the
    ```sql fence their prompts ask for (what `parse_sql` reads; the fence only, as the grammar's whitespace runs
    may hold a blank line, where `parse_sql` cuts a bare query). The reasoning steps stay free text: they
    are prose by design (a rephrased question, a plan), and their text is only shown to later prompts, never parsed.
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        ppm_llm: str | None = None,
        simulations: int = 8,
        max_depth: int = 4,
        c: float = 1.4,
        branching: int = 2,
        actions: list[str] | None = None,
        revise: bool = True,
        temperature: float = 0.8,
        top_p: float = 0.95,
        rollout_temperature: float = 0.0,
        max_new_tokens: int = 256,
        step_tokens: int = 128,
        reward_rows: float = 1.0,
        reward_empty: float = 0.2,
        reward_error: float = 0.0,
        ppm_weight: float = 0.5,
        step_prompt: str = "mcts_step_v1",
        sql_prompt: str = "mcts_sql_v1",
        revise_prompt: str = "mcts_revise_v1",
        ppm_prompt: str = "mcts_ppm_v1",
        dialect: str = "SQLite",
        use_evidence: bool = True,
        save_trees: bool = True,
        decoding: Decoding | str | None = None,
    ) -> None:
        actions = list(REASONING_ACTIONS[1:] if actions is None else actions)
        self.prompts = SearchPrompts(actions=actions, step_prompt=step_prompt, sql_prompt=sql_prompt,
                                     revise_prompt=revise_prompt, ppm_prompt=ppm_prompt, dialect=dialect,
                                     use_evidence=use_evidence)
        if simulations < 1 or max_depth < 1 or branching < 1:
            raise ValueError("generator.simulations, max_depth and branching must be >= 1")
        if not 0.0 <= ppm_weight <= 1.0:
            raise ValueError(f"generator.ppm_weight={ppm_weight}: a weight in [0, 1]")
        self.llm_name = llm
        self.ppm_llm = ppm_llm
        self.simulations = simulations
        self.max_depth = max_depth
        self.c = c
        self.branching = branching
        self.actions = actions
        self.revise = revise
        self.sample = GenParams(max_new_tokens=step_tokens, temperature=temperature, top_p=top_p, n=branching)
        self.sample_sql = dataclasses.replace(self.sample, max_new_tokens=max_new_tokens)
        self.rollout = GenParams(max_new_tokens=max_new_tokens, temperature=rollout_temperature, top_p=top_p, n=1)
        self.rewards = {"rows": reward_rows, "empty": reward_empty, "error": reward_error}
        self.ppm_weight = ppm_weight
        self.save_trees = save_trees
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    # ------------------------------------------------------------------ prompts

    def _request(self, action: str, task: Task, tree: Tree, node: Node, params: GenParams) -> LLMRequest:
        """The request for `action` after `node` (its path from the root is the context); SQL steps constrained under
        constrained decoding."""
        messages = self.prompts.messages(action, schema=self.env.views(task)[0].text, question=task.example.question,
                                         evidence=task.example.evidence, path=tree.path(node))
        if action not in ("sql", "revise"):
            return LLMRequest.chat(messages, params)
        constraint = answer_constraint(self.env, task.example, self.decoding, label=f"{self.origin}:{action}")
        return instructed(LLMRequest.chat(messages, constrained(params, constraint)), self.decoding)

    # ------------------------------------------------------------------ search

    def valid_actions(self, tree: Tree, node: Node) -> list[str]:
        """Actions that may extend `node` (see the class docstring); [] for a terminal node."""
        if node.depth >= self.max_depth:
            return []
        if node.sql is not None:
            used = {n.action for n in tree.path(node)}
            return ["revise"] if self.revise and node.status in ("empty", "error") and "revise" not in used else []
        if node.depth >= self.max_depth - 1:
            return ["sql"]
        done = [self.actions.index(n.action) for n in tree.path(node) if n.action in self.actions]
        after = max(done) + 1 if done else 0
        return [*self.actions[after:], "sql"]

    def select(self, tree: Tree) -> Node:
        """Descend by UCT from the root to a node not yet expanded, or to a terminal node."""
        node = tree.nodes[0]
        while node.expanded and node.children:
            kids = [tree.nodes[k] for k in node.children]
            node = max(kids, key=lambda k: uct(k, node.visits, self.c))
        return node

    def backup(self, tree: Tree, node: Node, reward: float) -> None:
        """Add `reward` to every node from `node` up to the root (one visit each)."""
        for n in tree.path(node):
            n.visits += 1
            n.value += reward

    def path_reward(self, tree: Tree, node: Node) -> float:
        """The reward backed up for a SQL node: its execution reward, mixed with the path's mean PPM score."""
        r = float(node.reward or 0.0)
        scores = [n.ppm for n in tree.path(node) if n.ppm is not None]
        if self.ppm_llm and scores:
            r = (1.0 - self.ppm_weight) * r + self.ppm_weight * sum(scores) / len(scores)
        return r

    def _execute(self, items: list[tuple[Task, Node]]) -> None:
        todo = [(t, n) for t, n in items if n.sql]
        results = self.env.execute_many([(t, n.sql or "") for t, n in todo])
        by_id = {id(n): r for (_, n), r in zip(todo, results)}
        for _, n in items:
            r: ExecResult | None = by_id.get(id(n))
            n.status = "error" if r is None or not r.ok else ("rows" if r.rows else "empty")
            n.reward = self.rewards[n.status]
            n.result = format_result(r, max_rows=3)

    def _ppm(self, items: list[tuple[Task, Tree, Node]]) -> None:
        if not self.ppm_llm or not items:
            return
        score_request = getattr(llm_base, "ScoreRequest", None)
        if score_request is None:
            raise RuntimeError("generator.ppm_llm needs LLM scoring (t2s.llm.base.ScoreRequest), which this version "
                               "lacks; set generator.ppm_llm=null")
        reqs = [(t, score_request.chat(self.prompts.ppm_messages(
            schema=self.env.views(t)[0].text, question=t.example.question, evidence=t.example.evidence,
            path=tree.path(n)), ["Yes", "No"])) for t, tree, n in items]
        for (_, _, n), r in zip(items, self.env.score(self.ppm_llm, reqs)):
            yes, no = (float(x) for x in r.logprobs[:2])
            n.ppm = 1.0 / (1.0 + math.exp(no - yes))

    def search(self, tasks: list[Task]) -> list[Tree]:
        """Run `simulations` rounds for every task in lockstep; returns the trees."""
        trees = [Tree(nodes=[Node(id=0, parent=None, action="root", text="", depth=0)]) for _ in tasks]
        # one seed for every request: prompts differ from node to node, and a rerun (or a larger budget) repeats the
        # same first simulations from the response cache
        seed = self.env.seed
        for _ in range(self.simulations):
            leaves = [self.select(tree) for tree in trees]
            # expansion: every valid action of each selected leaf, one batch
            planned: list[tuple[int, Node, str]] = []
            reqs: list[tuple[Task, LLMRequest]] = []
            for k, (task, tree, leaf) in enumerate(zip(tasks, trees, leaves)):
                for action in self.valid_actions(tree, leaf):
                    params = self.sample_sql if action in ("sql", "revise") else self.sample
                    planned.append((k, leaf, action))
                    reqs.append((task, self._request(action, task, tree, leaf, dataclasses.replace(params, seed=seed))))
                leaf.expanded = True
            responses = self.env.generate(self.llm_name, reqs)
            new_sql: list[tuple[int, Node]] = []
            new_steps: list[tuple[int, Node]] = []
            for (k, leaf, action), resp in zip(planned, responses):
                seen: set[str] = set()
                for text in resp.texts:
                    key = " ".join(text.split())
                    if key in seen:
                        continue
                    seen.add(key)
                    if action in ("sql", "revise"):
                        sql = parse_sql(text)
                        new_sql.append((k, trees[k].add(leaf, action, sql, sql=sql)))
                    else:
                        new_steps.append((k, trees[k].add(leaf, action, text.strip())))
            # rollout: one SQL from the first new reasoning child of each expanded leaf
            firsts: dict[int, Node] = {}
            for k, n in new_steps:
                firsts.setdefault(k, n)
            roll_reqs = [(tasks[k], self._request("sql", tasks[k], trees[k], n, dataclasses.replace(
                self.rollout, seed=seed))) for k, n in firsts.items()]
            for (k, n), resp in zip(firsts.items(), self.env.generate(self.llm_name, roll_reqs)):
                sql = parse_sql(resp.text)
                new_sql.append((k, trees[k].add(n, "sql", sql, sql=sql)))
            self._execute([(tasks[k], n) for k, n in new_sql])
            self._ppm([(tasks[k], trees[k], n) for k, n in new_steps])
            for k, n in new_sql:
                self.backup(trees[k], n, self.path_reward(trees[k], n))
            # a selected leaf that was terminal (nothing to expand): its reward is backed up again
            for k, leaf in enumerate(leaves):
                if leaf.sql is not None and not leaf.children:
                    self.backup(trees[k], leaf, self.path_reward(trees[k], leaf))
        return trees

    def run(self, tasks: list[Task]) -> None:
        trees = self.search(tasks)
        for task, tree in zip(tasks, trees):
            tree_file = None
            if self.save_trees:
                d = self.env.run_dir / "mcts"
                d.mkdir(parents=True, exist_ok=True)
                tree_file = d / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', task.qid)}.json"
                tree_file.write_text(json.dumps({"qid": task.qid, "question": task.example.question,
                                                 **_tree_json(tree)}, ensure_ascii=False, indent=1))
            sql_nodes = sorted((n for n in tree.nodes if n.sql is not None), key=lambda n: (-n.mean, n.id))
            for n in sql_nodes:
                task.candidates.append(Candidate(sql=n.sql or "", origin=self.origin, schema_view=self.env.views(task)[0].name,
                                                 meta={"mcts": {"node": n.id, "path": [p.action for p in tree.path(n)][1:],
                                                                "visits": n.visits, "value": round(n.mean, 4),
                                                                "reward": n.reward, "status": n.status},
                                                       "decoding": self.decoding.mode,
                                                       "tree": str(tree_file.relative_to(self.env.run_dir)) if tree_file else None}))
            if not sql_nodes:
                task.candidates.append(Candidate(sql="", origin=self.origin, meta={"mcts": {"node": None}}))


def _tree_json(tree: Tree) -> dict[str, Any]:
    out = tree.to_dict()
    for n in out["nodes"]:
        n["mean"] = round(n["value"] / n["visits"], 4) if n["visits"] else None
    return out


