-- pg_swarm: the generation API: wait(), cancel(), stats and progress views (generate() is in 15_generate.sql).

-------------------------------------------------------------------------------
-- Internal helpers (C, src/api.c)
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm._check_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_check_worker';
CREATE OR REPLACE FUNCTION swarm._wake_worker() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_wake_worker';
CREATE OR REPLACE FUNCTION swarm._wake_step_builder() RETURNS void
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_wake_step_builder';
CREATE OR REPLACE FUNCTION swarm._progress_generation() RETURNS bigint
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_progress_generation';
CREATE OR REPLACE FUNCTION swarm._sleep_for_progress(seen bigint, timeout_ms integer) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_sleep_for_progress';
CREATE OR REPLACE FUNCTION swarm._xid_is_current(xid) RETURNS boolean
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_xid_is_current';

-- The columns from http_attempts to bytes_received are the counters of
-- SWARM_STAT_COUNTERS (src/stats.h), in its order.
CREATE OR REPLACE FUNCTION swarm._stats(
    OUT worker_pid integer,
    OUT total_operations bigint,
    OUT succeeded bigint,
    OUT failed bigint,
    OUT success_rate double precision,
    OUT avg_response_ms double precision,
    OUT p50_ms double precision,
    OUT p95_ms double precision,
    OUT p99_ms double precision,
    OUT in_flight integer,
    OUT peak_concurrency integer,
    OUT ops_per_second double precision,
    OUT avg_ops_per_second double precision,
    OUT http_attempts bigint,
    OUT retries bigint,
    OUT http_errors bigint,
    OUT rate_limited bigint,
    OUT transport_errors bigint,
    OUT batches_committed bigint,
    OUT bytes_received bigint,
    OUT uptime interval)
    LANGUAGE c VOLATILE STRICT AS 'MODULE_PATHNAME', 'swarm_stats';

-- The JSON announced on a job's channel, also used by the worker (src/queue.c).
-- The payload says nothing private: a job id, its status and counts (anyone
-- may LISTEN to any channel, and NOTIFY on it; see limits-and-security.md).
CREATE OR REPLACE FUNCTION swarm._progress_payload(j swarm.jobs, batch bigint DEFAULT 0) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT json_build_object(
        'job', j.id,
        'status', j.status,
        'done', j.succeeded + j.failed + j.cancelled,
        'succeeded', j.succeeded,
        'failed', j.failed,
        'cancelled', j.cancelled,
        'total', j.total,
        'batch', batch)::text
$$;

-- Whether Citus distributes a table; without an argument, whether the swarm
-- is distributed (swarm.distribute() has run: swarm.requests is a
-- distributed table).  False without Citus.  See docs/scale-out.md.
CREATE OR REPLACE FUNCTION swarm._is_distributed(tbl regclass) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    found boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
        INTO found USING tbl;
    RETURN found;
END
$$;

COMMENT ON FUNCTION swarm._is_distributed(regclass) IS
'Private: whether Citus distributes the table (or keeps it as a reference table).';

CREATE OR REPLACE FUNCTION swarm._is_distributed() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT swarm._is_distributed('swarm.requests'::regclass) $$;

COMMENT ON FUNCTION swarm._is_distributed() IS
'Private: whether swarm.distribute() has made the swarm a distributed one (Citus).';

-- The role a SECURITY DEFINER function of the API acts for: the caller's
-- current role (its SET ROLE, else the session user).  The setting "role"
-- can name only a role the session user is a member of, so no caller can
-- pose as another.
-- A group role (one with members, such as swarm_user itself) is never an
-- owner: a member that did SET ROLE swarm_user acts as its session user, or
-- every other member doing the same would read and cancel its jobs.
CREATE OR REPLACE FUNCTION swarm._caller() RETURNS name
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                WHEN EXISTS (SELECT FROM pg_catalog.pg_auth_members m
                             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid
                             WHERE r.rolname = pg_catalog.current_setting('role')) THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

COMMENT ON FUNCTION swarm._caller() IS
'Private: the role the API''s SECURITY DEFINER functions act for: the caller''s SET ROLE, unless that role has members (a group), else its session user.';

-- Whether the caller may see and cancel every job.
CREATE OR REPLACE FUNCTION swarm._caller_is_admin() RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.pg_has_role(swarm._caller(), 'swarm_admin', 'MEMBER') $$;

-------------------------------------------------------------------------------
-- cancel
-------------------------------------------------------------------------------

