-- Faults on the network and hostile responses: each request ends exactly once,
-- as a message or as a failure that says why; the worker stays up.
-- Each agent's persona carries a directive for the mock ([[mock:...]]); the
-- context holds a per-run nonce so "times=N" counts start afresh every run.
CREATE EXTENSION IF NOT EXISTS pg_swarm;
-- (jobs of earlier tests must not run on while their tables are emptied)
SELECT count(swarm.cancel(id)) >= 0 AS cleared FROM swarm.jobs WHERE status IN ('queued', 'running');
TRUNCATE swarm.agents, swarm.jobs, swarm.requests, swarm.messages RESTART IDENTITY;
SET client_min_messages = warning;

INSERT INTO swarm.agents (name, persona) VALUES
  ('ok',               '{"d": ""}'),
  ('bad_request',      '{"d": "[[mock:status=400]]"}'),
  ('unauthorized',     '{"d": "[[mock:status=401]]"}'),
  ('unavailable_x2',   '{"d": "[[mock:status=503,times=2]]"}'),
  ('server_error_x1',  '{"d": "[[mock:status=500,times=1]]"}'),
  ('rate_limited',     '{"d": "[[mock:status=429,retry_after=1,times=1]]"}'),
  ('rate_limited_ms',  '{"d": "[[mock:status=429,retry_after_ms=300,retry_after=30,times=1]]"}'),
  ('no_retry_header',  '{"d": "[[mock:status=500,should_retry=false]]"}'),
  ('retry_header',     '{"d": "[[mock:status=400,should_retry=true,times=1]]"}'),
  ('html_502_x1',      '{"d": "[[mock:html,times=1]]"}'),
  ('malformed',        '{"d": "[[mock:malformed]]"}'),
  ('no_choices',       '{"d": "[[mock:nochoices]]"}'),
  ('empty_choices',    '{"d": "[[mock:emptychoices]]"}'),
  ('no_usage',         '{"d": "[[mock:nousage]]"}'),
  ('null_content',     '{"d": "[[mock:nullcontent]]"}'),
  ('length',           '{"d": "[[mock:finish=length]]"}'),
  ('huge',             '{"d": "[[mock:huge=20000000]]"}'),
  ('escaped_nul',      '{"d": "[[mock:nul]]"}'),
  ('raw_nul',          '{"d": "[[mock:rawnul]]"}'),
  ('bad_utf8',         '{"d": "[[mock:badutf8]]"}'),
  ('lone_surrogate',   '{"d": "[[mock:surrogate]]"}'),
  ('reset_x1',         '{"d": "[[mock:reset,times=1]]"}'),
  ('reset_mid_x1',     '{"d": "[[mock:reset_mid,times=1]]"}'),
  ('hang_x1',          '{"d": "[[mock:hang,times=1]]"}'),
  ('unicode',          '{"d": "héllo 世界 🐝 \" \\ \n tab\t"}'),
  ('refusal',          '{"d": "[[mock:refusal]]"}'),
  ('overloaded_529_x1', '{"d": "[[mock:status=529,errshape=anthropic,times=1]]"}'),
  ('garbage_x1',       '{"d": "[[mock:garbage,times=1]]"}'),
  ('empty_reply_x1',   '{"d": "[[mock:empty,times=1]]"}'),
  ('bad_chunk_x1',     '{"d": "[[mock:badchunk,times=1]]"}'),
  ('detail_422',       '{"d": "[[mock:status=422,errshape=detail]]"}');

SELECT swarm.generate('run ' || clock_timestamp(), user_template => '{persona.d} {context}') AS job \gset
SELECT status, total, succeeded + failed + cancelled = total AS all_ended FROM swarm.wait(:job);

-- Exactly one outcome per request: a message, or a failed request row.
-- (A reset, an empty reply or garbage on a reused keep-alive connection may
-- be retried by libcurl itself on a fresh one, so those cases take one
-- attempt or two: shown as NULL.)
SELECT a.name,
       CASE WHEN m.id IS NOT NULL THEN 'message' ELSE r.status END AS outcome,
       CASE WHEN a.name ~ '^(reset|garbage|empty_reply|bad_chunk)' AND coalesce(m.attempts, r.attempts) IN (1, 2) THEN NULL
            ELSE coalesce(m.attempts, r.attempts) END AS attempts,
       m.finish_reason,
       m.content IS NULL AS null_content,
       m.prompt_tokens IS NULL AS null_usage,
       regexp_replace(r.last_error, '(Token ).*( is invalid)', '\1<excerpt>\2') AS error
FROM swarm.agents a
LEFT JOIN swarm.messages m ON m.agent_id = a.id AND m.job_id = :job
LEFT JOIN swarm.requests r ON r.agent_id = a.id AND r.job_id = :job
ORDER BY a.id;

-- A 429 with Retry-After: 1 is retried no sooner than one second later.
SELECT m.latency_ms < 1000 AS fast_second_attempt,
       m.created_at - j.started_at >= interval '1 second' AS waited_for_retry_after
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id JOIN swarm.jobs j ON j.id = m.job_id
WHERE a.name = 'rate_limited' AND m.job_id = :job;

-- Unicode survives the round trip through JSON both ways.
SELECT strpos(content, 'héllo 世界 🐝 " \ ' || E'\n' || ' tab' || E'\t') > 0 AS unicode_intact
FROM swarm.messages m JOIN swarm.agents a ON a.id = m.agent_id
WHERE a.name = 'unicode' AND m.job_id = :job;

-- The worker is still the same process, and the counters saw the trouble.
SELECT retries > 0 AS retried, http_errors > 0 AS http_errors, rate_limited > 0 AS rate_limited,
       transport_errors > 0 AS transport_errors, worker_pid IS NOT NULL AS worker_alive
FROM swarm.stats;
