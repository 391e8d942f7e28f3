"""A sink for any SQLAlchemy URL: PostgreSQL (COPY fast path), MySQL/MariaDB, SQLite and others."""
