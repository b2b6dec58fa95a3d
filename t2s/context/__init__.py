"""Per-database context for the context stages (issue 10): the field index (`fields`), schema-linking helpers
(`linking`: foreign-key closure of a column selection, scores against the gold SQL's tables and columns)."""
