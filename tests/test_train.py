"""`t2s train`: configs, data builders, rewards (fast); every recipe trains the tiny model on real Spider train rows,
saves an adapter and loads it back into the pipeline by config (slow); resume after a real kill (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import compose_config, requires_spider, step_instruction

from t2s.config import PROJECT_ROOT
from t2s.testing import run_if
from t2s.train.app import build_recipe, compose_train_config, train

#: small sizes for the tiny model (max 512 positions): prompts cut to 320 tokens, short completions
TINY = ["llm=tiny", "dataset.limit=12", "train.data.max_prompt_tokens=320", "train.data.val_size=3"]
TINY_SFT = [*TINY, "train.max_steps=4", "train.val_every=2", "train.batch_size=4", "train.checkpoint_every=2",
            "train.max_completion_tokens=64", "train.val_max_new_tokens=16", "train.warmup_steps=1", "train.lr=1e-3"]
CONF_TRAIN = PROJECT_ROOT / "conf" / "train"


def tcfg(cache: Path, overrides: list[str]):
    return compose_train_config([f"paths.cache_dir={cache}", *overrides])


# ------------------------------------------------------------------------------------------------ configs
def test_every_train_option_composes_and_builds(session_cache: Path) -> None:
    recipes = sorted(p.stem for p in CONF_TRAIN.glob("*.yaml"))
    assert {"sft", "grpo", "selection", "share_bam", "share_sam", "share_lom", "rstar"} <= set(recipes)
    for recipe in recipes:
        assert build_recipe(tcfg(session_cache, [f"train={recipe}"])) is not None
    for group in ("peft", "data", "logger"):
        for option in sorted(p.stem for p in (CONF_TRAIN / group).glob("*.yaml")):
            built = build_recipe(tcfg(session_cache, [f"train/{group}={option}"]))
            assert getattr(built, group) is not None
    assert build_recipe(tcfg(session_cache, ["train/peft=dora"])).peft.method == "dora"


def test_typo_in_train_key_fails_naming_it(session_cache: Path) -> None:
    cfg = tcfg(session_cache, ["+train.lerning_rate=1e-3"])
    with pytest.raises(ValueError, match="lerning_rate"):
        build_recipe(cfg)
    with pytest.raises(ValueError, match="over_length"):
        build_recipe(tcfg(session_cache, ["train.data.over_length=squeeze"]))


# ------------------------------------------------------------------------------------------------ data
def _builder_inputs(session_cache: Path, overrides: list[str]):
    from transformers import AutoTokenizer

    from t2s.train.common import base_model_path, load_examples, make_executor, schema_source

    cfg = tcfg(session_cache, overrides)
    return (build_recipe(cfg).data, load_examples(cfg), schema_source(cfg),
            AutoTokenizer.from_pretrained(base_model_path(cfg)), make_executor(cfg))


@requires_spider
def test_sft_rows_are_the_generators_prompts_deterministic_and_hashed(session_cache: Path, tmp_path: Path) -> None:
    from t2s.env import Env  # noqa: F401  (the generator's code path below)
    from t2s.generation import sql_request
    from t2s.llm.base import GenParams
    from t2s.prompts import load_prompt
    from t2s.types import Task

    builder, examples, schemas, tok, ex = _builder_inputs(session_cache, ["llm=tiny", "dataset.limit=10",
                                                                          "train.data.max_prompt_tokens=4000"])
    try:
        a = builder.build(examples, schemas, tok, tmp_path / "a", executor=ex)
        b = builder.build(examples, schemas, tok, tmp_path / "b", executor=ex)
    finally:
        ex.close()
    assert a.digest == b.digest and a.path is not None and a.path.name == f"rows-{a.digest[:12]}.jsonl"
    assert a.path.read_text() == b.path.read_text()
    stats = json.loads((tmp_path / "a" / "stats.json").read_text())
    assert stats["n_rows"] == len(a.rows) == 10 - stats["n_val"] and stats["prompt_tokens"]["max"] > 0
    assert not {r.qid for r in a.rows} & {e.qid for e in a.val_examples}
    row = a.rows[0]
    example = next(e for e in examples if e.qid == row.qid)
    request = sql_request(load_prompt("zero_shot_v1"), Task(example=example), schemas.view(example), GenParams())
    assert row.messages == request.message_dicts()
    assert row.completion.startswith("```sql\n") and example.gold_sql.strip().rstrip(";") in row.completion


@requires_spider
def test_over_length_policy_drop_and_truncate_are_counted(session_cache: Path) -> None:
    from t2s.train.data import prompt_tokens

    for policy in ("drop", "truncate"):
        builder, examples, schemas, tok, ex = _builder_inputs(
            session_cache, ["llm=tiny", "dataset.limit=10", "train.data.max_prompt_tokens=300",
                            f"train.data.over_length={policy}", "train.data.val_size=0"])
        try:
            built = builder.build(examples, schemas, tok, None, executor=ex)
        finally:
            ex.close()
        assert all(prompt_tokens(tok, r.messages) <= 300 for r in built.rows)
        if policy == "drop":
            assert built.stats["dropped_over_length"] == 10 - len(built.rows) > 0
        else:
            assert built.stats["truncated_schema"] > 0 and len(built.rows) == 10
            assert all("Question:" in r.messages[-1]["content"] for r in built.rows)


@requires_spider
def test_multitask_selection_and_share_rows(session_cache: Path) -> None:
    from t2s_plugins.corrector.share import parse_mask_answers, parse_trajectory_reply
    from t2s_plugins.corrector.share.trajectory import fill_masks, parse_trajectory

    from t2s.prompts import load_prompt
    from t2s.train.data import build_row_builder

    builder, examples, schemas, tok, ex = _builder_inputs(session_cache, [
        "llm=tiny", "dataset.limit=12", "train.data.max_prompt_tokens=4000", "train.data.val_size=0",
        "train.data.tasks=[sql,reverse_question,self_refine,select_pair,share_bam,share_sam,share_lom]"])
    try:
        built = builder.build(examples, schemas, tok, None, executor=ex)
    finally:
        ex.close()
    kinds = built.stats["kinds"]
    assert kinds["sql"] == kinds["reverse_question"] == 12
    assert kinds["self_refine"] > 0 and kinds["select_pair"] > 0 and kinds["share_lom"] > 0
    by_qid = {e.qid: e for e in examples}
    inference = {k: load_prompt(build_row_builder(k).prompt) for k in ("select_pair", "share_bam", "share_sam",
                                                                        "share_lom")}
    for r in built.rows:
        if r.task == "reverse_question":
            assert r.completion == by_qid[r.qid].question
        if r.task == "self_refine":
            assert r.meta["wrong_origin"] and by_qid[r.qid].gold_sql.strip() not in r.messages[-1]["content"]
        if r.task in inference:  # built with the prompt of the stage that loads the adapter, answered as it parses
            assert r.messages[0]["content"] == inference[r.task].system.replace("{dialect}", "SQLite")
        if r.task in ("share_bam", "share_lom"):
            assert parse_trajectory_reply(r.completion) == parse_trajectory(r.completion.strip("`\n"))
        if r.task == "share_sam":
            masked = r.messages[-1]["content"].split("masks:\n")[1]
            assert "[MASK]" in masked and fill_masks(masked, parse_mask_answers(r.completion))
    answers = [r.completion for r in built.rows if r.task == "select_pair"]
    assert set(answers) <= {"A", "B"} and abs(answers.count("A") - answers.count("B")) <= 1


def test_a_resumed_sft_continues_the_data_order_where_the_checkpoint_left_it() -> None:
    from t2s.train.sft_trainer import ResumableShuffle

    n, batch = 10, 3  # 4 batches per epoch, the last one short
    uninterrupted = ResumableShuffle(n, 0, batch)
    seen = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        seen.append(list(uninterrupted))
    assert all(sorted(e) == list(range(n)) for e in seen) and seen[0] != seen[1]
    resumed = ResumableShuffle(n, 0, batch)
    resumed.resume(5)  # killed after 5 batches: epoch 1, one batch in
    resumed.set_epoch(1)  # what Lightning calls for the restored epoch
    assert list(resumed) == seen[1][3:]
    resumed.set_epoch(2)
    assert list(resumed) == seen[2]  # later epochs are whole again


#: a scripted policy for one demo question ("How many book titles does the library have?", gold count(*) of books):
#: the count plan leads to the right SQL, the sum plan to SQL that runs but is wrong, the direct SQL returns no rows
#: and its revision is right
SEARCH_RULES = [
    # by template and fields, answered in each template's reply format (SQL_REPLY, STEP_REPLY)
    {"template": "mcts_revise", "answer": {"sql": "SELECT count(*) FROM books"}},
    {"template": "mcts_sql", "when": {"steps_block": "plan: count rows"}, "answer": {"sql": "SELECT count(*) FROM books"}},
    {"template": "mcts_sql", "when": {"steps_block": "plan: sum ids"}, "answer": {"sql": "SELECT sum(book_id) FROM books"}},
    {"template": "mcts_step", "when": {"instruction": step_instruction("plan")},
     "answers": [{"text": "plan: count rows"}, {"text": "plan: sum ids"}]},
    {"template": "mcts_step", "when": {"instruction": step_instruction("values")},
     "answer": {"text": "books.book_id"}},
    {"template": "mcts_sql", "answer": {"sql": "SELECT title FROM books WHERE 0"}},
]


def test_search_rows_rebuild_the_mcts_prompts_and_back_up_gold_values(tmp_path: Path) -> None:
    import sqlite3

    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from t2s.run.runner import run
    from t2s.train.common import base_model_path, load_examples, make_executor, schema_source

    cache = tmp_path / "cache"
    cfg = compose_config(["dataset=demo", "dataset.limit=1", "generator=mcts", "generator.simulations=6",
                          "llm=scripted", "llm.default=nothing"], cache_dir=cache)
    cfg.llm.rules = OmegaConf.create(SEARCH_RULES)
    run_dir = tmp_path / "run"
    run(cfg, run_dir=run_dir)
    rec = json.loads((run_dir / "predictions.jsonl").read_text().splitlines()[0])
    assert any(rec["candidate_correct"]) and not all(rec["candidate_correct"])

    tc = compose_train_config([f"paths.cache_dir={cache}", "llm=tiny", "dataset=demo", "dataset.limit=1",
                               "train.data.val_size=0", "train.data.max_prompt_tokens=4000",
                               "train.data.tasks=[mcts_step,ppm_step]", f"train.data.predictions={run_dir}"])
    builder = build_recipe(tc).data
    ex = make_executor(tc)
    examples, schemas = load_examples(tc), schema_source(tc)
    try:
        built = builder.build(examples, schemas, AutoTokenizer.from_pretrained(base_model_path(tc)), None, executor=ex)
    finally:
        ex.close()
    # every policy row is a prompt the search really sent, and its target what the policy answered there
    with sqlite3.connect(cache / "llm_cache.sqlite") as db:
        sent = [json.loads(r[0]) for r in db.execute("SELECT request FROM responses")]
    sent_msgs = [[{"role": m[0], "content": m[1]} for m in p["messages"]] for p in sent]
    steps = [r for r in built.rows if r.task == "mcts_step"]
    assert steps and all(r.messages in sent_msgs for r in steps)
    # validation EX of a policy trained on search steps asks the search's own root SQL prompt
    assert builder.val_prompt(examples[0], schemas.view(examples[0])) in sent_msgs
    targets = {r.meta["action"]: r.completion for r in steps}
    assert targets["plan"] == "plan: count rows" and "sum" not in json.dumps([r.completion for r in steps])
    assert all(r.completion == "```sql\nSELECT count(*) FROM books\n```" for r in steps if r.meta["action"] in ("sql", "revise"))
    # the search rewarded both plans' SQL (both return rows); gold-backed values keep only the right one
    ppm = {r.messages[-1]["content"].split("Steps so far:\n")[1].split("\n")[-3]: r.completion
           for r in built.rows if r.task == "ppm_step"}
    assert ppm == {"- Query plan: plan: count rows": "Yes", "- Query plan: plan: sum ids": "No"}


@requires_spider
def test_rewards_from_the_scorer(session_cache: Path) -> None:
    from t2s.train.common import load_examples, make_executor
    from t2s.train.grpo_config import RewardSettings
    from t2s.train.grpo_trainer import GroupStats, component_reward, execution_reward, format_reward

    cfg = tcfg(session_cache, ["llm=tiny", "dataset.limit=1"])
    ex = load_examples(cfg)[0]
    executor = make_executor(cfg)
    settings = RewardSettings(component=0.5)
    stats = GroupStats(group_size=3)
    try:
        comps = [[{"role": "assistant", "content": f"```sql\n{ex.gold_sql}\n```"}],
                 [{"role": "assistant", "content": "```sql\nSELECT 1\n```"}],
                 [{"role": "assistant", "content": "SELEC nonsense"}]]
        cols = {"gold_sql": [ex.gold_sql] * 3, "db_path": [ex.db_path] * 3}
        assert execution_reward(settings, executor, stats)([None] * 3, comps, **cols) == [1.0, 0.1, 0.0]
        assert format_reward(settings)([None] * 3, comps) == [0.1, 0.1, 0.0]
        partial = component_reward(settings, {})([None] * 3, comps, **cols)
        assert partial[0] == 0.5 and partial[2] < 0.5
        assert stats.records[-1]["groups_with_variance"] == 1.0 and stats.records[-1]["within_group_std"] > 0
        assert stats.records[-1]["statuses"] == {"ok": 2, "empty": 1}
    finally:
        executor.close()


@requires_spider
def test_validation_ex_scores_completions_with_the_official_semantics(session_cache: Path) -> None:
    from t2s.train.common import load_examples, make_executor
    from t2s.train.sft_trainer import execution_accuracy

    cfg = tcfg(session_cache, ["llm=tiny", "dataset.limit=4"])
    examples = load_examples(cfg)
    executor = make_executor(cfg)
    try:
        right = [f"```sql\n{e.gold_sql}\n```" for e in examples]
        assert execution_accuracy(examples, right, executor) == (1.0, [True] * 4)
        half = right[:2] + ["```sql\nSELECT 1\n```", "no sql here"]
        assert execution_accuracy(examples, half, executor) == (0.5, [True, True, False, False])
    finally:
        executor.close()


# ------------------------------------------------------------------------------------------------ recipes
def _run_pipeline_with_adapter(session_cache: Path, adapter: Path, tmp_path: Path) -> dict:
    from t2s.run.runner import run

    cfg = compose_config(["dataset=spider_dev", "dataset.limit=2", f"llm.adapter={adapter}",
                          "generator.max_new_tokens=16"], cache_dir=session_cache, output_root=tmp_path / "out")
    metrics = run(cfg, run_dir=tmp_path / "run")
    preds = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all("final_sql" in p for p in preds)
    return metrics


def _assert_adapter(out: Path) -> None:
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "train_config.yaml").is_file() and (out / "summary.json").is_file()


@pytest.mark.slow
@requires_spider
def test_sft_lora_trains_validates_and_plugs_back_in(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "sft"
    summary = train(tcfg(session_cache, TINY_SFT), out)
    _assert_adapter(out)
    assert summary["steps"] == 4 and summary["best"]["metric"] == "val_ex"
    curves = json.loads((out / "curves.json").read_text())
    assert len(curves["train_loss"]) == 4 and len(curves["val_ex"]) == 2 and (out / "curves.png").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    import torch

    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # adapter weights only
    _run_pipeline_with_adapter(session_cache, out / "adapter", tmp_path)


@pytest.mark.slow
@requires_spider
def test_gradient_checkpointing_gives_the_same_losses(session_cache: Path, tmp_path: Path) -> None:
    base = [*TINY_SFT, "train.max_steps=2", "train.val_every=2"]
    plain = train(tcfg(session_cache, base), tmp_path / "plain")
    ckpt = train(tcfg(session_cache, [*base, "train.gradient_checkpointing=true"]), tmp_path / "ckpt")
    assert plain["steps"] == ckpt["steps"] == 2 and ckpt["gradient_checkpointing"] and not plain["gradient_checkpointing"]
    a = json.loads((tmp_path / "plain" / "curves.json").read_text())["train_loss"]
    b = json.loads((tmp_path / "ckpt" / "curves.json").read_text())["train_loss"]
    assert [round(x[1], 4) for x in a] == [round(x[1], 4) for x in b]


@pytest.mark.slow
@requires_spider
def test_dora_and_wandb_offline(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "dora"
    train(tcfg(session_cache, [*TINY_SFT, "train/peft=dora", "train/logger=wandb", "train.max_steps=2"]), out)
    _assert_adapter(out)
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    assert list((out / "wandb").glob("offline-run-*"))
    _run_pipeline_with_adapter(session_cache, out / "adapter", tmp_path)


@pytest.mark.slow
@requires_spider
@run_if(packages=["bitsandbytes"])
def test_qlora_on_tiny_128(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "qlora"
    summary = train(tcfg(session_cache, [*TINY_SFT, "train/peft=qlora", "llm.model=tiny-128", "train.max_steps=2"]),
                    out)
    _assert_adapter(out)
    assert summary["steps"] == 2
    from t2s.run.runner import run

    cfg = compose_config(["dataset=spider_dev", "dataset.limit=2", "llm.model=tiny-128",
                          f"llm.adapter={out / 'adapter'}", "generator.max_new_tokens=8"],
                         cache_dir=session_cache, output_root=tmp_path / "o")
    run(cfg, run_dir=tmp_path / "run")


@pytest.mark.slow
@requires_spider
@pytest.mark.parametrize("recipe", ["selection", "share_lom"])
def test_selection_and_share_recipes(recipe: str, session_cache: Path, tmp_path: Path) -> None:
    from t2s.run.runner import run

    out = tmp_path / recipe
    # the stages' prompts are long for the tiny model's 512-entry BPE vocabulary; RoPE runs past 512 positions
    summary = train(tcfg(session_cache, [f"train={recipe}", *TINY_SFT, "train.max_steps=2",
                                         f"train.data.max_prompt_tokens={480 if recipe == 'selection' else 1500}"]), out)
    _assert_adapter(out)
    assert summary["best"]["metric"] == "val_loss"
    # the adapter goes back into the stage that uses it, by config (the recipe's experiment file)
    adapter = out / "adapter"
    if recipe == "selection":
        name, stage = "selector", "selector"
        overrides = ["experiment=selection_adapter", "llms.selector.model=tiny", "llms.selector.dtype=float32",
                     f"llms.selector.adapter={adapter}"]
    else:
        name, stage = "share_lom", "corrector"
        overrides = ["experiment=share_adapter", "corrector.use_sam=false", "corrector.max_new_tokens=16",
                     "llms.share_bam.adapter=null", "llms.share_sam.adapter=null",
                     f"llms.share_lom.adapter={adapter}",
                     *[f"llms.share_{m}.{k}={v}" for m in ("bam", "sam", "lom") for k, v in (("model", "tiny"), ("dtype", "float32"))]]
    # a scripted generator writes candidates that disagree (so the tournament has games to judge) and parse (so
    # SHARE's deterministic BAM translates them and LOM is asked)
    cfg = compose_config(["dataset=spider_dev", "dataset.limit=2", "llm=scripted", *overrides], cache_dir=session_cache,
                         output_root=tmp_path / "out")
    from omegaconf import OmegaConf

    # the generator's SQL prompt by template (its answers in SQL_REPLY), and SHARE's regeneration, which asks the
    # generator's LLM, likewise
    cfg.llm.rules = OmegaConf.create([{"template": t, "answers": [{"sql": "SELECT name FROM singer"},
                                                                  {"sql": "SELECT count(*) FROM concert"}]}
                                      for t in ("zero_shot", "share_regen")])
    assert cfg.llms[name].adapter == str(adapter) and cfg[stage].get("llm" if stage == "selector" else "lom_llm") == name
    run(cfg, run_dir=tmp_path / "run")
    events = [e for line in (tmp_path / "run" / "traces.jsonl").read_text().splitlines()
              for e in json.loads(line)["events"] if e["stage"] == stage]
    assert sum(e["llm_calls"] for e in events) > 0, events


@pytest.mark.slow
@requires_spider
def test_grpo_tiny(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo"
    summary = train(tcfg(session_cache, ["train=grpo", *TINY, "train.max_steps=2", "train.group_size=2",
                                         "train.max_completion_tokens=12", "train.save_every=1"]), out)
    _assert_adapter(out)
    assert summary["steps"] == 2
    lines = [json.loads(x) for x in (out / "rewards.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and all("reward" in r and "within_group_std" in r for r in lines)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    # killed after step 2 was logged but before its checkpoint landed: the rerun resumes from step 1, runs step 2
    # again, and the reward log keeps one line per step
    import shutil

    shutil.rmtree(out / "checkpoints" / "checkpoint-2")
    with (out / "rewards.jsonl").open("a") as f:
        f.write('{"step": 3, "rew')  # a line cut short by the kill
    again = train(tcfg(session_cache, ["train=grpo", *TINY, "train.max_steps=2", "train.group_size=2",
                                       "train.max_completion_tokens=12", "train.save_every=1"]), out)
    assert again["resumed_from"] == 1 and again["steps_this_run"] == 1
    assert [json.loads(x)["step"] for x in (out / "rewards.jsonl").read_text().splitlines()] == [1, 2]
    assert [p[0] for p in again["reward_curve"]] == [1, 2]
    _run_pipeline_with_adapter(session_cache, out / "adapter", tmp_path)


@pytest.mark.slow
@requires_spider
def test_sft_resumes_after_a_kill(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    args = [f"paths.cache_dir={session_cache}", *TINY_SFT, "train.max_steps=40", "train.val_every=20",
            "train.checkpoint_every=2", "train.patience=0", f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "t2s.cli", "train", *args], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 600
    try:
        while not last.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert last.is_file(), "no checkpoint was written before the deadline"
        time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "summary.json").exists()
    done = subprocess.run([sys.executable, "-m", "t2s.cli", "train", *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2
    assert summary["steps"] == 40 and summary["steps_this_run"] == 40 - summary["resumed_from"]
    steps = [p[0] for p in json.loads((out / "curves.json").read_text())["train_loss"]]
    assert steps == sorted(steps) and steps[-1] == 40


@pytest.mark.slow
@requires_spider
def test_rstar_rounds_generate_filter_sft_and_resume(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "rstar"
    overrides = ["train=rstar", "llm=tiny", "dataset.limit=8", "train.rounds=2", "train.generator=zero_shot",
                 "train.generator_overrides=['generator.max_new_tokens=8']", "train.policy.max_steps=2",
                 "train.policy.val_every=2", "train.policy.batch_size=4", "train.policy.val_max_new_tokens=8",
                 "train.policy.max_completion_tokens=64", "train.policy.data.max_prompt_tokens=700",
                 "train.policy.data.val_size=2", "train.policy.data.include_gold=true"]
    summary = train(tcfg(session_cache, overrides), out)
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][1]["generator_adapter"] == summary["rounds"][0]["policy"]["adapter"]
    assert (out / "round0" / "generate" / "predictions.jsonl").is_file()
    assert (out / "round1" / "ppm" / "adapter" / "adapter_config.json").is_file()
    _assert_adapter(out)
    mtime = (out / "round0" / "round.json").stat().st_mtime
    train(tcfg(session_cache, overrides), out)  # finished rounds are skipped
    assert (out / "round0" / "round.json").stat().st_mtime == mtime


@pytest.mark.slow
@requires_spider
def test_rstar_with_mcts_trains_on_search_steps_and_searches_with_the_ppm(session_cache: Path, tmp_path: Path) -> None:
    from t2s_plugins.generator.mcts.rstar import _generate

    out = tmp_path / "rstar_mcts"
    overrides = ["train=rstar", "llm=tiny", "dataset.limit=4", "train.rounds=1",
                 "train.generator_overrides=['generator.simulations=1','generator.max_new_tokens=8',"
                 "'generator.step_tokens=8','generator.actions=[plan]']",
                 "train.policy.max_steps=1", "train.policy.val_every=1", "train.policy.batch_size=2",
                 "train.policy.val_max_new_tokens=8", "train.policy.max_completion_tokens=64",
                 "train.policy.data.max_prompt_tokens=400", "train.policy.data.val_size=1",
                 "train.policy.data.include_gold=true"]
    cfg = tcfg(session_cache, overrides)
    # through the CLI: the recipe composes its generation runs inside the running `t2s train` Hydra app
    env = {**os.environ, "T2S_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "t2s.cli", "train", f"paths.cache_dir={session_cache}", *overrides,
                           f"hydra.run.dir={out}"], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    (rnd,) = summary["rounds"]
    # the random model never writes correct SQL: policy rows fall back to the gold SQL as the search's root `sql`
    # step (so they are `mcts_step` rows in the search prompt), and no sibling pair exists for the PPM
    assert rnd["policy_rows"] == {"mcts_step": 3} and rnd["ppm"]["adapter"] is None and "ppm_step" in rnd["ppm"]["skipped"]
    assert list((out / "round0" / "generate" / "mcts").glob("*.json"))
    rows = [json.loads(x) for x in next((out / "round0" / "policy" / "data").glob("rows-*.jsonl")).read_text().splitlines()]
    assert all("write one SQLite SELECT query" in r["messages"][0]["content"] for r in rows)
    _assert_adapter(out)
    # the next round searches with a PPM adapter: every new reasoning step gets a PPM score
    built = build_recipe(cfg)
    _generate(built, cfg, summary["adapter"], tmp_path / "with_ppm", ppm_adapter=summary["adapter"])
    nodes = [n for f in (tmp_path / "with_ppm" / "mcts").glob("*.json") for n in json.loads(f.read_text())["nodes"]]
    steps = [n for n in nodes if n["action"] == "plan"]
    assert steps and all(n["ppm"] is not None and 0.0 < n["ppm"] < 1.0 for n in steps)


@pytest.mark.slow
@requires_spider
def test_grpo_selection_variant_binary_reward(session_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "grpo_sel"
    summary = train(tcfg(session_cache, ["train=grpo", "train/data=selection", "train.reward.task=select_pair",
                                         *TINY, "train.data.max_prompt_tokens=700", "train.max_steps=1",
                                         "train.group_size=2", "train.max_completion_tokens=2"]), out)
    _assert_adapter(out)
    assert summary["steps"] == 1 and summary["data"]["kinds"] == {"select_pair": summary["data"]["n_rows"]}
    rec = json.loads((out / "rewards.jsonl").read_text().splitlines()[0])
    assert "rewards/selection/mean" in rec and 0.0 <= rec["reward"] <= 1.0
