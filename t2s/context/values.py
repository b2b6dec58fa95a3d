"""The value index, after the LSH value retrieval of "CHASE-SQL: Multi-Path Reasoning and Preference Optimized
Candidate Selection in Text-to-SQL" (arXiv 2410.01943) and "Automatic Metadata Extraction for Text-to-SQL" (arXiv
2505.19988): datasketch `MinHashLSH` over character shingles of every text column's distinct values, queried with
question keywords and re-ranked.

Build (`ValueIndexArtifact`, one per database): for each column, the distinct values stored as SQLite text
(`typeof = 'text'`), stripped, non-empty, at most `max_value_chars` long, at most `max_values_per_column` of them (the
most frequent first, so a capped column keeps the values questions ask about). Each value's shingle set is the
character `shingle`-grams of its lower-cased text padded with one space on each side (so "US" has shingles " us",
"us "); its `MinHash` (`num_perm` permutations, seed 1) goes into one `MinHashLSH` per database with Jaccard
`threshold`. The index is pickled with the value table; pickles do not survive a datasketch major version, so the
artifact key holds it (`libraries()`), and pyproject caps datasketch below the next major.

Query (`ValueIndex.lookup`): the keyword's MinHash finds candidate values whose estimated shingle Jaccard exceeds the
threshold; each candidate is scored by `rapidfuzz.fuzz.ratio` on lower-cased text (0..1), or by embedding cosine
(`ValueIndex.candidates` + the caller's embedder).
"""

from __future__ import annotations

import logging
import pickle
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t2s.artifacts import Artifact, Source, library_version
from t2s.db.introspect import connect_readonly, introspect, quote_sqlite_identifier
from t2s.prompts.replies import ReplyFormat

if TYPE_CHECKING:
    from t2s.env import Env

log = logging.getLogger("t2s")

INDEX_FILE = "values.pkl"


def shingles(text: str, k: int = 3) -> set[str]:
    """The character `k`-grams of `text` lower-cased, whitespace-collapsed and padded with one space each side."""
    s = " " + " ".join(text.lower().split()) + " "
    if len(s) <= k:
        return {s}
    return {s[i: i + k] for i in range(len(s) - k + 1)}


@dataclass(frozen=True)
class ValueHit:
    """One indexed value that matched a keyword: where it is, the value, the keyword, and the score (0..1)."""

    table: str
    column: str
    value: str
    keyword: str
    score: float


class ValueIndex:
    """A loaded value index: `values[i] = (table, column, value)` and the `MinHashLSH` over their shingles."""

    def __init__(self, lsh: Any, values: list[tuple[str, str, str]], *, shingle: int, num_perm: int) -> None:
        self.lsh = lsh
        self.values = values
        self.shingle = shingle
        self.num_perm = num_perm
        self._empty: Any = None

    def __len__(self) -> int:
        return len(self.values)

    def minhash(self, text: str) -> Any:
        """The MinHash of `text`'s shingles, with the index's permutations."""
        from datasketch import MinHash

        if self._empty is None:
            self._empty = MinHash(num_perm=self.num_perm, seed=1)
        m = self._empty.copy()
        m.update_batch([s.encode("utf-8") for s in shingles(text, self.shingle)])
        return m

    def candidates(self, keyword: str) -> list[int]:
        """Ids of the values whose estimated shingle Jaccard with `keyword` passes the LSH threshold."""
        if not keyword.strip():
            return []
        return sorted(self.lsh.query(self.minhash(keyword)))

    def lookup(self, keyword: str, *, min_score: float = 0.0, limit: int = 10) -> list[ValueHit]:
        """The LSH candidates of `keyword` re-ranked by edit-distance similarity (`rapidfuzz.fuzz.ratio` / 100 on
        lower-cased text), at least `min_score`, best `limit` first (ties: shorter value, then table.column)."""
        from rapidfuzz import fuzz

        key = " ".join(keyword.lower().split())
        hits = []
        for i in self.candidates(keyword):
            table, column, value = self.values[i]
            score = fuzz.ratio(key, " ".join(value.lower().split())) / 100.0
            if score >= min_score:
                hits.append(ValueHit(table, column, value, keyword, score))
        hits.sort(key=lambda h: (-h.score, len(h.value), h.table, h.column, h.value))
        return hits[:limit]


def text_values(conn: sqlite3.Connection, table: str, column: str, *, max_values: int,
                max_chars: int) -> list[str]:
    """The distinct text values of one column (stripped, non-empty, at most `max_chars`), most frequent first, at
    most `max_values`."""
    t, c = quote_sqlite_identifier(table), quote_sqlite_identifier(column)
    sql = (f"SELECT TRIM({c}) AS v, COUNT(*) AS n FROM {t} WHERE typeof({c}) = 'text' AND TRIM({c}) != '' "
           f"AND LENGTH(TRIM({c})) <= {int(max_chars)} GROUP BY v ORDER BY n DESC, v LIMIT {int(max_values)}")
    return [str(v) for v, _ in conn.execute(sql)]


