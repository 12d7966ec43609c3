"""`switchboard import oneapi`: bring channels and keys over from a One API or New API database.

- `database_url.py`: the `--database` forms accepted (SQLAlchemy URLs, One API's SQL_DSN, a SQLite path)
- `source.py`: reading their tables (schema from their `model/token.go`, `model/channel.go`)
- `mapping.py`: their channel types, quotas, expiry, status → Switchboard's admin API bodies
- `importer.py`: the plan, `--dry-run`, and applying it through the admin API over HTTP
"""
