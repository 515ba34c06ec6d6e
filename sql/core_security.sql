-- Secrets and privileges: the API key is a superuser-only setting, and the
-- extension's objects are closed to other roles.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- A superuser configures the key (swarm.api_key_file avoids the reload log line).
ALTER SYSTEM SET swarm.api_key = 'sk-test-secret-0123456789';
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SHOW swarm.api_key;

DROP ROLE IF EXISTS swarm_regress_nobody;
CREATE ROLE swarm_regress_nobody LOGIN;
SET ROLE swarm_regress_nobody;

-- The key is invisible to others: SHOW and current_setting() refuse, pg_settings omits it.
SHOW swarm.api_key;
SELECT count(*) AS visible_rows FROM pg_settings WHERE name = 'swarm.api_key';
SELECT current_setting('swarm.api_key', true) IS NULL AS hidden;
SELECT count(*) AS key_anywhere FROM pg_settings WHERE setting LIKE '%sk-test-secret%';
-- ... and cannot be set by others.
SET swarm.api_key = 'sk-stolen';

-- Other roles can neither enqueue nor read.
SELECT swarm.generate('not allowed');
SELECT count(*) FROM swarm.jobs;
SELECT count(*) FROM swarm.messages;
SELECT * FROM swarm.stats;

RESET ROLE;
DROP ROLE swarm_regress_nobody;

-- Credentials in the endpoint URL are refused.
ALTER SYSTEM SET swarm.base_url = 'http://user:secret@127.0.0.1:9/v1';
ALTER SYSTEM SET swarm.base_url = 'ftp://127.0.0.1/v1';
ALTER SYSTEM RESET swarm.api_key;
SELECT pg_reload_conf();

-- Roles: swarm_user runs its own jobs and sees only them; swarm_admin sees all
-- and manages endpoints; the endpoint keys are out of everyone's reach.
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
DROP ROLE IF EXISTS swarm_regress_alice, swarm_regress_bob, swarm_regress_boss;
CREATE ROLE swarm_regress_alice IN ROLE swarm_user;
CREATE ROLE swarm_regress_bob IN ROLE swarm_user;
CREATE ROLE swarm_regress_boss IN ROLE swarm_admin;
INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 3) g;
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength) VALUES (1, 2, now(), 0.5), (2, 1, now(), 0.5);
SET client_min_messages = warning;

SET ROLE swarm_regress_alice;
SELECT swarm.generate('alice asks', agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 2)) AS alice_job \gset
SELECT status, succeeded FROM swarm.wait(:alice_job);
SELECT count(*) AS alice_sees_messages FROM swarm.messages;
-- a user cannot forge another owner, nor touch the keys or the endpoints
INSERT INTO swarm.jobs (owner, context, model, max_tokens, channel, system_template, user_template)
VALUES ('swarm_regress_bob', 'x', 'm', 1, 'c', 's', 'u');
SELECT * FROM swarm._endpoint_keys;
SELECT swarm.add_endpoint('mine', 'http://127.0.0.1:1/v1');
UPDATE swarm.jobs SET succeeded = 1000 WHERE id = :alice_job;
-- the social world is the admins' to change
INSERT INTO swarm.friendships (agent_id, friend_id, since, strength) VALUES (1, 3, now(), 0.5);
-- interactions and simulations are the user's jobs too
SELECT swarm.interact('alice chats', agents => ARRAY[1]::bigint[]) AS alice_chat \gset
SELECT status, succeeded FROM swarm.wait(:alice_chat);
SELECT swarm.simulate(1, 'alice posts', activity => 0.01, seed => 1) AS alice_sim \gset
SELECT status, succeeded FROM swarm.wait(:alice_sim);
SELECT count(*) AS alice_sees_posts FROM swarm.posts;
-- what the worker does after a stored batch is not for users
SELECT swarm._advance('{}', '{}', '{}');
RESET ROLE;

SET ROLE swarm_regress_bob;
-- bob sees none of alice's jobs, requests or messages, and cannot cancel them
SELECT count(*) AS bob_sees_jobs FROM swarm.jobs;
SELECT count(*) AS bob_sees_messages FROM swarm.messages;
SELECT count(*) AS bob_sees_posts FROM swarm.posts;
SELECT count(*) AS bob_sees_progress FROM swarm.job_progress;
SELECT swarm.cancel(:alice_job);
SELECT swarm.generate('bob asks', agents => ARRAY[3]::bigint[]) AS bob_job \gset
SELECT status FROM swarm.wait(:bob_job);
SELECT owner, count(*) FROM swarm.jobs GROUP BY owner;
RESET ROLE;

SET ROLE swarm_regress_boss;
-- the admin sees every job and manages endpoints, but not the keys
SELECT owner, count(*) FROM swarm.jobs GROUP BY owner ORDER BY owner;
SELECT count(*) AS boss_sees_messages FROM swarm.messages;
SELECT swarm.add_endpoint('boss_endpoint', 'http://127.0.0.1:1/v1', api_key => 'sk-boss-secret');
SELECT * FROM swarm._endpoint_keys;
SELECT swarm.drop_endpoint('boss_endpoint');
RESET ROLE;

TRUNCATE swarm.friendships;
DROP ROLE swarm_regress_alice, swarm_regress_bob, swarm_regress_boss;
