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
