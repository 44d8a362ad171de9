"""``python -m enrich.store.postgres [NAME]``: print a canned query in PostgreSQL's SQL for psql, or
list them. Its parameters are psql variables::

    python -m enrich.store.postgres run_rejected_rows | psql "$DATABASE_URL" -v run_id=123
"""
from __future__ import annotations

import sys

from enrich.store.postgres.queries import CANNED_QUERIES, psql_sql


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in CANNED_QUERIES:
        for query in CANNED_QUERIES.values():
            params = " ".join(f"-v {p}=" for p in query.parameters)
            print(f"{query.name:26} {query.title}{'   (psql ' + params + ')' if params else ''}")
        return 0 if not args else 2
    query = CANNED_QUERIES[args[0]]
    sys.stdout.write(f"-- {query.title}: {query.description}\n{psql_sql(query.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
