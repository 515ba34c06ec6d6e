-- The SQL surface of the generation API: objects, defaults, input validation.
-- (The jobs themselves run in core_generate; this file sends nothing.)
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;

-- The tables, views and functions of the API, and their signatures.
SELECT c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'swarm' AND c.relkind IN ('r', 'v') AND c.relname IN
      ('agents', 'jobs', 'requests', 'messages', 'stats', 'job_progress')
ORDER BY 1;

SELECT p.oid::regprocedure AS function, pg_get_function_result(p.oid) AS returns
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'swarm' AND p.proname IN ('generate', 'wait', 'cancel')
ORDER BY p.proname;

-- Nothing is granted to PUBLIC.
SELECT count(*) AS public_grants
FROM information_schema.role_table_grants
WHERE table_schema = 'swarm' AND grantee = 'PUBLIC';
SELECT count(*) AS public_executable
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'swarm' AND has_function_privilege('public', p.oid, 'EXECUTE');

-- Users insert agents themselves; persona defaults to {}.
INSERT INTO swarm.agents (name) VALUES ('Ada'), ('Grace');
INSERT INTO swarm.agents (name, persona) VALUES ('Linus', '{"occupation": "kernel hacker"}');
SELECT id, name, persona FROM swarm.agents ORDER BY id;
-- an agent needs a name
\set VERBOSITY terse
INSERT INTO swarm.agents (persona) VALUES ('{}');
\set VERBOSITY default

-- Bad input is refused with a clear error, and nothing is enqueued.
SELECT swarm.generate(NULL);
SELECT swarm.generate('   ');
SELECT swarm.generate('hello', max_tokens => 0);
SELECT swarm.generate('hello', max_tokens => -5);
SELECT swarm.generate('hello', channel => '');
SELECT swarm.generate('hello', channel => repeat('c', 64));
SELECT swarm.generate('hello', model => '');
SELECT swarm.generate('hello', agents => ARRAY[1, NULL]::bigint[]);
SELECT swarm.generate('hello', agents => ARRAY[1, 999, 1000]::bigint[]);
SELECT count(*) AS jobs, (SELECT count(*) FROM swarm.requests) AS requests FROM swarm.jobs;

-- A rolled-back generate() leaves nothing behind.
BEGIN;
SELECT swarm.generate('never sent') IS NOT NULL AS enqueued;
SELECT total FROM swarm.jobs;
ROLLBACK;
SELECT count(*) AS jobs_after_rollback FROM swarm.jobs;

-- wait() and cancel() on a job that does not exist.
SELECT swarm.wait(424242);
SELECT swarm.cancel(424242);

-- wait() refuses a job enqueued in the same transaction: it cannot run yet.
BEGIN;
SELECT swarm.generate('same transaction', agents => ARRAY[1]::bigint[]) AS job \gset
SELECT swarm.wait(:job, '1s');
ROLLBACK;

-- ... and refuses snapshot isolation, under which progress never shows.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT swarm.wait(1);
ROLLBACK;

-- The stats view exists and answers before any work.
SELECT worker_pid IS NOT NULL AS worker_running, in_flight >= 0 AS sane FROM swarm.stats;

-- Settings and their built-in defaults.
SELECT name, boot_val, unit, context FROM pg_settings
WHERE name LIKE 'swarm.%'
ORDER BY name;
