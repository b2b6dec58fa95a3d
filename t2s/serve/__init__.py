"""Serving a configured pipeline behind an HTTP API and a demo page (`t2s serve`; docs/serving.md).

`service.Service` (the pipeline from `t2s.run.runner.build_pipeline`, micro-batching, validated read-only execution),
`app.create_app` (FastAPI app, pydantic models, the demo page in `static/`), `validate.validate_select` (the
SELECT-only validation layer), `ddl.build_ddl_database` (schemas given as DDL), `server.serve` (uvicorn).
"""