class ValueIndexArtifact(Artifact):
    """The per-database value index (`values.pkl`: the pickled `MinHashLSH` and the value table).

    Parameters (all in the key): `shingle` (character n-gram size), `num_perm`, `threshold` (LSH Jaccard threshold),
    `max_values_per_column`, `max_value_chars`. The datasketch major version is in the key too.
    """

    name = "value_index"
    version = 1

    def __init__(self, *, shingle: int = 3, num_perm: int = 64, threshold: float = 0.3,
                 max_values_per_column: int = 100_000, max_value_chars: int = 80) -> None:
        if shingle < 1 or num_perm < 2 or not 0.0 < threshold <= 1.0:
            raise ValueError(f"value index needs shingle >= 1, num_perm >= 2, 0 < threshold <= 1; got shingle={shingle}, "
                             f"num_perm={num_perm}, threshold={threshold}")
        self.shingle, self.num_perm, self.threshold = shingle, num_perm, threshold
        self.max_values_per_column, self.max_value_chars = max_values_per_column, max_value_chars

    def params(self) -> dict[str, Any]:
        return {"shingle": self.shingle, "num_perm": self.num_perm, "threshold": self.threshold,
                "max_values_per_column": self.max_values_per_column, "max_value_chars": self.max_value_chars}

    def libraries(self) -> dict[str, str]:
        return {"datasketch": library_version("datasketch")}

    def build(self, source: Source, out: Path, env: Env | None) -> None:
        from datasketch import MinHash, MinHashLSH

        schema = introspect(source.path, source.id, n_samples=0)
        values: list[tuple[str, str, str]] = []
        conn = connect_readonly(source.path)
        try:
            for table in schema.tables:
                for col in table.columns:
                    try:
                        found = text_values(conn, table.name, col.name, max_values=self.max_values_per_column,
                                            max_chars=self.max_value_chars)
                    except sqlite3.DatabaseError as e:
                        log.warning("%s: no values indexed for %s.%s (%s)", source.id, table.name, col.name, e)
                        continue
                    values += [(table.name, col.name, v) for v in found]
        finally:
            conn.close()
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        empty = MinHash(num_perm=self.num_perm, seed=1)  # copies share its permutations (computed once)
        with lsh.insertion_session() as session:
            for i, (_, _, v) in enumerate(values):
                m = empty.copy()
                m.update_batch([s.encode("utf-8") for s in shingles(v, self.shingle)])
                session.insert(i, m, check_duplication=False)
        with open(out / INDEX_FILE, "wb") as f:
            pickle.dump({"lsh": lsh, "values": values, "shingle": self.shingle, "num_perm": self.num_perm}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, source: Source, path: Path) -> ValueIndex:
        with open(path / INDEX_FILE, "rb") as f:
            d = pickle.load(f)
        return ValueIndex(d["lsh"], [tuple(v) for v in d["values"]], shingle=d["shingle"], num_perm=d["num_perm"])


# ---------------------------------------------------------------------- keywords from a question

#: words that neither start nor end a keyword n-gram (question words, articles, prepositions, SQL-ish verbs)
STOPWORDS: frozenset[str] = frozenset("""
a about above after all also an and any are as at be been before being below between both but by can could did do
does doing down during each few find for from further give had has have having he her here hers him his how i if in
into is it its itself just list me more most my no nor not now of off on once only or other our out over own please
return same she should show so some such than that the their them then there these they this those through to too
under until up very was we were what when where which while who whom whose why will with would you your
many much number count total average sum names name id ids each every distinct different order ordered sort sorted
descending ascending greater less least highest lowest top one two three also whose all
""".split())

_TOKEN = re.compile(r"[^\s,;:!?()\[\]{}\"“”‘]+")
_QUOTED = re.compile(r"\"([^\"]{1,80})\"|“([^”]{1,80})”|‘([^’]{1,80})’|(?:^|(?<=[\s(=]))'([^']{1,80})'")


def quoted_spans(text: str) -> list[str]:
    """Spans in double quotes (straight or curly), curly single quotes, or straight single quotes opened after a
    space, '(' or '='."""
    return [next(g for g in m.groups() if g is not None).strip() for m in _QUOTED.finditer(text or "")
            if any(m.groups())]


def question_ngrams(text: str, max_n: int = 3) -> list[str]:
    """Word n-grams (1..`max_n`) of `text` that neither start nor end with a stopword, in order, de-duplicated
    (case-insensitive); tokens keep their case, trailing `.`/`'s` are dropped; one-letter tokens that are not digits
    are skipped as unigrams."""
    tokens = []
    for raw in _TOKEN.findall(text or ""):
        tok = raw.strip(".'’‘`")
        if tok.lower().endswith(("'s", "’s")):
            tok = tok[:-2]
        if tok:
            tokens.append(tok)
    out: dict[str, str] = {}
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            gram = tokens[i: i + n]
            if gram[0].lower() in STOPWORDS or gram[-1].lower() in STOPWORDS:
                continue
            if n == 1 and len(gram[0]) < 2 and not gram[0].isdigit():
                continue
            phrase = " ".join(gram)
            out.setdefault(phrase.lower(), phrase)
    return list(out.values())


def parse_keywords(text: str, limit: int = 20) -> list[str]:
    """Keywords from an LLM's reply: one per line or comma-separated, bullets, numbering and quotes removed, at most
    `limit`, de-duplicated; junk gives junk words but never an error."""
    out: dict[str, str] = {}
    for line in (text or "").replace("```", "\n").splitlines():
        line = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line)
        if ":" in line and line.split(":", 1)[0].strip().lower() in {"keywords", "values", "answer"}:
            line = line.split(":", 1)[1]
        for part in line.split(","):
            kw = part.strip().strip("\"'`“”").strip()
            if 0 < len(kw) <= 80:
                out.setdefault(kw.lower(), kw)
    return list(out.values())[:limit]


def write_keywords(*, keywords: list[str]) -> str:
    """The canonical keyword reply: one keyword per line, "none" for none (as `value_keywords_v1` asks)."""
    return "\n".join(keywords) if keywords else "none"


#: the replies of `value_keywords_v1` (its `reply:`): the literal values a question mentions, read by `parse_keywords`
KEYWORDS_REPLY = ReplyFormat(fields=("keywords",), write=write_keywords, read=parse_keywords,
                             example={"keywords": ["Paris", "jazz", "New York"]})
