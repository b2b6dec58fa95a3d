"""Profile-enriched schema: any base format, its columns described by the database profile."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from t2s.context.profile import SUMMARY_MODES, SUMMARY_PROMPT, DatabaseProfile, ProfileArtifact, enrich_schema
from t2s.db.types import DatabaseSchema
from t2s.stages import SchemaFormat

if TYPE_CHECKING:
    from t2s.artifacts import Artifact
    from t2s.env import Env


class ProfiledFormat(SchemaFormat):
    """A base schema format (`base`, any `SchemaFormat`, composed by config) whose columns carry the database
    profile (the profiling metadata of "Automatic Metadata Extraction for Text-to-SQL", arXiv 2505.19988: "DDL
    Schema" with summary comments and example values, "Markdown Schema" with summaries).

    Before `base` renders a schema, each column's description becomes: the dataset's description and value notes
    (`descriptions`; BIRD `database_description/*.csv`, or `tables_json`), the LLM summary (`summary`: "short",
    "long" or "none"; written offline by `summary_llm` when set, null for none), and a statistics note (`stats`:
    distinct count, nulls, range, main value shape); its samples become the `max_samples` most frequent values
    (`top_values`; else the introspected first values). The profile is the `profile` artifact
    (`t2s.context.profile.ProfileArtifact`, parameters `top_k`, `exact_distinct_limit`, `scan_rows`, `num_perm`),
    built once per database by `t2s prepare` or on first use. Without a profile (`format(schema)`, e.g. a caller
    that has no database) it renders like `base`.
    """

    def __init__(self, *, base: SchemaFormat, summary: str = "short", descriptions: bool = True, stats: bool = True,
                 top_values: bool = True, max_samples: int = 3, summary_llm: str | None = None,
                 summary_prompt: str = SUMMARY_PROMPT, tables_json: str | None = None, top_k: int = 10,
                 exact_distinct_limit: int = 200_000, scan_rows: int = 10_000, num_perm: int = 64) -> None:
        if not isinstance(base, SchemaFormat):
            raise TypeError(f"schema_format.base must be a schema format (a `_target_` under plugins/schema_format/), "
                            f"got {type(base).__name__}")
        if summary not in SUMMARY_MODES:
            raise ValueError(f"schema_format.summary must be one of {SUMMARY_MODES}, got {summary!r}")
        if summary != "none" and summary_llm is None and not (descriptions or stats):
            raise ValueError("schema_format: summary needs summary_llm (or enable descriptions / stats)")
        self.base, self.summary, self.descriptions, self.stats = base, summary, descriptions, stats
        self.top_values, self.max_samples = top_values, max_samples
        self.summary_llm, self.summary_prompt, self.tables_json = summary_llm, summary_prompt, tables_json
        self.profile_args: dict[str, Any] = {"top_k": top_k, "exact_distinct_limit": exact_distinct_limit,
                                             "scan_rows": scan_rows, "num_perm": num_perm}
        self._spec: ProfileArtifact | None = None

    def artifacts(self, env: Env) -> list[Artifact]:
        if self._spec is None:
            self._spec = ProfileArtifact.for_env(env, summary_llm=self.summary_llm, summary_prompt=self.summary_prompt,
                                                 tables_json=self.tables_json, **self.profile_args)
        return [self._spec]

    def format(self, schema: DatabaseSchema) -> str:
        return self.base.format(schema)

    def format_with(self, schema: DatabaseSchema, loaded: list[Any]) -> str:
        profile: DatabaseProfile = loaded[0]
        return self.base.format(enrich_schema(schema, profile, summary=self.summary, descriptions=self.descriptions,
                                              stats=self.stats, top_values=self.top_values,
                                              max_samples=self.max_samples))
