-- pg_swarm: roles, grants and row-level security.  Last fragment: it sees every
-- object the others created.  Written to run again on every upgrade: it takes
-- every privilege away first and grants exactly what this version grants, and
-- makes the policies anew, so that an upgraded database has the privileges of
-- a fresh install.
--
-- The tenancy model (docs/limits-and-security.md):
--   swarm_user   enqueues jobs only through the API (generate, interact,
--                simulate: SECURITY DEFINER, the job owned by the caller),
--                cancels, waits for and reads its own jobs, requests and
--                messages (row-level security), and reads the social world;
--                it writes no table directly;
--   swarm_admin  is a swarm_user that also sees and may cancel every job,
--                manages endpoints, and builds the social world (agents,
--                friendships, communities), which every user shares;
--   everyone else can do nothing here.
-- The worker runs as the bootstrap superuser and is not subject to RLS; it
-- only ever joins rows of the same job, and its session's search_path is
-- pinned.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'swarm_user') THEN
        CREATE ROLE swarm_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'swarm_admin') THEN
        CREATE ROLE swarm_admin NOLOGIN;
    END IF;
END
$$;
-- (00_core.sql checks, at install, that roles of these names it did not
-- make are not adopted silently; this comment says which ones it made)
COMMENT ON ROLE swarm_user IS 'pg_swarm: swarm_user';
COMMENT ON ROLE swarm_admin IS 'pg_swarm: swarm_admin';
GRANT swarm_user TO swarm_admin;

REVOKE ALL ON ALL TABLES IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA swarm FROM PUBLIC, swarm_user, swarm_admin;

GRANT USAGE ON SCHEMA swarm TO swarm_user;

-- Read: the shared social world, one's own jobs (row-level security below),
-- and the views.
GRANT SELECT ON swarm.agents, swarm.friendships, swarm.communities, swarm.community_members, swarm.job_kinds,
      swarm.jobs, swarm.requests, swarm.messages, swarm.agent_memory, swarm.stats, swarm.job_progress,
      swarm.endpoint_status, swarm.endpoints, swarm.posts,
      swarm.actions, swarm.likes, swarm.reposts, swarm.follows, swarm.mutes, swarm.memberships,
      swarm.action_counts, swarm.invalid_actions, swarm.follow_degrees, swarm.follow_reciprocity,
      swarm.community_sizes, swarm.repost_cascades, swarm.step_tokens, swarm.simulation_steps,
      swarm.responses, swarm.batches TO swarm_user;

-- Write: the social world, by its admins.
GRANT INSERT, UPDATE, DELETE, TRUNCATE ON swarm.agents, swarm.friendships, swarm.communities,
      swarm.community_members TO swarm_admin;
GRANT USAGE ON SEQUENCE swarm.agents_id_seq, swarm.communities_id_seq TO swarm_admin;

GRANT EXECUTE ON FUNCTION
    swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval, text),
    swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval, text),
    swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval,
                   boolean, jsonb, timestamptz, integer, integer, text),
    swarm.action_kinds(),
    swarm.action_schema(),
    swarm.activity_profile(bigint, bigint),
    swarm.cancel(bigint),
    swarm.prune_responses(interval, bigint),
    swarm.wait(bigint, interval),
    swarm.next_batch(bigint, bigint, integer, interval),
    swarm.persona_summary(jsonb),
    swarm.pack(jsonb),
    swarm.unpack(bytea),
    -- what wait() and next_batch(), which run with the caller's rights, use
    swarm._progress_generation(),
    -- what the views swarm.stats and swarm.endpoint_status read (functions
    -- a view calls run with the rights of whoever reads the view)
    swarm._stats(),
    swarm._endpoint_status(),
    swarm._endpoint_batches(text),
    swarm._job_batches(bigint),
    swarm._sleep_for_progress(bigint, integer),
    swarm._xid_is_current(xid),
    -- next_batch() asks it
    swarm._is_distributed()
TO swarm_user;

GRANT EXECUTE ON FUNCTION
    swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer, text, text),
    swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer, text, text),
    swarm.drop_endpoint(text),
    swarm.create_agents(integer, bigint),
    swarm.delete_agents(bigint[]),
    swarm.build_friendships(integer, text, bigint, integer),
    swarm.create_communities(text[], integer, text, bigint),
    swarm._persona_rows(integer, bigint),
    swarm._friendship_rows(integer, text, bigint, integer),
    swarm._community_slots(integer, integer, bigint)
TO swarm_admin;

-- Row-level security: a user sees only its own jobs and what belongs to
-- them; swarm_admin sees everything.  The calls are schema-qualified (a
-- pg_has_role() of the user's own making, earlier on a search_path, must not
-- decide who is an admin).  Each policy reads only its own row (requests
-- and messages carry their job's owner): Citus refuses a policy with a
-- subquery on a distributed table, and propagates these to every shard.
ALTER TABLE swarm.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.messages ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS jobs_owner ON swarm.jobs;
CREATE POLICY jobs_owner ON swarm.jobs FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

DROP POLICY IF EXISTS requests_owner ON swarm.requests;
CREATE POLICY requests_owner ON swarm.requests FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

ALTER TABLE swarm.agent_memory ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS agent_memory_owner ON swarm.agent_memory;
CREATE POLICY agent_memory_owner ON swarm.agent_memory FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

DROP POLICY IF EXISTS messages_owner ON swarm.messages;
CREATE POLICY messages_owner ON swarm.messages FOR SELECT
    USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'));

-- What simulations with actions record, the answers kept for replay and the
-- batches of batch mode: their job's owner reads it.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['actions', 'likes', 'reposts', 'follows', 'mutes', 'memberships', 'simulation_steps',
                             'responses', 'batches']
    LOOP
        EXECUTE format('ALTER TABLE swarm.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS %I ON swarm.%I', t || '_owner', t);
        EXECUTE format($p$CREATE POLICY %I ON swarm.%I FOR SELECT
                           USING (owner = CURRENT_USER OR pg_catalog.pg_has_role(CURRENT_USER, 'swarm_admin', 'MEMBER'))$p$,
                       t || '_owner', t);
    END LOOP;
END
$$;
