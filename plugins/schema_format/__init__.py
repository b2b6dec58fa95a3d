"""Schema serializations (`t2s.sql.schema_format.SchemaFormat`): `ddl`, `markdown`, `mschema`."""
