"""The dataset interface and the selection every loader shares: missing-database policy, seeded sample, limit.

A loader (`SpiderDataset`, `BirdDataset`, `JsonlDataset`, `DemoDataset`) is built from `conf/dataset/*.yaml`.
Its constructor only checks arguments; `load()` reads files. Selection happens in this order, the same
for every loader (docs/data_formats.md, "Selection"):

1. read every question in file order, each with its `qid` and database path;
2. questions whose database file is missing, empty or not SQLite are skipped (listed in `LoadedDataset.skipped`) or, with
   `on_missing_db="error"`, the load fails naming the missing files;
3. `sample`: a seeded random subset of that many of the remaining questions, kept in file order;
4. `limit`: the first that many of what is left.

Checks on what is left after step 2 (docs/decisions.md, "Bad inputs"): a database file of 0 bytes, and a
file that is not a SQLite database (no SQLite header: a text file, `/etc/passwd`), are treated like a
missing one, each under its own reason (SQLite would open an empty file as an empty database, and a model
would be shown an empty schema); in a labelled dataset (some questions have gold SQL) a question without gold SQL fails the
load for benchmark loaders (Spider, BIRD: their files are labelled throughout) and is a warning naming
the questions for JSONL files (where gold SQL is optional per question), since it runs but is not scored.

So `sample` and `limit` count questions that can run, and a larger `sample` with the same seed contains
every question of a smaller one.
"""

from __future__ import annotations

import abc
import json
import logging
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t2s.types import Example

log = logging.getLogger(__name__)

ON_MISSING_DB = ("skip", "error")

#: why a question whose database cannot be used is left out, by the name `metrics.json` counts it under
#: (`LoadedDataset.skipped[i]["reason"]` holds the text)
SKIP_REASONS = {
    "missing_database": "missing database",
    "not_a_database": "not a SQLite database",
    "empty_database": "empty database file (0 bytes)",
}
#: the first 16 bytes of every SQLite 3 database file
SQLITE_HEADER = b"SQLite format 3\x00"


def skip_kind(reason: str) -> str:
    """The `SKIP_REASONS` name of a skip record's `reason` text (an unknown text is its own kind)."""
    return next((k for k, v in SKIP_REASONS.items() if v == reason), reason)


@dataclass
class LoadedDataset:
    """The questions a run uses, and the ones it could not use.

    `skipped` holds one dict per left-out question: `qid`, `db_id`, `reason` (one of `SKIP_REASONS`' texts:
    "missing database", "not a SQLite database", "empty database file (0 bytes)") and `path` (the database
    file looked for). `tables_path` is the benchmark's schema file
    (Spider `tables.json`, BIRD `dev_tables.json`) when there is one; evaluators that need it (Spider's
    exact-set match uses its foreign keys) read it from here, nothing else does.
    """

    name: str
    examples: list[Example]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    tables_path: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def db_ids(self) -> list[str]:
        """The distinct database ids of the examples, in first-seen order."""
        return list(dict.fromkeys(e.db_id for e in self.examples))


class MissingDatabaseError(FileNotFoundError):
    """Raised by `Dataset.load` with `on_missing_db="error"` when a question's database file is absent."""


def data_root_hint(path: Path) -> str:
    """The advice appended to a missing-data error: where the data root comes from and how to change it."""
    return (
        f"{path} does not exist. Point the data root at your benchmark data: set the environment variable "
        "T2S_DATA, or override `paths.data_root=/path/to/data` (or the dataset's own path keys, e.g. "
        "`dataset.root=...`). See docs/data_formats.md for the expected layout."
    )


def resolve(path: str | os.PathLike[str]) -> Path:
    """`path` with `~` expanded, made absolute against the current directory (symlinks kept)."""
    return Path(path).expanduser().absolute()


