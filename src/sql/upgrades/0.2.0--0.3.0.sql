-- pg_swarm 0.2.0 -> 0.3.0: what changes in the tables, and what goes away.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.3.0 (all written to run again)
-- to make pg_swarm--0.2.0--0.3.0.sql; TAP 005 checks that the result is the
-- schema of a fresh install.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.3.0'" to load this file. \quit

-- A test hook no longer shipped: the tests declare it themselves.
DROP FUNCTION swarm._store_results(bigint[], text[]);

-- The worker leaves the queue alone while the SQL is of another version than
-- its library: wake it at commit, so that jobs queued meanwhile start now.
-- (Not preloaded, or serving another database: nothing to wake.)
DO $$
BEGIN
    PERFORM swarm._wake_worker();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    NULL;
END
$$;
