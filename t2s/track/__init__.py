"""Tracking and comparing runs: `t2s compare` (`compare`), the sweep summary callback (`sweep`), run loggers
(`loggers`, `wandb_logger`) and keeping secrets out of everything written (`secrets`)."""
