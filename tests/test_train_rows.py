"""The row-kind contract: every `conf/train/rows/<kind>.yaml` builds a typed `RowBuilder`, and every builder, run on
a few demo questions (with a scripted `generator=mcts` run as the candidate pools and search trees), makes
well-formed rows, deterministically, that the over-length policy can cut. Kinds are discovered from the folder, so
a new kind is tested by adding its YAML."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import compose_config
from omegaconf import OmegaConf

from t2s.config import PROJECT_ROOT
from t2s.train.data import ROWS_DIR, TrainData, build_row_builder, read_pools, row_kinds
from t2s.train.rows import RowBuilder, RowContext, TrainRow

KINDS = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "train" / "rows").glob("*.yaml"))
ROLES = {"system", "user", "assistant"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Demo questions (every other one given evidence), their schemas, the tiny model's tokenizer, an executor, and
    a `generator=mcts` run over them with the scripted policy of tests/test_train.py (pools with right and wrong
    candidates, saved trees)."""
    from test_train import SEARCH_RULES
    from transformers import AutoTokenizer

    from t2s.run.runner import run
    from t2s.train.app import compose_train_config
    from t2s.train.common import base_model_path, load_examples, make_executor, schema_source

    tmp = tmp_path_factory.mktemp("rows")
    cache = tmp / "cache"
    cfg = compose_config(["dataset=demo", "dataset.limit=3", "generator=mcts", "generator.simulations=6",
                          "llm=scripted", "llm.default=nothing"], cache_dir=cache)
    cfg.llm.rules = OmegaConf.create(SEARCH_RULES)
    run_dir = tmp / "run"
    run(cfg, run_dir=run_dir)
    tc = compose_train_config([f"paths.cache_dir={cache}", "llm=tiny", "dataset=demo", "dataset.limit=3"])
    examples = [dataclasses.replace(e, evidence=f"hint: {e.db_id}") if i % 2 == 0 else e
                for i, e in enumerate(load_examples(tc))]
    executor = make_executor(tc)
    yield {"examples": examples, "schemas": schema_source(tc), "executor": executor, "run_dir": run_dir,
           "tokenizer": AutoTokenizer.from_pretrained(base_model_path(tc))}
    executor.close()


def _data(kind: str, run_dir: Path, **kw: Any) -> TrainData:
    return TrainData(tasks=[kind], predictions=str(run_dir), val_size=0, max_prompt_tokens=4000, **kw)


