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
    first_pos  bigint NOT NULL,           -- journal position of the selection's first change
    changed_by text[],
    later_cols text[],
    conflict   text,
    apply      boolean NOT NULL DEFAULT true
) ON COMMIT DROP
"""

_PAIRS_TABLE = """
CREATE TEMP TABLE rw_pairs (tbl integer NOT NULL, a jsonb NOT NULL, b jsonb NOT NULL) ON COMMIT DROP
"""

# A plan row is skipped: so is the other half of a key change it belongs to (rw_pairs), or the
# undo would put the old row back beside the new one. Chains of key changes take several rounds.
_SKIP_PARTNERS = """
UPDATE rw_plan p SET apply = false,
       conflict = coalesce(p.conflict, 'the other half of a key change whose row is skipped')
FROM rw_pairs x, rw_plan q
WHERE p.apply AND p.tbl = x.tbl AND q.tbl = x.tbl AND NOT q.apply AND q.conflict IS NOT NULL
  AND ((q.key = x.a AND p.key = x.b) OR (q.key = x.b AND p.key = x.a))
"""

_SELECTED = """
SELECT t.id FROM rewind.tx t WHERE {tx_filter}
  AND EXISTS (SELECT 1 FROM rewind.change c WHERE c.tx = t.id AND {table_filter})
"""

_TABLES = """
SELECT k.id, k.relid, k.schema_name, k.table_name, k.key_columns, k.untracked_at IS NOT NULL,
       k.dropped_at IS NOT NULL, min(c.pos), count(*),
       min(c.tx) = max(c.tx) AND min(c.pos) = max(c.pos),
       bool_or(c.op = 'I'), bool_or(c.op = 'U'), bool_or(c.op = 'D'), bool_or(c.op = 'T')
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

# One scan of the plan for everything summary and apply need: rows per table and operation,
# conflicts, and an order-independent digest (a sum of per-row hashes, so a million-row plan needs
# no sort). The digest covers only what the selected actions, whose ids the fingerprint names, do
# not fix already: the journal never changes, so keys, actions and images follow from the ids;
# what can move is the current row (actual) and what the plan decided about it (a conflict, apply,
# a merged target: merging turns a row into an update). A row that is absent now and planned
# without conflict adds nothing, which keeps the digest of a million re-inserts cheap; any other
# row adds a hash of all of it.
_PLAN_STATS = """
SELECT tbl, action::text, coalesce(sum(n) FILTER (WHERE apply), 0), count(*) FILTER (WHERE conflict IS NOT NULL),
       count(*), coalesce(sum(CASE WHEN actual IS NULL AND conflict IS NULL AND apply THEN 0 ELSE
           jsonb_hash_extended(key, tbl) # coalesce(jsonb_hash_extended(actual, n), 0)
           # hashtextextended(concat_ws('|', action, apply, conflict), 1)
           # CASE WHEN action = 'U' THEN coalesce(jsonb_hash_extended(target, 2), 0) ELSE 0 END END), 0)
FROM rw_plan GROUP BY 1, 2
"""

_CONFLICTS = """
SELECT tbl, key, expected, actual, changed_by, conflict, action::text, apply FROM rw_plan
WHERE conflict IS NOT NULL ORDER BY tbl, key::text LIMIT %(limit)s
"""

# The plan's first rows of one table and operation: a sample for people, not a ranking, so it
# stops after a few rows instead of sorting the plan.
_SAMPLES = """
SELECT p.key, p.expected, p.target FROM rw_plan p
WHERE p.tbl = %(tbl)s AND p.action = %(action)s AND p.apply LIMIT %(per_table)s
"""

_OP_NAMES = {"I": "insert", "U": "update", "D": "delete"}

_REFERENCING = """
SELECT DISTINCT n.nspname, c.relname FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE con.contype = 'f' AND con.confrelid = ANY(%(relids)s) AND NOT con.conrelid = ANY(%(relids)s)
ORDER BY 1, 2
"""

_OWN_TRIGGERS = """
SELECT n.nspname, c.relname, tg.tgname, tg.tgenabled
FROM (SELECT %(relid)s::regclass AS relid  -- pg_partition_tree lists nothing for a plain table
      UNION SELECT relid FROM pg_partition_tree(%(relid)s)) p
JOIN pg_trigger tg ON tg.tgrelid = p.relid
JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D' AND tg.tgname <> 'rewind_capture_t'
  AND (p.relid = %(relid)s::regclass OR tg.tgparentid = 0)
ORDER BY p.relid <> %(relid)s::regclass, c.relname, tg.tgname
"""


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


