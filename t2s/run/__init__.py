"""Running a pipeline: the Hydra app (`app`), `run(cfg)` (`runner`), stage building and batching (`pipeline`), and
the resumable run directory (`store`)."""
