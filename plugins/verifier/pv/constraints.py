"""PV-SQL's rule-based checklist: constraints extracted from a question, and checks of SQL candidates against it.

Implements the deterministic core of the "Verify & Repair" component of PV-SQL ("PV-SQL: Synergizing Database
Probing and Rule-based Verification for Text-to-SQL Agents", arXiv 2604.17653, "Key Designs: Verify & Repair"): verifiable constraints are
extracted from the question (and BIRD evidence) by pattern matching, precision first; a candidate SQL goes
through syntax (sqlglot) -> execution (`t2s.db.execute.SQLExecutor`, read-only, time-limited; result-shape
checks) -> constraint checks on the sqlglot AST; each violation is a short message a repair prompt shows the
LLM. The repair request/response functions for the `pv` verifier plugin are in `prompts.py`; the
repair loop itself (rounds, keeping the original when repairs do not pass more checks) is the plugin's.

The ten categories (`CATEGORIES`; docs/pv_constraints.md has the patterns and the measured precision):

==============  =============================================  ===============================================
category        question cue (examples)                        what the SQL must contain
==============  =============================================  ===============================================
distinct        "distinct", "unique", "different"              DISTINCT, GROUP BY or a set operation
top_k           "top 3", "first 5", "3 highest"                LIMIT k (shape: at most k rows)
count           "how many", "the number of", "Count ..."       COUNT(...), a SUM (of counts) or a column named
                                                               count/num/number (shape, for a plain "How many
                                                               ...?": one row with one numeric cell)
order           "highest", "least", "youngest", "descending"   ORDER BY in the asked direction, or MAX / MIN
                                                               (or a max_/min_ column)
comparison      "more than 5", "at least 2", "between 1 and 9" a >, >=, <, <= or BETWEEN against that number
negation        "not", "never", "without", "no"                NOT / != / NOT IN / NOT EXISTS / EXCEPT
grouping        "each", "per", "every" + an aggregate cue      GROUP BY (or a subquery)
aggregate       "average", "mean"; "total X", "sum of"         AVG (or SUM(x)/COUNT(x), or an avg/mean column);
                                                               SUM (or a total/sum column)
date            "in 2010", "after 1995", "before 2000-01-01"   the year / date as a literal, compared in the
                                                               asked direction
set_operation   "both ... and", "either ... or", "but not"     INTERSECT; UNION / OR / IN; EXCEPT / NOT
==============  =============================================  ===============================================

Patterns were developed on Spider train only; Spider dev is held out (benchmarks/pv_constraints.py).
Not covered (cut, said here and in the docs): constraints on *which* column (e.g. that "oldest" sorts by
`age`), nested "for each ... the most" scopes, and BIRD evidence beyond explicit SQL function names and
comparisons written in the evidence (`MAX(x)`, `x > 5`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from t2s.db.execute import SQLExecutor
from t2s.db.types import ExecResult
from t2s.types import JsonRecord

__all__ = [
    "CATEGORIES", "Constraint", "Violation", "CheckReport", "extract_constraints", "gold_features",
    "constraint_satisfied", "check_syntax", "check_constraints", "check_result_shape", "check_candidate",
    "check_candidates", "format_violations", "format_checklist",
]

#: the ten constraint categories, in report order
CATEGORIES = ("distinct", "top_k", "count", "order", "comparison", "negation", "grouping", "aggregate", "date",
              "set_operation")


@dataclass
class Constraint(JsonRecord):
    """One verifiable constraint taken from the question.

    `category` is one of `CATEGORIES`; `span` is the text of the question (or evidence) that triggered it;
    `expectation` says in words what the SQL must contain (shown in repair prompts); `params` holds what the
    check needs (`k` for top_k, `direction` "asc"/"desc"/None for order, `op` and `value` for comparison,
    `agg` for aggregate, `year`/`op` for date, `kind` for set_operation, `scalar` for count); `source` is
    "question" or "evidence".
    """

    category: str
    span: str
    expectation: str
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "question"


@dataclass
class Violation(JsonRecord):
    """One failed check: `stage` is "syntax", "execution", "shape" or "constraint"; `category` the constraint
    category (None for syntax/execution); `message` is the sentence a repair prompt shows the LLM."""

    stage: str
    message: str
    category: str | None = None


@dataclass
class CheckReport(JsonRecord):
    """The outcome of checking one SQL candidate against a checklist.

    `checks` counts the checks that ran (syntax, execution, each shape check and each constraint) and
    `passed` those that passed, so a verifier can compare two candidates by `passed` (PV keeps the original
    when a repair does not pass more checks). A syntax failure stops the pipeline (later checks count as
    failed); an execution failure skips the shape checks (counted as failed) but not the AST checks.
    """

    sql: str
    violations: list[Violation] = field(default_factory=list)
    checks: int = 0
    passed: int = 0
    exec_error: str | None = None
    rows: int | None = None

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckReport:
        d = dict(d)
        d["violations"] = [Violation.from_dict(v) for v in d.get("violations", [])]
        return cls(**d)


# ------------------------------------------------------------------------------------------------ extraction

_NUM_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "hundred": 100, "thousand": 1000,
}
_NUM = r"(\d[\d,]*(?:\.\d+)?|" + "|".join(_NUM_WORDS) + r")"
_DESC_WORDS = (r"highest|largest|biggest|greatest|most|maximum|max|longest|heaviest|tallest|best|richest|"
               r"widest|deepest|fastest")
_ASC_WORDS = r"lowest|smallest|least|fewest|minimum|min|shortest|lightest|cheapest|worst|slowest"
_EITHER_WORDS = r"oldest|youngest|earliest|latest|newest|most recent|most recently"


def _number(text: str) -> float | None:
    t = text.lower().replace(",", "")
    if t in _NUM_WORDS:
        return float(_NUM_WORDS[t])
    try:
        return float(t)
    except ValueError:
        return None


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _is_year(v: float | None) -> bool:
    return v is not None and v.is_integer() and 1800 <= v <= 2100


_TOP_K = [
    re.compile(rf"\b(?:top|first|last)\s+{_NUM}\b(?!\s*(?:%|percent))", re.I),
    re.compile(rf"\b{_NUM}\s+(?:{_DESC_WORDS}|{_ASC_WORDS}|{_EITHER_WORDS})\b", re.I),
]
_COUNT = re.compile(r"\bhow many\b|\b(?:the|total)\s+(?:number|count)\s+of\b|^\s*count\b", re.I)
_COUNT_SCALAR_START = re.compile(r"^\s*(?:how many|count the number of|what is the (?:total )?number of|"
                                 r"find the (?:total )?number of|return the (?:total )?number of)\b", re.I)
_NOT_SCALAR = re.compile(r"\b(?:each|per|every|respectively|and|by|list|show|group|grouped|different|"
                         r"distinct|for all|in total for|what are|which)\b|,", re.I)
_DISTINCT = re.compile(r"\b(?:distinct|unique|different)\b", re.I)
_SORT_DESC = re.compile(r"\b(?:descending|decreasing|revers(?:e|ed) (?:alphabetical|lexicographic)|from (?:the )?(?:highest|largest|most|greatest|biggest) to "
                        r"(?:the )?(?:lowest|smallest|least|fewest))\b", re.I)
_SORT_ASC = re.compile(r"\b(?:ascending|increasing|alphabetical(?:ly)?|lexicographic(?:al(?:ly)?)?|"
                       r"from (?:the )?(?:lowest|smallest|least|fewest) to (?:the )?(?:highest|largest|most|greatest))\b",
                       re.I)
_SORT_ANY = re.compile(r"\b(?:sorted|ordered|sort|order)\s+(?:them\s+|the results?\s+|it\s+)?by\b|\bin (?:the )?order of\b",
                       re.I)
_SUPERLATIVE = re.compile(rf"\b(?:the|its|their|whose|with|has|have|had)\s+(?:(?!average|mean|total|sum)\w+\s+)?"
                          rf"({_DESC_WORDS}|{_ASC_WORDS}|"
                          rf"{_EITHER_WORDS})\b", re.I)
_NOT_SUPERLATIVE = re.compile(r"\bat (?:most|least)\b|\bmost of\b|\b(?:the )?most (?:\w+ly)\b", re.I)
_GREATER = r"(?:more|greater|larger|higher|bigger|older|longer|heavier|taller|bigger|over|above|exceeds?|exceeding)"
_LESS = r"(?:less|fewer|smaller|lower|younger|shorter|lighter|cheaper|under|below)"
_COMPARISONS = [
    (re.compile(rf"\bat least\s+{_NUM}", re.I), "ge"),
    (re.compile(rf"\bno (?:less|fewer) than\s+{_NUM}", re.I), "ge"),
    (re.compile(rf"\bat most\s+{_NUM}", re.I), "le"),
    (re.compile(rf"\bno (?:more|greater|larger) than\s+{_NUM}", re.I), "le"),
    (re.compile(rf"\b{_GREATER}(?: than)?(?: or equal to)?\s+{_NUM}", re.I), "gt"),
    (re.compile(rf"\b{_LESS}(?: than)?(?: or equal to)?\s+{_NUM}", re.I), "lt"),
    (re.compile(rf"\bbetween\s+{_NUM}\s+and\s+{_NUM}", re.I), "between"),
]
_DATE_PATTERNS = [
    (re.compile(r"\b(?:after|since|later than|from)\s+(?:the year\s+)?(\d{4}(?:-\d\d(?:-\d\d)?)?)\b", re.I), "gt"),
    (re.compile(r"\b(?:before|prior to|earlier than|until)\s+(?:the year\s+)?(\d{4}(?:-\d\d(?:-\d\d)?)?)\b", re.I), "lt"),
    (re.compile(r"\b(?:in|during|of)\s+(?:the year\s+|year\s+)?(\d{4})\b(?!\s*(?:and|or|-|to)\s*\d)", re.I), "eq"),
]
_NEGATION = re.compile(r"\b(?:not|never|without|no|none|neither|nor)\b|n't\b", re.I)
_NOT_NEGATION = re.compile(r"\bno (?:more|less|fewer|greater|larger|later|earlier)\b|\bnot only\b|"
                           r"\bwhether or not\b|\bor not\b", re.I)
_GROUPING = re.compile(r"\b(?:each|per|every|group(?:ed)? by)\b", re.I)
#: "for each" means GROUP BY only next to an aggregate ("List the name of each singer" has no GROUP BY)
_GROUP_AGG = re.compile(r"\b(?:how many|number of|count|average|mean|avg|total|sum|maximum|minimum|max|min)\b",
                        re.I)
_AVG = re.compile(r"\b(?:average|mean|avg)\b", re.I)
_SUM = re.compile(r"\b(?:sum of|summed|total (?!number\b|count\b|of\b)\w+)", re.I)
_BOTH = re.compile(r"\bboth\b.+\band\b", re.I)
_BOTH_NOT = re.compile(r"\bboth\s+(?:the\s+)?\w+\s+and\s+(?:the\s+)?\w+\s+(?:of|for)\b", re.I)
_EITHER = re.compile(r"\beither\b.+\bor\b", re.I)
_BUT_NOT = re.compile(r"\bbut (?:not|no|never|do not|does not|did not|don't|doesn't|didn't|are not|is not|"
                      r"have not|has not|haven't|hasn't|without)\b", re.I)
# evidence (BIRD): explicit SQL in the hint
_EV_FUNC = re.compile(r"\b(COUNT|AVG|SUM|MAX|MIN)\s*\(", re.I)
_EV_DISTINCT = re.compile(r"\bDISTINCT\b")


def extract_constraints(question: str, evidence: str = "") -> list[Constraint]:
    """The checklist for one question: constraints in `CATEGORIES` found by pattern matching.

    Precision first (PV-SQL, Verify & Repair): a cue is only taken when it nearly always means the SQL
    construct (measured on Spider train; dev is held out). At most one constraint per category and span;
    the order follows `CATEGORIES`. `evidence` (BIRD) adds only explicit SQL in the hint: `COUNT(`,
    `AVG(`, `SUM(`, `MAX(`, `MIN(`, `DISTINCT`.
    """
    q = " ".join(question.split())
    out: list[Constraint] = []
    seen: set[tuple[str, str]] = set()

    def add(category: str, span: str, expectation: str, source: str = "question", **params: Any) -> None:
        key = (category, repr(sorted(params.items())))
        if key in seen:
            return
        seen.add(key)
        out.append(Constraint(category=category, span=span.strip(), expectation=expectation, params=params,
                              source=source))

    # distinct
    m = _DISTINCT.search(q)
    if m and not re.search(r"\bdifferent (?:from|than)\b", q, re.I):
        add("distinct", m.group(0), "duplicates removed: SELECT DISTINCT (or COUNT(DISTINCT ...), GROUP BY)")

    # top_k
    for pat in _TOP_K:
        for m in pat.finditer(q):
            k = _number(m.group(1))
            if k is None or not k.is_integer() or not 2 <= k <= 100 or _is_year(k):
                continue
            add("top_k", m.group(0), f"at most {_fmt(k)} rows: ORDER BY ... LIMIT {_fmt(k)}", k=int(k))

    # count
    m = _COUNT.search(q)
    if m:
        start = _COUNT_SCALAR_START.search(q)
        scalar = start is not None and not _NOT_SCALAR.search(q[start.end():])
        add("count", m.group(0), "a COUNT(...)" + (" returning one number" if scalar else ""), scalar=scalar)

    # order: explicit sort direction, then superlatives
    m = _SORT_DESC.search(q)
    if m:
        add("order", m.group(0), "ORDER BY ... DESC", direction="desc", kind="sort")
    m = _SORT_ASC.search(q)
    if m and not (_SORT_DESC.search(q) and re.match(r"alpha|lexi", m.group(0), re.I)):
        add("order", m.group(0), "ORDER BY ... ASC", direction="asc", kind="sort")
    if not _SORT_DESC.search(q) and not _SORT_ASC.search(q):
        m = _SORT_ANY.search(q)
        if m:
            add("order", m.group(0), "an ORDER BY", direction=None, kind="sort")
    masked = _NOT_SUPERLATIVE.sub(lambda mm: "#" * len(mm.group(0)), q)
    for m in _SUPERLATIVE.finditer(masked):
        word = m.group(1).lower()
        span = q[m.start():m.end()]
        if re.fullmatch(_EITHER_WORDS, word):
            direction = None
        else:
            direction = "desc" if re.fullmatch(_DESC_WORDS, word) else "asc"
        how = {"desc": "ORDER BY ... DESC LIMIT or MAX(...)", "asc": "ORDER BY ... ASC LIMIT or MIN(...)",
               None: "ORDER BY ... LIMIT or MAX/MIN(...)"}[direction]
        add("order", span, how, direction=direction, kind="superlative")

    # comparison (numbers that look like years go to `date`)
    for pat, op in _COMPARISONS:
        for m in pat.finditer(q):
            vals = [_number(g) for g in m.groups()]
            if any(v is None for v in vals) or any(_is_year(v) for v in vals):
                continue
            if op == "between":
                lo, hi = vals
                add("comparison", m.group(0), f"BETWEEN {_fmt(lo)} AND {_fmt(hi)} (or >= and <=)",
                    op="between", value=[lo, hi])
            else:
                sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
                add("comparison", m.group(0), f"a comparison {sym} {_fmt(vals[0])}", op=op, value=vals[0])

    # negation
    masked = _NOT_NEGATION.sub(lambda mm: "#" * len(mm.group(0)), q)
    m = _NEGATION.search(masked)
    if m:
        add("negation", q[max(0, m.start() - 12):m.end() + 12].strip(),
            "a negation: NOT IN / NOT EXISTS / EXCEPT / != / NOT LIKE / IS NULL")

    # grouping
    m = _GROUPING.search(q)
    if m and _GROUP_AGG.search(q):
        add("grouping", m.group(0), "a GROUP BY")

    # aggregate
    m = _AVG.search(q)
    if m:
        add("aggregate", m.group(0), "an AVG(...)", agg="avg")
    m = _SUM.search(q)
    if m:
        add("aggregate", m.group(0), "a SUM(...)", agg="sum")

    # date
    for pat, op in _DATE_PATTERNS:
        for m in pat.finditer(q):
            text = m.group(1)
            if len(text) == 4 and not _is_year(float(text)):
                continue
            word = {"gt": "after", "lt": "before", "eq": "in"}[op]
            add("date", m.group(0), f"the date literal {text} ({word})", value=text, op=op)

    # set operations
    if _BOTH.search(q) and not _BOTH_NOT.search(q):
        m = _BOTH.search(q)
        add("set_operation", q[m.start():m.start() + 40], "rows satisfying both conditions: INTERSECT (or AND)",
            kind="both")
    m = _EITHER.search(q)
    if m:
        add("set_operation", q[m.start():m.start() + 40], "rows satisfying either condition: UNION / OR / IN",
            kind="either")
    m = _BUT_NOT.search(q)
    if m:
        add("set_operation", m.group(0), "a difference: EXCEPT / NOT IN / NOT EXISTS", kind="but_not")

    # BIRD evidence: explicit SQL only
    if evidence:
        ev = " ".join(evidence.split())
        for m in _EV_FUNC.finditer(ev):
            fn = m.group(1).upper()
            if fn == "COUNT":
                add("count", m.group(0), "a COUNT(...)", source="evidence", scalar=False)
            elif fn in ("AVG", "SUM"):
                add("aggregate", m.group(0), f"a {fn}(...)", source="evidence", agg=fn.lower())
            else:
                direction = "desc" if fn == "MAX" else "asc"
                add("order", m.group(0), f"{fn}(...) or ORDER BY ... {direction.upper()} LIMIT", source="evidence",
                    direction=direction, kind="superlative")
        m = _EV_DISTINCT.search(ev)
        if m:
            add("distinct", m.group(0), "SELECT DISTINCT (or COUNT(DISTINCT ...), GROUP BY)", source="evidence")
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out.sort(key=lambda c: order[c.category])
    return out


# ------------------------------------------------------------------------------------------- AST predicates


def _literal_number(e: exp.Expression | None) -> float | None:
    while isinstance(e, (exp.Paren, exp.Neg)):
        if isinstance(e, exp.Neg):
            v = _literal_number(e.this)
            return None if v is None else -v
        e = e.this
    if isinstance(e, exp.Literal):
        try:
            return float(str(e.this))
        except ValueError:
            return None
    return None


def _limits(tree: exp.Expression) -> list[float]:
    out = []
    for lim in tree.find_all(exp.Limit):
        v = _literal_number(lim.expression)
        if v is not None:
            out.append(v)
    return out


def _order_directions(tree: exp.Expression) -> set[str]:
    return {"desc" if o.args.get("desc") else "asc" for o in tree.find_all(exp.Ordered)}


def _has_negation(tree: exp.Expression) -> bool:
    if any(True for _ in tree.find_all(exp.Not, exp.NEQ, exp.Except)):
        return True
    if any(n.args.get("negate") for n in tree.find_all(exp.Like, exp.ILike, exp.In, exp.Between, exp.Exists)):
        return True
    return any(isinstance(n.expression, exp.Null) for n in tree.find_all(exp.Is))


_GT_NODES = (exp.GT, exp.GTE)
_LT_NODES = (exp.LT, exp.LTE)


def _comparisons(tree: exp.Expression) -> list[tuple[str, float]]:
    """(family, literal) for every `column op number` comparison, oriented so the column is on the left:
    family "gt" for > / >=, "lt" for < / <=, "eq" for =."""
    out: list[tuple[str, float]] = []
    for node in tree.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE, exp.EQ):
        left, right = node.this, node.expression
        fam = "gt" if isinstance(node, _GT_NODES) else "lt" if isinstance(node, _LT_NODES) else "eq"
        v = _literal_number(right)
        if v is None:
            v = _literal_number(left)
            if v is None:
                continue
            fam = {"gt": "lt", "lt": "gt", "eq": "eq"}[fam]
        out.append((fam, v))
    return out


def _betweens(tree: exp.Expression) -> list[tuple[float | None, float | None]]:
    return [(_literal_number(b.args.get("low")), _literal_number(b.args.get("high"))) for b in tree.find_all(exp.Between)
            if not b.args.get("negate")]


def _quoted_bare(e: exp.Expression) -> bool:
    """A double-quoted bare name (`"2008"`): SQLite reads it as a string when no column has that name, and
    Spider's gold SQL writes strings that way."""
    return isinstance(e, exp.Column) and not e.table and isinstance(e.this, exp.Identifier) and e.this.quoted


