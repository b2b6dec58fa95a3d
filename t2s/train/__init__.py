"""Training small models for single stages (`t2s train train=<recipe>`; docs/training.md).

One `<recipe>_config.py` (typed settings built from `conf/train/<recipe>.yaml`) + `<recipe>_trainer.py` per recipe:
`sft` (Lightning + PEFT: LoRA / DoRA / QLoRA; also the `selection` and `share_*` recipes with other data builders),
`grpo` (TRL's GRPOTrainer, rewards from t2s's scorer), `rstar` (self-evolution rounds). `data.py` builds the rows
with the pipeline's own prompt code; `app.py` is the Hydra app (root config `conf/train.yaml`).
"""
