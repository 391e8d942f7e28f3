"""Pipeline definitions, the runner and the `kafka-etl` CLI."""
