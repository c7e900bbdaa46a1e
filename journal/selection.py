"""Which actions and change records a command is about: one builder for every reader."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from psycopg import sql

from journal.errors import BadInput


def glob_to_regex(pattern: str) -> str:
    """An actor glob (agent-*, bot-?) as an anchored POSIX regex for PostgreSQL's ~ operator."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return "^" + "".join(out) + "$"


@dataclass
class Selection:
    """A set of actions (transactions), optionally narrowed to some tables.

    since/until compare with the action's start; after picks every action that wrote
    anything after a time (point-in-time restore: a transaction still open at T was not
    visible at T, so all of it goes)."""

    actors: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    since: datetime | None = None
    until: datetime | None = None
    after: datetime | None = None
    tables: list[int] = field(default_factory=list)  # tracked ids

    def is_narrow(self) -> bool:
        """Undo needs at least one of actor/role/run/action/since/after: never 'everything'."""
        return bool(self.actors or self.roles or self.runs or self.actions or self.since or self.after)

    def require_narrow(self) -> None:
        if not self.is_narrow():
            raise BadInput("empty selection: give at least one of --actor, --role, --run, --action, --since")

    def params(self) -> dict[str, object]:
        """The bound values for the placeholders of tx_filter and table_filter."""
        return {
            "sel_actors": [glob_to_regex(a) for a in self.actors],
            "sel_roles": self.roles, "sel_runs": self.runs, "sel_actions": self.actions,
            "sel_since": self.since, "sel_until": self.until, "sel_after": self.after,
            "sel_tables": self.tables,
        }

    def tx_filter(self, alias: str = "t") -> sql.Composed:
        """A WHERE condition on rewind.tx (alias); values come from params()."""
        t = sql.Identifier(alias)
        parts: list[sql.Composable] = [sql.SQL("true")]
        if self.actors:
            parts.append(sql.SQL("{}.actor ~ ANY(%(sel_actors)s::text[])").format(t))
        if self.roles:
            parts.append(sql.SQL("{}.role = ANY(%(sel_roles)s::text[])").format(t))
        if self.runs:
            parts.append(sql.SQL("{}.run = ANY(%(sel_runs)s::text[])").format(t))
        if self.actions:
            parts.append(sql.SQL("{}.id = ANY(%(sel_actions)s::bigint[])").format(t))
        if self.since:
            parts.append(sql.SQL("{}.started_at >= %(sel_since)s").format(t))
        if self.until:
            parts.append(sql.SQL("{}.started_at <= %(sel_until)s").format(t))
        if self.after:
            parts.append(sql.SQL(
                "(coalesce(coalesce({t}.committed_at, rewind.commit_time({t}.xid)) > %(sel_after)s, false) "
                "OR {t}.started_at > %(sel_after)s "
                "OR EXISTS (SELECT 1 FROM rewind.change x WHERE x.tx = {t}.id AND x.at > %(sel_after)s) "
                "OR EXISTS (SELECT 1 FROM rewind.ddl y WHERE y.tx = {t}.id AND y.at > %(sel_after)s))"
            ).format(t=t))
        return sql.SQL(" AND ").join(parts)

    def table_filter(self, alias: str = "c") -> sql.Composed:
        if not self.tables:
            return sql.SQL("true").format()
        return sql.SQL("{}.tbl = ANY(%(sel_tables)s::int[])").format(sql.Identifier(alias))
