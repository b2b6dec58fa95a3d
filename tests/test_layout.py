"""The layout of docs/design.md holds: the core names no method, a method's files sit in its package, moved stage
classes keep old run directories resumable, and templates are found by name wherever their package puts them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from t2s.config import PROJECT_ROOT
from t2s.prompts import PROMPT_DIR, load_prompt, plugin_prompt_dirs, prompt_files
from t2s.run.store import MOVED_TARGETS, canonical_targets, fingerprint

CORE = PROJECT_ROOT / "t2s"
METHODS = ("share", "chase", "mcts", "rstar", "tournament", "trajectory", "pv")


def test_no_module_folder_or_prompt_under_t2s_is_named_after_a_method() -> None:
    """Issue 22's `find t2s -iregex '.*\\(share\\|chase\\|...\\).*'` prints nothing."""
    pattern = re.compile("|".join(METHODS), re.I)
    named = [p.relative_to(PROJECT_ROOT).as_posix() for p in CORE.rglob("*")
             if "__pycache__" not in p.parts and pattern.search(p.relative_to(PROJECT_ROOT).as_posix())]
    assert named == []


def test_no_class_or_function_under_t2s_is_named_after_a_method() -> None:
    """Issue 22's `grep -rniE '^\\s*(def|class) \\w*(share|chase|...|pv_)' t2s` prints nothing (no exception for
    `shared_...`: the core has no such name either)."""
    pattern = re.compile(r"^\s*(?:def|class) \w*(?:share|chase|mcts|rstar|tournament|trajectory|pv_)", re.I | re.M)
    hits = [f"{p.relative_to(PROJECT_ROOT)}: {m.group(0).strip()}" for p in CORE.rglob("*.py")
            for m in pattern.finditer(p.read_text())]
    assert hits == []


def test_the_core_never_imports_a_plugin() -> None:
    """`t2s/` reaches a plugin only through a `_target_` in a YAML file: no `import t2s_plugins...` / `from
    t2s_plugins...` anywhere in it, and `t2s/train/` does not even name the package."""
    imports = re.compile(r"^\s*(?:from|import)\s+t2s_plugins\b", re.M)
    hits = [p.relative_to(PROJECT_ROOT).as_posix() for p in CORE.rglob("*.py") if imports.search(p.read_text())]
    assert hits == []
    assert [p.relative_to(PROJECT_ROOT).as_posix() for p in (CORE / "train").rglob("*.py")
            if "t2s_plugins" in p.read_text()] == []


def test_every_row_kind_is_a_yaml_and_the_method_kinds_live_in_their_packages() -> None:
    """Row kinds are found through `conf/train/rows/<kind>.yaml`; the kinds of one method point into its package,
    and the kinds in `t2s.train.rows` are the shared ones."""
    import yaml

    targets = {p.stem: yaml.safe_load(p.read_text())["_target_"]
               for p in (PROJECT_ROOT / "conf" / "train" / "rows").glob("*.yaml")}
    assert {"sql", "self_sql", "reverse_question", "reverse_evidence", "self_refine"} <= set(targets)
    pattern = re.compile("|".join(METHODS), re.I)
    for kind, target in targets.items():
        if pattern.search(kind):
            assert target.startswith("t2s_plugins."), f"row kind {kind} names a method but {target} is in the core"
        assert not (target.startswith("t2s.") and pattern.search(target)), target


@pytest.mark.parametrize("new", [t for t in MOVED_TARGETS if t != "t2s_plugins." and MOVED_TARGETS[t].startswith("plugins.")])
def test_a_moved_stage_class_keeps_the_fingerprint_of_every_earlier_name(new: str) -> None:
    old = MOVED_TARGETS[new]  # plugins.<stage>.<method>.<Class>: before the wheel
    between = "t2s_plugins." + old[len("plugins."):]  # t2s_plugins.<stage>.<method>.<Class>: before the package
    configs = [{"corrector": {"_target_": name, "rounds": 1}, "seed": 0} for name in (new, between, old)]
    assert len({fingerprint(c) for c in configs}) == 1
    assert canonical_targets(configs[0]) == configs[2]
    module, _, cls = new.rpartition(".")
    assert hasattr(__import__(module, fromlist=[cls]), cls), f"{new} does not exist"


