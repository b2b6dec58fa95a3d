"""SHARE's hierarchical action correction ("SHARE: An SLM-based Hierarchical Action CorREction Assistant for
Text-to-SQL", arXiv 2506.00391): SQL -> action trajectory (BAM) -> schema fix (SAM) -> logic fix (LOM) -> regenerated
SQL.

The action trajectory is SHARE's pandas-like step language, implemented in `trajectory/` beside this module (full
EBNF in that package's docstring, examples in docs/share_trajectory.md). In short, one statement per line,
`target = source.action(...).action(...)`, `df` the database, `res` the answer::

    df1 = df.where(element = singer.Country, filter = 'France')          # WHERE (op = '>' ... for other comparisons)
    df2 = df1.groupby(singer.Age).having(element = count(*), op = '>', filter = 1)
    df3 = df2.orderby(by = count(*), asc = False).limit(3)                # ORDER BY ... DESC LIMIT 3
    res = df3.agg(singer.Age, count(*))                                   # the projection (select(...) without groupby)
    # nested steps: tmp_res1 = df.select(max(singer.Age)), then filter = tmp_res1 (a subquery) or
    # res = tmp_res1.union(tmp_res2) (a set operation); joins come from foreign keys (join(...) only when they do not)

Each step of the chain parses the model's reply strictly (`parse_trajectory`); a reply that does not parse, fills
masks wrongly or names a column the schema lacks keeps the input candidate (never a half-corrected one).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from t2s_plugins.corrector.share.prompts import parse_mask_answers, parse_trajectory_reply
from t2s_plugins.corrector.share.trajectory import (
    MASK_TOKEN,
    Col,
    Join,
    Mask,
    RenderError,
    Trajectory,
    TrajectoryError,
    TranslationError,
    fill_masks,
    format_trajectory,
    mask_schema,
    render_sql,
    sql_to_trajectory,
)
from t2s_plugins.corrector.share.trajectory.grammar import mask_answers_grammar, trajectory_grammar
from t2s_plugins.corrector.share.trajectory.steps import action_nodes, walk_expr

from t2s.artifacts import Artifact
from t2s.db.types import DatabaseSchema
from t2s.decoding import Decoding, answer_constraint, constrained, grammar_artifacts, instructed
from t2s.generation import parse_sql, template_messages
from t2s.llm.base import Constraint, GenParams, LLMRequest
from t2s.prompts import PromptTemplate, load_prompt
from t2s.stages import Corrector
from t2s.types import Task

_QUERY = re.compile(r"\s*(SELECT|WITH)\b", re.I)


def schema_problems(traj: Trajectory, schema: DatabaseSchema) -> list[str]:
    """The table.column and join(table) references of `traj` that `schema` lacks (case-insensitive), and "[MASK]"
    for a mask left in it; columns of result variables (derived tables) are not checked."""
    tables = {t.name.lower(): {c.name.lower() for c in t.columns} for t in schema.tables}
    results = {s.target for s in traj.statements}
    bad: list[str] = []
    for st in traj.statements:
        for a in st.actions:
            if isinstance(a, Join) and isinstance(a.table, str) and a.table.lower() not in tables:
                bad.append(a.table)
            if isinstance(a, Join) and isinstance(a.table, Mask):
                bad.append(MASK_TOKEN)
            for root in action_nodes(a):
                for n in walk_expr(root):
                    if isinstance(n, Mask):
                        bad.append(MASK_TOKEN)
                    elif isinstance(n, Col) and n.table not in results:
                        cols = tables.get(n.table.lower())
                        if cols is None or n.column.lower() not in cols:
                            bad.append(f"{n.table}.{n.column}")
    return list(dict.fromkeys(bad))


@dataclasses.dataclass
class _Item:
    """One distinct candidate SQL of a question going through the chain: the current SQL, the trajectory at each
    step, and why it stopped (`failed`, a short reason) if it did."""

    task: Task
    positions: list[int]
    sql: str
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    traj: Trajectory | None = None
    new_sql: str = ""
    failed: str = ""


class ShareCorrector(Corrector):
    """SHARE corrector (arXiv 2506.00391, sections 3.2-3.5): BAM -> SAM -> LOM -> regenerate.

    For every candidate (identical SQL within a question once): BAM turns the SQL into an action trajectory —
    `translator: deterministic` uses the exact sqlglot translator (`trajectory.sql_to_trajectory`, free;
    with `lenient` (default) a column the schema lacks is kept as written, as the paper's LLM BAM would, so the
    schema error reaches SAM instead of stopping the chain), `translator: llm` asks `bam_llm` (prompt `share_bam_v1`, the paper's BAM); SAM masks every schema reference
    (`mask_schema`) and `sam_llm` fills the masks given the schema and question (`share_sam_v1`); LOM (`lom_llm`,
    `share_lom_v1`) rewrites the trajectory's wrong logic; finally `regenerate: llm` has the generator LLM (`llm`)
    write SQL from the question, its first SQL and the corrected trajectory (`share_regen_v1`), or `regenerate:
    render` renders the trajectory deterministically (`render_sql`, joins from foreign keys, no model call). Each
    model is a named LLM, so a trained adapter takes its place by config (`+llm@llms.sam=... corrector.sam_llm=sam`).
    `use_sam` / `use_lom` switch a step off for ablations. Every step of all questions of a batch is one LLM batch.

    Inference settings follow the seed (temperature 0.1, top_p 0.95). A step whose reply does not parse (or fills
    masks wrongly, or names a table/column the schema lacks, or renders to nothing) keeps the input candidate. The
    paper corrects once (one turn); `rounds` > 1 runs the chain again on its own output (the paper's open question
    on multi-turn correction), stopping when a round changes nothing. A changed candidate is `input.derive(...)`
    with `steps` (each round's trajectories: bam, sam, lom, the SAM answers) and `prompts`; an unchanged one stays.
    Overcorrection (a correct input made wrong; the paper reports 11.2 %) is what `metrics.json["attribution"]`
    measures as `overcorrection_rate`.

    `decoding` (conf/decoding/, `${decoding}` by default): free, or under `sql` / `sql_strict` every model reply
    constrained to the form its parser reads (`trajectory.grammar`): SAM's reply to exactly one numbered reference per
    mask in a ``` fence, each a `table.column` of that table's own columns (or a table, for `join([MASK])`); the
    trajectory of LOM (and of the LLM BAM) to canonical statements in a ``` fence whose `table.column`s are the
    database's; the regeneration to one SELECT of the database's grammar (`t2s.decoding`) in the ```sql fence its prompt
    asks for (the fence only: the grammar's whitespace runs may hold a blank line, where `parse_sql` cuts a bare
    query). Under
    `sql_strict` the regeneration's system message also gets the mode's instruction. Free decoding sends the requests
    it sent before `decoding` existed.
    """

    def __init__(
        self,
        *,
        llm: str = "generator",
        bam_llm: str = "generator",
        sam_llm: str = "generator",
        lom_llm: str = "generator",
        translator: str = "deterministic",
        lenient: bool = True,
        regenerate: str = "llm",
        use_sam: bool = True,
        use_lom: bool = True,
        rounds: int = 1,
        bam_prompt: str = "share_bam_v1",
        sam_prompt: str = "share_sam_v1",
        lom_prompt: str = "share_lom_v1",
        regen_prompt: str = "share_regen_v1",
        dialect: str = "SQLite",
        temperature: float = 0.1,
        top_p: float = 0.95,
        max_new_tokens: int = 512,
        use_evidence: bool = True,
        decoding: Decoding | str | None = None,
    ) -> None:
        if translator not in ("deterministic", "llm"):
            raise ValueError(f"corrector=share: translator must be 'deterministic' or 'llm' (got {translator!r})")
        if regenerate not in ("llm", "render"):
            raise ValueError(f"corrector=share: regenerate must be 'llm' or 'render' (got {regenerate!r})")
        if rounds < 1:
            raise ValueError(f"corrector=share: rounds must be >= 1 (got {rounds}); use corrector=none to skip it")
        self.llm_name, self.bam_llm, self.sam_llm, self.lom_llm = llm, bam_llm, sam_llm, lom_llm
        self.translator, self.regenerate, self.lenient = translator, regenerate, lenient
        self.use_sam, self.use_lom, self.rounds = use_sam, use_lom, rounds
        self.prompts: dict[str, PromptTemplate] = {
            "bam": load_prompt(bam_prompt), "sam": load_prompt(sam_prompt), "lom": load_prompt(lom_prompt),
            "regen": load_prompt(regen_prompt)}
        self.dialect = dialect
        self.params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, n=1)
        self.use_evidence = use_evidence
        self.decoding = Decoding.of(decoding)

    def artifacts(self) -> list[Artifact]:
        """The SQL grammar of each database under constrained decoding (none under free decoding)."""
        return grammar_artifacts(self.decoding) if self.regenerate == "llm" else []

    # ------------------------------------------------------------------ requests

    def reply_constraint(self, step: str, item: _Item, masks: list[str] | None = None) -> Constraint | None:
        """The constraint of `step`'s reply for `item` (None under free decoding): see the class docstring. `masks`:
        SAM's answers to the masked trajectory (their kinds, column or table, shape its reply)."""
        if self.decoding.free:
            return None
        ex = item.task.example
        name = f"{self.origin}:{step}:{self.decoding.mode}:{ex.db_id}"
        if step == "regen":
            return answer_constraint(self.env, ex, self.decoding, label=f"{self.origin}:regen")
        if step == "sam":
            kinds = ["column" if "." in a else "table" for a in masks or []]
            return Constraint.grammar(mask_answers_grammar(kinds, self.env.schema(ex)), name=name)
        return Constraint.grammar(trajectory_grammar(self.env.schema(ex)), name=name)  # bam, lom

    def _request(self, step: str, item: _Item, constraint: Constraint | None = None, **fields: str) -> LLMRequest:
        ex = item.task.example
        cand = item.task.candidates[item.positions[0]]
        views = self.env.views(item.task)
        schema = next((v.text for v in views if v.name == cand.schema_view), views[0].text)
        messages = template_messages(self.prompts[step], schema=schema, question=ex.question, evidence=ex.evidence,
                                     use_evidence=self.use_evidence, dialect=self.dialect, **fields)
        request = LLMRequest.chat(messages, constrained(dataclasses.replace(self.params, seed=self.env.seed), constraint))
        return instructed(request, self.decoding) if step == "regen" else request

    def _ask(self, llm: str, step: str, items: list[_Item], fields: dict[int, dict[str, str]],
             masks: dict[int, list[str]] | None = None) -> list[str]:
        """One LLM batch for `step` over `items` (fields per item index); the reply texts in order."""
        reqs = [(it.task, self._request(step, it, self.reply_constraint(step, it, (masks or {}).get(i)), **fields[i]))
                for i, it in enumerate(items)]
        return [r.text for r in self.env.generate(llm, reqs)]

    # ------------------------------------------------------------------ the chain

    def _bam(self, items: list[_Item]) -> None:
        if self.translator == "deterministic":
            for it in items:
                try:
                    it.traj = sql_to_trajectory(it.sql, self.env.schema(it.task.example), lenient=self.lenient)
                except (TranslationError, TrajectoryError, ValueError) as e:
                    it.failed = f"bam: {str(e)[:200]}"
        else:
            for it, text in zip(items, self._ask(self.bam_llm, "bam", items, {i: {"sql": it.sql} for i, it in enumerate(items)})):
                try:
                    it.traj = parse_trajectory_reply(text)
                except TrajectoryError as e:
                    it.failed = f"bam: {str(e)[:200]}"
        for it in items:
            if not it.failed:
                it.steps.append({"bam": format_trajectory(it.traj)})  # type: ignore[arg-type]

    def _sam(self, items: list[_Item]) -> None:
        masked = {id(it): mask_schema(it.traj) for it in items}  # type: ignore[arg-type]
        todo = [it for it in items if masked[id(it)][1]]
        fields = {i: {"masked": masked[id(it)][0], "n_masks": str(len(masked[id(it)][1]))} for i, it in enumerate(todo)}
        masks = {i: masked[id(it)][1] for i, it in enumerate(todo)}
        for it, text in zip(todo, self._ask(self.sam_llm, "sam", todo, fields, masks)):
            text_masked = masked[id(it)][0]
            answers = parse_mask_answers(text)
            try:
                traj = fill_masks(text_masked, answers)
            except TrajectoryError as e:
                try:  # a full filled trajectory whose masked form is the same text is a valid fill too
                    traj = parse_trajectory_reply(text)
                    if mask_schema(traj)[0] != text_masked:
                        raise TrajectoryError("the reply's trajectory differs from the masked one beyond the masks")
                except TrajectoryError:
                    it.failed = f"sam: {str(e)[:200]}"
                    continue
            bad = schema_problems(traj, self.env.schema(it.task.example))
            if bad:
                it.failed = f"sam: names what the schema lacks: {', '.join(bad[:5])}"
                continue
            it.traj = traj
            it.steps[-1].update(sam=format_trajectory(traj), sam_answers=answers)

    def _lom(self, items: list[_Item]) -> None:
        fields = {i: {"trajectory": format_trajectory(it.traj)} for i, it in enumerate(items)}  # type: ignore[arg-type]
        for it, text in zip(items, self._ask(self.lom_llm, "lom", items, fields)):
            try:
                traj = parse_trajectory_reply(text)
            except TrajectoryError as e:
                it.failed = f"lom: {str(e)[:200]}"
                continue
            bad = schema_problems(traj, self.env.schema(it.task.example))
            if bad:
                it.failed = f"lom: names what the schema lacks: {', '.join(bad[:5])}"
                continue
            it.traj = traj
            it.steps[-1]["lom"] = format_trajectory(traj)

    def _regenerate(self, items: list[_Item]) -> None:
        if self.regenerate == "render":
            for it in items:
                try:
                    it.new_sql = render_sql(it.traj, self.env.schema(it.task.example))  # type: ignore[arg-type]
                except (RenderError, TrajectoryError, ValueError) as e:
                    it.failed = f"render: {str(e)[:200]}"
            return
        fields = {i: {"sql": it.sql, "trajectory": format_trajectory(it.traj)} for i, it in enumerate(items)}  # type: ignore[arg-type]
        for it, text in zip(items, self._ask(self.llm_name, "regen", items, fields)):
            it.new_sql = parse_sql(text)
            if not _QUERY.match(it.new_sql):  # nothing, or e.g. the schema's CREATE TABLEs echoed back
                it.failed = "regenerate: no SELECT query in the reply"

    def _one_round(self, items: list[_Item]) -> None:
        """BAM -> SAM -> LOM -> regenerate for every item; sets `new_sql` or `failed`."""
        for it in items:
            it.traj, it.new_sql, it.failed = None, "", ""
        live = list(items)
        for step, on in (("bam", True), ("sam", self.use_sam), ("lom", self.use_lom), ("regen", True)):
            if not on:
                continue
            getattr(self, {"bam": "_bam", "sam": "_sam", "lom": "_lom", "regen": "_regenerate"}[step])(live)
            live = [it for it in live if not it.failed]

    def run(self, tasks: list[Task]) -> None:
        items: list[_Item] = []
        for task in tasks:
            by_sql: dict[str, _Item] = {}
            for i, c in enumerate(task.candidates):
                if c.sql in by_sql:
                    by_sql[c.sql].positions.append(i)
                elif c.sql.strip():
                    by_sql[c.sql] = _Item(task=task, positions=[i], sql=c.sql)
            items += by_sql.values()
        originals = {id(it): it.sql for it in items}
        stops: dict[int, str] = {}
        live = items
        for _ in range(self.rounds):
            if not live:
                break
            self._one_round(live)
            nxt = []
            for it in live:
                if it.failed:
                    stops[id(it)] = it.failed
                elif it.new_sql.strip() == it.sql.strip():
                    stops[id(it)] = "unchanged"
                else:
                    it.sql = it.new_sql
                    nxt.append(it)
            live = nxt
        for it in items:
            if it.sql == originals[id(it)]:
                continue
            for pos in it.positions:
                old = it.task.candidates[pos]
                it.task.candidates[pos] = old.derive(
                    it.sql, self.origin, steps=it.steps, stopped=stops.get(id(it)), translator=self.translator,
                    regenerate=self.regenerate, prompts={k: p.id for k, p in self.prompts.items()},
                    decoding=self.decoding.mode)