class Dataset(abc.ABC):
    """Base of every question loader.

    Options common to all loaders (keyword-only): `name` (the dataset's name in run outputs), `limit`
    (keep the first N), `sample` and `seed` (a seeded subset of N questions), `on_missing_db`
    ("skip" or "error"). Subclasses implement `_read()`; `load()` applies the selection described in the
    module docstring.
    """

    #: a question without gold SQL in a file where others have it fails the load (else: a warning)
    gold_for_all: bool = False

    def __init__(
        self,
        *,
        name: str,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        on_missing_db: str = "skip",
    ) -> None:
        if on_missing_db not in ON_MISSING_DB:
            raise ValueError(f"dataset.on_missing_db must be one of {ON_MISSING_DB}, got {on_missing_db!r}")
        for key, value in (("limit", limit), ("sample", sample)):
            if value is not None and value < 0:
                raise ValueError(f"dataset.{key} must be >= 0 or null, got {value}")
        self.name = name
        self.limit = limit
        self.sample = sample
        self.seed = seed
        self.on_missing_db = on_missing_db

    @abc.abstractmethod
    def _read(self) -> list[Example]:
        """Every question in file order, with `qid` and `db_path` set (the file need not exist)."""

    def tables_path(self) -> str | None:
        """The benchmark's schema file (e.g. Spider tables.json) when the dataset has one and it exists."""
        return None

    def load(self) -> LoadedDataset:
        """Read the questions and apply the selection: missing databases, then `sample`, then `limit`."""
        examples = self._read()
        for i, ex in enumerate(examples):
            ex.meta.setdefault("index", i)  # position in the file: what Spider-style line predictions follow
        examples, skipped = self._check_databases(examples)
        self._check_labels(examples)
        if self.sample is not None and self.sample < len(examples):
            order = list(range(len(examples)))
            random.Random(self.seed).shuffle(order)
            keep = sorted(order[: self.sample])
            examples = [examples[i] for i in keep]
        if self.limit is not None:
            examples = examples[: self.limit]
        return LoadedDataset(name=self.name, examples=examples, skipped=skipped, tables_path=self.tables_path())

    def source(self) -> str:
        """The questions file (what messages about the dataset's content name)."""
        return str(getattr(self, "questions", None) or getattr(self, "path", None) or self.name)

    def _check_labels(self, examples: list[Example]) -> None:
        """A labelled dataset must label every question: fail (`gold_for_all`) or warn, naming the questions."""
        unlabelled = [ex for ex in examples if not (ex.gold_sql or "").strip()]
        if not unlabelled or len(unlabelled) == len(examples):
            return
        listing = _first((f"{ex.qid} (question {ex.meta.get('index', '?')})" for ex in unlabelled), 10)
        msg = (f"dataset {self.name!r}: {len(unlabelled)} of {len(examples)} questions in {self.source()} have no "
               f"gold SQL while the others have: {listing}")
        if self.gold_for_all:
            raise ValueError(msg + ". Add their gold SQL (or remove them from the file): a question without it "
                                   "would run but not be scored, and EX would count fewer questions than ran.")
        log.warning("%s. They run but are not scored: EX counts only the labelled questions.", msg)

    def _check_databases(self, examples: list[Example]) -> tuple[list[Example], list[dict[str, Any]]]:
        """Split `examples` into those whose database files exist (and are not empty) and skip records; one
        stat per file."""
        exists: dict[str, str | None] = {}  # path -> None (usable) or why not
        missing: dict[str, list[Example]] = {}
        kept: list[Example] = []
        skipped: list[dict[str, Any]] = []
        for ex in examples:
            paths = [ex.db_path, *ex.meta.get("db_paths", [])]
            for p in dict.fromkeys(paths):
                if p not in exists:
                    exists[p] = database_problem(p)
            absent = [p for p in dict.fromkeys(paths) if exists[p] is not None]
            if absent:
                missing.setdefault(absent[0], []).append(ex)
                skipped.append({"qid": ex.qid, "db_id": ex.db_id, "reason": exists[absent[0]], "path": absent[0]})
            else:
                kept.append(ex)
        if not missing:
            return kept, []
        n = len(skipped)
        listing = _first(f"{path} ({len(exs)} questions, db_id {exs[0].db_id}{_unless_missing(exists[path])})"
                         for path, exs in missing.items())
        if self.on_missing_db == "error":
            raise MissingDatabaseError(
                f"dataset {self.name!r}: {n} of {len(examples)} questions need database files that do not exist, are empty "
                f"or are not SQLite databases: "
                f"{listing}. Put the databases there (see docs/data_formats.md for the layout), or set "
                f"`dataset.on_missing_db=skip` to run without those questions."
            )
        names = _first(f"{exs[0].db_id} ({len(exs)}{_unless_missing(exists[path])})" for path, exs in missing.items())
        where = next(iter(missing)) if len(missing) == 1 else f"files under {os.path.commonpath(list(missing))}"
        hint = " No question is left: check the database folder, or get the databases." if n == len(examples) else ""
        log.warning(
            "dataset %s: skipped %d of %d questions whose database file is missing, empty or not SQLite: %s (looked "
            "for %s).%s",
            self.name, n, len(examples), names, where, hint,
        )
        return kept, skipped


