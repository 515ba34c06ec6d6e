-- Trust, second round: what a hostile second user tried on 0.3.0 (the item
-- numbers are those of docs/limits-and-security.md#second-round).  Their
-- jobs running beside another user's, and install time, are tested in
-- test/t/011_hostile_users.pl; the upgrade's repairs in 005.  Endpoint:
-- the runner's mock (plain HTTP/1.1, answers at once), and its recorded
-- OpenAI 404 for an unknown model (fixture openai_404_model_not_found).
CREATE EXTENSION IF NOT EXISTS pg_swarm;
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages, swarm.friendships,
         swarm.agent_memory RESTART IDENTITY;
DELETE FROM swarm.endpoints;
SET client_min_messages = warning;
DROP ROLE IF EXISTS swarm_t2_alice, swarm_t2_bob, swarm_t2_team, swarm_t2_nobody;
CREATE ROLE swarm_t2_team IN ROLE swarm_user;
CREATE ROLE swarm_t2_alice IN ROLE swarm_user, swarm_t2_team;
CREATE ROLE swarm_t2_bob IN ROLE swarm_user;
SELECT swarm.create_agents(8, 3);
SELECT swarm.build_friendships(3, 'random', 3) > 0 AS has_friends;
SELECT setting AS mock_url FROM pg_settings WHERE name = 'swarm.base_url' \gset
\set VERBOSITY terse

-- 2. Every template counts against swarm.max_prompt_bytes, a
--    swarm.system_template set for the session too, and braces cost nothing.
SET ROLE swarm_t2_bob;
SELECT set_config('swarm.system_template', repeat('{', 1100000) || '}', false) IS NOT NULL AS set;
SELECT swarm.generate('hi', agents => ARRAY[1]::bigint[]);
RESET swarm.system_template;
SELECT swarm.generate('hi', agents => ARRAY[1]::bigint[], user_template => repeat('x', 1048577));
SELECT swarm.generate('braces', agents => ARRAY[1, 2]::bigint[],
                      user_template => repeat('{', 100000) || '{context}}') AS braces \gset
SELECT status, succeeded FROM swarm.wait(:braces, '30 s');
-- unterminated and over-long placeholders are sent as they are
SELECT length(content) > 100 AS echoed, content LIKE '%:: {{{{%' AS braces_kept
FROM swarm.messages WHERE job_id = :braces ORDER BY agent_id;
RESET ROLE;

-- 3. What a simulation remembers belongs to the user who ran it: bob's
--    memory is a row of his, alice neither reads it nor gets it in prompts.
SET ROLE swarm_t2_bob;
SELECT swarm.simulate(2, 'Bob''s town hall', activity => 0.5, seed => 7,
                      system_template => 'BOB-SECRET {name}') AS bob_sim \gset
SELECT status FROM swarm.wait(:bob_sim, '30 s');
SELECT count(*) > 0 AS bob_has_memory,
       bool_and(owner = 'swarm_t2_bob') AS all_his,
       bool_or(swarm.unpack(memory)::text LIKE '%BOB-SECRET%') AS remembers_his_posts
FROM swarm.agent_memory;
RESET ROLE;
SELECT count(*) AS agents_with_memory_in_state FROM swarm.agents WHERE swarm.unpack(state) ? 'memory';
SET ROLE swarm_t2_alice;
SELECT count(*) AS alice_reads_memory FROM swarm.agent_memory;
SELECT swarm.simulate(2, 'Alice''s picnic', activity => 0.5, seed => 7,
                      system_template => 'MEMORY {memory} END') AS alice_sim \gset
SELECT status FROM swarm.wait(:alice_sim, '30 s');
SELECT count(*) > 0 AS alice_posted,
       count(*) FILTER (WHERE content LIKE '%BOB-SECRET%') AS quoting_bob
FROM swarm.messages WHERE job_id = :alice_sim;
SELECT count(*) > 0 AS alice_has_memory, bool_and(owner = 'swarm_t2_alice') AS all_hers
FROM swarm.agent_memory;
RESET ROLE;
SELECT owner, count(*) > 0 AS rows FROM swarm.agent_memory GROUP BY owner ORDER BY owner;
-- forgetting an agent forgets its memories, whoever's
DELETE FROM swarm.agents WHERE id = (SELECT min(agent_id) FROM swarm.agent_memory);
SELECT count(*) AS memories_of_the_deleted_agent FROM swarm.agent_memory m
WHERE NOT EXISTS (SELECT FROM swarm.agents a WHERE a.id = m.agent_id);

-- 5. A 404 naming the model is the request's fault: 'default' stays 'ok'.
SET ROLE swarm_t2_bob;
SELECT swarm.generate('[[mock:fixture=openai_404_model_not_found]] hi', model => 'no-such-model',
                      agents => ARRAY(SELECT id FROM swarm.agents ORDER BY id LIMIT 6)) AS nomodel \gset
SELECT status, failed FROM swarm.wait(:nomodel, '30 s');
SELECT DISTINCT attempts, left(last_error, 60) AS last_error FROM swarm.requests WHERE job_id = :nomodel;
SELECT endpoint, state FROM swarm.endpoint_status WHERE endpoint = 'default';
RESET ROLE;

-- 6. A seed that would overflow the step arithmetic is refused.
SET ROLE swarm_t2_bob;
SELECT swarm.simulate(3, activity => 0.05, seed => 9223372036853275807);
SELECT swarm.simulate(3, activity => 0.05, seed => -4611686018427387905);
RESET ROLE;

-- 7. Users read swarm.stats and swarm.endpoint_status.
SET ROLE swarm_t2_alice;
SELECT count(*) AS stats_rows FROM swarm.stats;
SELECT count(*) > 0 AS status_rows FROM swarm.endpoint_status;
RESET ROLE;

-- 8. After SET ROLE to a group, the job's owner is the session's login
--    role, not the group every member would share.
SET SESSION AUTHORIZATION swarm_t2_alice;
SET ROLE swarm_t2_team;
SELECT swarm.generate('as the team', agents => ARRAY[8]::bigint[]) AS team_job \gset
RESET ROLE;
RESET SESSION AUTHORIZATION;
SELECT owner FROM swarm.jobs WHERE id = :team_job;

-- 11. Endpoints granted to roles, and what a job may ask of them.
SELECT swarm.add_endpoint('team_only', :'mock_url', roles => ARRAY['swarm_t2_team']::name[], max_tokens => 64);
SELECT swarm.add_endpoint('typo', :'mock_url', roles => ARRAY['swarm_t2_teem']::name[]);
SELECT swarm.add_endpoint('nobody', :'mock_url', roles => ARRAY[]::name[]);
SELECT name, roles, max_tokens FROM swarm.endpoints ORDER BY name;
SET ROLE swarm_t2_alice;
SELECT swarm.generate('alice on her team''s endpoint', agents => ARRAY[8]::bigint[], max_tokens => 64,
                      endpoints => ARRAY['team_only']) AS granted_job \gset
SELECT status, succeeded FROM swarm.wait(:granted_job, '30 s');
SELECT swarm.generate('too many tokens', agents => ARRAY[8]::bigint[], max_tokens => 65,
                      endpoints => ARRAY['team_only']);
RESET ROLE;
SET ROLE swarm_t2_bob;
SELECT swarm.generate('bob tries', agents => ARRAY[8]::bigint[], endpoints => ARRAY['default', 'team_only']);
SELECT swarm.simulate(2, endpoints => ARRAY['team_only']);
SELECT swarm.generate('nine endpoints', agents => ARRAY[8]::bigint[],
                      endpoints => array_fill('default'::text, ARRAY[9]));
RESET ROLE;
-- an admin may use every endpoint; clearing the grant opens it to every user
SELECT swarm.generate('the admin', agents => ARRAY[8]::bigint[], max_tokens => 64,
                      endpoints => ARRAY['team_only']) IS NOT NULL AS admin_enqueued;
SELECT swarm.alter_endpoint('team_only', clear => ARRAY['roles', 'max_tokens']);
SET ROLE swarm_t2_bob;
SELECT swarm.generate('bob now', agents => ARRAY[8]::bigint[], max_tokens => 65,
                      endpoints => ARRAY['team_only']) IS NOT NULL AS bob_enqueued;
RESET ROLE;

SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
DELETE FROM swarm.endpoints;
TRUNCATE swarm.agent_memory;
DROP OWNED BY swarm_t2_alice, swarm_t2_bob, swarm_t2_team;
DROP ROLE swarm_t2_alice, swarm_t2_bob, swarm_t2_team;
