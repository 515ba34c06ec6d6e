-- pg_swarm: pulling results as a stream, for clients without LISTEN.

CREATE OR REPLACE FUNCTION swarm.next_batch(
    job bigint,
    after_id bigint DEFAULT 0,
    batch_size integer DEFAULT 100,
    wait interval DEFAULT '10 seconds')
RETURNS SETOF swarm.messages
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    deadline timestamptz;
    generation bigint;
    job_status text;
    sleep_ms integer;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 OR batch_size > 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000, not %', coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF wait IS NULL OR wait < interval '0' THEN
        RAISE EXCEPTION 'wait must be a non-negative interval'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF swarm._is_distributed() THEN
        RAISE EXCEPTION 'swarm.next_batch() does not run on a distributed swarm'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Each node numbers the messages it stores in its own range, so ids do not follow commit order across nodes.',
                  HINT = 'LISTEN on the job''s channel, or read swarm.messages WHERE job_id = J (docs/scale-out.md).';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'swarm.next_batch() needs READ COMMITTED isolation'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Under a transaction snapshot new results would never become visible.';
    END IF;
    deadline := clock_timestamp() + wait;
    after_id := coalesce(after_id, 0);

    LOOP
        generation := swarm._progress_generation();
        SELECT j.status INTO job_status FROM swarm.jobs j WHERE j.id = job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job
                USING ERRCODE = 'no_data_found';
        END IF;
        -- the status is read before the messages: a job seen ended has no
        -- message still to commit, so an empty answer then means "no more"
        RETURN QUERY
            SELECT m.* FROM swarm.messages m
            WHERE m.job_id = job AND m.id > after_id
            ORDER BY m.id
            LIMIT batch_size;
        IF FOUND OR job_status IN ('completed', 'cancelled') OR clock_timestamp() >= deadline THEN
            RETURN;
        END IF;
        sleep_ms := least(1000, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)::integer));
        PERFORM swarm._sleep_for_progress(generation, sleep_ms);
    END LOOP;
END
$$;

COMMENT ON FUNCTION swarm.next_batch(bigint, bigint, integer, interval) IS
'Up to batch_size messages of the job with id > after_id, in id (commit) order, waiting up to wait until there is one or the job has ended. Call again with the last id seen: every message is read exactly once, in order, while the job runs. An empty result means the job has ended (check swarm.jobs.status) or the wait passed.';

REVOKE ALL ON FUNCTION swarm.next_batch(bigint, bigint, integer, interval) FROM PUBLIC;
