"""tomo's storage: SQLModel tables, repositories and migrations (SQLite and Postgres)."""
