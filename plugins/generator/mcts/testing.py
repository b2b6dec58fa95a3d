"""What the shared tests need to build this package's options (`t2s.testing.option_overrides` reads it)."""

#: extra overrides per option of this package in the contract and config tests: the tiny model writes 256 junk tokens
#: per sample, so the search stays small
TEST_OVERRIDES: dict[str, list[str]] = {
    "mcts": ["generator.simulations=1", "generator.branching=1", "generator.max_new_tokens=24",
             "generator.step_tokens=16"],
}