-- SECURITY DEFINER: users do not update the queue themselves; this checks
-- that the job is the caller's (or the caller an admin).
CREATE OR REPLACE FUNCTION swarm.cancel(job bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    n bigint;
BEGIN
    -- jobs before requests: the worker locks in the same order
    SELECT * INTO j FROM swarm.jobs jj WHERE jj.id = job FOR UPDATE;
    IF NOT FOUND OR (j.owner <> swarm._caller() AND NOT swarm._caller_is_admin()) THEN
        RAISE EXCEPTION 'job % does not exist', job
            USING ERRCODE = 'no_data_found';
    END IF;
    IF j.status IN ('completed', 'cancelled') THEN
        RAISE NOTICE 'job % is already %', job, j.status;
        RETURN false;
    END IF;
    -- a part of a simulation's step being built (swarm._build_step_part())
    -- is waited for: its requests are then cancelled with the others
    PERFORM 1 FROM swarm.simulation_steps ss WHERE ss.job_id = job AND ss.parts_built < ss.parts FOR UPDATE;

    -- (on a distributed swarm a node's store skips rows held here, rather
    -- than wait for them: src/queue.c, hold_shard_rows())
    UPDATE swarm.requests SET status = 'cancelled', finished_at = now()
    WHERE job_id = job AND status = 'queued';
    GET DIAGNOSTICS n = ROW_COUNT;

    UPDATE swarm.jobs SET cancelled = cancelled + n, status = 'cancelled', finished_at = now()
    WHERE id = job
    RETURNING * INTO j;
    PERFORM pg_notify(j.channel, swarm._progress_payload(j));
    PERFORM swarm._wake_worker();
    RETURN true;
END
$$;

COMMENT ON FUNCTION swarm.cancel(bigint) IS
'Stop a job: its requests not yet answered are marked cancelled and results still in flight are discarded. Returns false if the job had already ended.';

-------------------------------------------------------------------------------
-- wait
-------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION swarm.wait(job bigint, timeout interval DEFAULT NULL)
RETURNS swarm.jobs
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    j swarm.jobs;
    generation bigint;
    deadline timestamptz := CASE WHEN timeout IS NULL THEN NULL ELSE clock_timestamp() + timeout END;
    last_done bigint := -1;
    last_report timestamptz;
    sleep_ms integer;
    created_here boolean;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'swarm.wait() needs READ COMMITTED isolation'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'Under a transaction snapshot the job''s progress would never become visible.',
                  HINT = 'Call swarm.wait() outside an explicit REPEATABLE READ or SERIALIZABLE transaction.';
    END IF;

    LOOP
        generation := swarm._progress_generation();
        SELECT * INTO j FROM swarm.jobs jj WHERE jj.id = job;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job % does not exist', job
                USING ERRCODE = 'no_data_found';
        END IF;
        IF j.status IN ('completed', 'cancelled') THEN
            RETURN j;
        END IF;
        SELECT swarm._xid_is_current(jj.xmin) INTO created_here FROM swarm.jobs jj WHERE jj.id = job;
        IF created_here THEN
            RAISE EXCEPTION 'job % was enqueued in this transaction and cannot run before it commits', job
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Commit the transaction that called swarm.generate(), then wait.';
        END IF;

        IF j.succeeded + j.failed + j.cancelled <> last_done
           AND (last_report IS NULL OR clock_timestamp() - last_report >= interval '1 second') THEN
            RAISE NOTICE 'job %: % of % done (% failed), %', job,
                j.succeeded + j.failed + j.cancelled, j.total, j.failed, j.status;
            last_done := j.succeeded + j.failed + j.cancelled;
            last_report := clock_timestamp();
        END IF;

        IF deadline IS NOT NULL AND clock_timestamp() >= deadline THEN
            RETURN j;
        END IF;
        sleep_ms := 1000;
        IF deadline IS NOT NULL THEN
            sleep_ms := least(sleep_ms, greatest(1, ceil(extract(epoch FROM deadline - clock_timestamp()) * 1000)::integer));
        END IF;
        PERFORM swarm._sleep_for_progress(generation, sleep_ms);
    END LOOP;
END
$$;

COMMENT ON FUNCTION swarm.wait(bigint, interval) IS
'Block until the job ends (or the timeout passes), reporting progress as NOTICEs, and return its row. Cancel with Ctrl-C.';

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------

CREATE OR REPLACE VIEW swarm.stats AS
    SELECT * FROM swarm._stats();

COMMENT ON VIEW swarm.stats IS
'The worker''s performance counters since the server started: operations, success rate, latency (avg, p50/p95/p99), concurrency, throughput, HTTP attempts, retries, errors, 429s, transport errors, committed batches, response bytes received, uptime.';

-- What job_progress shows of a job's batches: how many are in each of the
-- provider's statuses (or the batcher's own state before one is known).
CREATE OR REPLACE FUNCTION swarm._job_batches(job bigint)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_object_agg(s, n ORDER BY s)
    FROM (SELECT CASE WHEN b.state IN ('stored', 'abandoned') THEN b.state
                      ELSE coalesce(b.status, b.state) END AS s,
                 count(*) AS n
          FROM swarm.batches b WHERE b.job_id = job GROUP BY 1) c
$$;

COMMENT ON FUNCTION swarm._job_batches(bigint) IS
'Private: a job''s batches by status (the provider''s, or the batcher''s state before the provider has one; stored and abandoned when done), for swarm.job_progress.';

-- security_invoker: a user sees the progress of the jobs row-level security lets it see
CREATE OR REPLACE VIEW swarm.job_progress WITH (security_invoker = true) AS
    SELECT j.id AS job_id,
           j.status,
           j.total,
           j.succeeded + j.failed + j.cancelled AS done,
           j.succeeded,
           j.failed,
           j.cancelled,
           round(100.0 * (j.succeeded + j.failed + j.cancelled) / nullif(j.total, 0), 1) AS percent,
           coalesce(j.finished_at, now()) - j.started_at AS elapsed,
           round(((j.succeeded + j.failed + j.cancelled)
                  / nullif(extract(epoch FROM coalesce(j.finished_at, now()) - j.started_at), 0))::numeric, 1)
               AS rate_per_second,
           CASE WHEN j.status IN ('completed', 'cancelled') THEN interval '0'
                WHEN j.succeeded + j.failed + j.cancelled = 0 THEN NULL
                ELSE (j.total - j.succeeded - j.failed - j.cancelled)
                     * ((coalesce(j.finished_at, now()) - j.started_at) / (j.succeeded + j.failed + j.cancelled))
           END AS eta,
           j.created_at,
           j.started_at,
           j.finished_at,
           coalesce(j.params ->> 'mode', 'sync') AS mode,
           swarm._job_batches(j.id) AS batches
    FROM swarm.jobs j;

COMMENT ON VIEW swarm.job_progress IS 'Per job: done/failed/total, percent, rate (requests/s) and estimated time to finish; its mode (sync or batch) and, in batch mode, its batches by status ({"in_progress": 2, "stored": 5}).';
