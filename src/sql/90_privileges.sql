-- pg_swarm: roles, grants and row-level security.  Last fragment: it sees every
-- object the others created.  Written to run again on every upgrade (grants
-- are idempotent, policies are dropped and made anew), so that the privileges
-- of an upgraded database are those of a fresh install.
--
--   swarm_admin  manages endpoints and sees, and may cancel, every job;
--   swarm_user   creates agents and jobs, runs and cancels its own jobs, and
--                reads its own jobs, requests and messages;
--   everyone else can do nothing here.
-- The worker runs as the bootstrap superuser and is not subject to RLS.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'swarm_user') THEN
        CREATE ROLE swarm_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'swarm_admin') THEN
        CREATE ROLE swarm_admin NOLOGIN;
    END IF;
END
$$;
GRANT swarm_user TO swarm_admin;

REVOKE ALL ON ALL TABLES IN SCHEMA swarm FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA swarm FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA swarm FROM PUBLIC;

GRANT USAGE ON SCHEMA swarm TO swarm_user;

-- The social world is shared by everyone who runs the simulation.
GRANT SELECT, INSERT, UPDATE, DELETE ON swarm.agents, swarm.friendships, swarm.communities,
      swarm.community_members TO swarm_user;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA swarm TO swarm_user;

-- Jobs: generate() runs with the caller's rights and inserts the job and its
-- requests (and sets its total); cancel() changes the status columns.
GRANT SELECT, INSERT ON swarm.jobs, swarm.requests TO swarm_user;
GRANT UPDATE (total, status, cancelled, started_at, finished_at) ON swarm.jobs TO swarm_user;
GRANT UPDATE (status, finished_at) ON swarm.requests TO swarm_user;
GRANT SELECT ON swarm.messages, swarm.stats, swarm.job_progress, swarm.endpoint_status,
      swarm.endpoints, swarm.posts TO swarm_user;

GRANT EXECUTE ON FUNCTION
    swarm.generate(text, bigint[], text, integer, text, text, text, text[], interval),
    swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[], interval),
    swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval),
    swarm.persona_summary(jsonb),
    swarm._check_job_args(text, bigint[], text, integer, text, text, text, text[], interval),
    swarm._job_defaults(text, boolean),
    swarm._enqueued(bigint, bigint),
    swarm._simulate_step(bigint, integer),
    swarm._keep_last(jsonb, jsonb, integer),
    swarm._memory_text(jsonb),
    swarm._unpack_or_null(bytea),
    swarm.wait(bigint, interval),
    swarm.next_batch(bigint, bigint, integer, interval),
    swarm.cancel(bigint),
    swarm.create_agents(integer, bigint),
    swarm.build_friendships(integer, text, bigint, integer),
    swarm.create_communities(text[], integer, text, bigint),
    swarm.pack(jsonb),
    swarm.unpack(bytea),
    swarm._check_worker(),
    swarm._wake_worker(),
    swarm._progress_generation(),
    swarm._sleep_for_progress(bigint, integer),
    swarm._xid_is_current(xid),
    swarm._progress_payload(swarm.jobs, bigint),
    swarm._stats(),
    swarm._endpoint_status(),
    swarm._persona_rows(integer, bigint),
    swarm._friendship_rows(integer, text, bigint, integer),
    swarm._community_slots(integer, integer, bigint)
TO swarm_user;

GRANT EXECUTE ON FUNCTION
    swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[]),
    swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[]),
    swarm.drop_endpoint(text)
TO swarm_admin;

-- Row-level security: a user sees and changes only its own jobs and what
-- belongs to them; swarm_admin sees everything.
ALTER TABLE swarm.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE swarm.messages ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION swarm._is_admin() RETURNS boolean
    LANGUAGE sql STABLE
    AS $$ SELECT pg_has_role(current_user, 'swarm_admin', 'MEMBER') $$;
REVOKE ALL ON FUNCTION swarm._is_admin() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION swarm._is_admin() TO swarm_user;

DROP POLICY IF EXISTS jobs_owner ON swarm.jobs;
CREATE POLICY jobs_owner ON swarm.jobs
    USING (owner = current_user OR swarm._is_admin())
    WITH CHECK (owner = current_user OR swarm._is_admin());

DROP POLICY IF EXISTS requests_owner ON swarm.requests;
CREATE POLICY requests_owner ON swarm.requests
    USING (swarm._is_admin() OR EXISTS (SELECT 1 FROM swarm.jobs j WHERE j.id = job_id AND j.owner = current_user))
    WITH CHECK (swarm._is_admin() OR EXISTS (SELECT 1 FROM swarm.jobs j WHERE j.id = job_id AND j.owner = current_user));

DROP POLICY IF EXISTS messages_owner ON swarm.messages;
CREATE POLICY messages_owner ON swarm.messages
    USING (swarm._is_admin() OR EXISTS (SELECT 1 FROM swarm.jobs j WHERE j.id = job_id AND j.owner = current_user));
