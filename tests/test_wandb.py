"""`logger=wandb`: a real wandb run in offline mode, its files in the run directory, no secret in any of them."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

from t2s.track.wandb_logger import WandbLogger, flatten, is_secret_key, scrub_overrides, strip_secrets  # noqa: E402

SECRET = "sk-SECRET-9f3b2c"


def read_records(path: Path) -> list[Any]:
    """The protobuf records of a `.wandb` file (LevelDB log format: 7-byte file header, 32 KiB blocks of chunks
    with a 7-byte header crc32/length/type; type 1 = full, 2/3/4 = first/middle/last)."""
    data, block, pos, out, buf = path.read_bytes(), 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


def offline_run_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def closed_records(path: Path, timeout: float = 20.0) -> list[Any]:
    """The records of a `.wandb` file once its exit record is on disk (wandb's service flushes the file a few
    milliseconds after `finish()` returns)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


def metrics_fixture() -> dict[str, Any]:
    return {"dataset": "demo", "ex": 50.0, "n": 2, "gold_errors": {"count": 0, "qids": []},
            "cost": {"totals": {"llm_calls": 2}, "means": {"llm_calls_per_question": 1.0, "wall_seconds_per_question": 0.4},
                     "per_stage": {"generator": {"llm_calls": 2, "prompt_tokens": 600, "wall_seconds": 0.8}}},
            "attribution": {"generator/zero_shot": {"stage": "generator", "plugin": "zero_shot", "n": 2, "fixed": 1,
                                                    "broken": 0, "unchanged": 1, "input_correct": 0,
                                                    "overcorrection_rate": None}}}


@pytest.fixture
def job_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hydra-like job directory whose overrides (and command line) carry a secret."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    run_dir = tmp_path / "multirun" / "sweepX" / "generator.n=2,schema_format=ddl"
    (run_dir / ".hydra").mkdir(parents=True)
    overrides = ["generator.n=2", "schema_format=ddl", f"llms.judge.api_key={SECRET}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(
        {"hydra": {"runtime": {"choices": {"schema_format": "ddl", "hydra/launcher": "joblib"}}}}))
    monkeypatch.setattr(sys, "argv", ["t2s run", "-m", *overrides])
    return run_dir


CONFIG = {"seed": 0, "generator": {"n": 2, "max_new_tokens": 256},
          "llms": {"generator": {"model": "tiny", "hf_token": SECRET},
                   "judge": {"model": "gpt-x", "api_key": SECRET, "password": SECRET, "client_secret": SECRET}}}


def test_secret_keys_are_recognised() -> None:
    for key in ("api_key", "OPENAI_API_KEY", "hf_token", "token", "db.password", "client_secret", "apiKey"):
        assert is_secret_key(key), key
    for key in ("max_new_tokens", "prompt_tokens", "tokenizer", "model", "author", "api_key_env"):
        assert not is_secret_key(key), key
    stripped = strip_secrets(CONFIG)
    assert stripped["llms"]["judge"] == {"model": "gpt-x"} and stripped["generator"]["max_new_tokens"] == 256
    assert scrub_overrides(["a.api_key=x", "+b.token=y", "c=1"]) == ["a.api_key=<redacted>", "+b.token=<redacted>", "c=1"]


