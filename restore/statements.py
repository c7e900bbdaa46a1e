"""The one builder of per-table SQL for planning and applying an undo.

Every statement is set-based: one statement per table and operation, whatever the number of
rows, because a statement per row is what makes other tools' undo hundreds of times slower than
a reload. Table and column names only ever enter as sql.Identifier; row values only ever travel
as jsonb and are turned back into typed rows by jsonb_populate_record(NULL::table, image), so
PostgreSQL's own text I/O round-trips every type.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

# Types whose to_jsonb rendering does not depend on session settings (TimeZone, IntervalStyle,
# bytea_output, extra_float_digits...). Images of other types are re-rendered before comparing.
_STABLE_TYPES = ("bool", "int2", "int4", "int8", "text", "varchar", "bpchar", "name", "uuid", "numeric",
                 "date", "timestamp", "time", "oid", "char", "json", "jsonb")

# Scalar types whose to_jsonb rendering is their own text input, so `image ->> col` cast to the
# type gives the value back: a key typed this way costs a cast instead of populating a record.
# Not intervals (IntervalStyle changes what a text means) nor money (lc_monetary).
_CASTABLE = """(t.typcategory = ANY('{N,S,B,D,E,I}') AND t.typname <> 'money'
                AND t.typname NOT IN ('interval') OR t.typname = 'uuid')"""

_COLUMNS = f"""
SELECT a.attname, a.attgenerated <> '' AS generated, a.attidentity = 'a' AS identity_always,
       NOT (t.typname = ANY(%s)) AS session_dependent,
       CASE WHEN {_CASTABLE} THEN tn.nspname END, t.typname
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


@dataclass(frozen=True)
class TableInfo:
    """What the builder needs to know about one tracked table."""

    tbl: int
    relid: int
    schema: str
    name: str
    key: tuple[str, ...]  # empty: the whole row is the identity
    columns: tuple[str, ...]
    generated: frozenset[str]
    identity_always: frozenset[str]
    session_dependent: frozenset[str]  # columns whose image text depends on the writer's settings
    castable: dict[str, sql.Identifier]  # column -> its type, where `image ->> column` casts back exactly

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def writable(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.generated)

    @property
    def updatable(self) -> tuple[str, ...]:
        return tuple(c for c in self.writable if c not in self.identity_always and c not in self.key)

    @classmethod
    def load(cls, conn: psycopg.Connection, tbl: int, relid: int, schema: str, name: str,
             key: list[str]) -> TableInfo:
        cols = conn.execute(_COLUMNS, (list(_STABLE_TYPES), relid)).fetchall()
        return cls(tbl=tbl, relid=relid, schema=schema, name=name, key=tuple(key),
                   columns=tuple(c[0] for c in cols),
                   generated=frozenset(c[0] for c in cols if c[1]),
                   identity_always=frozenset(c[0] for c in cols if c[2]),
                   session_dependent=frozenset(c[0] for c in cols if c[3]),
                   castable={c[0]: sql.Identifier(c[4], c[5]) for c in cols if c[4] is not None})


def normalized(t: TableInfo, image: sql.Composable) -> sql.Composable:
    """An image re-rendered in this session, so that images written under other session settings
    compare equal when the values are equal."""
    return sql.SQL("to_jsonb(jsonb_populate_record(NULL::{}, {}))").format(t.ident, image)


def _key_of(t: TableInfo, image: sql.Composable) -> sql.Composable:
    """The identity of a row image: its key columns as a jsonb object, or the whole image."""
    if not t.key:
        return normalized(t, image) if t.session_dependent else image

    def column(k: str) -> sql.Composable:
        if k in t.session_dependent:
            return sql.SQL("to_jsonb((jsonb_populate_record(NULL::{}, {})).{})").format(
                t.ident, image, sql.Identifier(k))
        return sql.SQL("{} -> {}::text").format(image, sql.Literal(k))

    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}::text, {}").format(sql.Literal(k), column(k)) for k in t.key))


