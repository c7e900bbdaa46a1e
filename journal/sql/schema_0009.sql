-- Commit times without the sidecar, version 9. A transaction's commit time is stamped into
-- rewind.tx by the decoding stream; when it has not been (no sidecar, or not yet), PostgreSQL's
-- own commit timestamps can say, if the server keeps them (track_commit_timestamp = on). Without
-- either, `restore --to T` cannot tell that a transaction which wrote before T committed after it.
--
-- NULL when the server keeps no commit timestamps (asking would raise), when the transaction is
-- still running or rolled back, when its timestamp has been truncated with the old commit log, and
-- when it is 2^31 or more transactions old, or not yet assigned here (a journal copied from another
-- cluster): the commit timestamp store is indexed by 32-bit transaction ids, whose low bits such an
-- xid8 would share with another transaction. CASE keeps the lookup behind the checks. (Not inlined
-- into the readers' queries: pg_xact_commit_timestamp is volatile; a call per unstamped row.)
CREATE OR REPLACE FUNCTION rewind.commit_time(x xid8) RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN pg_catalog.current_setting('track_commit_timestamp')::boolean
         AND pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::numeric
             OPERATOR(pg_catalog.-) x::text::numeric BETWEEN 1 AND 2147483647
        THEN pg_catalog.pg_xact_commit_timestamp(pg_catalog.xid(x))
    END
$$;
