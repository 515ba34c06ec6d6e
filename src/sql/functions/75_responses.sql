-- pg_swarm: the response store and replay (tables/75_responses.sql,
-- docs/replay.md).
--
-- The worker keeps the answers of jobs made with swarm.response_store = on
-- in swarm.responses, in the transaction that stores their messages
-- (src/queue.c), and answers the requests of jobs made with swarm.replay =
-- on (or fallthrough) from there when it claims them, without a network
-- call.  What is here: pruning, and the step builder's expiry.

-- Delete stored answers: those older than `older_than`, those of job `job`,
-- or both conditions together; NULL for both deletes every one.  A user
-- deletes their own; a swarm_admin (or superuser) every user's.  Returns how
-- many were deleted.
CREATE OR REPLACE FUNCTION swarm.prune_responses(older_than interval DEFAULT NULL, job bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deleted bigint;
BEGIN
    IF older_than IS NOT NULL AND older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, not %', older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    DELETE FROM swarm.responses r
    WHERE (older_than IS NULL OR r.created_at < now() - older_than)
      AND (prune_responses.job IS NULL OR r.job_id = prune_responses.job)
      AND (r.owner = swarm._caller() OR swarm._caller_is_admin());
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

COMMENT ON FUNCTION swarm.prune_responses(interval, bigint) IS
'Delete stored answers (swarm.responses) older than older_than and/or of job job (both NULL: all); one''s own, or everyone''s for swarm_admin. Returns how many.';

-- The step builder's expiry, once a minute: at most 10,000 answers older
-- than swarm.response_store_max_age (0: none; on a distributed swarm, the
-- coordinator's builder, all of them).  Returns how many.
CREATE OR REPLACE FUNCTION swarm._expire_responses()
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- (in seconds: current_setting() would say '30d')
    max_age integer := (SELECT s.setting::integer FROM pg_catalog.pg_settings s
                        WHERE s.name = 'swarm.response_store_max_age');
    deleted bigint;
BEGIN
    IF max_age = 0 THEN
        RETURN 0;
    END IF;
    IF swarm._is_distributed() THEN
        -- the coordinator's builder alone, over every shard at once (Citus
        -- has no ctid to delete a batch by)
        IF NOT swarm._is_distributed('swarm.responses')
           OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_local_group g WHERE g.groupid = 0) THEN
            RETURN 0;
        END IF;
        DELETE FROM swarm.responses r WHERE r.created_at < now() - make_interval(secs => max_age);
        GET DIAGNOSTICS deleted = ROW_COUNT;
        RETURN deleted;
    END IF;
    DELETE FROM swarm.responses r
    WHERE r.ctid = ANY (ARRAY(SELECT x.ctid FROM swarm.responses x
                              WHERE x.created_at < now() - make_interval(secs => max_age)
                              LIMIT 10000));
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END
$$;

COMMENT ON FUNCTION swarm._expire_responses() IS
'Private, run by the step builder once a minute: deletes up to 10,000 stored answers older than swarm.response_store_max_age.';
