"""LSH value retriever: question keywords -> MinHashLSH over cell values -> re-ranked `table.column = value`."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from t2s.context.values import (
    ValueHit,
    ValueIndex,
    ValueIndexArtifact,
    parse_keywords,
    question_ngrams,
    quoted_spans,
)
from t2s.llm.base import GenParams, LLMRequest
from t2s.prompts import load_prompt
from t2s.stages import ValueRetriever
from t2s.types import CellValue, Task

KEYWORD_MODES = ("ngrams", "llm", "both")
RERANK_MODES = ("edit", "embedding")


class LSHValueRetriever(ValueRetriever):
    """Cell values matched to the question through a MinHash LSH index (keywords extracted from the question, then
    cell retrieval: the value retrieval of "CHASE-SQL: Multi-Path Reasoning and Preference Optimized Candidate
    Selection in Text-to-SQL", arXiv 2410.01943).

    Keywords (`keywords`): "ngrams" (default, no model: word 1..`max_ngram`-grams of the question that neither
    start nor end with a stopword, plus quoted spans of the question and evidence), "llm" (the LLM `keyword_llm`
    lists the literals, one batched call per batch of questions, prompt `prompt`; quoted spans are added), or "both".
    Each keyword queries the database's `value_index` artifact (`t2s.context.values`); candidates are re-ranked by
    `rerank`: "edit" (rapidfuzz ratio of the lower-cased strings, 0..1) or "embedding" (cosine of the `embedder`'s
    vectors, mapped to 0..1). A value is kept when its best score over the keywords is at least `min_score`; at most
    `per_keyword` values per keyword, and the `top_k` best values per question (ties: longer keyword, then
    table.column) go into `task.values` with `origin` = this option and the score.
    """

    def __init__(self, *, keywords: str = "ngrams", keyword_llm: str = "generator", prompt: str = "value_keywords_v1",
                 max_ngram: int = 3, rerank: str = "edit", embedder: str = "default", min_score: float = 0.8,
                 per_keyword: int = 3, top_k: int = 10, shingle: int = 3, num_perm: int = 64, threshold: float = 0.3,
                 max_values_per_column: int = 100_000, max_value_chars: int = 80) -> None:
        if keywords not in KEYWORD_MODES:
            raise ValueError(f"value_retriever.keywords must be one of {KEYWORD_MODES}, got {keywords!r}")
        if rerank not in RERANK_MODES:
            raise ValueError(f"value_retriever.rerank must be one of {RERANK_MODES}, got {rerank!r}")
        if max_ngram < 1 or per_keyword < 1 or top_k < 0:
            raise ValueError(f"value_retriever needs max_ngram >= 1, per_keyword >= 1, top_k >= 0 "
                             f"(got {max_ngram}, {per_keyword}, {top_k})")
        self.keywords, self.keyword_llm, self.max_ngram = keywords, keyword_llm, max_ngram
        self.template = load_prompt(prompt) if keywords != "ngrams" else None
        self.rerank, self.embedder, self.min_score = rerank, embedder, min_score
        self.per_keyword, self.top_k = per_keyword, top_k
        self.index = ValueIndexArtifact(shingle=shingle, num_perm=num_perm, threshold=threshold,
                                        max_values_per_column=max_values_per_column, max_value_chars=max_value_chars)

    def artifacts(self) -> list[Any]:
        return [self.index]

    def _keywords(self, tasks: list[Task]) -> list[list[str]]:
        out = []
        for t in tasks:
            quoted = quoted_spans(t.example.question) + quoted_spans(t.example.evidence)
            grams = question_ngrams(t.example.question, self.max_ngram) if self.keywords != "llm" else []
            out.append(quoted + grams)
        if self.template is not None:
            reqs = [(t, LLMRequest.chat(self.template.render(
                question=t.example.question, evidence=f"Evidence: {t.example.evidence}" if t.example.evidence else ""),
                GenParams(max_new_tokens=64))) for t in tasks]
            for kws, resp in zip(out, self.env.generate(self.keyword_llm, reqs)):
                kws += [k for k in parse_keywords(resp.text) if k.lower() != "none"]
        return [list(dict.fromkeys(k for k in kws if k.strip())) for kws in out]

    def _hits(self, index: ValueIndex, keywords: list[str]) -> list[ValueHit]:
        if self.rerank == "edit":
            return [h for kw in keywords for h in index.lookup(kw, min_score=self.min_score, limit=self.per_keyword)]
        pairs = [(kw, i) for kw in keywords for i in index.candidates(kw)]
        if not pairs:
            return []
        texts = list(dict.fromkeys([kw for kw, _ in pairs] + [index.values[i][2] for _, i in pairs]))
        vecs = dict(zip(texts, self.env.embed(self.embedder, texts)))
        by_kw: dict[str, list[ValueHit]] = defaultdict(list)
        for kw, i in pairs:
            table, column, value = index.values[i]
            score = (float(vecs[kw] @ vecs[value]) + 1.0) / 2.0
            if score >= self.min_score:
                by_kw[kw].append(ValueHit(table, column, value, kw, score))
        return [h for hits in by_kw.values()
                for h in sorted(hits, key=lambda h: (-h.score, len(h.value), h.table, h.column))[: self.per_keyword]]

    def run(self, tasks: list[Task]) -> None:
        for task, keywords in zip(tasks, self._keywords(tasks)):
            index = self.env.artifact(self.index, task.example)
            best: dict[tuple[str, str, str], ValueHit] = {}
            for h in self._hits(index, keywords):
                key = (h.table, h.column, h.value)
                if key not in best or (h.score, len(h.keyword)) > (best[key].score, len(best[key].keyword)):
                    best[key] = h
            ranked = sorted(best.values(), key=lambda h: (-h.score, -len(h.keyword), h.table, h.column, h.value))
            task.values = [CellValue(table=h.table, column=h.column, value=h.value, score=round(h.score, 4),
                                     origin=self.origin) for h in ranked[: self.top_k]]
