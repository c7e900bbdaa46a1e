"""The throwaway cluster everything else is tested against must itself behave as promised."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from rewind.devdb import Cluster, find_bindir


def test_find_bindir_has_server_and_clients() -> None:
    bindir = find_bindir()
    for name in ("initdb", "pg_ctl", "postgres", "pg_dump", "psql"):
        assert (bindir / name).is_file(), name


def test_cluster_answers(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("select 1").fetchone() == (1,)


def test_settings(pg_cluster: Cluster, conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("show wal_level").fetchone() == ("logical",)
    assert conn.execute("show synchronous_commit").fetchone() == ("on",)
    assert conn.execute("show server_encoding").fetchone() == ("UTF8",)
    assert conn.execute("show port").fetchone() == (str(pg_cluster.port),)
    assert pg_cluster.host == "127.0.0.1"
    assert pg_cluster.dsn("x").endswith(f"@127.0.0.1:{pg_cluster.port}/x")


def test_dsn_fixtures_are_isolated(pg_cluster: Cluster, dsn: str) -> None:
    other_name = "t_isolation_other"
    other = pg_cluster.create_database(other_name, template="rewind_template")
    try:
        assert other != dsn
        with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(other, autocommit=True) as b:
            a.execute("create table only_here (id int)")
            assert b.execute("select to_regclass('only_here')").fetchone() == (None,)
            assert (
                a.execute("select current_database()").fetchone() != b.execute("select current_database()").fetchone()
            )
    finally:
        pg_cluster.drop_database(other_name)


def test_each_test_gets_an_empty_database(conn: psycopg.Connection[Any]) -> None:
    # test_dsn_fixtures_are_isolated created a table in its own database; none may leak here.
    row = conn.execute(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    ).fetchone()
    assert row == (0,)


def test_wrong_password_is_refused(pg_cluster: Cluster, dsn: str) -> None:
    dbname = dsn.rsplit("/", 1)[1]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_cluster.dsn(dbname, password="wrong"), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_cluster.dsn(dbname, password=None), connect_timeout=5)


def test_bin_finds_client_programs(pg_cluster: Cluster) -> None:
    for name in ("pg_dump", "pg_restore", "psql", "pgbench"):
        assert pg_cluster.bin(name).endswith("/" + name)
    with pytest.raises(FileNotFoundError):
        pg_cluster.bin("no_such_program")


def test_restart_keeps_data(pg_cluster: Cluster, dsn: str) -> None:
    port = pg_cluster.port
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("create table kept (v text)")
        c.execute("insert into kept values ('before restart')")
    pg_cluster.restart()
    assert pg_cluster.port == port
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("select v from kept").fetchall() == [("before restart",)]
        assert c.execute("show wal_level").fetchone() == ("logical",)


def test_stop_removes_directory_and_server() -> None:
    cluster = Cluster(settings={"work_mem": "7MB"}, password="it's a p@ss/word")
    with cluster:
        base, data_dir, dsn = cluster.base_dir, cluster.data_dir, cluster.dsn()
        assert data_dir.is_dir()
        with psycopg.connect(dsn, connect_timeout=5) as c:
            assert c.execute("show work_mem").fetchone() == ("7MB",)
        cluster.stop()
        assert not base.exists()
        assert not cluster.running
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=3)
    cluster.stop()  # idempotent, also after the context manager already stopped it


def test_settings_cannot_move_the_listener() -> None:
    with pytest.raises(ValueError, match="port"):
        Cluster(settings={"port": "5999"})