def _typed_key(t: TableInfo, image: sql.Composable) -> sql.Composable:
    """The key columns of an image as typed values, comparable with the table's own columns."""
    def column(k: str) -> sql.Composable:
        if k in t.castable:
            return sql.SQL("({} ->> {}::text)::{}").format(image, sql.Literal(k), t.castable[k])
        return sql.SQL("(jsonb_populate_record(NULL::{}, {})).{}").format(t.ident, image, sql.Identifier(k))

    return sql.SQL("ROW({})").format(sql.SQL(", ").join(column(k) for k in t.key))


def _row_key(t: TableInfo, alias: str) -> sql.Composable:
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(alias, k) for k in t.key))


def events(t: TableInfo, ops: set[str]) -> sql.Composed:
    """The selected changes of one table as per-row events (key, before, after).

    An UPDATE that changed the key is a delete of the old key and an insert of the new one; in a
    table without a key every UPDATE is, since the whole row is the identity. Only the arms for
    operations the selection contains are built: each arm is a scan of the journal."""
    kb, ka = _key_of(t, sql.SQL("c.before")), _key_of(t, sql.SQL("c.after"))
    same = sql.SQL("{} = {}").format(kb, ka) if t.key else sql.SQL("false")
    where = sql.SQL("c.tx = ANY(%(txs)s) AND c.tbl = %(tbl)s")
    arms: list[sql.Composable] = []
    if "U" in ops:
        arms.append(sql.SQL("SELECT c.pos, c.id, {kb} AS key, c.before, CASE WHEN {same} THEN c.after END AS after "
                            "FROM rewind.change c WHERE {w} AND c.op = 'U'").format(kb=kb, same=same, w=where))
        arms.append(sql.SQL("SELECT c.pos, c.id, {ka}, NULL::jsonb, c.after "
                            "FROM rewind.change c WHERE {w} AND c.op = 'U' AND NOT ({same})").format(
            ka=ka, same=same, w=where))
    if "I" in ops:
        arms.append(sql.SQL("SELECT c.pos, c.id, {ka} AS key, NULL::jsonb AS before, c.after "
                            "FROM rewind.change c WHERE {w} AND c.op = 'I'").format(ka=ka, w=where))
    if ops & {"D", "T"}:
        arms.append(sql.SQL("SELECT c.pos, c.id, {kb} AS key, c.before, NULL::jsonb AS after "
                            "FROM rewind.change c WHERE {w} AND c.op IN ('D', 'T')").format(kb=kb, w=where))
    return sql.SQL(" UNION ALL ").join(arms)


def plan_keyed(t: TableInfo, ops: set[str]) -> sql.Composed:
    """Fill rw_plan for a table with a key: per row, the state before the selection's first
    change (target) and after its last (expected), and the row as it is now (actual).

    The events are sorted once by (key, pos, id) and aggregated in that order, which PostgreSQL
    preserves for plain aggregates over a sorted subquery; ordered aggregates would sort each
    group on its own, a million tiny sorts for a million-row undo. Key order also keeps the
    re-inserts in index order (sorting by a hash of the key instead was measured slower twice
    over: scattered index inserts)."""
    return sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, n.key,
               CASE WHEN n.first_before IS NOT DISTINCT FROM n.last_after THEN 'N'
                    WHEN n.last_after IS NULL THEN 'I'
                    WHEN n.first_before IS NULL THEN 'D'
                    ELSE 'U' END,
               1, n.last_after, n.first_before, to_jsonb(cur.*), n.first_pos
        FROM (SELECT e.key, min(e.pos) AS first_pos,
                     (array_agg(e.before))[1] AS first_before,
                     (array_agg(e.after))[count(*)] AS last_after
              FROM (SELECT * FROM ({events}) x ORDER BY x.key, x.pos, x.id) e GROUP BY e.key) n
        LEFT JOIN {table} cur ON {cur_key} = {net_key}
    """).format(events=events(t, ops), table=t.ident, cur_key=_row_key(t, "cur"),
                net_key=_typed_key(t, sql.SQL("n.key")))


def plan_keyed_single(t: TableInfo, ops: set[str]) -> sql.Composed:
    """plan_keyed for a selection of one INSERT statement: it touched each key once, so there is
    nothing to sort or collapse."""
    return sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, e.key, 'D', 1, e.after, NULL, to_jsonb(cur.*), e.pos
        FROM ({events}) e
        LEFT JOIN {table} cur ON {cur_key} = {net_key}
    """).format(events=events(t, ops), table=t.ident, cur_key=_row_key(t, "cur"),
                net_key=_typed_key(t, sql.SQL("e.key")))


