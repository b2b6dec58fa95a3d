"""A run never records a pipeline error as an answer, damaged caches and artifacts are named and repaired or
rebuilt, and every question is accounted for (issue 20, items 2 and 4).

Real runs of the tiny model on the demo set, each test on its own cache directory (they damage it), through the
`t2s` command where the exit status and the message matter.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import compose_config

from t2s.artifacts import META, artifact_problem
from t2s.cli import main as cli_main
from t2s.eval.scorer import Scorer
from t2s.integrity import forget_checks, sqlite_problem
from t2s.llm.cache import main as cache_main
from t2s.run.runner import run
from t2s.run.store import read_jsonl
from t2s.types import Example

LIMIT = 4


@pytest.fixture()
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """One-message errors (no debug flag), and no logging handlers left on streams pytest closed (see
    tests/test_hardening.py::no_debug)."""
    monkeypatch.delenv("T2S_DEBUG", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    for handler in list(logging.root.handlers):
        if getattr(getattr(handler, "stream", None), "closed", False):
            logging.root.removeHandler(handler)


def _cli(run_dir: Path, cache: Path, *extra: str) -> int:
    return cli_main(["run", f"hydra.run.dir={run_dir}", f"paths.cache_dir={cache}", "llm=tiny", "embedder=hashing",
                     f"dataset.limit={LIMIT}", "run.progress=false", *extra])


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _populated_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A cache directory whose response cache answers the demo's first questions (one finished run)."""
    cache = tmp_path / "cache"
    assert _cli(tmp_path / "first", cache) == 0
    capsys.readouterr()
    return cache


def _damage_one_answer(cache: Path) -> str:
    """Flip one byte inside the stored answer of one response (what SQLite's checks cannot see); its key."""
    path = cache / "llm_cache.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    key, texts = conn.execute("SELECT key, texts FROM responses ORDER BY rowid LIMIT 1 OFFSET 1").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    at = data.find(texts.encode()[:40])
    assert at > 0 and data.count(texts.encode()[:40]) == 1
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))
    conn = sqlite3.connect(path)
    assert sqlite_problem(conn, full=True) is None  # the file is sound as far as SQLite can tell
    conn.close()
    return str(key)


