"""Shared fixtures: one real PostgreSQL cluster per test session, one fresh database per test.

A cluster takes about a second to create, a database cloned from an empty template a few
milliseconds, so tests get full isolation (their own schemas, triggers, replication slots
aside) without paying for a cluster each. Missing PostgreSQL binaries make the fixtures error
out rather than skip: a suite that silently skips its database tests proves nothing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from rewind.devdb import Cluster

TEMPLATE_DB = "rewind_template"

_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    with Cluster() as cluster:
        # Cloned by every `dsn`; kept free of connections because CREATE DATABASE ... TEMPLATE
        # refuses a template that someone is connected to.
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8' IS_TEMPLATE true").format(
                    sql.Identifier(TEMPLATE_DB)
                )
            )
        yield cluster


@pytest.fixture
def dsn(pg_cluster: Cluster) -> Iterator[str]:
    name = f"t_{next(_counter)}_{uuid.uuid4().hex[:8]}"
    url = pg_cluster.create_database(name, template=TEMPLATE_DB)
    try:
        yield url
    finally:
        # If the cluster is already gone (e.g. stopped by Ctrl-C) so is the database.
        if pg_cluster.running:
            pg_cluster.drop_database(name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A journal mirror in an SQLite file (the default kind)."""
    return f"sqlite:///{tmp_path}/journal.sqlite"


def other_database(cluster: Cluster, prefix: str) -> Iterator[str]:
    """A fresh empty database beside the test's own, dropped afterwards (a fixture's body)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = cluster.create_database(name)
    yield url
    if cluster.running:
        cluster.drop_database(name)


@pytest.fixture
def pg_mirror_url(pg_cluster: Cluster) -> Iterator[str]:
    """A journal mirror in another database of the same cluster."""
    yield from other_database(pg_cluster, "mirror")


@pytest.fixture
def twin(pg_cluster: Cluster) -> Iterator[str]:
    """A second database to run the same workload in, for comparisons."""
    yield from other_database(pg_cluster, "twin")


@pytest.fixture(params=["sqlite", "postgresql"])
def mirror_url(request: pytest.FixtureRequest) -> str:
    """Each kind of journal mirror in turn."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_mirror_url"))