# The selected rows of a DELETE or TRUNCATE statement, as `c`: for plan_reinsert_exceptions.
_REMOVED = sql.SQL("(SELECT * FROM rewind.change c WHERE c.tx = ANY(%(txs)s) AND c.tbl = %(tbl)s "
                   "AND c.op IN ('D', 'T')) c")


def removed_once(t: TableInfo) -> sql.Composed:
    """Whether the selected DELETE and TRUNCATE rows name each key once, as they do unless someone
    put a row back in between (that row is then planned one by one)."""
    key = _typed_key(t, sql.SQL("c.before")) if set(t.key) <= set(t.castable) else _key_of(t, sql.SQL("c.before"))
    return sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {removed} GROUP BY {key} HAVING count(*) > 1)").format(
        removed=_REMOVED, key=key)


def plan_reinsert_exceptions(t: TableInfo) -> list[sql.Composed]:
    """The plan for the common disaster, DELETE or TRUNCATE statements, whose undo puts back
    every row they removed: only the exceptions go into the plan, the rows that exist again now and
    the rows others wrote after the selection removed them; the rule covers the rest, which stay
    in the journal until apply re-inserts them from there (reinsert_source). Each key occurs once
    (removed_once), so there is nothing to collapse. A million-row plan copied into a temporary
    table, counted and hashed was a third of such an undo; a plan without exceptions costs a scan
    of the journal and a probe of the table (a join whose other side is empty ends at once)."""
    key = _key_of(t, sql.SQL("c.before"))
    present = sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, {key}, 'I', 1, NULL, NULL, to_jsonb(cur.*), c.pos
        FROM {removed} JOIN {table} cur ON {cur_key} = {typed}
    """).format(key=key, removed=_REMOVED, table=t.ident, cur_key=_row_key(t, "cur"),
                typed=_typed_key(t, sql.SQL("c.before")))
    kb, ka = _key_of(t, sql.SQL("o.before")), _key_of(t, sql.SQL("o.after"))
    touched_later = sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, e.key, 'I', 1, NULL, NULL, NULL, e.pos
        FROM (SELECT {key} AS key, c.pos FROM {removed}) e
        JOIN (SELECT v.k, max(o.pos) AS last_pos
              FROM rewind.change o CROSS JOIN LATERAL (VALUES ({kb}), ({ka})) v(k)
              WHERE o.tbl = %(tbl)s AND o.pos >= %(min_pos)s AND NOT (o.tx = ANY(%(txs)s)) AND v.k IS NOT NULL
              GROUP BY v.k) later ON later.k = e.key AND later.last_pos > e.pos
        WHERE NOT EXISTS (SELECT 1 FROM rw_plan q WHERE q.tbl = %(tbl)s AND q.key = e.key)
    """).format(key=key, removed=_REMOVED, kb=kb, ka=ka)
    return [present, touched_later]


def reinsert_source(t: TableInfo, *, exceptions: bool) -> sql.Composed:
    """The rows apply re-inserts for a plan of exceptions, as `p` with a `target` column: the
    removed rows, less the exceptions (conflicts all, so never applied). Without exceptions the
    anti-join is left out: it would compute every row's key for nothing."""
    unless = sql.SQL("AND NOT EXISTS (SELECT 1 FROM rw_plan q WHERE q.tbl = %(tbl)s AND q.key = {})").format(
        _key_of(t, sql.SQL("c.before"))) if exceptions else sql.SQL("")
    return sql.SQL("(SELECT c.tbl, c.before AS target FROM {removed} WHERE true {unless}) p").format(
        removed=_REMOVED, unless=unless)