def test_the_kinds_are_the_folder() -> None:
    assert row_kinds() == KINDS and ROWS_DIR == PROJECT_ROOT / "conf" / "train" / "rows"
    assert {"sql", "self_sql", "reverse_question", "reverse_evidence", "self_refine", "select_pair", "share_bam",
            "share_sam", "share_lom", "mcts_step", "ppm_step"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_every_yaml_builds_a_typed_row_builder(kind: str) -> None:
    node = yaml.safe_load((ROWS_DIR / f"{kind}.yaml").read_text())
    builder = build_row_builder(kind)
    assert isinstance(builder, RowBuilder) and builder.kind == kind
    cls = type(builder)
    assert (cls.__doc__ or "").strip() and cls.rows is not RowBuilder.rows
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    assert all(p.kind == p.KEYWORD_ONLY for p in params), f"{cls.__name__}: keyword-only arguments, no **kwargs"
    assert set(node) - {"_target_"} <= set(builder.params()), "every YAML key is an argument the builder records"
    json.dumps(builder.params())
    with pytest.raises(ValueError, match=f"{kind}.*no_such_argument"):
        build_row_builder(kind, override={"no_such_argument": 1})


@pytest.mark.parametrize("kind", KINDS)
def test_every_builder_makes_well_formed_rows(kind: str, inputs: dict[str, Any]) -> None:
    examples, schemas, tok, executor = (inputs[k] for k in ("examples", "schemas", "tokenizer", "executor"))
    data = _data(kind, inputs["run_dir"])
    built = data.build(examples, schemas, tok, None, executor=executor)
    again = _data(kind, inputs["run_dir"]).build(examples, schemas, tok, None, executor=executor)
    assert built.rows, f"row kind {kind} made no row on the fixture (skipped: {built.stats['skipped']})"
    assert built.digest == again.digest, "same questions, config and tokenizer -> the same rows"
    by_qid = {e.qid: e for e in examples}
    for r in built.rows:
        assert isinstance(r, TrainRow) and r.task == kind and r.qid in by_qid and r.db_id == by_qid[r.qid].db_id
        assert r.messages and all(set(m) == {"role", "content"} and m["role"] in ROLES and isinstance(m["content"], str)
                                  and m["content"].strip() for m in r.messages)
        assert r.messages[-1]["role"] == "user"
        assert isinstance(r.completion, str) and r.completion.strip()
        assert "schema_text" not in r.meta and isinstance(r.meta.get("prompt"), str)
        json.dumps(r.meta)
    assert built.stats["kinds"] == {kind: len(built.rows)}
    assert built.stats["params"]["rows"][kind] == data.builders[kind].params()


@pytest.mark.parametrize("kind", KINDS)
def test_every_builders_rows_carry_the_schema_the_truncation_cuts(kind: str, inputs: dict[str, Any]) -> None:
    """Called directly, a builder's rows keep the schema text in `meta` (the over-length policy cuts exactly that
    text out of the prompt), and the question's schema text is in the prompt."""
    import random

    data = _data(kind, inputs["run_dir"])
    builder = data.builders[kind]
    builder.begin(data.settings)
    pools = read_pools(str(inputs["run_dir"]))
    rows: list[TrainRow] = []
    for ex in inputs["examples"]:
        view = inputs["schemas"].view(ex)
        ctx = RowContext(data=data.settings, example=ex, view=view, schemas=inputs["schemas"],
                         pool=pools.get(ex.qid, []), executor=inputs["executor"], rng=random.Random(0),
                         tokenizer=inputs["tokenizer"])
        for r in builder.rows(ctx):
            assert r.meta["schema_text"] == view.text
            assert any(view.text in m["content"] for m in r.messages), "the schema text is part of the prompt"
            rows.append(r)
    assert rows


def test_a_kind_listed_twice_shares_one_builder_and_the_builds_rng(inputs: dict[str, Any]) -> None:
    examples, schemas, tok = inputs["examples"], inputs["schemas"], inputs["tokenizer"]
    data = TrainData(tasks=["share_lom", "self_refine", "share_lom"], val_size=0, max_prompt_tokens=4000)
    assert list(data.builders) == ["share_lom", "self_refine"]
    built = data.build(examples, schemas, tok, None, executor=inputs["executor"])
    once = TrainData(tasks=["share_lom"], val_size=0, max_prompt_tokens=4000).build(examples, schemas, tok, None)
    assert built.stats["kinds"]["share_lom"] == 2 * once.stats["kinds"]["share_lom"] > 0


def test_prompts_and_rows_set_a_builders_arguments_and_errors_name_the_file() -> None:
    data = TrainData(tasks=["select_pair", "share_lom"], prompts={"select_pair": "zero_shot_v1"},
                     rows={"share_lom": {"kinds": ["delete"]}}, share_kinds=["add"])
    assert data.builders["select_pair"].prompt == "zero_shot_v1"
    assert data.builders["share_lom"].kinds == ["delete"]  # train.data.rows beats the ${data.share_kinds} default
    assert TrainData(tasks=["share_lom"], share_kinds=["substitute"]).builders["share_lom"].kinds == ["substitute"]
    assert TrainData(tasks=["select_pair"], semantics="bird", keep_distinct=True).builders["select_pair"].params() == \
        {"prompt": "tournament_v1", "semantics": "bird", "keep_distinct": True}
    with pytest.raises(ValueError, match="unknown row kind.*no_such_kind.*choose from.*sql"):
        TrainData(tasks=["no_such_kind"])
    with pytest.raises(ValueError, match="train.data.prompts: no prompt to set.*'sql'"):
        TrainData(tasks=["sql"], prompts={"sql": "zero_shot_v1"})
    with pytest.raises(ValueError, match=r"conf/train/rows/share_lom.yaml.*jumble"):
        TrainData(tasks=["share_lom"], share_kinds=["jumble"])


class EchoRows(RowBuilder):
    """A toy kind defined outside `conf/` (`train.data.rows.<kind>` with `_target_`): the question -> itself."""

    def __init__(self, *, prefix: str = "") -> None:
        self.prefix = prefix

    def rows(self, ctx: RowContext) -> list[TrainRow]:
        return [self.row(ctx, [{"role": "user", "content": ctx.view.text + ctx.example.question}],
                         self.prefix + ctx.example.question, prompt="none")]


def test_a_kind_without_a_yaml_is_a_node_in_train_data_rows(inputs: dict[str, Any]) -> None:
    data = TrainData(tasks=["echo", "sql"], val_size=0, max_prompt_tokens=4000,
                     rows={"echo": {"_target_": "test_train_rows.EchoRows", "prefix": "Q: "}})
    built = data.build(inputs["examples"], inputs["schemas"], inputs["tokenizer"], None)
    echo = [r for r in built.rows if r.task == "echo"]
    assert len(echo) == len(inputs["examples"]) and all(r.completion.startswith("Q: ") for r in echo)
    assert built.rows[0].task == "echo" and built.rows[1].task == "sql"  # question by question, in `tasks` order


def test_the_adapter_kinds_ask_the_prompt_of_the_stage_that_loads_the_adapter() -> None:
    conf = PROJECT_ROOT / "conf"
    stage = {"select_pair": ("selector/adaptive_tournament.yaml", "prompt"),
             "share_bam": ("corrector/share.yaml", "bam_prompt"), "share_sam": ("corrector/share.yaml", "sam_prompt"),
             "share_lom": ("corrector/share.yaml", "lom_prompt")}
    for kind, (path, key) in stage.items():
        assert build_row_builder(kind).prompt == yaml.safe_load((conf / path).read_text())[key], kind


def test_validation_asks_the_generators_prompt_unless_only_a_search_policy_is_trained(inputs: dict[str, Any]) -> None:
    ex = inputs["examples"][0]
    view = inputs["schemas"].view(ex)
    run_dir = inputs["run_dir"]
    generator = TrainData(tasks=["sql"]).sql_prompt(ex, view)
    assert TrainData(tasks=["mcts_step", "sql"], predictions=str(run_dir)).val_prompt(ex, view) == generator
    assert TrainData(tasks=["select_pair"]).val_prompt(ex, view) == generator
    search = TrainData(tasks=["ppm_step", "mcts_step"], predictions=str(run_dir)).val_prompt(ex, view)
    assert search != generator and "write one SQLite SELECT" in json.dumps(search)
    assert TrainData(tasks=["sql"]).trains_sql and not TrainData(tasks=["select_pair"]).trains_sql
