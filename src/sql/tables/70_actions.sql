-- pg_swarm: what agents do in a simulation with actions
-- (swarm.simulate(actions => true); functions/70_actions.sql).
--
-- Each active agent answers a step with one action, a JSON object chosen
-- through the endpoint's structured output.  The worker validates it in
-- the transaction that stores its message and writes it here: every
-- action, valid or not, in swarm.actions (the log), and what a valid one
-- changes in the typed tables (likes, reposts, follows, mutes,
-- memberships).  A post, reply, quote or repost is itself a post of the
-- platform: its id is the id of its message, and of its action.
--
-- Every table is per agent: keyed by the acting agent's id first, with no
-- trigger and no foreign key, so that swarm.distribute() spreads each by
-- agent_id, co-located with swarm.agents (docs/scale-out.md).  The graph a
-- simulation grows is its own (keyed by job): follows, mutes and
-- memberships made in one job never change another job's feeds, nor the
-- seeded social world (friendships, community_members).  Rows carry their
-- job's owner, whom row-level security lets read them, as messages.

CREATE TABLE swarm.actions (
    agent_id        bigint NOT NULL,
    id              bigint NOT NULL,
    job_id          bigint NOT NULL,
    step            integer NOT NULL,
    kind            text,
    post_id         bigint,
    target_agent_id bigint,
    community_id    bigint,
    content         text,
    valid           boolean NOT NULL,
    reason          text,
    changed         boolean,
    owner           name NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, id),
    CHECK (valid = (reason IS NULL))
);

-- the recommender reads a job's last steps, newest step and highest agent
-- first (its tie-breaking order, read backwards without a sort); actions
-- name posts by id
CREATE INDEX actions_job_step_idx ON swarm.actions (job_id, step, agent_id);
CREATE INDEX actions_job_id_idx ON swarm.actions (job_id, id);

COMMENT ON TABLE swarm.actions IS 'Every action an agent chose in a simulation with actions, valid or not (with the reason), one row per message.';
COMMENT ON COLUMN swarm.actions.agent_id IS 'The acting agent.';
COMMENT ON COLUMN swarm.actions.id IS 'The id of the message that chose it (swarm.messages.id); for a post, reply, quote or repost, the id of the post it made.';
COMMENT ON COLUMN swarm.actions.job_id IS 'The simulation.';
COMMENT ON COLUMN swarm.actions.step IS 'The step it was chosen in.';
COMMENT ON COLUMN swarm.actions.kind IS 'post, reply, quote, repost, like, dislike, follow, unfollow, mute, join_community, leave_community or do_nothing; for an invalid reply, what it named (cut to 40 characters), or NULL.';
COMMENT ON COLUMN swarm.actions.post_id IS 'The post replied to, quoted, reposted, liked or disliked (the model named it by its number in the feed; resolved here).';
COMMENT ON COLUMN swarm.actions.target_agent_id IS 'The agent followed, unfollowed or muted; for an action on a post, the post''s author.';
COMMENT ON COLUMN swarm.actions.community_id IS 'The community joined or left.';
COMMENT ON COLUMN swarm.actions.content IS 'The text of a post, reply or quote.';
COMMENT ON COLUMN swarm.actions.valid IS 'Whether it passed validation (the schema, and the agent''s feed and the world): only valid actions are applied.';
COMMENT ON COLUMN swarm.actions.reason IS 'Why it is invalid; NULL when valid.';
COMMENT ON COLUMN swarm.actions.changed IS 'Whether applying it changed the graph or the posts (a follow of an agent already followed did not); NULL when invalid.';
COMMENT ON COLUMN swarm.actions.owner IS 'The owner of the job: only they (and swarm_admin) read it.';

CREATE TABLE swarm.likes (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    post_id     bigint NOT NULL,
    value       smallint NOT NULL CHECK (value IN (-1, 1)),
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, post_id)
);

COMMENT ON TABLE swarm.likes IS 'Each agent''s last reaction to a post in a simulation: 1 like, -1 dislike (a like after a dislike replaces it).';

CREATE TABLE swarm.reposts (
    agent_id    bigint NOT NULL,
    id          bigint NOT NULL,
    job_id      bigint NOT NULL,
    post_id     bigint NOT NULL,
    quote       boolean NOT NULL,
    step        integer NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, id)
);