def test_a_damaged_cache_entry_fails_only_its_question_until_repaired_then_only_it_is_retried(
        tmp_path: Path, quiet: None, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _populated_cache(tmp_path, capsys)
    key = _damage_one_answer(cache)
    run_dir = tmp_path / "second"

    # the question that reads the damaged entry has no answer: the run says so and exits 1 naming the file and the fix
    assert _cli(run_dir, cache) == 1
    out, err = capsys.readouterr()
    db = cache / "llm_cache.sqlite"
    assert str(db) in err and f"entry {key[:16]}" in err and "does not match its checksum" in err
    assert f"python -m t2s.llm.cache recover {db}" in err and "run.allow_errors=true" in err
    assert "may be a bug" not in err and "Traceback" not in err
    assert "not scored: 1 pipeline error" in out
    state = _json(run_dir / "run.json")
    assert state["status"] == "failed" and state["pipeline_errors"] == 1
    metrics = _json(run_dir / "metrics.json")
    assert metrics["pipeline_errors"]["count"] == 1 and metrics["accounting"]["pipeline_error"] == 1
    assert metrics["scored"] == LIMIT - 1 and metrics["n"] == LIMIT
    (failed_qid, message), = metrics["pipeline_errors"]["messages"].items()
    assert "DamagedFileError" in message and str(db) in message
    answers = {r["qid"]: r for r in read_jsonl(run_dir / "predictions.jsonl")}
    assert failed_qid not in answers and len(answers) == LIMIT - 1
    assert [a["qid"] for a in read_jsonl(run_dir / "errors.jsonl")] == [failed_qid]

    # repaired, the next invocation runs the failed question only, and finishes
    assert cache_main(["recover", str(db)]) == 0
    assert f"recovered {LIMIT - 1} response(s)" in (done := capsys.readouterr().out) and "dropped 1 " in done
    assert len(list(cache.glob("llm_cache.sqlite.corrupt-*"))) == 1
    assert _cli(run_dir, cache) == 0
    capsys.readouterr()
    metrics = _json(run_dir / "metrics.json")
    assert metrics["this_call"]["questions_run"] == 1 and metrics["this_call"]["pipeline_errors"] == 0
    assert metrics["pipeline_errors"]["count"] == 0 and metrics["scored"] == LIMIT
    state = _json(run_dir / "run.json")
    assert state["status"] == "finished" and state["pipeline_errors"] == 0
    again = {r["qid"]: r for r in read_jsonl(run_dir / "predictions.jsonl")}
    assert set(again) == set(answers) | {failed_qid}
    assert all(again[q] == answers[q] for q in answers), "finished answers are never rerun"


def test_allow_errors_exits_0_but_counts_the_errors_and_the_next_invocation_still_retries_them(
        tmp_path: Path, quiet: None, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _populated_cache(tmp_path, capsys)
    _damage_one_answer(cache)
    run_dir = tmp_path / "allowed"
    assert _cli(run_dir, cache, "run.allow_errors=true") == 0
    out, _ = capsys.readouterr()
    assert "not scored: 1 pipeline error" in out and "the next invocation runs them again" in out
    state = _json(run_dir / "run.json")
    assert state["status"] == "finished" and state["pipeline_errors"] == 1
    assert _json(run_dir / "metrics.json")["accounting"]["pipeline_error"] == 1

    assert _cli(run_dir, cache, "run.allow_errors=true") == 0
    capsys.readouterr()
    assert _json(run_dir / "metrics.json")["this_call"]["questions_run"] == 1  # the failed question, not the answers


def test_a_batch_that_fails_whole_on_damaged_entries_stops_the_run_with_the_files_own_message(
        tmp_path: Path, quiet: None, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _populated_cache(tmp_path, capsys)
    db = cache / "llm_cache.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE responses SET checksum = 'damaged'")
    run_dir = tmp_path / "second"
    assert _cli(run_dir, cache) == 1
    err = capsys.readouterr().err
    assert f"t2s run: error: {db} is damaged (the stored answer of entry" in err
    assert "python -m t2s.llm.cache recover" in err and "may be a bug" not in err
    assert not (run_dir / "predictions.jsonl").exists()  # nothing recorded as answered


def test_a_run_directory_from_before_holding_a_pipeline_error_as_an_answer_retries_that_question(
        tmp_path: Path, session_cache: Path) -> None:
    cfg = compose_config([f"dataset.limit={LIMIT}"], cache_dir=session_cache)
    run_dir = tmp_path / "run"
    run(cfg, run_dir=run_dir)
    records = list(read_jsonl(run_dir / "predictions.jsonl"))
    # what older versions wrote for a question a stage raised on: an "answer" with an empty SQL, scored wrong
    old = {**records[1], "final_sql": "", "candidates": [], "pipeline_error": "generator/zero_shot: DatabaseError: "
           "database disk image is malformed", "correct": False, "status": "ok"}
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [records[0], old, *records[2:]]))
    metrics = run(cfg, run_dir=run_dir)
    assert metrics["this_call"]["questions_run"] == 1 and metrics["pipeline_errors"]["count"] == 0
    again = list(read_jsonl(run_dir / "predictions.jsonl"))[-1]
    assert (again["qid"], again["final_sql"], again["correct"]) == (records[1]["qid"], records[1]["final_sql"],
                                                                    records[1]["correct"])  # answered again
    assert not again["pipeline_error"]
    assert [r["qid"] for r in read_jsonl(run_dir / "errors.jsonl")] == [old["qid"]]
    assert _json(run_dir / "run.json")["status"] == "finished"


