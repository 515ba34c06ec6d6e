-- pg_swarm 0.7.0 -> 0.8.0: what changes in the tables.
-- The Makefile appends src/sql/tables/80_batches.sql (new in 0.8.0), then
-- every file of src/sql/functions/ and src/sql/90_privileges.sql as they are
-- in 0.8.0 (all written to run again) to make pg_swarm--0.7.0--0.8.0.sql;
-- TAP 005 checks that the result is the same schema as a fresh install.
--
-- 0.8.0 adds batch mode (docs/batch.md): a job's requests sent as files
-- through an endpoint's Batch API.  A request records its batch; an endpoint
-- may make batch mode its jobs' default; generate, interact and simulate take
-- a mode, so their old signatures go (the new ones are made below, with
-- their grants).

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.8.0'" to load this file. \quit

-- A simulation step reads its viewers' ties (friend and strength) by index
-- alone: the primary key of swarm.friendships carries the strength (the
-- index is rebuilt: a minute or so at 10,000,000 rows).
ALTER TABLE swarm.friendships DROP CONSTRAINT friendships_pkey,
    ADD CONSTRAINT friendships_pkey PRIMARY KEY (agent_id, friend_id) INCLUDE (strength);

ALTER TABLE swarm.requests ADD COLUMN batch_id bigint;
COMMENT ON COLUMN swarm.requests.batch_id IS 'Batch mode: the swarm.batches row whose file carries it (NULL: in no batch, or a synchronous job''s).';

-- (added without a default, then filled: a column added with one keeps it as
-- a "missing value" that a fresh install's table does not have)
ALTER TABLE swarm.endpoints ADD COLUMN mode text;
UPDATE swarm.endpoints SET mode = 'sync';
ALTER TABLE swarm.endpoints ALTER COLUMN mode SET DEFAULT 'sync',
    ALTER COLUMN mode SET NOT NULL,
    ADD CONSTRAINT endpoints_mode_check CHECK (mode IN ('sync', 'batch'));
COMMENT ON COLUMN swarm.endpoints.mode IS 'How a job whose first endpoint it is runs when the job does not say: sync (one request at a time, as answers come) or batch (files sent to its Batch API: <base_url>/files and <base_url>/batches; docs/batch.md).';

-- A step of a simulation with actions may be built in parts
-- (swarm.step_part_agents): its row says how far the build is.  (The
-- columns with a default are added without it, then filled: see above.)
ALTER TABLE swarm.simulation_steps ADD COLUMN parts integer, ADD COLUMN parts_built integer,
    ADD COLUMN part_size integer, ADD COLUMN agents bigint[], ADD COLUMN ready_ms double precision,
    ADD COLUMN started_at timestamptz;
UPDATE swarm.simulation_steps SET parts = 1, parts_built = 1, ready_ms = build_ms,
    started_at = built_at - build_ms * interval '1 ms';
ALTER TABLE swarm.simulation_steps ALTER COLUMN parts SET DEFAULT 1, ALTER COLUMN parts SET NOT NULL,
    ALTER COLUMN parts_built SET DEFAULT 1, ALTER COLUMN parts_built SET NOT NULL;
COMMENT ON COLUMN swarm.simulation_steps.build_ms IS 'The step builder''s time on the step (ms), all its parts together.';
COMMENT ON COLUMN swarm.simulation_steps.built_at IS 'When the step (its last part so far) was built.';
COMMENT ON COLUMN swarm.simulation_steps.parts IS 'Parts the step is built in (swarm.step_part_agents agents each; 1: built whole).';
COMMENT ON COLUMN swarm.simulation_steps.parts_built IS 'Parts built so far: the step has not ended before they are all built.';
COMMENT ON COLUMN swarm.simulation_steps.part_size IS 'Agents of a part (NULL: built whole).';
COMMENT ON COLUMN swarm.simulation_steps.agents IS 'The step''s active agents, ascending, while parts of it are still to be built (NULL after).';
COMMENT ON COLUMN swarm.simulation_steps.started_at IS 'When the step''s build started.';
COMMENT ON COLUMN swarm.simulation_steps.ready_ms IS 'From the start of the step''s build to its first requests'' being ready (ms): what the simulation waited for the step.';
-- (the step function takes a part's agents)
DROP FUNCTION swarm._simulate_actions_step(bigint, integer);

-- (the feeds read the posts of the window themselves: the step is theirs)
DROP FUNCTION swarm._assemble_feeds(bigint, integer, double precision, double precision, double precision, integer);
DROP FUNCTION swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval);
DROP FUNCTION swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval);
DROP FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[],
                             interval, boolean, jsonb, timestamptz, integer, integer);
DROP FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[],
                                 integer, text);
DROP FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[],
                                   text[], name[], integer, text);
