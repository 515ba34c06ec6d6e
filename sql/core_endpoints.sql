-- Named endpoints: administration, validation, failover, budgets, pauses.
-- The mock is the endpoint 'default' (swarm.base_url); 'dead' refuses
-- connections; the others point at the mock with limits of their own.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
DELETE FROM swarm.endpoints;
SET client_min_messages = warning;

SELECT setting AS mock_url FROM pg_settings WHERE name = 'swarm.base_url' \gset

-- Administration, and what it refuses.
SELECT swarm.add_endpoint('dead', 'http://127.0.0.1:1/v1', api_key => 'sk-dead-key-000');
SELECT swarm.add_endpoint('limited', :'mock_url', requests_per_minute => 5);
SELECT swarm.add_endpoint('tokens', :'mock_url', tokens_per_minute => 2500);
SELECT swarm.add_endpoint('quota', :'mock_url');
SELECT swarm.add_endpoint('renamed', :'mock_url', model => 'deployment-7');
SELECT swarm.add_endpoint('picky', :'mock_url', models => ARRAY['gpt-x']);
SELECT swarm.add_endpoint('dead', 'http://127.0.0.1:2/v1');
\set VERBOSITY terse
SELECT swarm.add_endpoint('default', :'mock_url');
SELECT swarm.add_endpoint('Bad Name', :'mock_url');
SELECT swarm.add_endpoint('creds', 'http://user:pw@127.0.0.1:1/v1');
SELECT swarm.add_endpoint('ftp', 'ftp://127.0.0.1/v1');
SELECT swarm.add_endpoint('zero', :'mock_url', max_in_flight => 0);
\set VERBOSITY default
SELECT swarm.alter_endpoint('quota', max_in_flight => 7, timeout => '5 s');
SELECT swarm.alter_endpoint('quota', clear => ARRAY['timeout', 'colour']);
SELECT swarm.alter_endpoint('nope', max_in_flight => 7);
SELECT name, model, models, max_in_flight, requests_per_minute, tokens_per_minute, timeout_ms
FROM swarm.endpoints ORDER BY name;
-- keys are not in swarm.endpoints, and only the owner can read where they are
SELECT count(*) AS columns_named_key FROM information_schema.columns
WHERE table_schema = 'swarm' AND table_name = 'endpoints' AND column_name LIKE '%key%';

-- Enqueueing checks the endpoints and the model.
INSERT INTO swarm.agents (name) SELECT 'agent' || g FROM generate_series(1, 40) g;
SELECT swarm.generate('hi', endpoints => ARRAY['nowhere', 'default', 'elsewhere']);
SELECT swarm.generate('hi', endpoints => ARRAY[]::text[]);
SELECT swarm.generate('hi', endpoints => ARRAY['picky'], model => 'gpt-y');
SELECT swarm.generate(repeat('x', 2 * 1024 * 1024));
SELECT count(*) AS jobs FROM swarm.jobs;

-- An endpoint's own model replaces the job's in the request it receives.
SELECT swarm.generate('hi', agents => ARRAY[1]::bigint[], model => 'gpt-y', endpoints => ARRAY['renamed']) AS job \gset
SELECT status, succeeded FROM swarm.wait(:job);
SELECT model FROM swarm.messages WHERE job_id = :job;

-- Failover: 'dead' refuses connections; its breaker opens and the work flows
-- to 'default'.  Every request ends with a message.
SELECT swarm.generate('failover', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 10),
                      endpoints => ARRAY['dead', 'default']) AS job \gset
SELECT status, total, succeeded, failed FROM swarm.wait(:job);
SELECT endpoint, state, state_reason, breaker_opened >= 1 AS breaker_opened, errors >= 5 AS errors
FROM swarm.endpoint_status WHERE endpoint = 'dead';
-- the dead endpoint's key never shows in an error
SELECT count(*) AS key_in_errors FROM swarm.requests WHERE last_error LIKE '%sk-dead-key%';

-- A requests-per-minute budget is spent evenly, as providers enforce it: 5 a
-- minute is one every 12 s, so one goes out at once and the rest wait.
SELECT swarm.generate('budget', agents => ARRAY(SELECT id FROM swarm.agents WHERE id <= 8),
                      endpoints => ARRAY['limited']) AS job \gset
SELECT status, succeeded FROM swarm.wait(:job, '1.5 s');
SELECT requests, requests_last_minute, in_flight FROM swarm.endpoint_status WHERE endpoint = 'limited';
SELECT swarm.cancel(:job);
SELECT status, succeeded, cancelled FROM swarm.jobs WHERE id = :job;

-- A tokens-per-minute budget: charged max_tokens plus the prompt estimate at
-- send, corrected by usage after; the total in the window stays within it.
SELECT swarm.generate('tokens', max_tokens => 1000, endpoints => ARRAY['tokens']) AS job \gset
SELECT status FROM swarm.wait(:job, '1.5 s');
SELECT tokens_last_minute <= 2500 AS within_budget, requests < 40 AS held_back
FROM swarm.endpoint_status WHERE endpoint = 'tokens';
SELECT swarm.cancel(:job);

-- An exhausted quota fails that request at once and pauses the endpoint:
-- the requests behind it wait instead of burning.
SELECT swarm.generate('[[mock:status=429,code=insufficient_quota]]', agents => ARRAY[1]::bigint[],
                      endpoints => ARRAY['quota']) AS job \gset
SELECT status, failed FROM swarm.wait(:job);
SELECT attempts, last_error FROM swarm.requests WHERE job_id = :job;
SELECT state, state_reason, state_until > now() AS paused FROM swarm.endpoint_status WHERE endpoint = 'quota';
SELECT swarm.generate('after the quota', agents => ARRAY[2, 3]::bigint[], endpoints => ARRAY['quota']) AS job \gset
SELECT status, succeeded, failed FROM swarm.wait(:job, '500 ms');
SELECT swarm.cancel(:job);

-- An endpoint in use by an unfinished job cannot be dropped; others can.
SELECT swarm.generate('keep', agents => ARRAY[4]::bigint[], endpoints => ARRAY['limited']) AS job \gset
SELECT swarm.drop_endpoint('limited');
SELECT swarm.cancel(:job);
SELECT swarm.drop_endpoint('limited');
SELECT swarm.drop_endpoint('limited');
SELECT name FROM swarm.endpoints ORDER BY name;
