-- Trust between users: the worker, which runs as a superuser, is no way
-- around row-level security.  Users enqueue only through the API, cannot
-- touch the queue or the social world, cannot make themselves admins, and
-- what they submit cannot make the worker read other users' rows, waste
-- its memory or stall it.  (The item numbers are those of the review in
-- docs/limits-and-security.md.)
CREATE EXTENSION IF NOT EXISTS pg_swarm;
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.friendships RESTART IDENTITY;
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS mal CASCADE;
DROP ROLE IF EXISTS swarm_trust_alice, swarm_trust_bob, swarm_trust_boss;
CREATE ROLE swarm_trust_alice IN ROLE swarm_user;
CREATE ROLE swarm_trust_bob IN ROLE swarm_user;
CREATE ROLE swarm_trust_boss IN ROLE swarm_admin;
INSERT INTO swarm.agents (name, persona)
SELECT 'agent' || g, jsonb_build_object('obj', jsonb_build_object('a', g), 'd', '') FROM generate_series(1, 4) g;
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength)
VALUES (1, 2, now(), 0.5), (2, 1, now(), 0.5);

-- 1, 3. Users read the queue but never write it: no INSERT, no UPDATE.
SELECT t, p, has_table_privilege('swarm_trust_alice', t, p) AS allowed
FROM unnest(ARRAY['swarm.jobs', 'swarm.requests', 'swarm.messages']) t,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']) p
ORDER BY 1, 2;
SELECT has_column_privilege('swarm_trust_alice', 'swarm.jobs', 'status', 'UPDATE') AS update_status,
       has_column_privilege('swarm_trust_alice', 'swarm.jobs', 'total', 'UPDATE') AS update_total,
       has_column_privilege('swarm_trust_alice', 'swarm.requests', 'status', 'UPDATE') AS update_request_status;
-- ... and no helper that writes it on their behalf
SELECT p.oid::regprocedure AS function
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'swarm' AND has_function_privilege('swarm_trust_alice', p.oid, 'EXECUTE')
ORDER BY p.oid::regprocedure::text;

SET ROLE swarm_trust_alice;
SELECT swarm.generate('alice asks', agents => ARRAY[1, 2]::bigint[]) AS alice_job \gset
SELECT status, succeeded, owner = 'swarm_trust_alice' AS owned FROM swarm.wait(:alice_job);
-- a request inserted by hand (say, into someone else's conversation) is refused
INSERT INTO swarm.requests (job_id, agent_id, conversation_id) VALUES (:alice_job, 1, 1);
UPDATE swarm.jobs SET total = total + 1 WHERE id = :alice_job;
SELECT swarm._simulate_step(:alice_job, 1);
SELECT swarm._advance('{}', '{}', '{}');
RESET ROLE;

-- 2. A pg_has_role() of bob's making, first on his search_path, makes him no
--    admin: the policies call pg_catalog's by name.
GRANT CREATE ON DATABASE contrib_regression TO swarm_trust_bob;
SET ROLE swarm_trust_bob;
CREATE SCHEMA mal;
CREATE FUNCTION mal.pg_has_role(name, text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true';
SET search_path = mal, pg_catalog;
SELECT count(*) AS bob_sees_jobs FROM swarm.jobs;
SELECT count(*) AS bob_sees_messages FROM swarm.messages;
SELECT swarm.cancel(:alice_job);
RESET search_path;
DROP SCHEMA mal CASCADE;
RESET ROLE;
REVOKE CREATE ON DATABASE contrib_regression FROM swarm_trust_bob;

-- 4. NOTIFY: anyone may LISTEN to any channel, so a progress payload says
--    nothing private: a job id, its status and counts.
SELECT array_agg(k ORDER BY k) AS payload_keys
FROM swarm.jobs j, jsonb_object_keys(swarm._progress_payload(j)::jsonb) k WHERE j.id = :alice_job;
-- a channel pg_notify() would refuse cannot be a job's (not even a superuser's)
\set VERBOSITY terse
INSERT INTO swarm.jobs (context, model, max_tokens, channel, system_template, user_template)
VALUES ('x', 'm', 1, '', 's', 'u');
\set VERBOSITY default
SELECT swarm.generate('x', channel => repeat('c', 64));

-- 5. The social world is shared: users read it, admins write it.
SET ROLE swarm_trust_alice;
SELECT count(*) AS alice_reads_agents FROM swarm.agents;
UPDATE swarm.agents SET name = 'mine' WHERE id = 1;
DELETE FROM swarm.friendships;
INSERT INTO swarm.agents (name) VALUES ('alice''s');
SELECT swarm.build_friendships(2);
RESET ROLE;
SET ROLE swarm_trust_boss;
SELECT swarm.build_friendships(1, 'random', 1) AS boss_builds_friendships;
UPDATE swarm.agents SET persona = persona || '{"mood": "fine"}' WHERE id = 4;
RESET ROLE;

-- 13. Moving an endpoint to another host needs its key again.
SELECT swarm.add_endpoint('keyed', 'http://127.0.0.1:1/v1', api_key => 'sk-keyed');
SELECT swarm.alter_endpoint('keyed', base_url => 'http://127.0.0.2:1/v1');
SELECT swarm.alter_endpoint('keyed', base_url => 'http://127.0.0.1:1/v2') AS same_host_ok;
SELECT swarm.alter_endpoint('keyed', base_url => 'http://127.0.0.2:1/v1', api_key => 'sk-new') AS new_key_ok;
SELECT swarm.drop_endpoint('keyed');

-- 8. A request whose agent is deleted before the worker claims it fails,
--    saying so, and the job still completes.
BEGIN;
SELECT swarm.generate('agent goes', agents => ARRAY[3, 4]::bigint[]) AS gone_job \gset
DELETE FROM swarm.agents WHERE id = 4;
COMMIT;
SELECT status, succeeded, failed FROM swarm.wait(:gone_job, '20 s');
SELECT last_error FROM swarm.requests WHERE job_id = :gone_job;

-- 9. A template that repeats a large context thousands of times is refused
--    by that request alone, before the worker builds it, and the next job runs.
SELECT swarm.generate(repeat('x', 500000), agents => ARRAY[1]::bigint[],
                      system_template => repeat('{context}', 50000)) AS big_job \gset
SELECT status, failed FROM swarm.wait(:big_job, '20 s');
SELECT last_error FROM swarm.requests WHERE job_id = :big_job;
-- 10. {persona.KEY} on an object value is its JSON
SELECT swarm.generate('next', agents => ARRAY[2]::bigint[], user_template => '{persona.obj}') AS next_job \gset
SELECT status, succeeded FROM swarm.wait(:next_job, '20 s');
SELECT strpos(content, '{"a": 2}') > 0 AS object_shown FROM swarm.messages WHERE job_id = :next_job;

-- 11. State bytes that no decoder should accept read as no state: a decimal
--     no numeric holds, nesting past the stack.
SELECT swarm._unpack_or_null('\xc70901316531303030303030'::bytea) IS NULL AS huge_number_is_null,
       swarm._unpack_or_null(decode(repeat('91', 100000) || '00', 'hex')) IS NULL AS deep_nesting_is_null,
       swarm._unpack_or_null(swarm.pack('{"ok": [1, 2.5, "x"]}')) AS fine;
SELECT swarm.unpack('\xc70901316531303030303030'::bytea);

DROP ROLE swarm_trust_alice, swarm_trust_bob, swarm_trust_boss;
