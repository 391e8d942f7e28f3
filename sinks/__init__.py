"""The warehouse side: tables, write modes and the checkpoint table, one folder per backend."""
