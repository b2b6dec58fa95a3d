"""Spider 1.0 loader (Yu et al. 2018): `dev.json` / `train_spider.json` and `database/<db>/<db>.sqlite`."""

from __future__ import annotations

import os
from pathlib import Path

from t2s.data.base import Dataset, check_unique_qids, read_json_records, require, resolve
from t2s.types import Example


def spider_db_files(db_dir: Path, db_id: str) -> tuple[str, list[str]]:
    """The main database file of `db_id` and, in the test-suite layout, all of its files.

    The main file is `db_dir/<db_id>/<db_id>.sqlite` (or, if absent, the first `*.sqlite` of that folder
    by name). The list holds every `*.sqlite` file of the folder, main first, when there are several
    (test-suite-sql-eval's distilled databases); it is empty otherwise.
    """
    folder = db_dir / db_id
    main = folder / f"{db_id}.sqlite"
    try:
        files = sorted(str(folder / f) for f in os.listdir(folder) if f.endswith(".sqlite"))
    except (FileNotFoundError, NotADirectoryError):
        files = []
    if str(main) in files:
        first = str(main)
    elif files:
        first = files[0]
    else:
        return str(main), []
    if len(files) < 2:
        return first, []
    return first, [first] + [f for f in files if f != first]


class SpiderDataset(Dataset):
    """Spider-format questions: a JSON list of objects with `db_id`, `question` and gold `query`.

    `qid` is `"<split>_<index>"` with the 0-based position in the file (e.g. `dev_0`); `split` defaults
    to the questions file's stem (`dev.json` -> `dev`). Relative `questions`, `tables` and `db_dir` are
    taken under `root`; absolute ones are used as given. When a database folder holds several `*.sqlite`
    files (the test-suite layout), all of them are in `Example.meta["db_paths"]`, the main one first and
    in `db_path`. Records without `query` (unlabeled test questions) get `gold_sql=None`.
    """

    def __init__(
        self,
        *,
        root: str,
        questions: str = "dev.json",
        tables: str = "tables.json",
        db_dir: str = "database",
        split: str | None = None,
        name: str = "spider",
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
        """`tables.json` under the root when it exists."""
        return str(self.tables) if self.tables.is_file() else None

    def _read(self) -> list[Example]:
        records = read_json_records(self.questions, self.name)
        files: dict[str, tuple[str, list[str]]] = {}
        examples: list[Example] = []
        for i, r in enumerate(records):
            where = f"{self.questions}, question {i}"
            db_id = require(r, "db_id", where)
            question = require(r, "question", where)
            gold = require(r, "query", where, optional=True)
            if db_id not in files:
                files[db_id] = spider_db_files(self.db_dir, db_id)
            db_path, db_paths = files[db_id]
            examples.append(Example(
                qid=f"{self.split}_{i}", question=question, db_id=db_id, db_path=db_path, gold_sql=gold,
                meta={"db_paths": db_paths} if db_paths else {},
            ))
        check_unique_qids(examples, self.questions, [f"question {i}" for i in range(len(examples))])
        return examples
