"""Every option of every config group composes and builds; the root schema rejects typos."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from t2s.config import CONF_DIR
from t2s.registry import format_registry, groups, options
from t2s.run.checks import option_choices, option_name
from t2s.run.pipeline import ConfigError, build_stage, check_arguments
from t2s.stages import STAGE_GROUPS
from t2s.testing import option_overrides


def all_options() -> list[tuple[str, str]]:
    return [(g, o.name) for g in groups() if g != "experiment" for o in options(g)]


def test_every_stage_group_has_options_and_a_none() -> None:
    for group in STAGE_GROUPS:
        names = {o.name for o in options(group)}
        assert names, f"conf/{group}/ has no options"
        if group not in ("generator", "selector"):
            assert "none" in names, f"conf/{group}/ lacks none.yaml"


@pytest.mark.parametrize("group,option", all_options())
def test_option_composes_and_builds(group: str, option: str, session_cache: Path) -> None:
    cfg = compose_config([f"{group}={option}", *option_overrides(group, option, preds="/dev/null")],
                         cache_dir=session_cache)
    node = cfg[group]
    assert node._target_, f"conf/{group}/{option}.yaml has no _target_"
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    check_arguments(group, node)
    if group in STAGE_GROUPS:
        stage = build_stage(group, node, option_name(group, node, option_choices(cfg)))
        assert stage.kind == group and stage.name == option
    elif group == "llm":
        # building an LLM is lazy (weights load on first generate), so this is cheap for every backend
        obj = instantiate(node, _convert_="all")
        assert hasattr(obj, "generate")
    else:
        obj = instantiate(node, _convert_="all")
        assert obj is not None


def test_misspelled_top_level_key_fails_at_composition(session_cache: Path) -> None:
    with pytest.raises(ConfigCompositionException, match="seeed"):
        compose_config(["seeed=1"], cache_dir=session_cache)
    with pytest.raises(ConfigCompositionException, match="bach_size"):
        compose_config(["run.bach_size=4"], cache_dir=session_cache)


def test_misspelled_plugin_key_names_the_file(session_cache: Path) -> None:
    cfg = compose_config(["+generator.temprature=0.5"], cache_dir=session_cache)
    with pytest.raises(ConfigError, match=r"temprature.*conf/generator/zero_shot.yaml"):
        build_stage("generator", cfg.generator)


def test_wrong_kind_in_a_group_is_refused(session_cache: Path) -> None:
    cfg = compose_config(["selector=first"], cache_dir=session_cache)
    with pytest.raises(ConfigError, match="not a Generator"):
        build_stage("generator", cfg.selector)


def test_plugins_listing_names_all_nine_stage_groups() -> None:
    text = format_registry()
    for group in STAGE_GROUPS:
        assert f"\n{group}  (stage" in "\n" + text
    assert "zero_shot" in text and "Zero-shot generator" in text
    assert "(cannot import" not in text


def test_experiment_dir_is_the_experiment_group() -> None:
    assert (CONF_DIR / "experiment").resolve() == (CONF_DIR.parent / "experiments").resolve()
