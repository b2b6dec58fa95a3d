"""SQL helpers shared by the core and plugins: getting SQL out of model text (`extract`), schema serialization
(`schema_format`). SQL parsing and rewriting is sqlglot's; these modules only apply it."""
