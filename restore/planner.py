"""Turning a selection of actions into a plan of compensating operations, and applying it.

The plan lives in a temporary table for the length of one transaction. Preview builds it and
rolls back; undo builds it again under locks, compares its fingerprint with the one the operator
previewed, applies it set-based, and then checks that the undo's own journaled changes are
exactly the plan before it commits.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql

from journal.errors import BadInput, Refused
from journal.selection import Selection
from restore import statements as st
from restore.statements import TableInfo

UNDO_ACTOR = "rewind:undo"

_PLAN_TABLE = """
CREATE TEMP TABLE rw_plan (
    tbl        integer NOT NULL,
    key        jsonb NOT NULL,
    action     "char" NOT NULL,       -- compensation: I insert, U update, D delete, N nothing
    n          integer NOT NULL DEFAULT 1,
    expected   jsonb,                 -- the row as the selection left it
    target     jsonb,                 -- the row as it was before the selection
    actual     jsonb,                 -- the row as it is now
    first_id   bigint NOT NULL,
    changed_by text[],
    later_cols text[],
    conflict   text,
    apply      boolean NOT NULL DEFAULT true
) ON COMMIT DROP
"""

_SELECTED = """
SELECT t.id FROM rewind.tx t WHERE {tx_filter}
  AND EXISTS (SELECT 1 FROM rewind.change c WHERE c.tx = t.id AND {table_filter})
"""

_TABLES = """
SELECT k.id, k.relid, k.schema_name, k.table_name, k.key_columns, k.untracked_at IS NOT NULL,
       k.dropped_at IS NOT NULL, min(c.id)
FROM rewind.change c JOIN rewind.tracked k ON k.id = c.tbl
WHERE c.tx = ANY(%(txs)s) AND {table_filter}
GROUP BY k.id
"""

_FKS = """
SELECT con.conrelid, con.confrelid,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = u.n ORDER BY u.i),
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint con WHERE con.contype = 'f'
"""

_CLASS = """
SELECT c.oid, n.nspname, c.relname, rewind.key_columns(c.oid),
       (SELECT k.id FROM rewind.tracked k WHERE k.relid = c.oid AND k.untracked_at IS NULL AND k.dropped_at IS NULL)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s
"""

_FINGERPRINT = """
SELECT count(*), coalesce(sum(('x' || left(md5(
    tbl::text || '|' || key::text || '|' || action::text || '|' || n::text || '|' || coalesce(expected::text, '') || '|'
    || coalesce(target::text, '') || '|' || coalesce(conflict, '') || '|' || coalesce(actual::text, '')
    || '|' || apply::text), 15))::bit(60)::bigint), 0)
FROM rw_plan
"""

_COUNTS = """
SELECT tbl, action::text, sum(n) FROM rw_plan WHERE apply AND action <> 'N' GROUP BY 1, 2
"""

_CONFLICTS = """
SELECT tbl, key, expected, actual, changed_by, conflict, action::text, apply FROM rw_plan
WHERE conflict IS NOT NULL ORDER BY tbl, key::text LIMIT %(limit)s
"""

_SAMPLES = """
SELECT tbl, action::text, key, expected, target FROM (
    SELECT *, row_number() OVER (PARTITION BY tbl, action ORDER BY first_id) AS rn
    FROM rw_plan WHERE apply AND action <> 'N') s
WHERE rn <= %(per_table)s ORDER BY tbl, action, first_id
"""

# The undo's own journal must be exactly the plan: compare order-independent digests first
# (cheap for a million rows) and only list differences when they disagree.
_EXPECTED = """
SELECT p.tbl, p.action AS op,
       CASE WHEN p.action IN ('D', 'U') THEN p.expected END AS before,
       CASE WHEN p.action IN ('I', 'U') THEN p.target END AS after
FROM rw_plan p CROSS JOIN LATERAL generate_series(1, p.n) g
WHERE p.apply AND p.action IN ('I', 'U', 'D')
"""
_CAPTURED = "SELECT c.tbl, c.op, c.before, c.after FROM rewind.change c WHERE c.tx = %(undo_tx)s"
_DIGEST = """
SELECT count(*), coalesce(sum(('x' || left(md5(tbl::text || '|' || op::text || '|' || coalesce(before::text, '')
       || '|' || coalesce(after::text, '')), 15))::bit(60)::bigint), 0) FROM ({q}) s
