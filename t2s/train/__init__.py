"""Training small models for single stages (`t2s train train=<recipe>`; docs/training.md).

One `<recipe>_config.py` (typed settings built from `conf/train/<recipe>.yaml`) + `<recipe>_trainer.py` (a recipe
class in named steps and its entry function) per generic recipe: `sft` (Lightning + PEFT: LoRA / DoRA / QLoRA; also
the recipes that only change its data, e.g. `selection`) and `grpo` (TRL's GRPOTrainer, rewards from t2s's scorer);
`common.py` holds what they share. A method's own recipe lives in its package and is found only through its YAML's
`_target_`. `rows.py` is the row-kind seam (`RowBuilder`, the shared kinds; a method's kinds live in its package,
each with a YAML in `conf/train/rows/`), `data.py` composes the kinds a recipe lists into rows with the pipeline's own
prompt code; `app.py` is the Hydra app (root config `conf/train.yaml`), `launch.py` the DDP child ranks.
"""
