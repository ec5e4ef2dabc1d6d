"""SQL backend: DuckDB (being built)."""