"""
_DIFFERENCE = """
(SELECT 'unexpected' AS kind, * FROM (({captured}) EXCEPT ALL ({expected})) a)
UNION ALL
(SELECT 'missing', * FROM (({expected}) EXCEPT ALL ({captured})) b)
LIMIT 20
"""

_OP_NAMES = {"I": "insert", "U": "update", "D": "delete"}


class Policy(StrEnum):
    ABORT = "abort"
    SKIP = "skip"
    MERGE = "merge"


@dataclass
class Conflict:
    table: str
    pk: Any
    expected: Any
    actual: Any
    changed_by: list[str]
    reason: str
    resolution: str  # what the policy does with it: refused, skipped, merged

    def as_json(self) -> dict[str, Any]:
        return {"table": self.table, "pk": self.pk, "expected": self.expected, "actual": self.actual,
                "changed_by": self.changed_by, "reason": self.reason, "resolution": self.resolution}


@dataclass
class Plan:
    fingerprint: str
    changes: int  # selected change records
    actions: list[int]
    tables: dict[str, dict[str, int]]
    conflicts: list[Conflict]
    conflict_count: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    policy: Policy = Policy.ABORT
    sql_script: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(sum(ops.values()) for ops in self.tables.values())

    def as_json(self) -> dict[str, Any]:
        return {"plan": self.fingerprint, "changes": self.changes, "actions": self.actions,
                "policy": str(self.policy), "tables": self.tables, "rows": self.rows,
                "conflicts": [c.as_json() for c in self.conflicts],
                "conflict_count": self.conflict_count, "samples": self.samples}


def _diff(before: Any, after: Any) -> dict[str, list[Any]]:
    before, after = before or {}, after or {}
    return {k: [before.get(k), after.get(k)] for k in dict.fromkeys([*before, *after])
            if before.get(k) != after.get(k)}


class Planner:
    """One plan on one connection inside one open transaction."""

    def __init__(self, conn: psycopg.Connection, selection: Selection, policy: Policy) -> None:
        self.conn = conn
        self.selection = selection
        self.policy = policy
        self.tables: dict[int, TableInfo] = {}
        self.txs: list[int] = []
        self.min_ids: dict[int, int] = {}

    def select(self) -> None:
        sel = self.selection
        q = sql.SQL(_SELECTED).format(tx_filter=sel.tx_filter("t"), table_filter=sel.table_filter("c"))
        self.txs = [r[0] for r in self.conn.execute(q, sel.params())]
        if not self.txs:
            raise BadInput("empty selection: no journaled changes match")
        q = sql.SQL(_TABLES).format(table_filter=sel.table_filter("c"))
        for tbl, relid, schema, name, key, untracked, dropped, min_id in self.conn.execute(
                q, {**sel.params(), "txs": self.txs}):
            if dropped or relid is None:
                raise Refused(f"table {schema}.{name} was dropped; it cannot be undone row by row")
            if untracked:
                raise Refused(f"table {schema}.{name} is no longer tracked; track it again to undo on it")
            self.tables[tbl] = TableInfo.load(self.conn, tbl, relid, schema, name, key)
            self.min_ids[tbl] = min_id

    def lock(self) -> None:
        """Writers wait while the undo plans and applies, so the plan sees the state it changes."""
        for t in self.tables.values():
            self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(t.ident))

    def build(self) -> None:
        self.conn.execute(_PLAN_TABLE)
        for t in self.tables.values():
            params = {"tbl": t.tbl, "txs": self.txs, "min_id": self.min_ids[t.tbl]}
            self.conn.execute(st.plan_keyed(t) if t.key else st.plan_keyless(t), params)
        self.conn.execute("ANALYZE rw_plan")
        for t in self.tables.values():
            params = {"tbl": t.tbl, "txs": self.txs, "min_id": self.min_ids[t.tbl]}
            if t.key:
                self.conn.execute(st.later_writers(t), params)
                if t.session_dependent:
                    self.conn.execute(st.renormalize_expected(t), params)
        keyless = [t.tbl for t in self.tables.values() if not t.key]
        self.conn.execute("""
            UPDATE rw_plan SET conflict = CASE
                WHEN actual IS DISTINCT FROM expected THEN
                    CASE WHEN expected IS NULL THEN 'row exists again' WHEN actual IS NULL THEN 'row was deleted'
                         ELSE 'row changed' END || ' since the selection'
                WHEN changed_by IS NOT NULL THEN 'row changed in between by others'
            END
            WHERE tbl <> ALL(%(keyless)s)
        """, {"keyless": keyless})
        self.conn.execute("""
            UPDATE rw_plan SET conflict = 'only ' || (actual ->> 'copies') || ' of ' || n || ' identical rows left'
            WHERE tbl = ANY(%(keyless)s) AND action = 'D' AND (actual ->> 'copies')::int < n
        """, {"keyless": keyless})
        self.conn.execute("UPDATE rw_plan SET changed_by = ARRAY['(unjournaled write)'] "
                          "WHERE conflict IS NOT NULL AND changed_by IS NULL")
        self._dependents()
        self._resolve()

    def _dependents(self) -> None:
        """A row the undo deletes must not take or block rows that others wrote later."""
        deleting = {r[0] for r in self.conn.execute("SELECT DISTINCT tbl FROM rw_plan WHERE action = 'D'")}
        if not deleting:
            return
        fks = self.conn.execute(_FKS).fetchall()
        for t in (self.tables[d] for d in deleting):
            if not t.key:
                continue
            for child_relid, parent_relid, child_cols, parent_cols in fks:
                if parent_relid != t.relid:
                    continue
                oid, schema, name, key, child_tbl = self.conn.execute(_CLASS, (child_relid,)).fetchone()  # type: ignore[misc]
                child = TableInfo.load(self.conn, child_tbl or 0, oid, schema, name, key)
                found: dict[str, list[str]] = defaultdict(list)
                for pkey, label, row in self.conn.execute(
                        st.dependents(t, child, child_cols, parent_cols, child_tbl), {"tbl": t.tbl}):
                    found[json.dumps(pkey, sort_keys=True)].append(f"{label} {json.dumps(row, default=str)}")
                for pkey, rows in found.items():
                    self.conn.execute(
                        "UPDATE rw_plan SET conflict = coalesce(conflict || '; ', '') || %s "
                        "WHERE tbl = %s AND key = %s::jsonb",
                        (f"{len(rows)} dependent row(s) written by others: " + "; ".join(rows[:5]), t.tbl, pkey))
                    self._blame_dependents(t, pkey, child, child_tbl)

    def _blame_dependents(self, t: TableInfo, pkey: str, child: TableInfo, child_tbl: int | None) -> None:
        if child_tbl is None:
            actors = ["(untracked table " + child.label + ")"]
        else:
            actors = [r[0] for r in self.conn.execute(
                "SELECT DISTINCT x.actor FROM rewind.change c JOIN rewind.tx x ON x.id = c.tx "
                "WHERE c.tbl = %s AND c.id > %s AND NOT (c.tx = ANY(%s))",
                (child_tbl, self.min_ids[t.tbl], self.txs))] or ["(unjournaled write)"]
        self.conn.execute("UPDATE rw_plan SET changed_by = ARRAY(SELECT DISTINCT unnest("
                          "coalesce(changed_by, '{}') || %s::text[])) WHERE tbl = %s AND key = %s::jsonb",
                          (actors, t.tbl, pkey))

    def _resolve(self) -> None:
        if self.policy is Policy.SKIP:
            self.conn.execute("UPDATE rw_plan SET apply = false WHERE conflict IS NOT NULL")
        elif self.policy is Policy.MERGE:
            # Revert only the columns the selection changed and nobody changed after it; the row's
            # current values stand for everything else.
            self.conn.execute("""
                UPDATE rw_plan p SET
                    target = p.actual || m.revert, expected = p.actual, action = 'U',
                    apply = m.revert <> '{}'::jsonb
                FROM (SELECT q.tbl, q.key, coalesce(jsonb_object_agg(k, q.target -> k)
                             FILTER (WHERE q.target -> k IS DISTINCT FROM q.expected -> k
                                     AND q.actual -> k IS NOT DISTINCT FROM q.expected -> k
                                     AND NOT (k = ANY(coalesce(q.later_cols, '{}')))), '{}') AS revert
                      FROM rw_plan q CROSS JOIN LATERAL jsonb_object_keys(q.target) k
                      WHERE q.conflict IS NOT NULL AND q.action = 'U' AND q.actual IS NOT NULL
                      GROUP BY q.tbl, q.key) m
                WHERE p.tbl = m.tbl AND p.key = m.key
            """)
            self.conn.execute("UPDATE rw_plan SET apply = false WHERE conflict IS NOT NULL AND action <> 'U'")

    def fingerprint(self) -> str:
        count, total = self.conn.execute(_FINGERPRINT).fetchone()  # type: ignore[misc]
        digest = hashlib.sha256(f"{sorted(self.txs)}|{count}|{total}|{self.policy}".encode())
        return digest.hexdigest()[:16]

    def summary(self, *, conflict_limit: int = 100, samples_per_table: int = 3, with_sql: bool = False) -> Plan:
        tables: dict[str, dict[str, int]] = {}
        for tbl, action, n in self.conn.execute(_COUNTS):
            ops = tables.setdefault(self.tables[tbl].label, {"insert": 0, "update": 0, "delete": 0})
            ops[_OP_NAMES[action]] += int(n)
        conflict_count = self.conn.execute("SELECT count(*) FROM rw_plan WHERE conflict IS NOT NULL").fetchone()[0]  # type: ignore[index]
        resolution = {Policy.ABORT: "refused", Policy.SKIP: "skipped", Policy.MERGE: "merged"}[self.policy]
        conflicts = []
        for tbl, key, expected, actual, changed_by, reason, _action, apply in self.conn.execute(
                _CONFLICTS, {"limit": conflict_limit}):
            res = resolution
            if self.policy is Policy.MERGE:
                res = "merged" if apply else "skipped"
            conflicts.append(Conflict(table=self.tables[tbl].label, pk=key, expected=expected, actual=actual,
                                      changed_by=list(changed_by or []), reason=reason, resolution=res))
        samples = [{"table": self.tables[tbl].label, "op": _OP_NAMES[action], "pk": key,
                    "diff": _diff(expected, target)}
                   for tbl, action, key, expected, target in self.conn.execute(
                       _SAMPLES, {"per_table": samples_per_table})]
        changes = self.conn.execute(
            sql.SQL("SELECT count(*) FROM rewind.change c WHERE c.tx = ANY(%(txs)s) AND {}").format(
                self.selection.table_filter("c")), {**self.selection.params(), "txs": self.txs}).fetchone()[0]  # type: ignore[index]
        plan = Plan(fingerprint=self.fingerprint(), changes=changes, actions=sorted(self.txs), tables=tables,
                    conflicts=conflicts, conflict_count=conflict_count, samples=samples, policy=self.policy)
        if with_sql:
            plan.sql_script = self.script()
        return plan

    def order(self) -> list[TableInfo]:
        """Tables parents first (by foreign keys among them), so re-inserts satisfy references."""
        fks = [(c, p) for c, p, *_ in self.conn.execute(_FKS)]
        by_relid = {t.relid: t for t in self.tables.values()}
        ordered: list[TableInfo] = []
        seen: set[int] = set()

        def visit(t: TableInfo, path: frozenset[int]) -> None:
            if t.relid in seen or t.relid in path:
                return
            for child, parent in fks:
                if child == t.relid and parent in by_relid and parent != child:
                    visit(by_relid[parent], path | {t.relid})
            seen.add(t.relid)
            ordered.append(t)

        for t in sorted(self.tables.values(), key=lambda t: t.label):
            visit(t, frozenset())
        return ordered

    def script(self) -> list[str]:
        lines = ["BEGIN;", f"SET LOCAL rewind.actor = '{UNDO_ACTOR}';"]
        order = self.order()
        for action, tables in (("D", reversed(order)), ("U", order), ("I", order)):
            for t in tables:
                lines += [r[0] for r in self.conn.execute(st.script_rows(t), {"tbl": t.tbl, "action": action})]
        lines.append("COMMIT;")
        return lines

    def apply(self, *, fire_triggers: bool) -> None:
        order = self.order()
        suppressed = [] if fire_triggers else self._suppress_triggers(order)
        for t in reversed(order):
            self.conn.execute(st.apply_delete(t), {"tbl": t.tbl})
        for t in order:
            update = st.apply_update(t)
            if update is not None:
                self.conn.execute(update, {"tbl": t.tbl})
        for t in order:
            inserted = self.conn.execute(st.apply_insert(t), {"tbl": t.tbl}).rowcount
            if inserted:
                for column, seq in st.owned_sequences(self.conn, t):
                    self.conn.execute(st.advance_sequence(t, column), {"seq": seq})
        for ident, name, mode in suppressed:
            self.conn.execute(sql.SQL("ALTER TABLE {} ENABLE {} TRIGGER {}").format(
                ident, sql.SQL(mode), sql.Identifier(name)))

    def _suppress_triggers(self, order: list[TableInfo]) -> list[tuple[sql.Identifier, str, str]]:
        """The table's own triggers already ran when the rows were first written; the images
        being restored carry their effects. Firing them again would rewrite the restored rows
        (updated_at = now()) or repeat side effects, so they sleep for this transaction only."""
        out = []
        modes = {"O": "", "A": "ALWAYS", "R": "REPLICA"}
        for t in order:
            for name, enabled in self.conn.execute(
                    "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal "
                    "AND tgname NOT LIKE 'rewind\\_capture\\_%%' AND tgenabled <> 'D'", (t.relid,)):
                self.conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(t.ident, sql.Identifier(name)))
                out.append((t.ident, name, modes[enabled]))
        return out

    def _labels(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT id, schema_name || '.' || table_name FROM rewind.tracked")}

    def _named(self, counts: dict[tuple[int, str], int]) -> str:
        names = self._labels()
        return ", ".join(f"{names.get(tbl, tbl)} {_OP_NAMES.get(op, op)} {n}"
                         for (tbl, op), n in sorted(counts.items()))

    def verify_applied(self, undo_tx: int, *, exact: bool = True) -> None:
        """Refuse (and so roll back) unless the undo's own journal is exactly the plan.

        When the tables' own triggers were allowed to fire, they may rewrite the rows the undo
        writes (updated_at) or write elsewhere (an audit table); then what must match is the number
        of rows of each operation on each planned table."""
        params = {"undo_tx": undo_tx}
        if not exact:
            got_counts = dict(((r[0], r[1]), r[2]) for r in self.conn.execute(
                "SELECT tbl, op::text, count(*) FROM rewind.change WHERE tx = %(undo_tx)s "
                "AND tbl = ANY(%(tbls)s) GROUP BY 1, 2", {**params, "tbls": list(self.tables)}))
            want_counts = dict(((r[0], r[1]), r[2]) for r in self.conn.execute(
                "SELECT tbl, action::text, sum(n) FROM rw_plan WHERE apply AND action <> 'N' GROUP BY 1, 2"))
            if got_counts != want_counts:
                raise Refused(f"the undo's own changes differ from its plan (rows per table and operation: "
                              f"planned {self._named(want_counts)}, journaled {self._named(got_counts)}); "
                              "nothing was applied")
            return
        got = self.conn.execute(sql.SQL(_DIGEST).format(q=sql.SQL(_CAPTURED)), params).fetchone()
        want = self.conn.execute(sql.SQL(_DIGEST).format(q=sql.SQL(_EXPECTED)), params).fetchone()
        if got == want:
            return
        # Images written under other session settings: compare again, rendered in this session.
        for t in self.tables.values():
            if t.session_dependent:
                for column in ("expected", "target"):
                    self.conn.execute(sql.SQL("UPDATE rw_plan SET {c} = {n} WHERE tbl = %(tbl)s AND {c} IS NOT NULL")
                                      .format(c=sql.Identifier(column), n=st.normalized(t, sql.Identifier(column))),
                                      {"tbl": t.tbl})
        want = self.conn.execute(sql.SQL(_DIGEST).format(q=sql.SQL(_EXPECTED)), params).fetchone()
        if got == want:
            return
        rows = self.conn.execute(sql.SQL(_DIFFERENCE).format(
            captured=sql.SQL(_CAPTURED), expected=sql.SQL(_EXPECTED)), params).fetchall()
        names = self._labels()
        detail = "; ".join(f"{kind} {_OP_NAMES.get(op, op)} on {names.get(tbl, tbl)} "
                           f"{json.dumps(before or after, default=str)[:200]}"
                           for kind, tbl, op, before, after in rows[:5])
        raise Refused(f"the undo's own changes differ from its plan ({detail}); nothing was applied")
