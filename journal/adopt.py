"""Adopting a complete bypass gap into the journal, so that undo can use it.

A bypass gap whose images are complete (REPLICA IDENTITY FULL, nothing TOASTed left out) holds
everything an undo needs: the before and after image of every row the bypass wrote. Adopting it
journals those rows as one action (actor rewind:bypass, run gap:<id>) with the gap's xid and
commit time, each change at its own WAL position (`pos`), so the planner orders it among the
journal's other changes exactly as it happened and sees later writers of the same rows as
conflicts. Then `rewind preview/undo --action <id>` work as for any action.

Images come from WAL in PostgreSQL's text form; each value is cast to its column's type (the
table's columns now, by name) and written by to_jsonb, as the capture triggers do and stream mode's
journaling does (journal.ingest.typed_image), so an adopted change looks like a captured one.
Generated columns are not in WAL: an adopted image has them NULL (the undo never writes them, but
a conflict check may see the difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from journal.connection import connect
from journal.errors import BadInput, Refused
from journal.ingest import typed_image
from journal.schema import require_installed

__all__ = ["ADOPT_ACTOR", "Adopted", "adopt_gap"]

ADOPT_ACTOR = "rewind:bypass"

_GAP = """
SELECT g.kind, g.xid, g.table_name, g.complete, g.adopted_tx, k.id, k.schema_name, k.table_name
FROM rewind.gap g
LEFT JOIN rewind.tracked k ON k.schema_name || '.' || k.table_name = g.table_name
     AND k.untracked_at IS NULL AND k.dropped_at IS NULL
WHERE g.id = %s
FOR UPDATE OF g
"""

# The 32-bit xid of the stream, widened with the current epoch (the one before when it is ahead).
_TX = """
WITH cur AS (SELECT pg_current_xact_id()::text::numeric AS x),
     wide AS (SELECT floor(cur.x / 4294967296) * 4294967296 + %(xid)s::numeric AS x FROM cur)
INSERT INTO rewind.tx (xid, actor, role, run, started_at, commit_lsn, committed_at)
SELECT (CASE WHEN wide.x > cur.x THEN wide.x - 4294967296 ELSE wide.x END)::text::xid8, %(actor)s,
       '(bypass)', 'gap:' || g.id, g.at, g.end_lsn, g.at
FROM rewind.gap g, cur, wide WHERE g.id = %(gap)s
RETURNING id
"""

_CHANGES = """
INSERT INTO rewind.change (tx, pos, tbl, op, before, after, at)
SELECT %(tx)s, (i->>'lsn')::bigint, %(tbl)s, (i->>'op')::"char",
       CASE WHEN jsonb_typeof(i->'before') = 'object' THEN {before} END,
       CASE WHEN jsonb_typeof(i->'after') = 'object' THEN {after} END,
       g.at
FROM rewind.gap g CROSS JOIN LATERAL jsonb_array_elements(g.images) i
WHERE g.id = %(gap)s
"""
_COLUMNS = """
SELECT a.attname, tn.nspname, t.typname
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class Adopted:
    gap: int
    action: int  # the rewind.tx id to preview or undo
    changes: int

    def as_json(self) -> dict[str, Any]:
        return {"gap": self.gap, "action": self.action, "changes": self.changes}


def adopt_gap(dsn: str, gap_id: int) -> Adopted:
    """Journal a complete bypass gap as an action; refused for an incomplete or adopted one."""
    with connect(dsn, autocommit=False) as conn:
        require_installed(conn)
        row = conn.execute(_GAP, (gap_id,)).fetchone()
        if row is None:
            raise BadInput(f"unknown gap id: {gap_id}")
        kind, _, table, complete, adopted, tbl, schema_name, table_name = row
        if kind != "bypass" or not complete:
            raise Refused(f"gap {gap_id} is not a complete bypass ({kind}, complete={complete}): "
                          "its images cannot rebuild the rows")
        if adopted is not None:
            raise Refused(f"gap {gap_id} was adopted already as action {adopted}")
        if tbl is None:
            raise Refused(f"gap {gap_id}: {table} is not tracked now")
        tx_row = conn.execute(_TX, {"xid": row[1], "actor": ADOPT_ACTOR, "gap": gap_id}).fetchone()
        assert tx_row is not None
        tx = int(tx_row[0])
        table = sql.Identifier(schema_name, table_name).as_string(conn)
        columns = [(r[0], sql.Identifier(r[1], r[2])) for r in conn.execute(_COLUMNS, (table,))]

        def image(side: str) -> sql.Composable:
            return typed_image(columns, [sql.SQL("i->{}->>{}").format(sql.Literal(side), sql.Literal(name))
                                         for name, _ in columns])
        query = sql.SQL(_CHANGES).format(before=image("before"), after=image("after"))
        changes = conn.execute(query, {"tx": tx, "tbl": tbl, "gap": gap_id}).rowcount
        conn.execute("UPDATE rewind.gap SET adopted_tx = %s WHERE id = %s", (tx, gap_id))
        conn.commit()
        return Adopted(gap=gap_id, action=tx, changes=changes)