def _string_value(e: exp.Expression | None) -> str | None:
    if isinstance(e, exp.Literal):
        return str(e.this)
    if e is not None and _quoted_bare(e):
        return e.name
    return None


def _string_literals(tree: exp.Expression) -> list[str]:
    out = [str(lit.this) for lit in tree.find_all(exp.Literal)]
    return out + [c.name for c in tree.find_all(exp.Column) if _quoted_bare(c)]


def _column_names(tree: exp.Expression) -> list[str]:
    return [c.name.lower() for c in tree.find_all(exp.Column) if not _quoted_bare(c)]


def _has_correlated_subquery(tree: exp.Expression) -> bool:
    return sum(1 for _ in tree.find_all(exp.Select)) > 1


def _date_ok(c: Constraint, tree: exp.Expression) -> bool:
    value, op = str(c.params["value"]), c.params.get("op", "eq")
    literals = _string_literals(tree)
    if not any(value in lit or lit.startswith(value[:4]) and value[:4] in lit for lit in literals):
        return False
    if op == "eq":
        return True
    want = {"gt": "gt", "lt": "lt"}[op]
    y = float(value[:4])
    for fam, v in _comparisons(tree):
        if fam == want and abs(v - y) <= 1:
            return True
    for node in tree.find_all(exp.GT, exp.GTE, exp.LT, exp.LTE):
        fam = "gt" if isinstance(node, _GT_NODES) else "lt"
        for side in (node.expression, node.this):
            text = _string_value(side)
            if text is not None and value[:4] in text:
                this_fam = fam if side is node.expression else {"gt": "lt", "lt": "gt"}[fam]
                if this_fam == want:
                    return True
    return any(lo is not None and hi is not None for lo, hi in _betweens(tree))