-- a cascade walks from a post to its reposts
CREATE INDEX reposts_job_post_idx ON swarm.reposts (job_id, post_id);

COMMENT ON TABLE swarm.reposts IS 'Reposts and quotes: id is the new post (its action''s id), post_id the post it passes on (itself perhaps a repost: see swarm.repost_cascades).';

CREATE TABLE swarm.follows (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    target_id   bigint NOT NULL,
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, target_id)
);

COMMENT ON TABLE swarm.follows IS 'Who follows whom in a simulation, now (directed; an unfollow deletes the row; the history is in swarm.actions). Separate from swarm.friendships, the seeded undirected base every simulation starts from.';

CREATE TABLE swarm.mutes (
    agent_id    bigint NOT NULL,
    job_id      bigint NOT NULL,
    target_id   bigint NOT NULL,
    step        integer NOT NULL,
    action_id   bigint NOT NULL,
    owner       name NOT NULL,
    PRIMARY KEY (agent_id, job_id, target_id)
);

COMMENT ON TABLE swarm.mutes IS 'Who muted whom in a simulation: a muted author''s posts never reach the agent''s feed again.';

CREATE TABLE swarm.memberships (
    agent_id     bigint NOT NULL,
    job_id       bigint NOT NULL,
    community_id bigint NOT NULL,
    member       boolean NOT NULL,
    step         integer NOT NULL,
    action_id    bigint NOT NULL,
    owner        name NOT NULL,
    PRIMARY KEY (agent_id, job_id, community_id)
);

COMMENT ON TABLE swarm.memberships IS 'Communities joined (member) or left (not member) in a simulation: over the seeded swarm.community_members, which it leaves unchanged.';

SELECT pg_catalog.pg_extension_config_dump('swarm.actions', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.likes', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.reposts', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.follows', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.mutes', '');
SELECT pg_catalog.pg_extension_config_dump('swarm.memberships', '');

-- When each step of a simulation was built, how long that took and how
-- many requests it made: what the step builder did, for its users and the
-- benchmarks.  Per job, not per agent: it stays on the coordinator of a
-- distributed swarm (not distributed, not a reference table).
CREATE TABLE swarm.simulation_steps (
    job_id      bigint NOT NULL,
    step        integer NOT NULL,
    requests    bigint NOT NULL,
    build_ms    double precision NOT NULL,
    built_at    timestamptz NOT NULL,
    owner       name NOT NULL,
    parts       integer NOT NULL DEFAULT 1,
    parts_built integer NOT NULL DEFAULT 1,
    part_size   integer,
    agents      bigint[],
    ready_ms    double precision,
    started_at  timestamptz,
    PRIMARY KEY (job_id, step)
);

COMMENT ON TABLE swarm.simulation_steps IS 'Each step of a simulation as it was built: requests made, build time (ms), when; a step''s wall time is the gap to the next one''s built_at.';
COMMENT ON COLUMN swarm.simulation_steps.build_ms IS 'The step builder''s time on the step (ms), all its parts together.';
COMMENT ON COLUMN swarm.simulation_steps.built_at IS 'When the step (its last part so far) was built.';
COMMENT ON COLUMN swarm.simulation_steps.parts IS 'Parts the step is built in (swarm.step_part_agents agents each; 1: built whole).';
COMMENT ON COLUMN swarm.simulation_steps.parts_built IS 'Parts built so far: the step has not ended before they are all built.';
COMMENT ON COLUMN swarm.simulation_steps.part_size IS 'Agents of a part (NULL: built whole).';
COMMENT ON COLUMN swarm.simulation_steps.agents IS 'The step''s active agents, ascending, while parts of it are still to be built (NULL after).';
COMMENT ON COLUMN swarm.simulation_steps.started_at IS 'When the step''s build started.';
COMMENT ON COLUMN swarm.simulation_steps.ready_ms IS 'From the start of the step''s build to its first requests'' being ready (ms): what the simulation waited for the step.';

SELECT pg_catalog.pg_extension_config_dump('swarm.simulation_steps', '');