def test_offline_run_in_the_run_dir_with_everything_and_no_secret(job_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "by_hardness.png"
    fig, ax = plt.subplots()
    ax.bar(["easy"], [50.0])
    fig.savefig(png)
    plt.close(fig)

    logger = WandbLogger(mode="offline")
    logger.start(config=CONFIG, run_dir=job_dir, name=job_dir.name, group=job_dir.parent.name)
    logger.log_metrics(metrics_fixture())
    logger.log_images({"by_hardness": png})
    logger.log_table("predictions", ["qid", "question", "final_sql", "correct", "error_category"],
                     [["q0", "How many?", "SELECT 1", True, None], ["q1", "Who?", "SELECT x", False, "wrong_column"]])
    logger.finish(True)

    files = offline_run_files(job_dir)
    assert len(files) == 1, list(job_dir.rglob("*"))
    records = closed_records(files[0])
    for f in (job_dir / "wandb").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f"secret leaked into {f}"
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == job_dir.name and run.run_group == "sweepX"
    assert run.run_id == WandbLogger.run_id(job_dir)
    config_keys = {u.key for u in run.config.update}
    assert {"generator", "llms", "seed", "_t2s"} <= config_keys
    summary = {u.key for r in records if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert {"ex", "cost/means/llm_calls_per_question", "attribution/generator/zero_shot/fixed", "t2s_status"} <= summary
    media = job_dir.glob("wandb/offline-run-*/files/media/**/*")
    names = {p.name.split("_")[0] for p in media if p.is_file()}
    assert {"predictions", "cost", "attribution", "by"} <= names, names  # tables and the image
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [0]


def test_run_name_and_group_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hydra names job dirs after their overrides, so a secret passed on the command line is in the dir name
    (and so in every path wandb records: keep secrets in environment variables); name and group are redacted."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = tmp_path / f"sweep,hf_token={SECRET}" / f"a=1,llm.api_key={SECRET}"
    logger = WandbLogger(mode="offline")
    logger.start(config={"seed": 0}, run_dir=run_dir, name=run_dir.name, group=run_dir.parent.name)
    logger.finish(True)
    run = next(r.run for r in closed_records(offline_run_files(run_dir)[0]) if r.WhichOneof("record_type") == "run")
    assert run.display_name == "a=1,llm.api_key=<redacted>" and run.run_group == "sweep,hf_token=<redacted>"
    assert SECRET not in json.dumps(dict(run_config(run)))


def run_config(run: Any) -> dict[str, Any]:
    return {u.key: json.loads(u.value_json) for u in run.config.update}


def test_finish_after_failure_records_exit_code_1(job_dir: Path) -> None:
    import wandb

    logger = WandbLogger(mode="offline")
    logger.start(config={"seed": 0}, run_dir=job_dir, name=job_dir.name, group=None)
    try:
        raise RuntimeError("stage crashed")
    except RuntimeError:
        logger.finish(False)
    logger.finish(False)  # a second call is harmless
    assert wandb.run is None
    records = closed_records(offline_run_files(job_dir)[0])
    assert [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"] == [1]


def test_rerun_of_the_same_job_reuses_the_run_id(job_dir: Path) -> None:
    for _ in range(2):
        logger = WandbLogger(mode="offline")
        logger.start(config={"seed": 0}, run_dir=job_dir, name=job_dir.name, group=None)
        logger.finish(True)
    files = offline_run_files(job_dir)
    ids = {next(r.run.run_id for r in closed_records(f) if r.WhichOneof("record_type") == "run") for f in files}
    assert files and ids == {WandbLogger.run_id(job_dir)}


def test_flatten_keeps_scalars_only() -> None:
    flat = flatten(metrics_fixture())
    assert flat["cost/per_stage/generator/prompt_tokens"] == 600
    assert "gold_errors/qids" not in flat and "attribution/generator/zero_shot/overcorrection_rate" not in flat


def test_bad_mode_names_the_config_key() -> None:
    with pytest.raises(ValueError, match="logger.mode"):
        WandbLogger(mode="offlne")


def _run_ids(run_dir: Path) -> list[str]:
    """The wandb run id of each offline run in a run directory, oldest first."""
    return [next(r.run.run_id for r in closed_records(f) if r.WhichOneof("record_type") == "run")
            for f in sorted(offline_run_files(run_dir), key=lambda p: p.stat().st_mtime)]


def test_run_resume_false_starts_a_new_wandb_run_and_later_resumes_continue_it(job_dir: Path) -> None:
    for resume in (True, False, True):
        logger = WandbLogger(mode="offline")
        logger.start(config={"seed": 0, "run": {"resume": resume}}, run_dir=job_dir, name=job_dir.name, group=None)
        logger.finish(True)
    first, fresh, resumed = _run_ids(job_dir)
    assert fresh != first and resumed == fresh  # the start-over's history is not appended to the old run's
    assert (job_dir / "wandb_run_id").read_text().strip() == fresh


def test_two_machines_with_the_same_run_dir_path_get_two_runs(job_dir: Path, tmp_path: Path) -> None:
    """The same path on another machine is another directory: the id is random and kept in the directory, not
    derived from its path, so the second machine does not log into the first machine's run."""
    import shutil

    logger = WandbLogger(mode="offline")
    logger.start(config={"seed": 0}, run_dir=job_dir, name=job_dir.name, group=None)
    logger.finish(True)
    (machine_a,) = _run_ids(job_dir)
    shutil.move(str(job_dir), str(tmp_path / "machine_a"))  # machine B: the same path, its own disk
    (job_dir / ".hydra").mkdir(parents=True)
    logger = WandbLogger(mode="offline")
    logger.start(config={"seed": 0}, run_dir=job_dir, name=job_dir.name, group=None)
    logger.finish(True)
    (machine_b,) = _run_ids(job_dir)
    assert machine_b != machine_a and len(machine_a) == len(machine_b) == 16


def test_a_run_deleted_in_the_ui_is_replaced_by_a_new_one(job_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """wandb's server refuses an id whose run was deleted (HTTP 409, "run <id> was previously created and deleted;
    try a new run name"). Not testable offline against a server: the refusal comes from a stand-in for the
    server's answer to the deleted id, then the real (offline) `wandb.init` runs with the new id."""
    import wandb
    from wandb.errors import CommError

    from t2s.track.wandb_logger import init_run, run_id_for

    deleted = run_id_for(job_dir)
    calls: list[str] = []

    def server_init(*, id: str, **kwargs):  # noqa: A002  (wandb's keyword)
        calls.append(id)
        if id == deleted:
            raise CommError(f'Error uploading run: returned error 409: {{"errors":[{{"message":"run {id} was '
                            'previously created and deleted; try a new run name","path":["upsertBucket"]}]}')
        return wandb.init(id=id, **kwargs)

    with caplog.at_level("WARNING", logger="t2s"):
        run = init_run(server_init, job_dir, fresh=False, project="t2s", mode="offline", dir=str(job_dir))
    run.finish()
    assert calls[0] == deleted and calls[1] != deleted and run.id == calls[1]
    assert (job_dir / "wandb_run_id").read_text().strip() == run.id  # the next resume uses the new run
    assert "was deleted on the server" in caplog.text
    with pytest.raises(CommError, match="network down"):  # any other failure is not taken for a deleted run
        init_run(lambda **_: (_ for _ in ()).throw(CommError("network down")), job_dir, fresh=False)


def test_a_run_dir_from_before_the_id_file_keeps_its_wandb_run(job_dir: Path) -> None:
    """Older t2s named the wandb run by a hash of the directory's path; such a directory resumes that run."""
    import hashlib

    from t2s.track.wandb_logger import run_id_for

    legacy = hashlib.sha256(str(job_dir.resolve()).encode()).hexdigest()[:16]
    (job_dir / "wandb" / f"offline-run-20260101_000000-{legacy}").mkdir(parents=True)
    assert run_id_for(job_dir) == legacy and (job_dir / "wandb_run_id").read_text().strip() == legacy
    assert run_id_for(job_dir, fresh=True) != legacy