def constraint_satisfied(c: Constraint, tree: exp.Expression) -> bool:
    """Whether the parsed SQL `tree` contains what constraint `c` expects (see the module table).

    Checks are deliberately lenient about *where* the construct sits (any subquery counts) and strict
    about its presence, so a correct SQL is rarely flagged (the false-alarm rate is measured on gold SQL).
    """
    cat, p = c.category, c.params
    if cat == "distinct":
        return (any(True for _ in tree.find_all(exp.Distinct, exp.Group))
                or any(isinstance(s, (exp.Union, exp.Intersect, exp.Except)) and s.args.get("distinct", True)
                       for s in tree.find_all(exp.SetOperation)))
    if cat == "top_k":
        return any(v == p["k"] for v in _limits(tree))
    if cat == "count":
        return any(True for _ in tree.find_all(exp.Count, exp.Sum)) or any(
            re.search(r"count|num|number", n) for n in _column_names(tree))
    if cat == "order":
        direction = p.get("direction")
        dirs = _order_directions(tree)
        if p.get("kind") == "sort":
            return bool(dirs) if direction is None else direction in dirs
        cols = _column_names(tree)
        has_max = any(True for _ in tree.find_all(exp.Max)) or any(re.search(r"max", n) for n in cols)
        has_min = any(True for _ in tree.find_all(exp.Min)) or any(re.search(r"min", n) for n in cols)
        if direction is None:
            return bool(dirs) or has_max or has_min
        return direction in dirs or (has_max if direction == "desc" else has_min)
    if cat == "comparison":
        op, value = p["op"], p["value"]
        if op == "between":
            lo, hi = value
            if any(b == (lo, hi) for b in _betweens(tree)):
                return True
            comps = _comparisons(tree)
            return any(f == "gt" and abs(v - lo) <= 1 for f, v in comps) and any(
                f == "lt" and abs(v - hi) <= 1 for f, v in comps)
        fam = "gt" if op in ("gt", "ge") else "lt"
        if any(f == fam and abs(v - value) <= 1 for f, v in _comparisons(tree)):
            return True
        return any((lo is not None and abs(lo - value) <= 1) or (hi is not None and abs(hi - value) <= 1)
                   for lo, hi in _betweens(tree))
    if cat == "negation":
        return _has_negation(tree)
    if cat == "grouping":
        return any(True for _ in tree.find_all(exp.Group)) or _has_correlated_subquery(tree)
    if cat == "aggregate":
        node, stem = (exp.Avg, r"avg|average|mean") if p["agg"] == "avg" else (exp.Sum, r"sum|total|tot_")
        if any(True for _ in tree.find_all(node)) or any(re.search(stem, n) for n in _column_names(tree)):
            return True
        # AVG(x) written out as SUM(x) / COUNT(x) (BIRD's style)
        return p["agg"] == "avg" and any(d.this.find(exp.Sum) is not None for d in tree.find_all(exp.Div))
    if cat == "date":
        return _date_ok(c, tree)
    if cat == "set_operation":
        kind = p["kind"]
        if kind == "both":
            return any(True for _ in tree.find_all(exp.Intersect, exp.And)) or _has_correlated_subquery(tree)
        if kind == "either":
            return any(True for _ in tree.find_all(exp.Union, exp.Or)) or any(
                len(i.expressions) >= 2 for i in tree.find_all(exp.In))
        return _has_negation(tree)
    raise ValueError(f"constraint category {cat!r} is not one of {CATEGORIES}")


