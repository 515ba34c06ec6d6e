-- pg_swarm: interactions' own objects (conversations and the feed reuse the
-- tables of 00_core.sql; see functions/50_interact.sql).

CREATE SEQUENCE swarm.conversation_ids;

COMMENT ON SEQUENCE swarm.conversation_ids IS 'Identifiers of the conversations made by swarm.interact().';

SELECT pg_catalog.pg_extension_config_dump('swarm.conversation_ids', '');

-- What each agent remembers of the simulations a user ran: its own posts and
-- what it read lately.  Memory belongs to the owner of the jobs that wrote
-- it (one row per agent and owner): a simulation of one user never shows
-- another user's text to its agents, nor to anyone reading them.  Written by
-- the worker only (swarm._advance()), read by swarm._simulate_step() for the
-- job's owner, and by its owner (row-level security).  Keyed by the agent
-- first, as every per-agent table (see docs/scale-out.md).
CREATE TABLE swarm.agent_memory (
    agent_id    bigint NOT NULL,
    owner       name NOT NULL,
    memory      bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, owner)
);

COMMENT ON TABLE swarm.agent_memory IS 'Each agent''s memory of the simulations a user ran, one row per agent and owner; read through swarm.unpack(memory).';
COMMENT ON COLUMN swarm.agent_memory.agent_id IS 'The agent.';
COMMENT ON COLUMN swarm.agent_memory.owner IS 'The owner of the simulations that wrote it: only they (and swarm_admin) read it, and only their simulations use it.';
COMMENT ON COLUMN swarm.agent_memory.memory IS 'MessagePack of {"said": last 3 posts, "saw": last 4 feed items read, "posts": count, "last_step": n}.';
COMMENT ON COLUMN swarm.agent_memory.updated_at IS 'When a stored post last changed it.';

SELECT pg_catalog.pg_extension_config_dump('swarm.agent_memory', '');