def sample_reinserts(t: TableInfo) -> sql.Composed:
    """The planner's samples, for the rows a plan of exceptions re-inserts from the journal."""
    return sql.SQL("SELECT {key}, NULL::jsonb, p.target FROM {source} LIMIT %(per_table)s").format(
        key=_key_of(t, sql.SQL("p.target")), source=reinsert_source(t, exceptions=True))


def materialize_reinserts(t: TableInfo) -> list[sql.Composed]:
    """Turn a plan of exceptions into a plan of every row, for the uses that go row by row (a
    script for a DBA): every exception gets its target, and the rule's rows are added."""
    key = _key_of(t, sql.SQL("c.before"))
    return [sql.SQL("""
        UPDATE rw_plan p SET target = e.before FROM (SELECT {key} AS key, c.before FROM {removed}) e
        WHERE p.tbl = %(tbl)s AND p.key = e.key
    """).format(key=key, removed=_REMOVED), sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, e.key, 'I', 1, NULL, e.before, NULL, e.pos
        FROM (SELECT {key} AS key, c.before, c.pos FROM {removed}) e
        WHERE NOT EXISTS (SELECT 1 FROM rw_plan q WHERE q.tbl = %(tbl)s AND q.key = e.key)
    """).format(key=key, removed=_REMOVED)]


def renormalize_expected(t: TableInfo) -> sql.Composed:
    """Before calling a row a conflict because it differs from the image the selection left, render
    that image in this session: the writer may have had another TimeZone or IntervalStyle."""
    return sql.SQL("""
        UPDATE rw_plan SET expected = {norm}
        WHERE tbl = %(tbl)s AND expected IS NOT NULL AND actual IS NOT NULL AND actual IS DISTINCT FROM expected
    """).format(norm=normalized(t, sql.SQL("expected")))


def plan_keyless(t: TableInfo, ops: set[str]) -> sql.Composed:
    """Fill rw_plan for a table without a key: rows are a multiset of whole-row images, and the
    undo removes the copies the selection added and puts back the ones it removed."""
    return sql.SQL("""
        INSERT INTO rw_plan (tbl, key, action, n, expected, target, actual, first_pos)
        SELECT %(tbl)s, n.key, CASE WHEN n.d > 0 THEN 'D' ELSE 'I' END, abs(n.d),
               CASE WHEN n.d > 0 THEN n.key END, CASE WHEN n.d < 0 THEN n.key END,
               CASE WHEN n.d > 0 THEN jsonb_build_object('copies', coalesce(have.copies, 0)) END,
               n.first_pos
        FROM (SELECT e.key, sum(CASE WHEN e.after IS NULL THEN -1 ELSE 1 END) AS d, min(e.pos) AS first_pos
              FROM ({events}) e GROUP BY e.key HAVING sum(CASE WHEN e.after IS NULL THEN -1 ELSE 1 END) <> 0) n
        LEFT JOIN (SELECT to_jsonb(cur.*) AS image, count(*) AS copies FROM {table} cur GROUP BY 1) have
               ON have.image = n.key
    """).format(events=events(t, ops), table=t.ident)


def key_changes(t: TableInfo) -> sql.Composed:
    """The selection's updates that moved a row to another identity (a new key, or without a key
    any change at all) into rw_pairs: their undo is a delete of the new row and an insert of the
    old one, and the two must be applied or skipped together."""
    kb, ka = _key_of(t, sql.SQL("c.before")), _key_of(t, sql.SQL("c.after"))
    return sql.SQL("""
        INSERT INTO rw_pairs (tbl, a, b)
        SELECT DISTINCT %(tbl)s, {kb}, {ka} FROM rewind.change c
        WHERE c.tx = ANY(%(txs)s) AND c.tbl = %(tbl)s AND c.op = 'U' AND {kb} IS DISTINCT FROM {ka}
    """).format(kb=kb, ka=ka)


def later_writers(t: TableInfo) -> sql.Composed:
    """Rows of the plan that someone outside the selection changed after the selection first did:
    their actors, so that a conflict says who to ask."""
    kb, ka = _key_of(t, sql.SQL("c.before")), _key_of(t, sql.SQL("c.after"))
    return sql.SQL("""
        UPDATE rw_plan p SET changed_by = f.actors, later_cols = f.cols
        FROM (SELECT v.k AS key, max(c.pos) AS last_pos, array_agg(DISTINCT t.actor) AS actors,
                     array_agg(DISTINCT col) FILTER (WHERE col IS NOT NULL) AS cols
              FROM rewind.change c JOIN rewind.tx t ON t.id = c.tx
              CROSS JOIN LATERAL (VALUES ({kb}), ({ka})) v(k)
              LEFT JOIN LATERAL (
                  SELECT j.col FROM jsonb_object_keys(coalesce(c.after, c.before)) j(col)
                  WHERE c.before -> j.col IS DISTINCT FROM c.after -> j.col) d ON true
              WHERE c.tbl = %(tbl)s AND c.pos >= %(min_pos)s AND NOT (c.tx = ANY(%(txs)s)) AND v.k IS NOT NULL
              GROUP BY v.k) f
        WHERE p.tbl = %(tbl)s AND p.key = f.key AND f.last_pos > p.first_pos
    """).format(kb=kb, ka=ka)


def dependents(t: TableInfo, child: TableInfo, child_cols: list[str], parent_cols: list[str],
               child_tbl: int | None) -> sql.Composed:
    """Rows of a referencing table that point at a row the undo would delete, and that the undo
    neither deletes nor points elsewhere itself: deleting the parent would cascade into, or be
    blocked by, them."""
    child_key = _key_of(child, sql.SQL("to_jsonb(ch.*)")) if child.key else sql.SQL("to_jsonb(ch.*)")
    match = sql.SQL(" AND ").join(
        sql.SQL("ch.{} = (jsonb_populate_record(NULL::{}, p.expected)).{}").format(
            sql.Identifier(cc), t.ident, sql.Identifier(pc)) for cc, pc in zip(child_cols, parent_cols, strict=True))
    # The undo's own plan for the child row: deleted, or updated to point elsewhere.
    repointed = sql.SQL(" OR ").join(
        sql.SQL("(jsonb_populate_record(NULL::{}, q.target)).{} IS DISTINCT FROM ch.{}").format(
            child.ident, sql.Identifier(cc), sql.Identifier(cc)) for cc in child_cols)
    own = sql.SQL("true") if child_tbl is None else sql.SQL(
        "NOT EXISTS (SELECT 1 FROM rw_plan q WHERE q.tbl = {} AND q.key = {} "
        "AND (q.action = 'D' OR (q.action = 'U' AND ({}))))").format(sql.Literal(child_tbl), child_key, repointed)
    return sql.SQL("""
        SELECT p.key, {label}::text, to_jsonb(ch.*)
        FROM rw_plan p JOIN {child} ch ON {match}
        WHERE p.tbl = %(tbl)s AND p.action = 'D' AND {own}
    """).format(label=sql.Literal(child.label), child=child.ident, match=match, own=own)


def apply_delete(t: TableInfo) -> sql.Composed:
    if t.key:
        return sql.SQL("""
            DELETE FROM {table} cur USING rw_plan p
            WHERE p.tbl = %(tbl)s AND p.action = 'D' AND p.apply AND {cur_key} = {plan_key}
        """).format(table=t.ident, cur_key=_row_key(t, "cur"), plan_key=_typed_key(t, sql.SQL("p.key")))
    # Without a key, delete exactly n of the identical copies (tableoid too: ctid is per partition).
    return sql.SQL("""
        DELETE FROM {table} cur USING (
            SELECT x.tableoid, x.ctid FROM (
                SELECT c.tableoid, c.ctid, to_jsonb(c.*) AS image,
                       row_number() OVER (PARTITION BY to_jsonb(c.*)) AS rn
                FROM {table} c WHERE to_jsonb(c.*) IN (
                    SELECT key FROM rw_plan WHERE tbl = %(tbl)s AND action = 'D' AND apply)) x
            JOIN rw_plan p ON p.tbl = %(tbl)s AND p.action = 'D' AND p.apply AND p.key = x.image AND x.rn <= p.n
        ) victim
        WHERE cur.tableoid = victim.tableoid AND cur.ctid = victim.ctid
    """).format(table=t.ident)


def apply_update(t: TableInfo) -> sql.Composed | None:
    """None where there is nothing to update: a table without a key plans no updates (each is a
    delete and an insert of whole rows), and one of only key or generated columns has no values."""
    if not t.key or not t.updatable:
        return None
    cols = [sql.Identifier(c) for c in t.updatable]
    return sql.SQL("""
        UPDATE {table} cur SET ({cols}) = ROW({vals})
        FROM rw_plan p, jsonb_populate_record(NULL::{table}, p.target) r
        WHERE p.tbl = %(tbl)s AND p.action = 'U' AND p.apply AND {cur_key} = {plan_key}
    """).format(table=t.ident, cols=sql.SQL(", ").join(cols),
                vals=sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in cols),
                cur_key=_row_key(t, "cur"), plan_key=_typed_key(t, sql.SQL("p.key")))


def _copies(t: TableInfo) -> sql.Composable:
    """One output row per copy of a plan row. Only a table without a key has plan rows that stand
    for several identical rows; elsewhere n is 1, and a set-returning call per row is measurable
    on a million rows."""
    return sql.SQL("" if t.key else "CROSS JOIN LATERAL generate_series(1, p.n) g")


def _plan_rows(t: TableInfo, action: str) -> sql.Composed:
    """The plan's rows of one table and operation that are applied, one per copy, as `p`."""
    return sql.SQL("(SELECT p.* FROM rw_plan p {copies} WHERE p.tbl = %(tbl)s AND p.action = {action} "
                   "AND p.apply) p").format(copies=_copies(t), action=sql.Literal(action))


