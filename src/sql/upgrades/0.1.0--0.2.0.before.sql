-- pg_swarm 0.1.0 -> 0.2.0, first part: the tables gain what interactions need.
-- The Makefile appends src/sql/15_generate.sql (generate() now shares its
-- checks with interact() and simulate()), src/sql/50_interact.sql (new in
-- 0.2.0) and the last part to make pg_swarm--0.1.0--0.2.0.sql.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.2.0'" to load this file. \quit

ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('generate', 'interact', 'simulate'));

ALTER TABLE swarm.requests
    ADD COLUMN to_agent_id bigint,
    ADD COLUMN conversation_id bigint,
    ADD COLUMN turn integer,
    ADD COLUMN reply_to bigint,
    ADD COLUMN seen bigint[],
    ADD COLUMN vars jsonb;

ALTER TABLE swarm.messages
    ADD COLUMN to_agent_id bigint,
    ADD COLUMN conversation_id bigint,
    ADD COLUMN turn integer,
    ADD COLUMN reply_to bigint,
    ADD COLUMN seen bigint[];

CREATE INDEX messages_conversation_idx ON swarm.messages (conversation_id, turn) WHERE conversation_id IS NOT NULL;

COMMENT ON TABLE swarm.jobs IS 'One row per batch of generation work enqueued by swarm.generate(), swarm.interact() or swarm.simulate().';
COMMENT ON COLUMN swarm.jobs.kind IS 'generate (one request per agent), interact (conversations between friends, turn by turn) or simulate (the feed, step by step).';
COMMENT ON COLUMN swarm.jobs.total IS 'Number of requests the job makes: for interact and simulate, counting the turns and steps still to come (a conversation that ends early on a failed turn takes its later turns off).';
COMMENT ON COLUMN swarm.requests.to_agent_id IS 'Interactions: the agent spoken to (copied to the message).';
COMMENT ON COLUMN swarm.requests.conversation_id IS 'swarm.interact(): the conversation (copied to the message).';
COMMENT ON COLUMN swarm.requests.turn IS 'The turn of a conversation, or the step of a simulation (copied to the message).';
COMMENT ON COLUMN swarm.requests.reply_to IS 'The message this one answers (copied to the message).';
COMMENT ON COLUMN swarm.requests.seen IS 'swarm.simulate(): the messages in the speaker''s feed (copied to the message).';
COMMENT ON COLUMN swarm.requests.vars IS 'Values of further placeholders for this request only ({history}, {feed}, {partner_name}, ...), as a JSON object.';
COMMENT ON COLUMN swarm.messages.to_agent_id IS 'Interactions: the agent spoken to (the partner in a conversation, the author replied to in a simulation); NULL for a post to everyone.';
COMMENT ON COLUMN swarm.messages.conversation_id IS 'swarm.interact(): the conversation; its messages in turn order are the thread.';
COMMENT ON COLUMN swarm.messages.turn IS 'The turn in its conversation (1 opens it), or the step of its simulation (1, 2, ...).';
COMMENT ON COLUMN swarm.messages.reply_to IS 'The message this one answers (the previous turn, or the post replied to).';
COMMENT ON COLUMN swarm.messages.seen IS 'swarm.simulate(): the messages the speaker''s feed showed it, best ranked first.';

ALTER VIEW swarm.job_progress SET (security_invoker = true);