def test_a_structurally_damaged_cache_is_refused_before_any_question_then_recovered(
        tmp_path: Path, quiet: None, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _populated_cache(tmp_path, capsys)
    db = cache / "llm_cache.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size, pages = conn.execute("PRAGMA page_size").fetchone()[0], conn.execute("PRAGMA page_count").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:  # garbage over the header of a page in the middle
        f.seek(page_size * (pages // 2))
        f.write(b"\xde\xad\xbe\xef" * 4)
    conn = sqlite3.connect(db)
    assert sqlite_problem(conn) is not None
    conn.close()
    forget_checks()  # this test process quick-checked the sound file already; a new `t2s run` process has not

    run_dir = tmp_path / "second"
    assert _cli(run_dir, cache) == 1
    err = capsys.readouterr().err
    assert f"{db} is damaged" in err and "python -m t2s.llm.cache recover" in err and "may be a bug" not in err
    assert not (run_dir / "predictions.jsonl").exists() and not (run_dir / "errors.jsonl").exists()

    assert cache_main(["recover", str(db)]) == 0
    recovered = int(capsys.readouterr().out.split("recovered ")[1].split(" ")[0])
    assert _cli(run_dir, cache) == 0
    capsys.readouterr()
    metrics = _json(run_dir / "metrics.json")
    assert metrics["scored"] == LIMIT and metrics["pipeline_errors"]["count"] == 0
    totals = metrics["cost"]["totals"]
    assert totals["cached_calls"] == recovered and totals["llm_calls"] == LIMIT  # intact entries kept, lost ones recomputed


def test_an_artifact_failing_its_checksum_is_named_moved_aside_and_rebuilt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    cfg = compose_config([f"dataset.limit={LIMIT}", "value_retriever=lsh"], cache_dir=cache)
    first = run(cfg, run_dir=tmp_path / "first")
    index = sorted((cache / "artifacts" / "value_index").glob("*/*/values.pkl"))[0]
    folder = index.parent
    assert _json(folder / META)["files"]["values.pkl"]
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])  # truncated
    assert artifact_problem(folder)[0] == "values.pkl does not match its checksum"

    with caplog.at_level(logging.WARNING, logger="t2s"):
        second = run(cfg, run_dir=tmp_path / "second")
    assert "artifact value_index for database" in caplog.text and str(folder) in caplog.text
    assert "values.pkl does not match its checksum" in caplog.text and "rebuilding" in caplog.text
    assert len(list(folder.parent.glob(f"{folder.name}.corrupt-*"))) == 1
    assert artifact_problem(folder) == (None, _json(folder / META))
    assert second["offline"]["artifacts"]["value_index"]["built_now"] == 1
    assert second["ex"] == first["ex"] and second["pipeline_errors"]["count"] == 0

    # a garbage meta.json is damage too
    (folder / META).write_text("{not json")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="t2s"):
        third = run(cfg, run_dir=tmp_path / "third")
    assert "meta.json does not read as JSON" in caplog.text and third["pipeline_errors"]["count"] == 0
    assert artifact_problem(folder)[0] is None


def test_an_artifact_built_before_checksums_gets_them_when_it_loads(tmp_path: Path) -> None:
    from t2s.artifacts import ArtifactStore, Source
    from t2s.context.values import ValueIndexArtifact

    db = _make_db(tmp_path / "a.sqlite")
    source = Source.of_file(db, kind="database", id="a")
    store = ArtifactStore(tmp_path / "artifacts")
    store.get(ValueIndexArtifact(), source, None)  # type: ignore[arg-type]
    folder = store.path(ValueIndexArtifact(), source)
    meta = _json(folder / META)
    legacy = {k: v for k, v in meta.items() if k != "files"}
    (folder / META).write_text(json.dumps(legacy))
    index = ArtifactStore(tmp_path / "artifacts").get(ValueIndexArtifact(), source, None)  # type: ignore[arg-type]
    assert index.values and _json(folder / META)["files"] == meta["files"]
    assert not list(folder.parent.glob("*.corrupt-*"))


def _make_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE singer (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);"
                       "INSERT INTO singer VALUES (1, 'Ann', 30), (2, 'Bob', 40), (3, 'Cy', 50);")
    conn.commit()
    conn.close()
    return path


