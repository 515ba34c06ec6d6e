-- pg_swarm 0.3.0 -> 0.4.0: what changes in the tables, and what goes away.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.4.0 (all written to run again)
-- to make pg_swarm--0.3.0--0.4.0.sql; TAP 005 checks that the result is the
-- schema of a fresh install.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.4.0'" to load this file. \quit

-- Job kinds are rows the worker reads (code, advances), not strings in C.
CREATE TABLE swarm.job_kinds (
    code        smallint PRIMARY KEY CHECK (code > 0),
    name        text NOT NULL UNIQUE,
    advances    boolean NOT NULL,
    description text NOT NULL
);
INSERT INTO swarm.job_kinds (code, name, advances, description) VALUES
    (1, 'generate', false, 'one request per agent'),
    (2, 'interact', true, 'conversations between friends, turn by turn: a stored turn enqueues the next'),
    (3, 'simulate', true, 'the feed, step by step: a step that has ended enqueues the next');
COMMENT ON TABLE swarm.job_kinds IS 'The kinds of job: generate, interact, simulate.';
COMMENT ON COLUMN swarm.job_kinds.code IS 'The number the worker knows the kind by.';
COMMENT ON COLUMN swarm.job_kinds.name IS 'The name in swarm.jobs.kind.';
COMMENT ON COLUMN swarm.job_kinds.advances IS 'Whether storing a result of such a job may enqueue more requests (swarm._advance()).';
COMMENT ON COLUMN swarm.job_kinds.description IS 'What a job of the kind does.';
ALTER TABLE swarm.jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_kind_fkey FOREIGN KEY (kind) REFERENCES swarm.job_kinds (name);

-- Functions and views whose arguments or results change: dropped here, made
-- anew by the function files.
DROP VIEW swarm.stats;
DROP FUNCTION swarm._stats();

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
