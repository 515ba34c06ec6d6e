
-- pg_swarm 0.1.0 -> 0.2.0, last part: privileges of what is new.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA swarm FROM PUBLIC;
REVOKE ALL ON swarm.posts, swarm.conversation_ids FROM PUBLIC;
GRANT SELECT ON swarm.posts TO swarm_user;
GRANT USAGE ON SEQUENCE swarm.conversation_ids TO swarm_user;
GRANT EXECUTE ON FUNCTION
    swarm.interact(text, integer, bigint[], text, text, integer, text, text, text[]),
    swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[]),
    swarm.persona_summary(jsonb),
    swarm._check_job_args(text, bigint[], text, integer, text, text, text, text[]),
    swarm._simulate_step(bigint, integer),
    swarm._keep_last(jsonb, jsonb, integer),
    swarm._memory_text(jsonb),
    swarm._unpack_or_null(bytea)
TO swarm_user;

-- The worker has been leaving the queue alone while the SQL was 0.1.0: wake it
-- at commit, so that jobs queued meanwhile start now.  (Not preloaded, or
-- serving another database: nothing to wake.)
DO $$
BEGIN
    PERFORM swarm._wake_worker();
EXCEPTION WHEN object_not_in_prerequisite_state THEN
    NULL;
END
$$;
