"""BIRD loader (Li et al. 2023): `dev.json` / `mini_dev_sqlite.json` and `dev_databases/<db>/<db>.sqlite`."""

from __future__ import annotations

from pathlib import Path

from t2s.data.base import Dataset, check_unique_qids, read_json_records, require, resolve
from t2s.types import Example


class BirdDataset(Dataset):
    """BIRD-format questions: objects with `question_id`, `db_id`, `question`, `evidence`, `SQL`, `difficulty`.

    `qid` is the file's `question_id` as a string (so dev and mini-dev ids agree); files without any
    `question_id` (BIRD train) get `"<split>_<index>"` with `split` defaulting to the file's stem.
    `evidence` (the external-knowledge hint) defaults to "", `difficulty` (simple / moderate /
    challenging) to None. The database of `db_id` is `db_dir/<db_id>/<db_id>.sqlite`. Relative paths are
    taken under `root`.
    """

    def __init__(
        self,
        *,
        root: str,
        questions: str = "dev.json",
        tables: str = "dev_tables.json",
        db_dir: str = "dev_databases",
        split: str | None = None,
        name: str = "bird",
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        on_missing_db: str = "skip",
    ) -> None:
        super().__init__(name=name, limit=limit, sample=sample, seed=seed, on_missing_db=on_missing_db)
        self.root = resolve(root)
        self.questions = self.root / questions
        self.tables = self.root / tables
        self.db_dir = self.root / db_dir
        self.split = split if split is not None else Path(questions).stem

    gold_for_all = True

    def tables_path(self) -> str | None:
        """The tables file under the root when it exists."""
        return str(self.tables) if self.tables.is_file() else None

    def _read(self) -> list[Example]:
        records = read_json_records(self.questions, self.name)
        with_ids = sum("question_id" in r for r in records)
        if 0 < with_ids < len(records):
            i = next(i for i, r in enumerate(records) if "question_id" not in r)
            raise ValueError(f"{self.questions}, question {i}: key 'question_id' is missing "
                             f"(the other {with_ids} questions have one; give every question an id or none)")
        examples: list[Example] = []
        for i, r in enumerate(records):
            where = f"{self.questions}, question {i}"
            db_id = require(r, "db_id", where)
            qid = f"{self.split}_{i}"
            if with_ids:
                raw = r["question_id"]
                if not isinstance(raw, (int, str)) or isinstance(raw, bool) or str(raw) == "":
                    raise ValueError(f"{where}: key 'question_id' must be an integer or string, got {raw!r}")
                qid = str(raw)
            examples.append(Example(
                qid=qid,
                question=require(r, "question", where),
                db_id=db_id,
                db_path=str(self.db_dir / db_id / f"{db_id}.sqlite"),
                gold_sql=require(r, "SQL", where, optional=True),
                evidence=require(r, "evidence", where, optional=True) or "",
                difficulty=require(r, "difficulty", where, optional=True),
            ))
        check_unique_qids(examples, self.questions, [f"question {i}" for i in range(len(examples))])
        return examples
