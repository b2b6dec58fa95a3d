"""Zero-shot generation: one chat prompt per (question, schema view), SQL extracted from the reply."""

from __future__ import annotations

import dataclasses
import json

from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.sql.extract import extract_sql
from t2s.stages import Generator
from t2s.types import Candidate, Task


class ZeroShotGenerator(Generator):
    """Zero-shot generator: the schema view in the run's `schema_format`, the question (and BIRD evidence).

    Whatever earlier stages found is added to the prompt when present (retrieved values, few-shot examples,
    probe findings), so the same generator serves every ablation. One request per schema view and question,
    `n` completions each, all questions of a batch sent to the LLM as one batch. Each candidate records the
    prompt id (`zero_shot_v1`) and the raw completion in its metadata. Implements the baseline of seed 003
    (versioned prompt templates, schema serialization, SQL extracted from the model's answer) that every other
    generator is compared with.
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
    ) -> None:
        self.llm_name = llm
        self.template = load_prompt(prompt)
        self.dialect = dialect
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=n)
        self.use_evidence = use_evidence
        self.max_values = max_values
        self.max_examples = max_examples
        self.max_findings = max_findings

    def _blocks(self, task: Task) -> dict[str, str]:
        ex = task.example
        values = task.values[: self.max_values]
        examples = task.examples[: self.max_examples]
        findings = task.findings[: self.max_findings]
        return {
            "evidence_block": f"\nEvidence: {ex.evidence}\n" if self.use_evidence and ex.evidence else "",
            "values_block": (
                "\nDatabase values that match the question:\n"
                + "\n".join(f"- {v['table']}.{v['column']} = {json.dumps(v['value'], ensure_ascii=False)}" for v in values)
                + "\n"
            ) if values else "",
            "examples_block": (
                "\nExamples:\n"
                + "\n".join(f"Question: {e['question']}\nSQL: {e['sql']}" for e in examples)
                + "\n"
            ) if examples else "",
            "findings_block": (
                "\nWhat exploration queries showed:\n"
                + "\n".join(f"- {f.get('note') or f['sql']}" for f in findings)
                + "\n"
            ) if findings else "",
        }

    def run(self, tasks: list[Task]) -> None:
        llm = self.env.llm(self.llm_name)
        params = dataclasses.replace(self.params, seed=self.env.seed)  # the run's seed drives sampling
        requests: list[LLMRequest] = []
        owners: list[tuple[Task, str]] = []
        for task in tasks:
            blocks = self._blocks(task)
            for view in self.env.views(task):
                messages = self.template.render(
                    dialect=self.dialect, schema=view.text, question=task.example.question, **blocks
                )
                requests.append(LLMRequest.chat(messages, params))
                owners.append((task, view.name))
        for (task, view_name), response in zip(owners, llm.generate(requests)):
            task.charge_llm(response)
            for text in response.texts:
                task.candidates.append(Candidate(
                    sql=extract_sql(text), origin=self.origin, schema_view=view_name,
                    meta={"prompt": self.template.id, "raw": text},
                ))
