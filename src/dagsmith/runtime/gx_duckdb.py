"""Great Expectations' SQL execution engine on DuckDB, for validations of tables larger than memory.

GX 1.x runs an expectation as SQL through SQLAlchemy on any dialect it is given; DuckDB's is
duckdb-engine's. One thing stands between them: GX reads a query's rows after it has returned the
connection to the pool (SqlAlchemyExecutionEngine.execute_query, great_expectations 1.24.1
execution_engine/sqlalchemy_execution_engine.py:1576-1590: `with self.get_connection() as
connection: result = ...; return result`), which SQLAlchemy 2 allows only for drivers whose
results outlive their connection; a DuckDB cursor IS its connection, so the rows are gone by
then (GX keeps the connection open only for sqlite, SQL Server, BigQuery and Databricks, ibid.
:181-186). `BufferedDuckDBDialect` is duckdb-engine's dialect with every result fetched when its
statement runs (SQLAlchemy's FullyBufferedCursorFetchStrategy): GX's metric queries return a
few aggregate rows (and at most 20 unexpected values), so buffering them costs nothing.

Which expectations run here (SQL_EXPECTATIONS) is not a guess: tests/runtime/test_validate_sql.py
runs each on generated tables with nulls through this engine and through GX's pandas engine and
requires the same outcome, counts and observed values.
"""

from __future__ import annotations

from duckdb_engine import Dialect
from sqlalchemy.engine import cursor as _cursor

DIALECT = "duckdb.dagsmith"  # registered by `register`; the URL scheme is duckdb+dagsmith://


class _BufferedContext(Dialect.execution_ctx_cls):
    def post_exec(self):
        super().post_exec()
        if self.cursor.description is not None:  # a statement with rows: fetch them now
            self.cursor_fetch_strategy = _cursor.FullyBufferedCursorFetchStrategy(self.cursor)


class BufferedDuckDBDialect(Dialect):
    execution_ctx_cls = _BufferedContext
    supports_statement_cache = False  # duckdb-engine's own dialect says the same


def register() -> None:
    from sqlalchemy.dialects import registry

    registry.register(DIALECT, __name__, "BufferedDuckDBDialect")
