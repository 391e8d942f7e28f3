"""PostgreSQL's own parts of the SQL backend: the binary COPY row path and its encoder."""
