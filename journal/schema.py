"""Installing and upgrading the rewind schema in a target database, through Alembic."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Final

import psycopg

from journal.connection import connect
from journal.errors import BadInput

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic and SQLAlchemy are imported where they are used: they take about 0.3 s to import, which
# every `rewind` command would otherwise pay although only `init` and revision checks need them.

_PRIVILEGES = """
SELECT has_database_privilege(current_database(), 'CREATE') AS can_create,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS is_super,
       current_user AS who,
       current_database() AS db
"""


@dataclass(frozen=True)
class InitResult:
    database: str
    revision: str
    upgraded_from: str | None
    event_triggers: bool


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(files("journal").joinpath("migrations")))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


# The revision this code reads and writes: Alembic's head, kept as a constant because asking
# Alembic costs half a second per command (tests/test_cli.py checks that the two agree).
SCHEMA_REVISION: Final = "0010"


def current_revision(conn: psycopg.Connection) -> str | None:
    """The installed schema revision, or None when rewind was never installed here."""
    row = conn.execute("SELECT to_regclass('rewind.alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    got = conn.execute("SELECT version_num FROM rewind.alembic_version").fetchone()
    return got[0] if got else None


def require_installed(conn: psycopg.Connection) -> None:
    """Refuse a database without the rewind schema, or with another revision of it than this code
    reads and writes (a function or column it needs would be missing: a one-line answer instead)."""
    revision = current_revision(conn)
    if revision is None:
        raise BadInput("rewind is not installed in this database: run `rewind init` first")
    if revision != SCHEMA_REVISION:
        what = ("run `rewind init` to upgrade it" if revision < SCHEMA_REVISION
                else "use the newer rewind that upgraded it")
        raise BadInput(f"the rewind schema in this database is at revision {revision} and this rewind needs "
                       f"{SCHEMA_REVISION}: {what}")


def init(dsn: str, *, event_triggers: bool = True) -> InitResult:
    """Create or upgrade the rewind schema. Idempotent: at head it changes nothing.

    Event triggers (DDL capture, tracking of new tables) need superuser; without it init
    refuses and names what is missing, unless event_triggers=False is asked for explicitly.
    """
    with connect(dsn) as conn:
        can_create, is_super, who, db = conn.execute(_PRIVILEGES).fetchone()  # type: ignore[misc]
        before = current_revision(conn)
        missing = []
        if before is None and not can_create and not is_super:
            missing.append(f"CREATE on database {db}")
        if event_triggers and not is_super:
            missing.append("superuser (event triggers that record DDL and track new tables; "
                           "or pass --no-event-triggers)")
        if missing:
            raise BadInput(f"role {who} lacks: " + "; ".join(missing))

    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    engine = create_engine("postgresql+psycopg://", creator=lambda: connect(dsn, autocommit=False),
                           poolclass=NullPool)
    try:
        with engine.begin() as sa_conn:
            sa_conn.exec_driver_sql("CREATE SCHEMA IF NOT EXISTS rewind")
            cfg = _alembic_config()
            cfg.attributes["connection"] = sa_conn
            cfg.attributes["event_triggers"] = event_triggers
            command.upgrade(cfg, "head")
            revision = MigrationContext.configure(
                sa_conn, opts={"version_table_schema": "rewind"}).get_current_revision()
    finally:
        engine.dispose()
    return InitResult(database=db, revision=revision or "", upgraded_from=before,
                      event_triggers=event_triggers)