def apply_insert(t: TableInfo, source: sql.Composable | None = None) -> sql.Composed:
    cols = [sql.Identifier(c) for c in t.writable]
    overriding = sql.SQL("OVERRIDING SYSTEM VALUE") if t.identity_always else sql.SQL("")
    return sql.SQL("""
        INSERT INTO {table} ({cols}) {overriding}
        SELECT {vals} FROM {source} CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, p.target) r
    """).format(table=t.ident, cols=sql.SQL(", ").join(cols), overriding=overriding,
                source=source or _plan_rows(t, "I"),
                vals=sql.SQL(", ").join(sql.SQL("r.{}").format(c) for c in cols))


def journal_applied(t: TableInfo, action: str, source: sql.Composable | None = None) -> sql.Composed:
    """The undo's own journal rows for one applied statement, written from what it applied (the
    plan, or the journal rows it re-inserted), which holds every image already. One position for
    the whole statement, as the capture triggers do, and no sort: statements are journaled in the
    order they ran."""
    before = sql.SQL("p.expected" if action in ("D", "U") else "NULL::jsonb")
    after = sql.SQL("p.target" if action in ("I", "U") else "NULL::jsonb")
    return sql.SQL("""
        INSERT INTO rewind.change (tx, pos, tbl, op, before, after)
        SELECT %(undo_tx)s, (SELECT rewind.journal_pos()), p.tbl, {action}, {before}, {after}
        FROM {source}
    """).format(before=before, after=after, action=sql.Literal(action), source=source or _plan_rows(t, action))


