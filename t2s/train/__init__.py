"""Training small models for single stages (`t2s train train=<recipe>`): one `<recipe>_config.py` +
`<recipe>_trainer.py` per recipe, root config `conf/train.yaml`. Reserved; the recipes land with the training issue."""
