"""Schema serializations (`t2s.stages.SchemaFormat`): `ddl`, `markdown`, `mschema`."""
