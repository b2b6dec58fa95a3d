"""Zero-shot generation: one chat prompt per (question, schema view), SQL extracted from the reply."""

from __future__ import annotations

import dataclasses

from t2s.artifacts import Artifact
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.generation import ContextLimits, parse_sql, sql_request
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import Generator
from t2s.types import Candidate, Task


class ZeroShotGenerator(Generator):
    """Zero-shot generator: the schema view in the run's `schema_format`, the question (and BIRD evidence).

    Whatever earlier stages found is added to the prompt when present (retrieved values, few-shot examples,
    probe findings), worded by the prompt template's blocks, so the same generator serves every ablation. One request
    per schema view and question, `n` completions each, all questions of a batch sent to the LLM as one batch. Each
    candidate records the prompt id (`zero_shot_v1`), the raw completion and why generation stopped
    (`finish_reason`) and the decoding mode in its metadata. Implements the baseline of seed 003 (versioned prompt
    templates, schema serialization, SQL extracted from the model's answer) that every other generator is compared
    with. `decoding` (conf/decoding/, `${decoding}` by default): free, or the answer constrained to one SELECT of the
    database's grammar (`t2s.decoding`), in a ```sql fence or alone (the two forms `parse_sql` reads).
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        prompt: str = "zero_shot_v1",
        dialect: str = "SQLite",
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        use_evidence: bool = True,
        max_values: int = 20,
        max_examples: int = 5,
        max_findings: int = 5,
        decoding: Decoding | str | None = None,
    ) -> None:
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        # the answer ends at the closing code fence the prompt asks for (no tokens spent on prose after it)
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n,
                                stop_after_fence=True)
        self.limits = ContextLimits(use_evidence=use_evidence, max_values=max_values, max_examples=max_examples,
                                    max_findings=max_findings)
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding)

    def requests(self, tasks: list[Task]) -> list[tuple[Task, str, LLMRequest]]:
        """One request per (task, schema view), with the run's seed driving sampling."""
        params = dataclasses.replace(self.params, seed=self.env.seed)
        out = []
        for task in tasks:
            # the fenced query or the query alone: `parse_sql` reads both, and the embedded 0.5B model answers about
            # half the questions without the fence its prompt asks for; forcing the fence changed those answers
            constraint = answer_constraint(self.env, task.example, self.decoding, bare=True, label=self.origin)
            task_params = constrained(params, constraint)
            out += [(task, view.name, instructed(sql_request(self.template, task, view, task_params,
                                                             dialect=self.dialect, limits=self.limits), self.decoding))
                    for view in self.env.views(task)]
        return out

    def run(self, tasks: list[Task]) -> None:
        planned = self.requests(tasks)
        responses = self.env.generate(self.llm_name, [(task, req) for task, _, req in planned])
        for (task, view_name, _), response in zip(planned, responses):
            reasons = list(getattr(response, "finish_reasons", None) or [])
            for i, text in enumerate(response.texts):
                task.candidates.append(Candidate(
                    sql=parse_sql(text), origin=self.origin, schema_view=view_name,
                    meta={"prompt": self.template.id, "raw": text, "decoding": self.decoding.mode,
                          "finish_reason": reasons[i] if i < len(reasons) else None},
                ))