def gold_features(tree: exp.Expression) -> set[str]:
    """The categories whose SQL feature `tree` uses: the denominator of extraction recall.

    distinct: DISTINCT; top_k: LIMIT k with k >= 2; count: COUNT; order: ORDER BY or MAX/MIN; comparison:
    >, >=, <, <=, BETWEEN against a number that is not a year; negation: NOT / != / EXCEPT / IS NULL;
    grouping: GROUP BY; aggregate: AVG or SUM; date: a year (1800-2100) or ISO date literal;
    set_operation: UNION / INTERSECT / EXCEPT.
    """
    out: set[str] = set()
    if tree.find(exp.Distinct):
        out.add("distinct")
    if any(v >= 2 for v in _limits(tree)):
        out.add("top_k")
    if tree.find(exp.Count):
        out.add("count")
    if tree.find(exp.Ordered) or tree.find(exp.Max) or tree.find(exp.Min):
        out.add("order")
    if any(f in ("gt", "lt") and not _is_year(v) for f, v in _comparisons(tree)) or tree.find(exp.Between):
        out.add("comparison")
    if _has_negation(tree):
        out.add("negation")
    if tree.find(exp.Group):
        out.add("grouping")
    if tree.find(exp.Avg) or tree.find(exp.Sum):
        out.add("aggregate")
    if any(_is_year(_literal_number(lit)) for lit in tree.find_all(exp.Literal) if not lit.is_string) or any(
            re.match(r"^\d{4}(-\d\d|$)", s) and _is_year(float(s[:4])) for s in _string_literals(tree)):
        out.add("date")
    if tree.find(exp.SetOperation):
        out.add("set_operation")
    return out


