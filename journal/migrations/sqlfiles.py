"""Migrations keep their SQL in journal/sql/*.sql; this runs one file on the migration's connection."""

from importlib.resources import files

from alembic import op


def run_sql_file(name: str) -> None:
    # Straight to psycopg with no parameters: no client-side placeholder parsing, so the SQL's
    # own format() patterns (%I, %s) reach PostgreSQL untouched.
    run_sql(files("journal").joinpath("sql", name).read_text())


def run_sql(statement: str) -> None:
    """One statement without parameters, the same way as run_sql_file."""
    op.get_bind().connection.driver_connection.execute(statement)
