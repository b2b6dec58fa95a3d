"""rStar self-evolution rows from the search trees of a `generator=mcts` run ("rStar-Math: Small LLMs Can Master Math
Reasoning with Self-Evolved Deep Thinking", arXiv 2501.04519), as `t2s.train.rows.RowBuilder`s:

- `mcts_step` (`PolicyStepRows`, `conf/train/rows/mcts_step.yaml`): each step of the best `pairs_per_question`
  correct trajectories, in the exact search prompt that produced it -> its text;
- `ppm_step` (`PreferenceStepRows`, `ppm_step.yaml`): sibling reasoning steps -> "Yes" (leads to a correct SQL) /
  "No" (only to wrong SQL), balanced.

`train.data.predictions` is the run directory; its `config.yaml` gives the search prompts (`SearchPrompts`, the code
the generator calls) and each candidate's `meta` where it sits in its saved tree. Step values are backed up from the
gold verdicts (`gold_values`), as rStar does on training questions. The rows use the training config's schema format,
which must be the run's (the `rstar` recipe, `rstar.py`, makes it so).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from t2s_plugins.generator.mcts.prompts import SearchPrompts, SearchStep

from t2s.db.types import SchemaView
from t2s.train.rows import Messages, RowBuilder, RowContext, RowSettings, TrainRow, sql_completion
from t2s.types import Example

#: the generator settings the search prompts are built from, with the generator's defaults
SEARCH_DEFAULTS = {"step_prompt": "mcts_step_v1", "sql_prompt": "mcts_sql_v1", "revise_prompt": "mcts_revise_v1",
                   "ppm_prompt": "mcts_ppm_v1", "dialect": "SQLite", "use_evidence": True}


def is_mcts(generator: Any) -> bool:
    """Whether a generator config is the MCTS generator's (the one that saves search trees)."""
    return str((generator or {}).get("_target_", "")).endswith("MCTSGenerator")


def search_generator(run_dir: Path) -> Any:
    """The generator config of a run directory made by the MCTS generator, or None for any other run."""
    cfg_file = Path(run_dir) / "config.yaml"
    gen = OmegaConf.load(cfg_file).get("generator") if cfg_file.is_file() else None
    return gen if is_mcts(gen) else None


def search_ref(cand: dict[str, Any]) -> dict[str, Any]:
    """Where a pool candidate sits in its saved tree: {"node": id, "tree": path relative to the run} (or {})."""
    meta = cand.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("mcts"), dict) or meta["mcts"].get("node") is None:
        return {}
    return {"node": int(meta["mcts"]["node"]), "tree": meta.get("tree")}


def root_sql(prompts: SearchPrompts, ex: Example, view: SchemaView) -> Messages:
    """The search's SQL prompt at the root (no reasoning steps yet)."""
    return prompts.messages("sql", schema=view.text, question=ex.question, evidence=ex.evidence,
                            path=[SearchStep("root", "")])


def gold_values(nodes: list[dict[str, Any]], correct: dict[int, bool]) -> dict[int, float]:
    """Q-values of a search tree's nodes backed up from gold verdicts instead of the search's execution reward (what
    rStar's self-evolution does on training questions): Q(n) = the visit-weighted share of correct SQL nodes in
    n's subtree (n included). Nodes without a judged SQL node below them get no value."""
    by_id = {int(n["id"]): n for n in nodes}
    num: Counter[int] = Counter()
    den: Counter[int] = Counter()
    for nid, ok in correct.items():
        if nid not in by_id:
            continue
        node = by_id[nid]  # its own backups: a revised SQL's visits include its revision's
        own = int(node.get("visits") or 0) - sum(int(by_id[int(k)].get("visits") or 0) for k in node.get("children") or []
                                                  if int(k) in by_id)
        w = max(1, own)
        cur: int | None = nid
        while cur is not None:
            num[cur] += w * int(ok)
            den[cur] += w
            parent = by_id[cur].get("parent")
            cur = None if parent is None else int(parent)
    return {nid: num[nid] / den[nid] for nid in den}


class _SearchRows(RowBuilder):
    """What both kinds share: the run's search prompts (read once from its `config.yaml`) and a question's tree."""

    def __init__(self) -> None:
        self._search: tuple[Path, SearchPrompts] | None = None

    def search(self, data: RowSettings) -> tuple[Path, SearchPrompts]:
        """The run directory of `predictions` and the search prompts of its `generator=mcts` config."""
        if self._search is None:
            run_dir = data.run_dir
            if run_dir is None:
                raise ValueError("train.data.tasks [mcts_step, ppm_step] read the search trees of a `t2s run "
                                 "generator=mcts`: set train.data.predictions=<that run's directory>")
            gen = search_generator(run_dir)
            if gen is None:
                raise ValueError(f"train.data.predictions={data.predictions}: {run_dir / 'config.yaml'} is not the "
                                 f"config of a `t2s run generator=mcts` run, so it has no search trees for "
                                 f"['mcts_step', 'ppm_step']")
            prompts = SearchPrompts(actions=list(gen.get("actions") or ["values", "plan"]),
                                    **{k: gen.get(k, v) for k, v in SEARCH_DEFAULTS.items()})
            self._search = (run_dir, prompts)
        return self._search

    def tree(self, ctx: RowContext) -> tuple[SearchPrompts, list[dict[str, Any]] | None, dict[int, bool]]:
        """(search prompts, the question's saved tree nodes or None without one, node id -> gold verdict)."""
        run_dir, prompts = self.search(ctx.data)
        refs = [(c, search_ref(c)) for c in ctx.pool]
        ref = next((r for _, r in refs if r.get("tree")), None)
        if ref is None or not (run_dir / str(ref["tree"])).is_file():
            return prompts, None, {}
        nodes = json.loads((run_dir / str(ref["tree"])).read_text())["nodes"]
        correct = {int(r["node"]): bool(c["correct"]) for c, r in refs if r.get("node") is not None}
        return prompts, nodes, correct

    def fields(self, ctx: RowContext) -> dict[str, str]:
        ex = ctx.example
        return {"schema": ctx.view.text, "question": ex.question, "evidence": ex.evidence}


