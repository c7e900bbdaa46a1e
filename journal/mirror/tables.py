"""The mirror's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Migrations (journal/mirror/migrations) own the schema; these definitions are what the code reads
and writes, and tests/test_mirror.py checks that both agree. Values stay as PostgreSQL wrote them
in the stream: row images are the jsonb text (never re-parsed on the way in), timestamps are
ISO-8601 text in UTC. Transaction and DDL times are normalized to one fixed width
(2026-11-24T10:42:00.000000+00:00) so that they compare correctly as text on either backend.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

# One row per journaled transaction (rewind.tx), with its commit position from the stream (unknown
# for a transaction copied from the journal at the first start that was never stamped).
tx = Table(
    "rewind_tx", metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("xid", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("application", Text),
    Column("client_addr", Text),
    Column("pid", Integer),
    Column("run", Text),
    Column("started_at", Text, nullable=False),
    Column("commit_lsn", BigInteger),
    Column("committed_at", Text),
)

# One row per changed row (rewind.change). (commit_lsn, seq) is the change's place in the stream:
# the key that makes a replay after a crash write nothing twice. Rows copied from the journal when
# a new mirror first started have commit_lsn 0 and their change id as seq.
change = Table(
    "rewind_change", metadata,
    Column("commit_lsn", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", BigInteger, nullable=False),
    Column("pos", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    Column("tbl", Integer, nullable=False),
    Column("table_name", Text, nullable=False),  # schema.table, unquoted
    Column("op", String(1), nullable=False),
    Column("before", Text),
    Column("after", Text),
    Column("at", Text, nullable=False),
    Index("rewind_change_tx", "tx"),
)

ddl = Table(
    "rewind_ddl", metadata,
    Column("commit_lsn", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", BigInteger, nullable=False),
    Column("tx", BigInteger, nullable=False),
    Column("tbl", Integer),
    Column("table_name", Text),
    Column("command", Text, nullable=False),
    Column("object_type", Text),
    Column("object_identity", Text),
    Column("at", Text, nullable=False),
    Index("rewind_ddl_tx", "tx"),
)

# rewind.tracked, so that table names and keys resolve after the database is gone.
tracked = Table(
    "rewind_tracked", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("relid", BigInteger),
    Column("schema_name", Text, nullable=False),
    Column("table_name", Text, nullable=False),
    Column("key_columns", Text, nullable=False),  # JSON list
    Column("mode", Text, nullable=False),
    Column("tracked_at", Text),
    Column("untracked_at", Text),
    Column("dropped_at", Text),
)

# What the journal is missing, said out loud: kind bypass (a write the triggers did not see) or
# slot_reset (the slot was recreated past max_lag: nothing between start_lsn and end_lsn is known).
gap = Table(
    "rewind_gap", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("xid", Text),
    Column("table_name", Text),
    Column("changes", BigInteger),
    Column("complete", Boolean, nullable=False),
    Column("at", Text, nullable=False),
    Column("start_lsn", BigInteger),
    Column("end_lsn", BigInteger),
    Column("start_time", Text),
    Column("end_time", Text),
    Column("detail", Text),  # JSON: identity and operations of a bypass, the reason of a reset
    Column("images", Text),  # JSON list of {op, lsn, before, after, unchanged} of a bypass, as WAL carried them
)

# Where the stream stands, written in the same mirror transaction as the data it covers.
checkpoint = Table(
    "rewind_checkpoint", metadata,
    Column("slot", Text, primary_key=True),
    Column("database", Text, nullable=False),
    Column("confirmed_lsn", BigInteger, nullable=False),
    Column("updated_at", Text, nullable=False),
)