@pytest.mark.parametrize("new", [t for t in MOVED_TARGETS if MOVED_TARGETS[t].startswith("t2s.")])
def test_a_class_moved_out_of_the_core_keeps_its_fingerprint_and_its_recorded_configs_build(new: str) -> None:
    """A recipe that moved from `t2s/` into its method's package: a run or training config recorded under the old
    name fingerprints as the new one, and a recorded `train` node under the old name still builds (`t2s train`'s
    `current_targets`)."""
    from omegaconf import OmegaConf

    from t2s.train.app import build_recipe, compose_train_config, current_targets

    old = MOVED_TARGETS[new]
    assert not (PROJECT_ROOT / (old.rpartition(".")[0].replace(".", "/") + ".py")).exists()
    assert fingerprint({"train": {"_target_": new}}) == fingerprint({"train": {"_target_": old}})
    assert current_targets({"train": {"_target_": old, "x": [{"_target_": old}]}}) == \
        {"train": {"_target_": new, "x": [{"_target_": new}]}}
    module, _, cls = new.rpartition(".")
    klass = getattr(__import__(module, fromlist=[cls]), cls)
    recipes = [p.stem for p in (PROJECT_ROOT / "conf" / "train").glob("*.yaml")
               if f"_target_: {new}" in p.read_text()]
    assert recipes, f"no conf/train recipe names {new}"
    cfg = compose_train_config([f"train={recipes[0]}"])
    recorded = OmegaConf.create(OmegaConf.to_yaml(cfg).replace(new, old))  # as train_config.yaml held it
    assert recorded.train._target_ == old and isinstance(build_recipe(recorded), klass)


def test_every_moved_target_is_what_conf_names() -> None:
    targets = {line.split(":", 1)[1].strip() for p in (PROJECT_ROOT / "conf").rglob("*.yaml")
               for line in p.read_text().splitlines() if line.startswith("_target_:")}
    assert {t for t in MOVED_TARGETS if t != "t2s_plugins."} <= targets


def test_a_run_directory_made_before_the_method_packages_still_resumes(session_cache: Path, tmp_path: Path) -> None:
    """A run recorded `_target_: t2s_plugins.verifier.pv.PVVerifier` (the single-file plugin) and, before the wheel,
    `plugins.verifier.pv.PVVerifier`: the same command re-reports it instead of refusing a "different configuration"."""
    import t2s

    overrides = [f"paths.cache_dir={session_cache}", "llm=tiny", "embedder=hashing", "run.progress=false",
                 "dataset.limit=2", "verifier=pv", "verifier.max_rounds=0"]
    run_dir = tmp_path / "run"
    first = t2s.run_pipeline(overrides, run_dir)
    for old in ("t2s_plugins.verifier.pv.PVVerifier", "plugins.verifier.pv.PVVerifier"):
        for name in ("run.json", "config.yaml"):  # as the code before the move wrote them
            f = run_dir / name
            text = f.read_text()
            f.write_text(re.sub(r"(t2s_)?plugins\.verifier\.pv(\.verifier)?\.PVVerifier", old, text))
            assert old in f.read_text()
        again = t2s.run_pipeline(overrides, run_dir)
        assert again["scored"] == first["scored"] == 2 and again["ex"] == first["ex"]


def test_templates_are_found_by_name_in_the_core_and_in_method_packages() -> None:
    files = prompt_files()
    assert files["zero_shot_v1"].parent == PROMPT_DIR
    assert files["share_bam_v1"].parent.name == "share" and files["mcts_step_v1"].parent.name == "mcts"
    assert load_prompt("tournament_v1").id == "tournament_v1"
    assert all(not f.is_relative_to(PROMPT_DIR) for n, f in files.items() if re.match("|".join(METHODS[:-1]), n)
               and not n.startswith("chase_"))
    with pytest.raises(FileNotFoundError, match="known templates"):
        load_prompt("no_such_template_v1")


def test_two_files_claiming_one_template_name_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = tmp_path / "pkg"
    extra.mkdir()
    (extra / "zero_shot_v1.yaml").write_text("name: zero_shot\nversion: 1\nsystem: ''\nuser: x\n")
    monkeypatch.setattr("t2s.prompts.plugin_prompt_dirs", lambda: [*plugin_prompt_dirs(), extra])
    with pytest.raises(ValueError, match="zero_shot_v1: .*zero_shot_v1.yaml"):
        load_prompt("zero_shot_v1")