# ------------------------------------------------------------------------------------------------- checks


def _parse(sql: str) -> exp.Expression | str:
    text = sql.strip().rstrip(";").strip()
    if not text:
        return "the SQL is empty"
    try:
        statements = [s for s in sqlglot.parse(text, read="sqlite") if s is not None]
    except (SqlglotError, ValueError, RecursionError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        return f"sqlglot cannot parse it: {first}"
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; write exactly one SELECT query"
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        return f"it is a {tree.key.upper()} statement, not a SELECT query"
    return tree


def check_syntax(sql: str) -> exp.Expression | Violation:
    """The sqlglot tree of `sql` (one SELECT query, SQLite dialect), or a syntax `Violation` saying why not."""
    out = _parse(sql)
    if isinstance(out, str):
        return Violation(stage="syntax", message=f"The SQL is not valid: {out}.")
    return out


_QUOTE = "\u201c{}\u201d"


def _message(c: Constraint, tree: exp.Expression) -> str:
    """The repair message for a constraint `c` that `tree` does not satisfy."""
    said = _QUOTE.format(c.span)
    where = "the question says" if c.source == "question" else "the evidence says"
    p = c.params
    if c.category == "distinct":
        return f"{where.capitalize()} {said}, but the SQL does not remove duplicates (no DISTINCT or GROUP BY)."
    if c.category == "top_k":
        have = _limits(tree)
        got = f"LIMIT {_fmt(have[0])}" if have else "no LIMIT"
        return f"The question asks for {said} ({p['k']} rows), but the SQL has {got}; use ORDER BY ... LIMIT {p['k']}."
    if c.category == "count":
        return f"{where.capitalize()} {said}, but the SQL has no COUNT(...) (nor a SUM of counts)."
    if c.category == "order":
        if p.get("kind") == "sort":
            d = {"desc": "ORDER BY ... DESC", "asc": "ORDER BY ... ASC", None: "an ORDER BY"}[p.get("direction")]
            return f"The question asks for the results {said}, but the SQL has no {d}."
        d = {"desc": "ORDER BY ... DESC with LIMIT, or MAX(...)", "asc": "ORDER BY ... ASC with LIMIT, or MIN(...)",
             None: "ORDER BY ... LIMIT or MAX/MIN(...)"}[p.get("direction")]
        return f"{where.capitalize()} {said}, but the SQL has no {d}."
    if c.category == "comparison":
        return f"The question says {said}, but the SQL has no matching comparison ({c.expectation})."
    if c.category == "negation":
        return (f"The question says {said}, but the SQL has no negation "
                "(NOT IN, NOT EXISTS, EXCEPT, !=, NOT LIKE or IS NULL).")
    if c.category == "grouping":
        return f"The question says {said}, but the SQL has no GROUP BY."
    if c.category == "aggregate":
        fn = p["agg"].upper()
        return f"{where.capitalize()} {said}, but the SQL has no {fn}(...)."
    if c.category == "date":
        return f"The question says {said}, but the SQL does not compare with {p['value']} that way."
    if c.category == "set_operation":
        return f"The question says {said}, but the SQL has no {c.expectation.split(': ', 1)[1]}."
    return f"The question says {said}; the SQL should contain {c.expectation}."


def check_constraints(tree: exp.Expression, constraints: Sequence[Constraint]) -> list[Violation]:
    """A constraint `Violation` for every constraint the parsed SQL does not satisfy (AST checks only)."""
    return [Violation(stage="constraint", category=c.category, message=_message(c, tree))
            for c in constraints if not constraint_satisfied(c, tree)]


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_result_shape(result: ExecResult, constraints: Sequence[Constraint]) -> tuple[int, list[Violation]]:
    """Shape checks of an executed result against the checklist: (checks run, violations).

    top_k expects at most k rows; a scalar count ("How many ...?" with no grouping cue) expects one row with
    one numeric cell (NULL allowed). A failed execution runs no shape check.
    """
    checks, out = 0, []
    if not result.ok:
        return 0, []
    for c in constraints:
        if c.category == "top_k":
            checks += 1
            if len(result.rows) > c.params["k"]:
                out.append(Violation(stage="shape", category="top_k", message=(
                    f"The question asks for {_QUOTE.format(c.span)}, but the query returned {len(result.rows)}"
                    f"{'+' if result.truncated else ''} rows (at most {c.params['k']} expected).")))
        elif c.category == "count" and c.params.get("scalar"):
            checks += 1
            shape = f"{len(result.rows)} row(s) x {len(result.columns)} column(s)"
            if len(result.rows) != 1 or len(result.columns) != 1 or not _is_number(result.rows[0][0]):
                out.append(Violation(stage="shape", category="count", message=(
                    f"The question asks {_QUOTE.format(c.span)}, which expects one number, but the query "
                    f"returned {shape}" + (f" with value {result.rows[0][0]!r}" if len(result.rows) == 1
                                           and result.columns and not _is_number(result.rows[0][0]) else "")
                    + ".")))
    return checks, out


def _shape_check_count(constraints: Sequence[Constraint]) -> int:
    return sum(1 for c in constraints if c.category == "top_k" or (c.category == "count" and c.params.get("scalar")))


def _report(sql: str, constraints: Sequence[Constraint], result: ExecResult | None,
            tree: exp.Expression | Violation) -> CheckReport:
    n_shape = _shape_check_count(constraints)
    total = 2 + n_shape + len(constraints)
    if isinstance(tree, Violation):
        return CheckReport(sql=sql, violations=[tree], checks=total, passed=0)
    violations: list[Violation] = []
    passed = 1
    rows = None
    exec_error = None
    if result is not None:
        if result.ok:
            passed += 1
            rows = len(result.rows)
            _, shape = check_result_shape(result, constraints)
            violations += shape
            passed += n_shape - len(shape)
        else:
            exec_error = "timed out" if result.timed_out else (result.error or "error")
            msg = ("The SQL did not finish within the time limit; simplify it." if result.timed_out
                   else f"The SQL fails when run on the database: {result.error}.")
            violations.append(Violation(stage="execution", message=msg))
    else:
        total -= 1 + n_shape
    cons = check_constraints(tree, constraints)
    violations += cons
    passed += len(constraints) - len(cons)
    return CheckReport(sql=sql, violations=violations, checks=total, passed=passed, exec_error=exec_error, rows=rows)


def check_candidates(items: Sequence[tuple[str, Sequence[Constraint], str | None]],
                     executor: SQLExecutor | None, *, timeout: float | None = None) -> list[CheckReport]:
    """Check many `(sql, constraints, db_path)` items: syntax -> execution -> shape -> constraints.

    The queries that parse run together through `executor.execute_many` (read-only, time-limited; the
    executor's own timeout unless `timeout` seconds is given). With `executor=None` or `db_path=None` the
    execution and shape checks are skipped (and not counted in `checks`). Reports come back in input order.
    """
    trees = [check_syntax(sql) for sql, _, _ in items]
    jobs = [(i, db, sql) for i, ((sql, _, db), t) in enumerate(zip(items, trees, strict=True))
            if db is not None and executor is not None and not isinstance(t, Violation)]
    results: dict[int, ExecResult] = {}
    if jobs and executor is not None:
        res = executor.execute_many([(db, sql) for _, db, sql in jobs], timeout=timeout)
        results = {i: r for (i, _, _), r in zip(jobs, res, strict=True)}
    return [_report(sql, cons, results.get(i), trees[i]) for i, (sql, cons, _) in enumerate(items)]


def check_candidate(sql: str, constraints: Sequence[Constraint], *, db_path: str | None = None,
                    executor: SQLExecutor | None = None, timeout: float | None = None) -> CheckReport:
    """Check one SQL candidate against a checklist (see `check_candidates`)."""
    return check_candidates([(sql, constraints, db_path)], executor, timeout=timeout)[0]


# ------------------------------------------------------------------------------------ shown to the repair prompt


def format_violations(violations: Sequence[Violation]) -> str:
    """The numbered list of violation messages a repair prompt shows."""
    return "\n".join(f"{i}. {v.message}" for i, v in enumerate(violations, 1))


def format_checklist(constraints: Sequence[Constraint]) -> str:
    """The checklist as bullet lines ("- <span>: <expectation>"), or "(none)"."""
    if not constraints:
        return "(none)"
    return "\n".join(f"- {_QUOTE.format(c.span)}: {c.expectation}" for c in constraints)
