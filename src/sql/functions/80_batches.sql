-- pg_swarm: batch mode's SQL (the batcher, src/batcher.c, runs these;
-- docs/batch.md).  Each function is one step of a batch's life, run in the
-- batcher's own transaction: the C side talks to the provider between them
-- and hands over what it answered as text, read here with PostgreSQL's JSON.

-- A batch of job `job`'s requests `ids` (queued, in no batch) is made:
-- its row, its file name (unique per cluster, database and batch: a crashed
-- upload is found again by it), and each request marked as in it, in one
-- transaction with the lock on the job's row (jobs before requests, as
-- swarm.cancel() and the store take them).  Returns the batch's id, or NULL
-- when the job is no longer running or its row is held (cancel() at work).
CREATE OR REPLACE FUNCTION swarm._open_batch(job bigint, endpoint text, ids bigint[], bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    b bigint;
    n integer;
BEGIN
    SELECT * INTO j FROM swarm.jobs jj WHERE jj.id = job AND jj.status IN ('queued', 'running')
    FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO swarm.batches (job_id, owner, endpoint, requests, bytes, file_name)
    VALUES (job, j.owner, endpoint, cardinality(ids), bytes, '')
    RETURNING id INTO b;
    UPDATE swarm.batches bb
    SET file_name = format('pg_swarm-%s-%s-batch-%s.jsonl',
                           (SELECT system_identifier FROM pg_control_system()), current_database(), b)
    WHERE bb.id = b;
    UPDATE swarm.requests r SET batch_id = b
    WHERE r.id = ANY (ids) AND r.job_id = job AND r.status = 'queued' AND r.batch_id IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n <> cardinality(ids) THEN
        -- a request went meanwhile (its job row was locked: cannot happen)
        RAISE EXCEPTION 'batch of job %: % of % requests could be put in it', job, n, cardinality(ids);
    END IF;
    RETURN b;
END
$$;

COMMENT ON FUNCTION swarm._open_batch(bigint, text, bigint[], bigint) IS
'Private (the batcher): makes a batch of a job''s queued requests; NULL when the job is not running or its row is held.';

-- What the provider said about a batch (its Batch object, as text) is
-- recorded: status, counts, output and error files; a batch that has ended
-- goes to 'downloading'; the next poll is set `next_poll` ahead.  Returns the
-- status, or NULL when the text is not a Batch object (then it is recorded
-- as the batch's last error and polled again later).
CREATE OR REPLACE FUNCTION swarm._batch_polled(batch bigint, reply text, next_poll interval)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb := swarm._jsonb_or_null(reply);
    st text;
BEGIN
    st := CASE WHEN jsonb_typeof(o) = 'object' AND jsonb_typeof(o -> 'status') = 'string' THEN o ->> 'status' END;
    IF st IS NULL THEN
        UPDATE swarm.batches b SET polls = b.polls + 1, next_poll_at = now() + next_poll,
               last_error = 'the provider''s answer is not a Batch object: ' || left(reply, 200)
        WHERE b.id = batch;
        RETURN NULL;
    END IF;
    UPDATE swarm.batches b SET
        status = st,
        polls = b.polls + 1,
        completed = coalesce(swarm._json_int(o -> 'request_counts' -> 'completed')::integer, b.completed),
        failed = coalesce(swarm._json_int(o -> 'request_counts' -> 'failed')::integer, b.failed),
        output_file_id = coalesce(o ->> 'output_file_id', b.output_file_id),
        error_file_id = coalesce(o ->> 'error_file_id', b.error_file_id),
        state = CASE WHEN st IN ('completed', 'failed', 'expired', 'cancelled') THEN 'downloading' ELSE b.state END,
        ended_at = CASE WHEN st IN ('completed', 'failed', 'expired', 'cancelled') THEN now() ELSE b.ended_at END,
        last_error = CASE WHEN st = 'failed' THEN
                              coalesce('the provider failed the batch: ' || (o -> 'errors' -> 'data' -> 0 ->> 'message')
                                       || coalesce(' (line ' || (o -> 'errors' -> 'data' -> 0 ->> 'line') || ')', ''),
                                       'the provider failed the batch')
                          ELSE NULL END,
        next_poll_at = now() + next_poll
    WHERE b.id = batch;
    RETURN st;
END
$$;

COMMENT ON FUNCTION swarm._batch_polled(bigint, text, interval) IS
'Private (the batcher): records the provider''s Batch object of a batch; returns its status (NULL: not a Batch object).';

-- The id of a File or Batch object (text), NULL when it has none.
CREATE OR REPLACE FUNCTION swarm._batch_object_id(reply text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN jsonb_typeof(o -> 'id') = 'string' AND o ->> 'id' <> '' THEN o ->> 'id' END
    FROM (SELECT swarm._jsonb_or_null(reply) AS o) r
$$;

COMMENT ON FUNCTION swarm._batch_object_id(text) IS
'Private (the batcher): the id of a File or Batch object given as text; NULL when there is none.';

-- In a page of a list (files or batches, as text): the id of the object
-- whose `field` is `value` (a file by its name, a batch by its input file),
-- how many objects the page held, the id of its last object and whether the
-- provider has more.
CREATE OR REPLACE FUNCTION swarm._batch_find(reply text, field text, value text,
                                             OUT match text, OUT objects integer, OUT last_id text,
                                             OUT has_more boolean)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o jsonb := swarm._jsonb_or_null(reply);
BEGIN
    IF jsonb_typeof(o) IS DISTINCT FROM 'object' OR jsonb_typeof(o -> 'data') IS DISTINCT FROM 'array' THEN
        objects := -1;
        RETURN;
    END IF;
    SELECT e ->> 'id' INTO match
    FROM jsonb_array_elements(o -> 'data') AS e
    WHERE e ->> _batch_find.field = _batch_find.value
    LIMIT 1;
    objects := jsonb_array_length(o -> 'data');
    last_id := o -> 'data' -> (objects - 1) ->> 'id';
    has_more := coalesce((o ->> 'has_more')::boolean, false);
END
$$;

COMMENT ON FUNCTION swarm._batch_find(text, text, text) IS
'Private (the batcher): looks for an object by a field in a page of the provider''s files or batches.';
