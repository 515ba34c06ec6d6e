-- pg_swarm 0.2.0 -> 0.3.0: what changes in the tables, and what goes away.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.3.0 (all written to run again)
-- to make pg_swarm--0.2.0--0.3.0.sql; TAP 005 checks that the result is the
-- schema of a fresh install.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.3.0'" to load this file. \quit

-- A test hook no longer shipped: the tests declare it themselves.
DROP FUNCTION swarm._store_results(bigint[], text[]);

-- Every request ends in bounded time: a deadline per job.
ALTER TABLE swarm.jobs ADD COLUMN request_deadline interval CHECK (request_deadline > interval '0');
COMMENT ON COLUMN swarm.jobs.request_deadline IS 'Longest a request of the job may take from claim to end, retries and waits included (NULL: swarm.request_deadline).';

-- Trust between users (see 90_privileges.sql): a channel pg_notify() takes,
-- policies that call nothing from a search_path, user data dumped by pg_dump.
ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_channel_check CHECK (octet_length(channel) BETWEEN 1 AND 63);
DROP POLICY jobs_owner ON swarm.jobs;
DROP POLICY requests_owner ON swarm.requests;
DROP POLICY messages_owner ON swarm.messages;
DROP FUNCTION swarm._is_admin();
SELECT pg_catalog.pg_extension_config_dump('swarm.agents', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.requests', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.messages', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.agents', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.jobs', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.requests', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.messages', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('swarm.friendships', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.communities', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.community_members', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('swarm.communities', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump('swarm.endpoints', '');
SELECT pg_catalog.pg_extension_config_dump('swarm._endpoint_keys', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.conversation_ids', '');

-- Functions whose arguments or results change: dropped here, made anew by
-- the function files.
DROP FUNCTION swarm.generate(text, bigint[], text, integer, text, text, text, text[]);
DROP FUNCTION swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[]);
DROP FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[]);
DROP FUNCTION swarm._check_job_args(text, bigint[], text, integer, text, text, text, text[]);
DROP VIEW swarm.endpoint_status;
DROP FUNCTION swarm._endpoint_status();

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
