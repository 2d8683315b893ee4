"""Package data: pipeline.schema.json, built by scripts/build_schema.py."""
