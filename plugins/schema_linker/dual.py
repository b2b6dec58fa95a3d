"""Dual schema linker: faiss pre-filter, then two LLM column-selection passes giving a precise S1 and a wider S2."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from t2s.artifacts import Artifact
from t2s.context.column_choice import ColumnChoice, column_choice_request, parse_column_choice
from t2s.context.fields import Field, FieldIndexArtifact
from t2s.context.linking import prune
from t2s.decoding import Decoding, choice_list_constraint, constrained, qualified_names
from t2s.llm.base import Constraint, GenParams
from t2s.prompts import load_prompt
from t2s.records import StageLog
from t2s.stages import SchemaLinker
from t2s.types import Task

if TYPE_CHECKING:
    from t2s.env import Env

log = logging.getLogger("t2s")


class DualSchemaLinker(SchemaLinker):
    """Dual schema linker: XiYan-SQL's iterative column selection (arXiv 2411.08599), a precise S1 and a recall S2.

    1. Pre-filter: the `prefilter_k` columns of the database's field index most similar to the question (no LLM).
    2. Pass 1 (`s1_prompt`): the LLM `llms.<llm>` picks the needed columns among them -> S1, closed under primary
       keys, foreign keys and join paths (`t2s.context.linking.join_closure`).
    3. Pass 2 (`s2_prompt`): the pass-1 columns are shown as selected and removed from the candidates; the LLM picks
       more from the rest -> S2 = S1 + those, closed the same way. So S2 always contains S1.

    Two views, "S1" and "S2", go into `task.schemas`; a generator makes one candidate per view (zero_shot tags each
    with its view). A reply that names no candidate column (junk) never fails the question: pass 1 falls back to the
    whole pre-filtered set (S1 = S2 = pre-filter, and pass 2 is skipped), pass 2 falls back to S1 + the pre-filtered
    set. An explicit "NONE" in pass 2 (or a reply repeating only pass-1 columns) leaves S2 = S1. When pass 1 leaves no candidate, pass 2 is not asked. At most
    2 LLM calls per question, all questions of a batch in one LLM batch per pass. What happened per question
    (ok / fallback / none / skipped) is kept in `outcomes` (qid -> {"s1": ..., "s2": ...}) and logged as counts; the
    model's replies in `replies` (qid -> {"s1": text, "s2": text}). For error analysis, each question's outcomes,
    pre-filtered candidates, pass-1 columns, pass-2 additions, the two views' columns after the closure and the
    replies go to `<run_dir>/schema_linking/<option>.jsonl` (`t2s.records.StageLog`).

    `decoding` (conf/decoding/, `${decoding}` by default): free, or under `sql` / `sql_strict` each reply constrained
    to the form `parse_column_choice` reads: candidate `table.column`s (names in any case, "" around a name that is
    not plain), one per line as the prompts ask or comma-separated on a line as the 0.5B model writes them, at least
    one and at most as many as there are candidates, nothing else; pass 2 may instead say NONE. (Held to lines only,
    the 0.5B stopped after its first name, where it wanted a comma: S1 kept 2.3 columns instead of 5.0 on the fixed
    sample, and all the gold columns on 21 % of questions instead of 44 %.) The prompts ask for lines, not JSON, so the
    constraint is a grammar of that list rather than a JSON schema (which would force a form the prompt does not
    show). Both modes constrain alike; the constraint needs no SQL grammar.
    """

    def __init__(self, *, llm: str = "generator", embedder: str = "default", prefilter_k: int = 30,
                 s1_prompt: str = "dual_link_s1_v1", s2_prompt: str = "dual_link_s2_v1", max_new_tokens: int = 128,
                 temperature: float = 0.0, samples: int = 2, paths: bool = True, use_evidence: bool = True,
                 decoding: Decoding | str | None = None) -> None:
        if prefilter_k < 1:
            raise ValueError(f"schema_linker.prefilter_k must be >= 1 (got {prefilter_k}): candidate columns per question")
        self.llm_name = llm
        self.embedder = embedder
        self.prefilter_k = prefilter_k
        self.s1_template = load_prompt(s1_prompt)
        self.s2_template = load_prompt(s2_prompt)
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature)
        self.samples = samples
        self.paths = paths
        self.use_evidence = use_evidence
        self.index_spec = FieldIndexArtifact(embedder=embedder, samples=3)
        self.decoding = Decoding.of(decoding)
        self.outcomes: dict[str, dict[str, str]] = {}
        self.replies: dict[str, dict[str, str]] = {}

    def artifacts(self) -> list[Artifact]:
        return [self.index_spec]

    def setup(self, env: Env) -> None:
        super().setup(env)
        self.index_spec.bind(env)

    def prefilter(self, tasks: list[Task]) -> list[list[Field]]:
        """The `prefilter_k` candidate fields of each question, most similar first."""
        texts = [f"{t.example.question} {t.example.evidence}".strip() if self.use_evidence and t.example.evidence
                 else t.example.question for t in tasks]
        vectors = self.env.embed(self.embedder, texts)
        return [[f for f, _ in self.env.artifact(self.index_spec, t.example).rank(v, self.prefilter_k)]
                for t, v in zip(tasks, vectors)]

    def reply_constraint(self, fields: list[Field], pass_name: str) -> Constraint | None:
        """The constraint of a pass's reply over candidate `fields` (None under free decoding; see the class
        docstring)."""
        if self.decoding.free or not fields:
            return None
        by_table: dict[str, list[str]] = {}
        for f in fields:
            by_table.setdefault(f.table, []).append(f.column)
        return choice_list_constraint(qualified_names(by_table, quote='"'), most=len(fields),
                                      empty="NONE" if pass_name == "s2" else None,
                                      name=f"{self.origin}:{pass_name}:{self.decoding.mode}")

    def _ask(self, template: Any, items: list[tuple[Task, list[Field], list[tuple[str, str]]]],
             pass_name: str) -> list[ColumnChoice]:
        params = dataclasses.replace(self.params, seed=self.env.seed)
        reqs = [(t, column_choice_request(template, t, self.env.schema(t.example), fields,
                                          constrained(params, self.reply_constraint(fields, pass_name)),
                                          selected=selected, use_evidence=self.use_evidence, samples=self.samples))
                for t, fields, selected in items]
        responses = self.env.generate(self.llm_name, reqs)
        for (t, _, _), r in zip(items, responses):
            self.replies.setdefault(t.qid, {})[pass_name] = r.text
        return [parse_column_choice(r.text, fields, selected) for r, (_, fields, selected) in zip(responses, items)]

    def run(self, tasks: list[Task]) -> None:
        if not tasks:
            return
        candidates = self.prefilter(tasks)
        first = self._ask(self.s1_template, [(t, c, []) for t, c in zip(tasks, candidates)], "s1")
        s1: list[list[tuple[str, str]]] = []
        second_items: list[tuple[Task, list[Field], list[tuple[str, str]]]] = []
        outcome: dict[str, dict[str, str]] = {}
        for t, cands, sel in zip(tasks, candidates, first):
            ok = sel.status == "ok"
            cols = list(sel.columns) if ok else [(f.table, f.column) for f in cands]
            s1.append(cols)
            chosen = {(a.lower(), b.lower()) for a, b in cols}
            rest = [f for f in cands if f.key not in chosen]
            outcome[t.qid] = {"s1": "ok" if ok else "fallback", "s2": "skipped"}
            if ok and rest:
                second_items.append((t, rest, cols))
        second = dict(zip([t.qid for t, _, _ in second_items], self._ask(self.s2_template, second_items, "s2")))
        added: dict[str, list[tuple[str, str]]] = {}
        for t, cands, cols in zip(tasks, candidates, s1):
            extra: list[tuple[str, str]] = []
            sel2 = second.get(t.qid)
            if sel2 is not None:
                if sel2.status == "junk":
                    extra = [(f.table, f.column) for f in cands]
                    outcome[t.qid]["s2"] = "fallback"
                else:
                    extra = list(sel2.columns)
                    outcome[t.qid]["s2"] = sel2.status
            added[t.qid] = extra
            schema = self.env.schema(t.example)
            t.schemas.append(self.env.view("S1", prune(schema, cols, paths=self.paths)))
            t.schemas.append(self.env.view("S2", prune(schema, cols + extra, paths=self.paths)))
        self.outcomes.update(outcome)
        StageLog(self.env.run_dir, "schema_linking", self.name or "dual").write([
            {"qid": t.qid, "linker": self.origin, "outcome": outcome[t.qid],
             "candidates": [f"{f.table}.{f.column}" for f in cands],
             "s1_columns": [f"{a}.{b}" for a, b in cols],
             "s2_added": [f"{a}.{b}" for a, b in added[t.qid]],
             "views": {v.name: [f"{tb.name}.{c.name}" for tb in v.schema.tables for c in tb.columns]
                       for v in t.schemas[-2:]},
             "replies": self.replies.get(t.qid, {})}
            for t, cands, cols in zip(tasks, candidates, s1)])
        counts = Counter(f"{k}={v}" for o in outcome.values() for k, v in o.items())
        log.info("%s: %s", self.origin, ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
