-- pg_swarm: the response store (functions/75_responses.sql,
-- docs/replay.md).
--
-- With swarm.response_store = on when a job is made, each answer the worker
-- stores is also kept here under the key of its request: the SHA-256 of the
-- canonical request body (the job's model, the messages, the parameters and
-- the structured output asked for, as the worker builds it before an
-- endpoint's own model replaces the job's).  A job made with swarm.replay =
-- on answers its requests from here, without a network call.
--
-- Per agent, as the queue it answers: keyed by the agent's id first, no
-- trigger, no foreign key, so that swarm.distribute() spreads it by
-- agent_id, co-located with swarm.agents.  One answer per agent, owner and
-- key: the first one kept (a replay repeats the run it recorded).  Rows
-- carry the owner of the job that asked, whom row-level security lets read
-- them, as messages.

CREATE TABLE swarm.responses (
    agent_id          bigint NOT NULL,
    key               bytea NOT NULL CHECK (length(key) = 32),
    owner             name NOT NULL,
    job_id            bigint NOT NULL,
    content           text,
    model             text,
    finish_reason     text,
    prompt_tokens     integer,
    completion_tokens integer,
    endpoint          text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, owner, key)
);

CREATE INDEX responses_job_idx ON swarm.responses (job_id);
CREATE INDEX responses_created_idx ON swarm.responses (created_at);

COMMENT ON TABLE swarm.responses IS 'The response store: each answer of a job made with swarm.response_store = on, under the SHA-256 of its canonical request body (key), for swarm.replay. One per agent, owner and key (the first kept). See docs/replay.md.';
COMMENT ON COLUMN swarm.responses.key IS 'SHA-256 of the request body as the worker builds it for the job''s model (messages, parameters, structured output): the same prompt, the same key.';
COMMENT ON COLUMN swarm.responses.endpoint IS 'The endpoint that answered (NULL: answered from the store itself).';