def script_rows(t: TableInfo) -> sql.Composed:
    """Row-level statements with the same effect as the set-based apply, for a DBA to read
    (and run, if they prefer): the plan's rows rendered as literals by PostgreSQL itself."""
    table_text = sql.Literal(t.ident.as_string(None))
    # Which row a statement means, as apply matches it: the key's typed values (so an array key
    # is not matched by containment), or without a key the whole row's image, equal.
    match: sql.Composable
    if t.key:
        match = sql.SQL("format('(%%s) = (SELECT %%s FROM jsonb_populate_record(NULL::%%s, %%L::jsonb) r)', "
                        "{ckeys}, {rkeys}, {tt}, p.key)").format(
            ckeys=sql.Literal(", ".join("c." + sql.Identifier(c).as_string(None) for c in t.key)),
            rkeys=sql.Literal(", ".join("r." + sql.Identifier(c).as_string(None) for c in t.key)), tt=table_text)
    else:
        match = sql.SQL("format('to_jsonb(c.*) = %%L::jsonb', p.key)")
    return sql.SQL("""
        SELECT CASE p.action
          WHEN 'D' THEN format('DELETE FROM %%s WHERE (tableoid, ctid) = '
                               '(SELECT c.tableoid, c.ctid FROM %%s c WHERE %%s LIMIT 1);',
                               {tt}, {tt}, {match})
          WHEN 'U' THEN format('UPDATE %%s c SET (%%s) = '
                               '(SELECT %%s FROM jsonb_populate_record(NULL::%%s, %%L::jsonb) r) '
                               'WHERE %%s;',
                               {tt}, {cols}, {rcols}, {tt}, p.target, {match})
          ELSE format('INSERT INTO %%s (%%s) {ov} SELECT %%s FROM jsonb_populate_record(NULL::%%s, %%L::jsonb) r;',
                      {tt}, {wcols}, {rwcols}, {tt}, p.target)
        END
        FROM rw_plan p CROSS JOIN LATERAL generate_series(1, p.n) g
        WHERE p.tbl = %(tbl)s AND p.apply AND p.action = %(action)s
        ORDER BY p.key::text
    """).format(
        tt=table_text, match=match,
        cols=sql.Literal(", ".join(sql.Identifier(c).as_string(None) for c in t.updatable)),
        rcols=sql.Literal(", ".join("r." + sql.Identifier(c).as_string(None) for c in t.updatable)),
        wcols=sql.Literal(", ".join(sql.Identifier(c).as_string(None) for c in t.writable)),
        rwcols=sql.Literal(", ".join("r." + sql.Identifier(c).as_string(None) for c in t.writable)),
        ov=sql.SQL("OVERRIDING SYSTEM VALUE" if t.identity_always else ""),
    )