def _path(by_id: dict[int, dict[str, Any]], nid: int) -> list[dict[str, Any]]:
    """The nodes from the root to `nid`."""
    out = [by_id[nid]]
    while out[-1].get("parent") is not None:
        out.append(by_id[int(out[-1]["parent"])])
    return out[::-1]


def _steps(path: list[dict[str, Any]]) -> list[SearchStep]:
    return [SearchStep.of(n) for n in path]


class PolicyStepRows(_SearchRows):
    """`mcts_step`: every step on the best `pairs_per_question` paths that end in a correct SQL (ranked by the mean Q
    of their steps, as rStar keeps its top trajectories), each as the exact search prompt that produced it -> the
    node's text (SQL nodes in a ```sql block); a wrong SQL that a revise step repaired is context, not a target.
    With `include_gold`, a question without a correct path (or without a tree) gets the gold SQL as the root's `sql`
    step. Validation EX asks the search's root SQL prompt, the prompt the policy learns."""

    trains_sql = True

    def validation_prompt(self, ex: Example, view: SchemaView, data: RowSettings) -> Messages | None:
        return root_sql(self.search(data)[1], ex, view)

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        prompts, nodes, correct = self.tree(ctx)
        if nodes is None:
            return self._gold_step(ctx, prompts) if ctx.data.include_gold else []
        by_id = {int(n["id"]): n for n in nodes}
        q = gold_values(nodes, correct)
        ends = [n for n in nodes if correct.get(int(n["id"])) and n.get("sql")]

        def rank(n: dict[str, Any]) -> tuple[float, int, int]:  # mean Q over the path's steps (root excluded)
            qs = [q.get(int(p["id"]), 0.0) for p in _path(by_id, int(n["id"]))[1:]]
            return (-sum(qs) / len(qs), -int(n.get("visits") or 0), int(n["id"]))

        fields = self.fields(ctx)
        kept: dict[int, TrainRow] = {}
        for end in sorted(ends, key=rank)[: ctx.data.pairs_per_question]:
            p = _path(by_id, int(end["id"]))
            for i, n in enumerate(p[1:], start=1):
                nid = int(n["id"])
                if nid in kept or (n.get("sql") is not None and nid != int(end["id"])):
                    continue  # shared prefix already kept; a failed SQL that a revise step repaired is context
                target = sql_completion(n["sql"]) if n.get("sql") is not None else str(n.get("text") or "").strip()
                msgs = prompts.messages(str(n["action"]), **fields, path=_steps(p[:i]))
                template = {"sql": prompts.sql, "revise": prompts.revise}.get(str(n["action"]), prompts.step)
                kept[nid] = self.row(ctx, msgs, target, prompt=template.id, action=n["action"], node=nid,
                                     q=round(q.get(nid, 0.0), 4), source="search")
        if not kept and ctx.data.include_gold:
            return self._gold_step(ctx, prompts)
        return list(kept.values())

    def _gold_step(self, ctx: RowContext, prompts: SearchPrompts) -> list[TrainRow]:
        ex = ctx.example
        return [self.row(ctx, root_sql(prompts, ex, ctx.view), sql_completion(ex.gold_sql or ""),
                         prompt=prompts.sql.id, action="sql", source="gold")]


class PreferenceStepRows(_SearchRows):
    """`ppm_step`: process-preference rows, rStar's step pairs made pointwise for a Yes/No PPM: among sibling
    reasoning steps, up to two that lead to a correct SQL (highest Q) -> "Yes" and as many that lead only to wrong
    SQL -> "No" (the wrong steps the search itself valued most first: hard negatives)."""

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        prompts, nodes, correct = self.tree(ctx)
        if nodes is None:
            return []
        by_id = {int(n["id"]): n for n in nodes}
        q = gold_values(nodes, correct)
        fields = self.fields(ctx)
        out: list[TrainRow] = []
        for parent in nodes:
            kids = [by_id[int(k)] for k in parent.get("children") or []]
            kids = [k for k in kids if k["action"] in prompts.actions and int(k["id"]) in q]
            pos = sorted((k for k in kids if q[int(k["id"])] > 0), key=lambda k: (-q[int(k["id"])], int(k["id"])))
            neg = sorted((k for k in kids if q[int(k["id"])] == 0),
                         key=lambda k: (-float(k.get("mean") or 0.0), -int(k.get("visits") or 0), int(k["id"])))
            m = min(2, len(pos), len(neg))
            for k, label in [*[(k, "Yes") for k in pos[:m]], *[(k, "No") for k in neg[:m]]]:
                out.append(self.row(ctx, prompts.ppm_messages(**fields, path=_steps(_path(by_id, int(k["id"])))),
                                    label, prompt=prompts.ppm.id, node=int(k["id"]), q=round(q[int(k["id"])], 4)))
        return out