def database_problem(path: str) -> str | None:
    """None when `path` is a usable database file; else why not, one of `SKIP_REASONS`' values: missing, empty
    (0 bytes), or not a SQLite database (its first 16 bytes are not SQLite's header, e.g. a text file)."""
    try:
        st = os.stat(path)
    except OSError:
        return SKIP_REASONS["missing_database"]
    if not os.path.isfile(path):
        return SKIP_REASONS["missing_database"]
    if st.st_size == 0:
        return SKIP_REASONS["empty_database"]
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError:
        return SKIP_REASONS["missing_database"]
    return None if header == SQLITE_HEADER else SKIP_REASONS["not_a_database"]


def _unless_missing(reason: str | None) -> str:
    return "" if reason in (None, SKIP_REASONS["missing_database"]) else f": {reason}"


def _first(items: Iterable[str], n: int = 20) -> str:
    """The first `n` items joined by commas, with a count of the rest."""
    items = list(items)
    more = f", ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def read_json_records(path: Path, dataset: str) -> list[dict[str, Any]]:
    """The list of objects in a JSON questions file; errors name the file and say what is wrong."""
    if not path.is_file():
        raise FileNotFoundError(f"dataset {dataset!r}: questions file not found. " + data_root_hint(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"dataset {dataset!r}: {path} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ValueError(f"dataset {dataset!r}: {path} must hold a JSON list of question objects")
    return data


def require(record: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    """`record[key]` when it is a string (or missing/null and `optional`); else ValueError naming `where` and key."""
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not optional and not value.strip()):
        what = "is missing" if key not in record else f"must be a non-empty string, got {value!r}"
        raise ValueError(f"{where}: key {key!r} {what}")
    return value


def check_unique_qids(examples: list[Example], source: Path, where: list[str]) -> None:
    """Raise ValueError naming `source` and the two locations (`where[i]`, e.g. "line 3") of a repeated qid."""
    first: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.qid in first:
            raise ValueError(
                f"{source}: question id {ex.qid!r} appears twice ({where[first[ex.qid]]} and {where[i]}); "
                "ids must be unique because they key predictions and caches"
            )
        first[ex.qid] = i


def load_dataset(cfg: Any) -> LoadedDataset:
    """Build the configured dataset (`cfg.dataset`, a `_target_` node of `conf/dataset/`) and load it (the loader logs
    what it skipped). Lives with the datasets, not the pipeline, so scoring (`t2s.eval`) never imports the runner."""
    from hydra.utils import instantiate

    from t2s.run.checks import ConfigError, check_arguments

    check_arguments("dataset", cfg.dataset)
    dataset = instantiate(cfg.dataset, _convert_="all")
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset: {cfg.dataset._target_} is not a t2s.data.base.Dataset")
    return dataset.load()