_SEQUENCES = """
SELECT a.attname, pg_get_serial_sequence(format('%%I.%%I', %(schema)s::text, %(name)s::text), a.attname)
FROM pg_attribute a
WHERE a.attrelid = %(relid)s AND a.attnum > 0 AND NOT a.attisdropped
  AND pg_get_serial_sequence(format('%%I.%%I', %(schema)s::text, %(name)s::text), a.attname) IS NOT NULL
"""


def owned_sequences(conn: psycopg.Connection, t: TableInfo) -> list[tuple[str, str]]:
    """(column, sequence) for serial and identity columns."""
    rows = conn.execute(_SEQUENCES, {"schema": t.schema, "name": t.name, "relid": t.relid}).fetchall()
    return [(r[0], r[1]) for r in rows]


def advance_sequence(t: TableInfo, column: str) -> sql.Composed:
    """Re-inserted rows keep their ids; the sequence must not hand those ids out again (it may have
    been reset by TRUNCATE ... RESTART IDENTITY, or never have reached them)."""
    return sql.SQL("""
        SELECT setval(%(seq)s::regclass, x.m)
        FROM (SELECT max({col})::bigint AS m FROM {table}) x
        WHERE x.m > coalesce(pg_sequence_last_value(%(seq)s::regclass), 0)
    """).format(col=sql.Identifier(column), table=t.ident)