@dataclass(frozen=True)
class PlanStats:
    """What one scan of the finished plan says: rows to apply per (table, operation), conflicts,
    and the digest the fingerprint is made of."""

    applied: dict[tuple[int, str], int]
    planned: dict[tuple[int, str], int]  # applied or not
    conflicts: int
    rows: int
    digest: int

    @classmethod
    def read(cls, conn: psycopg.Connection, by_rule: dict[int, int]) -> PlanStats:
        """by_rule: rows per table a plan of exceptions re-inserts besides its rows; they are
        absent now and free of conflicts, so they add to the counts and nothing to the digest."""
        applied = {(tbl, "I"): n for tbl, n in by_rule.items() if n}
        planned = dict(applied)
        conflicts = 0
        rows = sum(by_rule.values())
        digest = 0
        for tbl, action, n, conflicted, count, total in conn.execute(_PLAN_STATS):
            if action != "N" and n:
                applied[(tbl, action)] = applied.get((tbl, action), 0) + int(n)
            planned[(tbl, action)] = planned.get((tbl, action), 0) + count
            conflicts += conflicted
            rows += count
            digest += int(total)
        return cls(applied=applied, planned=planned, conflicts=conflicts, rows=rows, digest=digest)


class Planner:
    """One plan on one connection inside one open transaction."""

    def __init__(self, conn: psycopg.Connection, selection: Selection, policy: Policy) -> None:
        self.conn = conn
        self.selection = selection
        self.policy = policy
        self.tables: dict[int, TableInfo] = {}
        self.txs: list[int] = []
        self.min_pos: dict[int, int] = {}
        self.ops: dict[int, set[str]] = {}
        self.single_statement: dict[int, bool] = {}
        self.changes: dict[int, int] = {}  # selected change records per table
        # Tables planned by their exceptions (statements.plan_reinsert_exceptions): how many rows
        # the rule re-inserts besides the plan's rows.
        self.by_rule: dict[int, int] = {}
        self._plan_stats: PlanStats | None = None

    def select(self) -> None:
        sel = self.selection
        q = sql.SQL(_SELECTED).format(tx_filter=sel.tx_filter("t"), table_filter=sel.table_filter("c"))
        self.txs = [r[0] for r in self.conn.execute(q, sel.params())]
        if not self.txs:
            raise BadInput("empty selection: no journaled changes match")
        q = sql.SQL(_TABLES).format(table_filter=sel.table_filter("c"))
        for (tbl, relid, schema, name, key, untracked, dropped, min_pos, changes, one_statement,
             *has_op) in self.conn.execute(q, {**sel.params(), "txs": self.txs}):
            if dropped or relid is None:
                raise Refused(f"table {schema}.{name} was dropped; it cannot be undone row by row")
            if untracked:
                raise Refused(f"table {schema}.{name} is no longer tracked; track it again to undo on it")
            self.tables[tbl] = TableInfo.load(self.conn, tbl, relid, schema, name, key)
            self.min_pos[tbl] = min_pos
            self.ops[tbl] = {op for op, present in zip("IUDT", has_op, strict=True) if present}
            self.changes[tbl] = changes
            self.single_statement[tbl] = one_statement

    def lock(self) -> None:
        """Writers wait while the undo plans and applies, so the plan sees the state it changes:
        writers of its tables, and of the tables that reference them, whose rows a delete could
        cascade into (in an untracked one, no capture would notice)."""
        for t in self.tables.values():
            self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(t.ident))
        planned = {t.relid for t in self.tables.values()}
        for schema, name in self.conn.execute(_REFERENCING, {"relids": list(planned)}):
            self.conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(schema, name)))

    def build(self) -> None:
        # Room to sort and hash a large plan in memory; both apply to this transaction only
        # (temp_buffers must be set before the session's first temporary table).
        self.conn.execute("SET LOCAL work_mem = '256MB'")
        self.conn.execute("SET LOCAL jit = off")  # compiling costs more than it saves on these plans
        if self.conn.execute("SELECT to_regclass('pg_temp.rw_plan') IS NULL").fetchone() == (True,):
            self.conn.execute("SET LOCAL temp_buffers = '256MB'")
        self.conn.execute(_PLAN_TABLE)
        self.conn.execute(_PAIRS_TABLE)
        self._plan_stats = None
        for t in self.tables.values():
            params = {"tbl": t.tbl, "txs": self.txs, "min_pos": self.min_pos[t.tbl]}
            ops = self.ops[t.tbl]
            if not t.key:
                statement = st.plan_keyless(t, ops)
            elif ops <= {"D", "T"} and (self.single_statement[t.tbl] or self._one(st.removed_once(t), params)):
                exceptions = sum(self.conn.execute(s, params).rowcount for s in st.plan_reinsert_exceptions(t))
                self.by_rule[t.tbl] = self.changes[t.tbl] - exceptions
                continue
            elif self.single_statement[t.tbl] and ops == {"I"}:
                statement = st.plan_keyed_single(t, ops)
            else:
                statement = st.plan_keyed(t, ops)
            self.conn.execute(statement, params)
            if "U" in ops:
                self.conn.execute(st.key_changes(t), params)
        self.conn.execute("ANALYZE rw_plan")
        for t in self.tables.values():
            params = {"tbl": t.tbl, "txs": self.txs, "min_pos": self.min_pos[t.tbl]}
            self.conn.execute(st.later_writers(t), params)
            if t.key and t.session_dependent:
                self.conn.execute(st.renormalize_expected(t), params)
        keyless = [t.tbl for t in self.tables.values() if not t.key]
        # A conflict with no later writer in the journal was written around it.
        self.conn.execute("""
            UPDATE rw_plan SET conflict = CASE
                WHEN actual IS DISTINCT FROM expected THEN
                    CASE WHEN expected IS NULL THEN 'row exists again' WHEN actual IS NULL THEN 'row was deleted'
                         ELSE 'row changed' END || ' since the selection'
                WHEN changed_by IS NOT NULL THEN 'row changed in between by others'
            END, changed_by = coalesce(changed_by, ARRAY['(unjournaled write)'])
            WHERE tbl <> ALL(%(keyless)s) AND (actual IS DISTINCT FROM expected OR changed_by IS NOT NULL)
        """, {"keyless": keyless})
        if keyless:
            self.conn.execute("""
                UPDATE rw_plan SET conflict = 'only ' || (actual ->> 'copies') || ' of ' || n || ' identical rows left',
                                   changed_by = coalesce(changed_by, ARRAY['(unjournaled write)'])
                WHERE tbl = ANY(%(keyless)s) AND action = 'D' AND (actual ->> 'copies')::int < n
            """, {"keyless": keyless})
            # Identical rows cannot be told apart: a later writer of the same image (a person,
            # or an earlier undo of this very selection) may have put back or taken away the
            # copy this plan means, and guessing could duplicate or remove someone else's row.
            self.conn.execute("""
                UPDATE rw_plan SET conflict = coalesce(conflict || '; ', '')
                                   || 'an identical row was written by others since the selection'
                WHERE tbl = ANY(%(keyless)s) AND changed_by IS NOT NULL
            """, {"keyless": keyless})
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
                "WHERE c.tbl = %s AND c.pos >= %s AND NOT (c.tx = ANY(%s))",
                (child_tbl, self.min_pos[t.tbl], self.txs))] or ["(unjournaled write)"]
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
            # A row someone deleted since has no columns left to revert: skipped, like any
            # conflict that is not an update.
            self.conn.execute("UPDATE rw_plan SET apply = false WHERE conflict IS NOT NULL "
                              "AND (action <> 'U' OR actual IS NULL)")
        if self.policy is not Policy.ABORT:
            while self.conn.execute(_SKIP_PARTNERS).rowcount:
                pass

    def _one(self, query: sql.Composed, params: dict[str, Any]) -> Any:
        row = self.conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def _materialize(self, t: TableInfo) -> None:
        if self.by_rule.pop(t.tbl, None) is not None:
            for statement in st.materialize_reinserts(t):
                self.conn.execute(statement, {"tbl": t.tbl, "txs": self.txs})
            self._plan_stats = None

    def _reinsert_source(self, t: TableInfo) -> sql.Composable | None:
        """Where apply takes the rows it re-inserts into t from: the journal for a plan of
        exceptions, otherwise (None) the plan."""
        if t.tbl not in self.by_rule:
            return None
        exceptions = self._stats().planned.get((t.tbl, "I"), 0) > self.by_rule[t.tbl]
        return st.reinsert_source(t, exceptions=exceptions)

    def _stats(self) -> PlanStats:
        if self._plan_stats is None:
            self._plan_stats = PlanStats.read(self.conn, self.by_rule)
        return self._plan_stats

    def fingerprint(self) -> str:
        stats = self._stats()
        # The tables too: one action's plan on one table must not pass for its plan on another.
        scope = sorted(self.tables), sorted(self.by_rule.items())
        digest = hashlib.sha256(f"{sorted(self.txs)}|{scope}|{stats.rows}|{stats.digest}|{self.policy}".encode())
        return digest.hexdigest()[:16]

    def summary(self, *, conflict_limit: int = 100, samples_per_table: int = 3, with_sql: bool = False) -> Plan:
        stats = self._stats()
        tables: dict[str, dict[str, int]] = {}
        for (tbl, action), n in stats.applied.items():
            ops = tables.setdefault(self.tables[tbl].label, {"insert": 0, "update": 0, "delete": 0})
            ops[_OP_NAMES[action]] += n
        resolution = {Policy.ABORT: "refused", Policy.SKIP: "skipped", Policy.MERGE: "merged"}[self.policy]
        conflicts = []
        for tbl, key, expected, actual, changed_by, reason, _action, apply in self.conn.execute(
                _CONFLICTS, {"limit": conflict_limit}):
            res = resolution
            if self.policy is Policy.MERGE:
                res = "merged" if apply else "skipped"
            conflicts.append(Conflict(table=self.tables[tbl].label, pk=key, expected=expected, actual=actual,
                                      changed_by=list(changed_by or []), reason=reason, resolution=res))
        samples = []
        for tbl, action in sorted(stats.applied):
            query: sql.SQL | sql.Composed = sql.SQL(_SAMPLES)
            if action == "I" and tbl in self.by_rule:
                query = st.sample_reinserts(self.tables[tbl])
            samples += [{"table": self.tables[tbl].label, "op": _OP_NAMES[action], "pk": key,
                         "diff": _diff(expected, target)}
                        for key, expected, target in self.conn.execute(query, {
                            "tbl": tbl, "action": action, "per_table": samples_per_table, "txs": self.txs})]
        plan = Plan(fingerprint=self.fingerprint(), changes=sum(self.changes.values()), actions=sorted(self.txs),
                    tables=tables, conflicts=conflicts, conflict_count=stats.conflicts, samples=samples,
                    policy=self.policy)
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

    def phases(self, order: list[TableInfo]) -> list[tuple[str, list[TableInfo]]]:
        """In which order apply runs its statements: (operation, tables), deletes children first,
        inserts parents first. Updates sit in between. A table that an updated table references
        (and every table that one references in turn) has its inserts before the updates, since
        an updated row may point at a row the undo puts back, and its deletes after them, since an
        updated row may stop pointing at a row the undo removes. Other tables delete before the
        updates and insert after them, so that a row put back does not meet, in a unique column, a
        row the undo deletes or changes."""
        updated = {self.tables[tbl].relid for tbl, action in self._stats().applied if action == "U"}
        fks = [(child, parent) for child, parent, *_ in self.conn.execute(_FKS) if child != parent]
        late = {parent for child, parent in fks if child in updated}
        while more := {parent for child, parent in fks if child in late} - late:
            late |= more
        early = [t for t in order if t.relid not in late]
        referenced = [t for t in order if t.relid in late]
        return [("D", early[::-1]), ("I", referenced), ("U", order), ("I", early), ("D", referenced[::-1])]

    def script(self) -> list[str]:
        lines = ["BEGIN;", f"SET LOCAL rewind.actor = '{UNDO_ACTOR}';"]
        order = self.order()
        for t in order:
            self._materialize(t)
        for action, tables in self.phases(order):
            for t in tables:
                lines += [r[0] for r in self.conn.execute(st.script_rows(t), {"tbl": t.tbl, "action": action})]
        lines.append("COMMIT;")
        return lines

    def apply(self, *, fire_triggers: bool) -> int:
        """Apply the plan; returns the undo's own action id.

        By default the undo journals itself straight from the plan, which already holds every
        image, instead of having the capture triggers image each row again (that doubled the cost
        of a large undo). It then proves it did exactly the plan: each statement touched exactly
        the planned number of rows, and nothing else was captured in this transaction (a cascade
        or side effect on another tracked table). With fire_triggers the tables' own triggers run
        and may rewrite rows, so capture stays on and journals what really happened."""
        order = self.order()
        undo_tx: int = self.conn.execute("SELECT rewind.begin_tx()").fetchone()[0]  # type: ignore[index]
        toggled = [] if fire_triggers else self._suppress_triggers(order)
        if fire_triggers:  # the tables' own triggers run as they do for their owners' sessions
            self.conn.execute("SET LOCAL search_path TO DEFAULT")
        planned = self._stats().applied
        done: dict[tuple[int, str], int] = {}
        ran: list[tuple[TableInfo, str, sql.Composable | None]] = []

        def run(t: TableInfo, action: str, statement: sql.Composed | None,
                source: sql.Composable | None = None) -> None:
            if statement is not None and (t.tbl, action) in planned:
                done[(t.tbl, action)] = self.conn.execute(statement, {"tbl": t.tbl, "txs": self.txs}).rowcount
                ran.append((t, action, source))

        for action, tables in self.phases(order):
            for t in tables:
                if action == "D":
                    run(t, "D", st.apply_delete(t))
                elif action == "U":
                    run(t, "U", st.apply_update(t))
                elif (t.tbl, "I") in planned:
                    source = self._reinsert_source(t)
                    run(t, "I", st.apply_insert(t, source), source)
                    if done.get((t.tbl, "I")):
                        for column, seq in st.owned_sequences(self.conn, t):
                            self.conn.execute(st.advance_sequence(t, column), {"seq": seq})
        for ident, name, mode in toggled:
            self.conn.execute(sql.SQL("ALTER TABLE {} ENABLE {} TRIGGER {}").format(
                ident, sql.SQL(mode), sql.Identifier(name)))
        if done != planned:
            raise Refused(f"the undo's statements touched other rows than planned (planned "
                          f"{self._named(planned)}, touched {self._named(done)}); nothing was applied")
        if fire_triggers:
            # Stream-mode tables are journaled by the sidecar after the commit, under this action:
            # nothing of theirs is in the journal yet to count.
            streamed = {r[0] for r in self.conn.execute(
                "SELECT id FROM rewind.tracked WHERE mode = 'stream' AND id = ANY(%s)", (list(self.tables),))}
            self.verify_counts(undo_tx, {k: n for k, n in planned.items() if k[0] not in streamed},
                               [t for t in self.tables if t not in streamed])
            return undo_tx
        unexpected = self.conn.execute(
            "SELECT c.tbl, c.op::text, count(*) FROM rewind.change c WHERE c.tx = %s GROUP BY 1, 2",
            (undo_tx,)).fetchall()
        if unexpected:
            outside = self._named({(r[0], r[1]): r[2] for r in unexpected})
            raise Refused(f"the undo changed rows outside its plan ({outside}); nothing was applied")
        for t, action, source in ran:
            self.conn.execute(st.journal_applied(t, action, source),
                              {"tbl": t.tbl, "undo_tx": undo_tx, "txs": self.txs})
        return undo_tx

    def _suppress_triggers(self, order: list[TableInfo]) -> list[tuple[sql.Identifier, str, str]]:
        """Triggers that sleep for this transaction only (the tables are locked against writers).

        The table's own triggers (user) already ran when the rows were first written; the images
        being restored carry their effects. Firing them again would rewrite the restored rows
        (updated_at = now()) or repeat side effects. Rewind's capture triggers sleep too: the undo
        journals itself from the plan (TRUNCATE capture stays, the undo never truncates)."""
        out = []
        modes = {"O": "", "A": "ALWAYS", "R": "REPLICA"}
        for t in order:
            # The table's and, under a partitioned table, its partitions' own (a trigger cloned from
            # the root's sleeps with it).
            for schema, name, trigger, enabled in self.conn.execute(_OWN_TRIGGERS, {"relid": t.relid}):
                ident = sql.Identifier(schema, name)
                self.conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(ident, sql.Identifier(trigger)))
                out.append((ident, trigger, modes[enabled]))
        return out

    def _labels(self) -> dict[int, str]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT id, schema_name || '.' || table_name FROM rewind.tracked")}

    def _named(self, counts: dict[tuple[int, str], int]) -> str:
        names = self._labels()
        return ", ".join(f"{names.get(tbl, tbl)} {_OP_NAMES.get(op, op)} {n}"
                         for (tbl, op), n in sorted(counts.items()))

    def verify_counts(self, undo_tx: int, want_counts: dict[tuple[int, str], int], tables: list[int]) -> None:
        """With the tables' own triggers firing, they may rewrite the rows the undo writes
        (updated_at) or write elsewhere (an audit table); what must match is the number of rows
        of each operation on each planned table, as journaled by the capture triggers."""
        got_counts = dict(((r[0], r[1]), r[2]) for r in self.conn.execute(
            "SELECT tbl, op::text, count(*) FROM rewind.change WHERE tx = %(undo_tx)s "
            "AND tbl = ANY(%(tbls)s) GROUP BY 1, 2", {"undo_tx": undo_tx, "tbls": tables}))
        if got_counts != want_counts:
            raise Refused(f"the undo's own changes differ from its plan (rows per table and operation: "
                          f"planned {self._named(want_counts)}, journaled {self._named(got_counts)}); "
                          "nothing was applied")
