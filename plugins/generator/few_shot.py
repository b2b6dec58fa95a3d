"""Few-shot (in-context learning) generation with retrieved examples (seed 004, op 7, generator C "ICL")."""

from __future__ import annotations

import dataclasses

from t2s.artifacts import Artifact
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.generation import ContextLimits, parse_sql, sql_request
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import Generator
from t2s.types import Candidate, Task

#: finding statuses the prompt shows
SHOWN_FINDINGS = ("ok", "empty", "error")


class FewShotGenerator(Generator):
    """In-context learning: the retrieved examples (`task.examples`, e.g. from `example_retriever=skeleton_knn`),
    then the schema view, matched values, probe findings and evidence, then the question, in its own versioned
    prompt (`few_shot_v1`).

    Seed 004, operation 7, generator C: "few-shot examples X_fs ... structurally similar solved question-SQL pairs",
    here with the run's LLM. Up to `max_examples` examples are shown, in the retriever's order or, with
    `nearest_last` (default), reversed so the most similar example sits right before the schema and question. With
    no examples (retriever off) the prompt has no examples block and this is a zero-shot generator with other
    wording. One request per (question, schema view), `n` completions each, the batch sent to the LLM at once;
    each candidate records the prompt id, the example sources it saw, the raw completion, the finish reason and the
    decoding mode. `decoding` (conf/decoding/, `${decoding}` by default): free, or the answer constrained to one
    SELECT of the database's grammar (`t2s.decoding`), in a ```sql fence or alone (the two forms `parse_sql` reads).
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        prompt: str = "few_shot_v1",
        dialect: str = "SQLite",
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        use_evidence: bool = True,
        max_values: int = 20,
        max_examples: int = 5,
        max_findings: int = 5,
        nearest_last: bool = True,
        decoding: Decoding | str | None = None,
    ) -> None:
        if max_examples < 0:
            raise ValueError(f"generator.max_examples must be >= 0, got {max_examples}")
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n)
        self.limits = ContextLimits(use_evidence=use_evidence, max_values=max_values, max_examples=max_examples,
                                    max_findings=max_findings)
        self.nearest_last = nearest_last
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    def shown(self, task: Task) -> Task:
        """The task as the prompt shows it: its first `max_examples` examples, reversed with `nearest_last`; only the
        findings of probes that ran (status ok, empty or error: a malformed or rejected reply tells the generator
        nothing about the data)."""
        examples = task.examples[: self.limits.max_examples]
        if self.nearest_last:
            examples = examples[::-1]
        findings = [f for f in task.findings if f.sql and f.status in SHOWN_FINDINGS]
        return dataclasses.replace(task, examples=examples, findings=findings)

    def requests(self, tasks: list[Task]) -> list[tuple[Task, str, LLMRequest]]:
        """One request per (task, schema view), with the run's seed driving sampling."""
        params = dataclasses.replace(self.params, seed=self.env.seed)
        out = []
        for task in tasks:
            # the fenced query or the query alone: `parse_sql` reads both, and the embedded 0.5B model answers about
            # half the questions without the fence its prompt asks for; forcing the fence changed those answers
            constraint = answer_constraint(self.env, task.example, self.decoding, bare=True, label=self.origin)
            task_params = constrained(params, constraint)
            shown = self.shown(task)
            out += [(task, view.name, instructed(sql_request(self.template, shown, view, task_params,
                                                             dialect=self.dialect, limits=self.limits), self.decoding))
                    for view in self.env.views(task)]
        return out

    def run(self, tasks: list[Task]) -> None:
        planned = self.requests(tasks)
        responses = self.env.generate(self.llm_name, [(task, req) for task, _, req in planned])
        for (task, view_name, _), response in zip(planned, responses):
            reasons = list(getattr(response, "finish_reasons", None) or [])
            sources = [e.source for e in task.examples[: self.limits.max_examples]]
            for i, text in enumerate(response.texts):
                task.candidates.append(Candidate(
                    sql=parse_sql(text), origin=self.origin, schema_view=view_name,
                    meta={"prompt": self.template.id, "examples": sources, "raw": text, "decoding": self.decoding.mode,
                          "finish_reason": reasons[i] if i < len(reasons) else None},
                ))