def _accounting_dataset(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Questions on a good database (two answerable, one whose gold fails), a missing one, a text file named .sqlite,
    a 0-byte file and a passwd-style file given as db_path; and predictions equal to the gold SQL."""
    dbs = tmp_path / "dbs"
    _make_db(dbs / "good.sqlite")
    (dbs / "notdb.sqlite").write_text("this is not a database\n" * 10)
    (dbs / "empty.sqlite").write_bytes(b"")
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\n")
    rows = [("ok1", "good", "SELECT count(*) FROM singer"), ("ok2", "good", "SELECT name FROM singer"),
            ("goldbad", "good", "SELECT nope FROM singer"), ("missing", "absent", "SELECT 1"),
            ("notdb", "notdb", "SELECT name FROM singer"), ("empty", "empty", "SELECT name FROM singer")]
    questions = [{"id": q, "question": "?", "db_id": d, "sql": s} for q, d, s in rows]
    questions.append({"id": "passwd", "question": "?", "db_id": "passwd", "db_path": str(passwd), "sql": "SELECT 1"})
    qfile, pfile = tmp_path / "q.jsonl", tmp_path / "p.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in questions))
    pfile.write_text("".join(json.dumps({"qid": q["id"], "sql": q["sql"]}) + "\n" for q in questions))
    return qfile, pfile, dbs


EXPECTED = {"questions": 7, "scored": 2, "no_gold": 0, "gold_error": 1, "pipeline_error": 0, "missing_database": 1,
            "not_a_database": 2, "empty_database": 1}
SUMMARY = ("not scored: 1 gold error; skipped: 1 missing database, 2 not a SQLite database, "
           "1 empty database (0 bytes)")


def test_every_question_is_accounted_for_each_skip_kind_apart(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    qfile, pfile, dbs = _accounting_dataset(tmp_path)
    cfg = compose_config(["dataset=jsonl", f"dataset.path={qfile}", f"dataset.db_dir={dbs}", "generator=from_file",
                          f"generator.path={pfile}"], cache_dir=tmp_path / "cache")
    metrics = run(cfg, run_dir=tmp_path / "run")
    out = capsys.readouterr().out
    assert metrics["accounting"] == EXPECTED == _json(tmp_path / "run" / "metrics.json")["accounting"]
    assert metrics["ex"] == 100.0 and f"EX 100.0% on 2 questions, exact match 100.0%; {SUMMARY}" in out
    assert metrics["skipped"]["by_reason"] == {"missing database": 1, "not a SQLite database": 2,
                                               "empty database file (0 bytes)": 1}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Every question: 7 in all, 2 scored" in report and "not a SQLite database 2" in report
    assert "whose database is missing" not in report and "goldbad" in report

    from t2s.eval.evaluate import evaluate_cli

    assert evaluate_cli([f"predictions={pfile}", f"out={tmp_path / 'eval'}", "dataset=jsonl", f"dataset.path={qfile}",
                         f"dataset.db_dir={dbs}", f"paths.cache_dir={tmp_path / 'cache'}", "run.progress=false"]) == 0
    assert SUMMARY in capsys.readouterr().out
    assert _json(tmp_path / "eval" / "metrics.json")["accounting"] == EXPECTED


def test_a_prediction_on_a_file_that_is_not_a_database_is_categorized_not_a_database(tmp_path: Path, quiet: None) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n")
    ex = Example(qid="p", question="?", db_id="passwd", db_path=str(passwd), gold_sql="SELECT 1")
    scorer = Scorer(workers=1, cache_dir=tmp_path / "cache")
    try:
        (rec,) = scorer.score([ex], {"p": "SELECT name FROM singer WHERE"})
    finally:
        scorer.close()
    # SQLite reports the syntax error before it reads the file; the verdict says what the file is first
    assert rec["status"] == "error" and rec["pred_error"].startswith(f"not a SQLite database: {passwd}")
    assert "incomplete input" in rec["pred_error"] and rec["error_category"] == "not_a_database"


def test_a_damaged_gold_cache_is_moved_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from t2s.eval.execution import score_execution

    db = _make_db(tmp_path / "a.sqlite")
    items = [("SELECT count(*) FROM singer", "SELECT count(*) FROM singer", [str(db)])]
    assert score_execution(items, workers=0, cache_dir=tmp_path / "cache")[0].correct
    gold = tmp_path / "cache" / "gold" / "gold.sqlite"
    gold.write_bytes(b"garbage " * 512)
    forget_checks()
    with caplog.at_level(logging.WARNING, logger="t2s"):
        (verdict,) = score_execution(items, workers=0, cache_dir=tmp_path / "cache")
    assert verdict.correct and not verdict.gold_cached
    assert f"gold result cache {gold} is damaged" in caplog.text
    (aside,) = gold.parent.glob("gold.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"garbage")
    assert score_execution(items, workers=0, cache_dir=tmp_path / "cache")[0].gold_cached
