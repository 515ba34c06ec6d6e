-- pg_swarm: the swarm on Citus (docs/scale-out.md).
--
-- swarm.distribute() turns an installed pg_swarm into a distributed one:
-- the per-agent tables distributed by the agent's id and co-located, the
-- small shared tables as reference tables.  From then on every node's worker
-- claims and stores the requests of its own shards (src/shards.c) and the
-- coordinator's worker sums their progress (swarm._conduct()).

-- Where the per-agent tables are keyed by the agent (Citus wants every
-- unique key to hold the distribution column), and what Citus refuses
-- removed: the triggers on swarm.agents (replaced by foreign keys ON DELETE
-- CASCADE and swarm.delete_agents()), and the foreign keys between tables
-- that become reference tables, which a local table would block (they are
-- added again once both ends are distributed).  Run on every node, with
-- Citus's DDL propagation off (each node's extension has its own copy of
-- the tables until they are distributed).  Written to run again.
CREATE OR REPLACE FUNCTION swarm._distributable_shape_sql() RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT $sql$
SET LOCAL citus.enable_ddl_propagation TO off;
DROP TRIGGER IF EXISTS social_forget_deleted_agents ON swarm.agents;
DROP TRIGGER IF EXISTS social_forget_truncated_agents ON swarm.agents;
ALTER TABLE swarm.jobs DROP CONSTRAINT IF EXISTS jobs_kind_fkey;
ALTER TABLE swarm.community_members DROP CONSTRAINT IF EXISTS community_members_community_id_fkey;
ALTER TABLE swarm._endpoint_keys DROP CONSTRAINT IF EXISTS _endpoint_keys_endpoint_fkey;
ALTER TABLE swarm.requests DROP CONSTRAINT IF EXISTS requests_pkey,
    ADD CONSTRAINT requests_pkey PRIMARY KEY (agent_id, id);
ALTER TABLE swarm.messages DROP CONSTRAINT IF EXISTS messages_pkey,
    DROP CONSTRAINT IF EXISTS messages_request_id_key,
    DROP CONSTRAINT IF EXISTS messages_agent_request_key,
    ADD CONSTRAINT messages_pkey PRIMARY KEY (agent_id, id),
    ADD CONSTRAINT messages_agent_request_key UNIQUE (agent_id, request_id);
CREATE UNIQUE INDEX IF NOT EXISTS requests_turn_key ON swarm.requests (agent_id, conversation_id, turn);
$sql$
$$;

COMMENT ON FUNCTION swarm._distributable_shape_sql() IS
'Private: the statements swarm.distribute() runs on every node before distributing (keys that hold the agent id, no trigger on swarm.agents, no foreign key between future reference tables).';

CREATE OR REPLACE FUNCTION swarm.distribute(shard_count integer DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    our_version text;
    node record;
    group_id integer;
    shards integer;
    workers integer;
    t text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'swarm.distribute() needs Citus'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'The extension citus is not installed in this database.',
                  HINT = 'On every node: shared_preload_libraries = ''citus,pg_swarm'' and CREATE EXTENSION citus; on the coordinator: citus_add_node() for each worker; then CREATE EXTENSION pg_swarm and swarm.distribute() (docs/scale-out.md).';
    END IF;
    IF shard_count IS NOT NULL AND (shard_count < 1 OR shard_count > 64000) THEN
        RAISE EXCEPTION 'shard_count must be between 1 and 64000, not %', shard_count
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A few shards per node is enough (4 x nodes); NULL takes citus.shard_count.';
    END IF;
    EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO group_id;
    IF group_id IS DISTINCT FROM 0 THEN
        RAISE EXCEPTION 'swarm.distribute() runs on the coordinator'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('This node is in Citus group %s.', group_id);
    END IF;
    IF swarm._is_distributed() THEN
        RAISE NOTICE 'the swarm is distributed already';
        RETURN 'already distributed';
    END IF;
    IF EXISTS (SELECT FROM swarm.jobs WHERE status IN ('queued', 'running')) THEN
        RAISE EXCEPTION 'jobs are running: distribute the swarm when none is'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Wait for them (swarm.wait()) or cancel them (swarm.cancel()).';
    END IF;
    SELECT extversion INTO our_version FROM pg_catalog.pg_extension WHERE extname = 'pg_swarm';
    workers := 0;
    FOR node IN EXECUTE 'SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers($c$SELECT coalesce((SELECT extversion FROM pg_catalog.pg_extension WHERE extname = ''pg_swarm''), ''none'') || '' '' || (SELECT setting FROM pg_catalog.pg_settings WHERE name = ''shared_preload_libraries'')$c$)'
    LOOP
        workers := workers + 1;
        IF NOT node.success OR split_part(node.result, ' ', 1) IS DISTINCT FROM our_version THEN
            RAISE EXCEPTION 'node %:% does not have pg_swarm %', node.nodename, node.nodeport, our_version
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = CASE WHEN node.success THEN format('It has %s.', split_part(node.result, ' ', 1))
                                    ELSE format('It did not answer: %s', node.result) END,
                      HINT = 'Every node needs the same pg_swarm (make install, and ALTER EXTENSION pg_swarm UPDATE on the coordinator).';
        END IF;
        IF position('pg_swarm' IN node.result) = 0 THEN
            RAISE EXCEPTION 'node %:% does not load pg_swarm', node.nodename, node.nodeport
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'Its worker would never send its shards'' requests.',
                      HINT = 'Set shared_preload_libraries = ''citus,pg_swarm'' there and restart it.';
        END IF;
    END LOOP;

    -- foreign keys to reference tables want one connection per node
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- every node: keys and constraints Citus accepts
    EXECUTE swarm._distributable_shape_sql();
    FOR node IN EXECUTE format('SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers(%L)',
                               'BEGIN; ' || swarm._distributable_shape_sql() || ' COMMIT;')
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not prepare node %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;
    PERFORM set_config('citus.enable_ddl_propagation', 'on', true);

    -- the small shared tables: a copy on every node
    FOREACH t IN ARRAY ARRAY['swarm.job_kinds', 'swarm.jobs', 'swarm.endpoints', 'swarm._endpoint_keys',
                             'swarm.communities']
    LOOP
        EXECUTE 'SELECT pg_catalog.create_reference_table($1)' USING t;
    END LOOP;
    -- the per-agent tables: by the agent's id, co-located
    IF shard_count IS NULL THEN
        EXECUTE $c$SELECT pg_catalog.create_distributed_table('swarm.agents', 'id')$c$;
    ELSE
        EXECUTE $c$SELECT pg_catalog.create_distributed_table('swarm.agents', 'id', shard_count => $1)$c$
            USING shard_count;
    END IF;
    FOREACH t IN ARRAY ARRAY['swarm.friendships', 'swarm.community_members', 'swarm.agent_memory',
                             'swarm.requests', 'swarm.messages', 'swarm.actions', 'swarm.likes', 'swarm.reposts',
                             'swarm.follows', 'swarm.mutes', 'swarm.memberships', 'swarm.responses']
    LOOP
        EXECUTE $c$SELECT pg_catalog.create_distributed_table($1, 'agent_id', colocate_with => 'swarm.agents')$c$
            USING t;
    END LOOP;
    -- the foreign keys again, and those that replace the triggers
    ALTER TABLE swarm.jobs ADD CONSTRAINT jobs_kind_fkey FOREIGN KEY (kind) REFERENCES swarm.job_kinds (name);
    ALTER TABLE swarm._endpoint_keys ADD CONSTRAINT _endpoint_keys_endpoint_fkey
        FOREIGN KEY (endpoint) REFERENCES swarm.endpoints (name) ON DELETE CASCADE;
    ALTER TABLE swarm.community_members ADD CONSTRAINT community_members_community_id_fkey
        FOREIGN KEY (community_id) REFERENCES swarm.communities (id) ON DELETE CASCADE;
    ALTER TABLE swarm.friendships ADD CONSTRAINT friendships_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;
    ALTER TABLE swarm.community_members ADD CONSTRAINT community_members_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;
    ALTER TABLE swarm.agent_memory ADD CONSTRAINT agent_memory_agent_id_fkey
        FOREIGN KEY (agent_id) REFERENCES swarm.agents (id) ON DELETE CASCADE;

    -- ids made on a worker node come from its own range: group << 48
    FOR node IN EXECUTE $c$SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers(
        $w$SELECT pg_catalog.setval('swarm.messages_id_seq',
                  greatest(pg_catalog.nextval('swarm.messages_id_seq'),
                           ((SELECT groupid FROM pg_catalog.pg_dist_local_group)::bigint << 48) + 1))$w$)$c$
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not set the message ids of node %:%: %', node.nodename, node.nodeport, node.result
                USING ERRCODE = 'object_not_in_prerequisite_state';
        END IF;
    END LOOP;

    -- the rows copied into the shards leave the coordinator's own tables
    FOREACH t IN ARRAY ARRAY['swarm.job_kinds', 'swarm.jobs', 'swarm.endpoints', 'swarm._endpoint_keys',
                             'swarm.communities', 'swarm.agents', 'swarm.friendships', 'swarm.community_members',
                             'swarm.agent_memory', 'swarm.requests', 'swarm.messages', 'swarm.actions',
                             'swarm.likes', 'swarm.reposts', 'swarm.follows', 'swarm.mutes', 'swarm.memberships',
                             'swarm.responses']
    LOOP
        EXECUTE 'SELECT pg_catalog.truncate_local_data_after_distributing_table($1)' USING t;
    END LOOP;

    SELECT count(*) INTO shards FROM pg_catalog.pg_dist_shard WHERE logicalrelid = 'swarm.requests'::regclass;
    -- (no worker is woken here: before this commits they would see half of
    -- it; the first job wakes the coordinator's, which wakes the others)
    RETURN format('distributed: %s shards of each per-agent table over %s worker nodes', shards, workers);
END
$$;

COMMENT ON FUNCTION swarm.distribute(integer) IS
'Citus: distribute the swarm (run once, on the coordinator, with no job running): agents, friendships, community_members, agent_memory, requests, messages and what simulations with actions record (actions, likes, reposts, follows, mutes, memberships) and the response store (responses) by the agent id, co-located (shard_count shards each; NULL: citus.shard_count); job_kinds, jobs, endpoints, _endpoint_keys and communities as reference tables. Every node''s worker then sends its own shards'' requests. See docs/scale-out.md.';

-- Deleting agents on a distributed swarm, where no trigger runs: their own
-- friendships, memberships and memories go by ON DELETE CASCADE; the rows
-- that name them as a friend are removed here.  Works on one server too.
CREATE OR REPLACE FUNCTION swarm.delete_agents(ids bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF ids IS NULL THEN
        RAISE EXCEPTION 'ids must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    DELETE FROM swarm.friendships WHERE friend_id = ANY (ids);
    DELETE FROM swarm.agents WHERE id = ANY (ids);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

COMMENT ON FUNCTION swarm.delete_agents(bigint[]) IS
'Delete agents with their friendships (both directions), memberships and memories; returns how many agents were deleted. On a distributed swarm, use it rather than DELETE FROM swarm.agents, which leaves the rows naming them as a friend.';

-- The coordinator's part on a distributed swarm, run by its worker every
-- 200 ms: mark new jobs running and wake the other nodes' workers, sum every
-- node's swarm.job_node_progress into swarm.jobs, complete the jobs whose
-- every request has ended, and NOTIFY each changed job's channel on the
-- coordinator, where clients LISTEN.  A round where a node does not answer
-- changes nothing (its counts would be missing from the sums).  Returns how
-- many jobs changed.
CREATE OR REPLACE FUNCTION swarm._conduct()
RETURNS integer
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    active bigint[];
    fresh bigint[];
    ts timestamptz := clock_timestamp();
    answered boolean;
    results text[];
    j swarm.jobs;
    old_done bigint;
    old_failed bigint;
    kind text;
    made bigint;
    woken boolean := false;
    s record;
    changed integer := 0;
BEGIN
    SELECT array_agg(id ORDER BY id), array_agg(id ORDER BY id) FILTER (WHERE status = 'queued')
    INTO active, fresh
    FROM swarm.jobs WHERE status IN ('queued', 'running');
    IF active IS NULL THEN
        RETURN 0;
    END IF;
    IF fresh IS NOT NULL THEN
        UPDATE swarm.jobs SET status = 'running', started_at = ts
        WHERE id = ANY (fresh) AND status = 'queued';
        PERFORM pg_catalog.run_command_on_workers('SELECT swarm._wake_worker()');
    END IF;

    SELECT array_agg(result), bool_and(success) INTO results, answered
    FROM pg_catalog.run_command_on_all_nodes(format(
        'SELECT coalesce(json_agg(json_build_array(job_id, succeeded, failed, prompt_tokens, completion_tokens)), ''[]'') '
        'FROM swarm.job_node_progress WHERE job_id = ANY (%L::bigint[])', active));
    IF NOT answered THEN
        RETURN 0;
    END IF;

    FOR s IN SELECT (e ->> 0)::bigint AS job_id, sum((e ->> 1)::bigint)::bigint AS ok,
                    sum((e ->> 2)::bigint)::bigint AS bad, sum((e ->> 3)::bigint)::bigint AS pt,
                    sum((e ->> 4)::bigint)::bigint AS ct
             FROM unnest(results) AS r, json_array_elements(r::json) AS e
             GROUP BY 1 ORDER BY 1
    LOOP
        -- the job's row locked, as swarm.cancel() locks it: a job cancelled
        -- meanwhile stays as cancel() left it, and gets no next turn
        SELECT jj.succeeded + jj.failed, jj.failed, jj.kind INTO old_done, old_failed, kind
        FROM swarm.jobs jj
        WHERE jj.id = s.job_id AND jj.status = 'running'
        FOR UPDATE;
        CONTINUE WHEN old_done IS NULL OR old_done = s.ok + s.bad;
        IF kind = 'interact' THEN
            IF swarm._advance_conversations_distributed(s.job_id, old_failed <> s.bad) > 0 THEN
                woken := true;
            END IF;
        END IF;
        UPDATE swarm.jobs jj SET succeeded = s.ok, failed = s.bad, prompt_tokens = s.pt,
                                 completion_tokens = s.ct
        WHERE jj.id = s.job_id
        RETURNING * INTO j;
        -- (a simulation completes once its last step is settled too: the
        -- step builder does it then, if this has not)
        IF j.succeeded + j.failed + j.cancelled >= j.total
           AND (j.kind <> 'simulate'
                OR coalesce((j.params ->> 'settled')::integer, 0) >= (j.params ->> 'steps')::integer) THEN
            UPDATE swarm.jobs jj SET status = 'completed', finished_at = ts
            WHERE jj.id = s.job_id AND jj.status = 'running'
            RETURNING * INTO j;
        END IF;
        PERFORM pg_catalog.pg_notify(j.channel, swarm._progress_payload(j, s.ok + s.bad - old_done));
        changed := changed + 1;
    END LOOP;
    -- A conversation job that has stalled (nothing queued, not ended, its
    -- cursors still for 5 s: a turn stored in a shard while it moved to
    -- another node was read by neither): read its turns again from the
    -- start; a turn already followed is not followed twice.
    FOR s IN SELECT jj.id FROM swarm.jobs jj
             WHERE jj.status = 'running' AND jj.kind = 'interact'
               AND jj.succeeded + jj.failed + jj.cancelled < jj.total
    LOOP
        CONTINUE WHEN EXISTS (SELECT FROM swarm.job_conductor_cursors c
                              WHERE c.job_id = s.id AND c.updated_at > ts - interval '5 seconds');
        -- (SELECT 1: Citus plans an empty select list into a broken intermediate result)
        CONTINUE WHEN EXISTS (SELECT 1 FROM swarm.requests r WHERE r.job_id = s.id AND r.status = 'queued');
        PERFORM FROM swarm.jobs jj WHERE jj.id = s.id AND jj.status = 'running' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        DELETE FROM swarm.job_conductor_cursors c WHERE c.job_id = s.id;
        made := swarm._advance_conversations_distributed(s.id, true);
        RAISE LOG 'pg_swarm: interact job % had stalled: its turns were read again, % next turns enqueued', s.id, made;
        woken := woken OR made > 0;
    END LOOP;

    -- next turns were enqueued: the nodes claim them now rather than at their next poll
    IF woken THEN
        PERFORM pg_catalog.run_command_on_workers('SELECT swarm._wake_worker()');
    END IF;
    RETURN changed;
END
$$;

COMMENT ON FUNCTION swarm._conduct() IS
'Private, distributed swarm: run by the coordinator''s worker every 200 ms; sums the nodes'' progress into swarm.jobs, completes and announces jobs.';

-- interact() on a distributed swarm: the same conversations as on one server
-- (each opener with its strongest tie, ties to the lower id; conversation
-- ids in opener order), in steps Citus can run: the pairs from friendships
-- (one query per shard), the partners' names and personas, then one insert
-- from those local rows into the distributed queue.  Returns how many
-- conversations were opened.
CREATE OR REPLACE FUNCTION swarm._open_conversations_distributed(job bigint, agents bigint[], who name)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    made bigint;
BEGIN
    CREATE TEMP TABLE _swarm_pairs ON COMMIT DROP AS
    SELECT DISTINCT ON (f.agent_id) f.agent_id AS opener, f.friend_id AS partner
    FROM swarm.friendships f
    WHERE agents IS NULL OR f.agent_id = ANY (agents)
    ORDER BY f.agent_id, f.strength DESC, f.friend_id;
    CREATE TEMP TABLE _swarm_partners ON COMMIT DROP AS
    SELECT a.id, a.name, swarm.persona_summary(a.persona) AS summary
    FROM swarm.agents a WHERE a.id IN (SELECT partner FROM _swarm_pairs);
    CREATE TEMP TABLE _swarm_openings ON COMMIT DROP AS
    SELECT o.*, nextval('swarm.conversation_ids') AS conversation_id
    FROM (SELECT p.opener, p.partner, q.name, q.summary
          FROM _swarm_pairs p JOIN _swarm_partners q ON q.id = p.partner
          ORDER BY p.opener) o;
    INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, vars, owner)
    SELECT job, o.opener, o.partner, o.conversation_id, 1,
           jsonb_build_object('partner_name', o.name, 'partner', o.summary,
                              'history', '(nothing yet: you open the conversation)'),
           who
    FROM _swarm_openings o;
    GET DIAGNOSTICS made = ROW_COUNT;
    DROP TABLE _swarm_openings, _swarm_partners, _swarm_pairs;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._open_conversations_distributed(bigint, bigint[], name) IS
'Private: the first turns of swarm.interact() on a distributed swarm (Citus).';

-- On each node of a distributed swarm: this node's messages of interact job
-- `job` past the coordinator's cursors (`after`: node group -> last message
-- id read of the ids made on that node), read in one statement over the
-- node's shards of swarm.messages, so in one snapshot.  A node stores its
-- batches one at a time, in id order, so what one snapshot shows of the ids
-- a node made is all of them up to some point; a query through Citus reads
-- each shard in a snapshot of its own and could show a later id without an
-- earlier one.  Returns a JSON array of [id, agent_id, to_agent_id,
-- conversation_id, turn, owner].
CREATE OR REPLACE FUNCTION swarm._node_turns(job bigint, after jsonb)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shards text;
    ranges text;
    result text;
BEGIN
    SELECT string_agg(format('SELECT id, agent_id, to_agent_id, conversation_id, turn, owner FROM swarm.%I WHERE job_id = $1',
                             'messages_' || s.shardid), ' UNION ALL ')
    INTO shards
    FROM pg_catalog.pg_dist_shard s
    JOIN pg_catalog.pg_dist_placement p ON p.shardid = s.shardid
    WHERE s.logicalrelid = 'swarm.messages'::regclass
      AND p.groupid = (SELECT groupid FROM pg_catalog.pg_dist_local_group);
    IF shards IS NULL THEN
        RETURN '[]';
    END IF;
    SELECT string_agg(format('(t.id > %s AND t.id < %s)', a.value::bigint, ((a.key::bigint + 1) << 48)), ' OR ')
    INTO ranges FROM jsonb_each_text(after) a;
    EXECUTE format('SELECT coalesce(json_agg(json_build_array(t.id, t.agent_id, t.to_agent_id, t.conversation_id, t.turn, t.owner)), ''[]'')
                    FROM (%s) t WHERE %s', shards, coalesce(ranges, 'true'))
    INTO result USING job;
    RETURN result;
END
$$;

COMMENT ON FUNCTION swarm._node_turns(bigint, jsonb) IS
'Private, distributed swarm: this node''s messages of an interact job past the coordinator''s cursors, in one snapshot (swarm._advance_conversations_distributed()).';

-- A node that did not answer swarm._node_turns(): the round fails (its turns
-- would be skipped), to be tried again.
CREATE OR REPLACE FUNCTION swarm._node_failed(result text)
RETURNS json
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'a node did not answer: %', result
        USING ERRCODE = 'connection_failure';
END
$$;

COMMENT ON FUNCTION swarm._node_failed(text) IS
'Private, distributed swarm: raises the error of a node that did not answer (swarm._advance_conversations_distributed()).';

-- The next turns of an interact job on a distributed swarm, run by the
-- coordinator's worker (swarm._conduct()): the messages each node stored
-- since the last call (job_conductor_cursors, read through
-- swarm._node_turns()), and for each one before the conversation's last
-- turn, the next turn: the agent spoken to answers, told the partner's name
-- and persona and the conversation so far (its last 8 messages), as
-- swarm._advance() does on one server.  The cursors move in the same
-- transaction as the inserts.  A next turn already stored or queued is not
-- made again (requests_turn_key (agent_id, conversation_id, turn), added by
-- swarm.distribute()): reading a turn twice is harmless, which the sweep of
-- a stalled job relies on (swarm._conduct()).  A turn that failed ends its
-- conversation: the job's total loses its later turns.  Called with the
-- job's row locked (swarm.cancel() takes the same lock).  Returns how many
-- turns were enqueued.
CREATE OR REPLACE FUNCTION swarm._advance_conversations_distributed(job bigint, failures_changed boolean)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    turns integer;
    after jsonb;
    made bigint := 0;
    skipped bigint;
BEGIN
    SELECT (j.params ->> 'turns')::integer INTO turns FROM swarm.jobs j WHERE j.id = job;
    SELECT jsonb_object_agg(g.groupid, coalesce(c.last_message_id, g.groupid::bigint << 48))
    INTO after
    FROM (SELECT DISTINCT n.groupid FROM pg_catalog.pg_dist_node n) g
    LEFT JOIN swarm.job_conductor_cursors c ON c.job_id = job AND c.node_group = g.groupid;
    CREATE TEMP TABLE _swarm_turns ON COMMIT DROP AS
    SELECT (e ->> 0)::bigint AS id, job AS job_id, (e ->> 1)::bigint AS agent_id, (e ->> 2)::bigint AS to_agent_id,
           (e ->> 3)::bigint AS conversation_id, (e ->> 4)::integer AS turn, (e ->> 5)::name AS owner
    FROM pg_catalog.run_command_on_all_nodes(format('SELECT swarm._node_turns(%s, %L)', job, after)) r,
         json_array_elements(CASE WHEN r.success THEN r.result::json ELSE swarm._node_failed(r.result) END) e;
    INSERT INTO swarm.job_conductor_cursors AS c (job_id, node_group, last_message_id)
    SELECT job, (t.id >> 48)::integer, max(t.id) FROM _swarm_turns t GROUP BY 2
    ON CONFLICT (job_id, node_group) DO UPDATE
        SET last_message_id = greatest(c.last_message_id, excluded.last_message_id), updated_at = now();
    DELETE FROM _swarm_turns WHERE turn >= turns;

    IF EXISTS (SELECT FROM _swarm_turns) THEN
        CREATE TEMP TABLE _swarm_history ON COMMIT DROP AS
        SELECT x.conversation_id, x.agent_id, x.content, x.turn
        FROM swarm.messages x
        WHERE x.job_id = job AND x.conversation_id IN (SELECT conversation_id FROM _swarm_turns);
        CREATE TEMP TABLE _swarm_people ON COMMIT DROP AS
        SELECT a.id, a.name, swarm.persona_summary(a.persona) AS summary
        FROM swarm.agents a
        WHERE a.id IN (SELECT agent_id FROM _swarm_history UNION SELECT agent_id FROM _swarm_turns);
        INSERT INTO swarm.requests (job_id, agent_id, to_agent_id, conversation_id, turn, reply_to, vars, owner)
        SELECT t.job_id, t.to_agent_id, t.agent_id, t.conversation_id, t.turn + 1, t.id,
               jsonb_build_object('partner_name', coalesce(sp.name, 'agent ' || t.agent_id),
                                  'partner', sp.summary,
                                  'history', h.history),
               t.owner
        FROM _swarm_turns t
        LEFT JOIN _swarm_people sp ON sp.id = t.agent_id
        CROSS JOIN LATERAL (
            SELECT string_agg(coalesce(hp.name, 'agent ' || l.agent_id) || ': ' || left(coalesce(l.content, ''), 600),
                              E'\n' ORDER BY l.turn) AS history
            FROM (SELECT x.agent_id, x.content, x.turn FROM _swarm_history x
                  WHERE x.conversation_id = t.conversation_id AND x.turn <= t.turn
                  ORDER BY x.turn DESC LIMIT 8) l
            LEFT JOIN _swarm_people hp ON hp.id = l.agent_id) h
        -- (a turn read twice whose next turn is stored already)
        WHERE NOT EXISTS (SELECT FROM _swarm_history d
                          WHERE d.conversation_id = t.conversation_id AND d.turn = t.turn + 1)
        ORDER BY t.id
        ON CONFLICT (agent_id, conversation_id, turn) DO NOTHING;
        GET DIAGNOSTICS made = ROW_COUNT;
    END IF;

    -- failed turns end their conversations: the total loses the turns after
    IF failures_changed THEN
        SELECT coalesce(sum(turns - r.turn), 0) INTO skipped
        FROM swarm.requests r WHERE r.job_id = job AND r.status = 'failed';
        UPDATE swarm.jobs j SET total = (j.params ->> 'conversations')::bigint * turns - skipped
        WHERE j.id = job AND j.total <> (j.params ->> 'conversations')::bigint * turns - skipped;
    END IF;
    DROP TABLE IF EXISTS _swarm_turns, _swarm_history, _swarm_people;
    RETURN made;
END
$$;

COMMENT ON FUNCTION swarm._advance_conversations_distributed(bigint, boolean) IS
'Private, distributed swarm: run by the coordinator''s worker; enqueues the next turns of an interact job''s stored turns (each once).';

-- Simulations on a distributed swarm: the actions and memories of step
-- `step` of simulation `job`, recorded and applied by the coordinator's step
-- builder once the step has ended, before it builds the next step (in the
-- same transaction, which also moves the job's params.settled on: once per
-- step).  On one server the worker does this as it stores each batch
-- (swarm._advance()); on a cluster that statement would read other nodes'
-- shards (the posts a feed offered, the agents named), so it runs here, in
-- statements Citus can plan: the step's messages, the posts of its window,
-- the agents named and the acting agents' follows, mutes, likes and
-- memberships are read into temporary tables (per-agent tables by lists of
-- agent ids), checked as swarm._apply_actions() checks them
-- (swarm._action_reason()), and written back with plain INSERTs and one
-- DELETE.  What a step's feeds see is the same: step s + 1 is built after
-- step s is applied, on one server as here.  Returns the messages settled.
CREATE OR REPLACE FUNCTION swarm._settle_step_distributed(job bigint, step integer)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
-- (JIT compiled the check of 10,000 actions for 1.8 s, to run it in 60 ms)
SET jit = off
SET work_mem = '256MB'
AS $$
#variable_conflict use_variable
DECLARE
    with_actions boolean;
    job_owner name;
    settled bigint;
    agent_ids bigint[];
BEGIN
    SELECT coalesce((j.params ->> 'actions')::boolean, false), j.owner INTO with_actions, job_owner
    FROM swarm.jobs j WHERE j.id = job;

    CREATE TEMP TABLE swarm_settle_messages ON COMMIT DROP AS
    SELECT m.agent_id, m.id, m.turn AS step, m.seen, m.content
    FROM swarm.messages m WHERE m.job_id = job AND m.turn = step;
    GET DIAGNOSTICS settled = ROW_COUNT;
    SELECT coalesce(array_agg(m.agent_id), '{}') INTO agent_ids FROM swarm_settle_messages m;

    -- the posts the feeds offered: those of the three steps before (with
    -- actions), or the messages (without)
    IF with_actions THEN
        CREATE TEMP TABLE swarm_settle_posts ON COMMIT DROP AS
        SELECT x.id, x.agent_id, x.content
        FROM swarm.actions x
        WHERE x.job_id = job AND x.step >= step - 3 AND x.step < step AND x.valid
          AND x.kind IN ('post', 'reply', 'quote', 'repost');
    ELSE
        CREATE TEMP TABLE swarm_settle_posts ON COMMIT DROP AS
        SELECT x.id, x.agent_id, x.content
        FROM swarm.messages x
        WHERE x.job_id = job AND x.turn >= step - 3 AND x.turn < step
          AND x.id = ANY (ARRAY(SELECT DISTINCT u.id FROM swarm_settle_messages m, unnest(m.seen[1:2]) AS u(id)));
    END IF;
    CREATE INDEX ON swarm_settle_posts (id);
    ANALYZE swarm_settle_posts;

    IF with_actions THEN
        CREATE TEMP TABLE swarm_settle_parsed ON COMMIT DROP AS
        SELECT c.*,
               CASE WHEN jsonb_typeof(c.j -> 'action') = 'string' THEN left(c.j ->> 'action', 40) END AS kind,
               swarm._json_int(c.j -> 'post_id') AS post_no,
               swarm._json_int(c.j -> 'agent_id') AS target,
               swarm._json_int(c.j -> 'community_id') AS community,
               CASE WHEN jsonb_typeof(c.j -> 'text') = 'string' THEN btrim(c.j ->> 'text') END AS said
        FROM (SELECT m.agent_id, m.id, m.step, m.seen, swarm._jsonb_or_null(m.content) AS j
              FROM swarm_settle_messages m) c;

        -- what the checks and the changes read: the agents named, the
        -- communities, and the acting agents' own follows, mutes, likes and
        -- memberships in this simulation
        CREATE TEMP TABLE swarm_settle_named ON COMMIT DROP AS
        SELECT a.id, a.name FROM swarm.agents a
        WHERE a.id = ANY (ARRAY(SELECT DISTINCT p.target FROM swarm_settle_parsed p WHERE p.target IS NOT NULL
                                UNION SELECT x.agent_id FROM swarm_settle_posts x));
        CREATE INDEX ON swarm_settle_named (id);
        CREATE TEMP TABLE swarm_settle_communities ON COMMIT DROP AS SELECT c.id FROM swarm.communities c;
        CREATE TEMP TABLE swarm_settle_ties ON COMMIT DROP AS
        SELECT f.agent_id, f.target_id, 'follow' AS what, NULL::integer AS value FROM swarm.follows f
        WHERE f.agent_id = ANY (agent_ids) AND f.job_id = job
        UNION ALL
        SELECT f.agent_id, f.target_id, 'mute', NULL FROM swarm.mutes f
        WHERE f.agent_id = ANY (agent_ids) AND f.job_id = job
        UNION ALL
        SELECT l.agent_id, l.post_id, 'like', l.value FROM swarm.likes l
        WHERE l.agent_id = ANY (agent_ids) AND l.job_id = job;
        CREATE TEMP TABLE swarm_settle_member ON COMMIT DROP AS
        SELECT ms.agent_id, ms.community_id, ms.member FROM swarm.memberships ms
        WHERE ms.agent_id = ANY (agent_ids) AND ms.job_id = job;
        CREATE TEMP TABLE swarm_settle_seeded ON COMMIT DROP AS
        SELECT cm.agent_id, cm.community_id FROM swarm.community_members cm
        WHERE cm.agent_id = ANY (ARRAY(SELECT p.agent_id FROM swarm_settle_parsed p
                                       WHERE p.kind IN ('join_community', 'leave_community')));
        -- (each looked up per action below)
        CREATE INDEX ON swarm_settle_ties (agent_id, target_id);
        CREATE INDEX ON swarm_settle_member (agent_id, community_id);
        CREATE INDEX ON swarm_settle_seeded (agent_id, community_id);
        ANALYZE swarm_settle_parsed, swarm_settle_named, swarm_settle_ties, swarm_settle_member,
                swarm_settle_seeded;

        CREATE TEMP TABLE swarm_settle_checked ON COMMIT DROP AS
        SELECT k.*,
               CASE WHEN k.reason IS NOT NULL THEN NULL
                    WHEN k.kind IN ('post', 'reply', 'quote', 'repost') THEN true
                    WHEN k.kind IN ('like', 'dislike') THEN NOT EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.post_id AND t.what = 'like'
                          AND t.value = CASE k.kind WHEN 'like' THEN 1 ELSE -1 END)
                    WHEN k.kind IN ('follow', 'mute') THEN NOT EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.target AND t.what = k.kind)
                    WHEN k.kind = 'unfollow' THEN EXISTS (
                        SELECT 1 FROM swarm_settle_ties t
                        WHERE t.agent_id = k.agent_id AND t.target_id = k.target AND t.what = 'follow')
                    -- a change of what the agent is in this simulation now:
                    -- its own join or leave, else the seeded membership
                    WHEN k.kind IN ('join_community', 'leave_community') THEN
                        (k.kind = 'join_community') IS DISTINCT FROM coalesce(
                            (SELECT ms.member FROM swarm_settle_member ms
                             WHERE ms.agent_id = k.agent_id AND ms.community_id = k.community),
                            EXISTS (SELECT 1 FROM swarm_settle_seeded cm
                                    WHERE cm.agent_id = k.agent_id AND cm.community_id = k.community))
                    ELSE false END AS changed
        FROM (SELECT p.agent_id, p.id, p.step, p.kind, p.target, p.community, p.said,
                     post.id AS post_id, post.agent_id AS post_author, post.content AS post_content,
                     swarm._action_reason(p.j, p.kind, p.said, p.post_no, p.target, p.community, p.agent_id,
                                          post.id IS NOT NULL,
                                          EXISTS (SELECT 1 FROM swarm_settle_named a WHERE a.id = p.target),
                                          EXISTS (SELECT 1 FROM swarm_settle_communities c WHERE c.id = p.community)) AS reason
              FROM swarm_settle_parsed p
              -- the post it names: number n of its feed (seen[n])
              LEFT JOIN swarm_settle_posts post
                     ON p.kind IN ('reply', 'quote', 'repost', 'like', 'dislike')
                    AND p.post_no BETWEEN 1 AND coalesce(cardinality(p.seen), 0)
                    AND post.id = p.seen[p.post_no]) k;

        INSERT INTO swarm.likes AS l (agent_id, job_id, post_id, value, step, action_id, owner)
        SELECT c.agent_id, job, c.post_id, CASE c.kind WHEN 'like' THEN 1 ELSE -1 END, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('like', 'dislike')
        ON CONFLICT (agent_id, job_id, post_id) DO UPDATE
            SET value = EXCLUDED.value, step = EXCLUDED.step, action_id = EXCLUDED.action_id;
        INSERT INTO swarm.reposts (agent_id, id, job_id, post_id, quote, step, owner)
        SELECT c.agent_id, c.id, job, c.post_id, c.kind = 'quote', c.step, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('repost', 'quote')
        ON CONFLICT DO NOTHING;
        INSERT INTO swarm.follows (agent_id, job_id, target_id, step, action_id, owner)
        SELECT c.agent_id, job, c.target, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind = 'follow'
        ON CONFLICT DO NOTHING;
        DELETE FROM swarm.follows f
        WHERE f.job_id = job AND f.agent_id = ANY (ARRAY(SELECT c.agent_id FROM swarm_settle_checked c
                                                          WHERE c.changed AND c.kind = 'unfollow'))
          AND (f.agent_id, f.target_id) IN (SELECT c.agent_id, c.target FROM swarm_settle_checked c
                                            WHERE c.changed AND c.kind = 'unfollow');
        INSERT INTO swarm.mutes (agent_id, job_id, target_id, step, action_id, owner)
        SELECT c.agent_id, job, c.target, c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind = 'mute'
        ON CONFLICT DO NOTHING;
        INSERT INTO swarm.memberships AS ms (agent_id, job_id, community_id, member, step, action_id, owner)
        SELECT c.agent_id, job, c.community, c.kind = 'join_community', c.step, c.id, job_owner
        FROM swarm_settle_checked c WHERE c.changed AND c.kind IN ('join_community', 'leave_community')
        ON CONFLICT (agent_id, job_id, community_id) DO UPDATE
            SET member = EXCLUDED.member, step = EXCLUDED.step, action_id = EXCLUDED.action_id;
        INSERT INTO swarm.actions (agent_id, id, job_id, step, kind, post_id, target_agent_id, community_id,
                                   content, valid, reason, changed, owner)
        SELECT c.agent_id, c.id, job, c.step, c.kind, c.post_id,
               CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target ELSE c.post_author END,
               c.community,
               CASE WHEN c.reason IS NOT NULL THEN NULL
                    WHEN c.kind IN ('post', 'reply', 'quote') THEN c.said
                    WHEN c.kind = 'repost' THEN c.post_content END,
               c.reason IS NULL, c.reason, c.changed, job_owner
        FROM swarm_settle_checked c
        ON CONFLICT DO NOTHING;
    END IF;

    -- the authors' memories (of the job owner's simulations)
    CREATE TEMP TABLE swarm_settle_memory ON COMMIT DROP AS
    SELECT am.agent_id, swarm._unpack_or_null(am.memory) AS mem FROM swarm.agent_memory am
    WHERE am.agent_id = ANY (agent_ids) AND am.owner = job_owner;
    IF NOT with_actions THEN
        CREATE TEMP TABLE swarm_settle_named ON COMMIT DROP AS
        SELECT a.id, a.name FROM swarm.agents a
        WHERE a.id = ANY (ARRAY(SELECT DISTINCT x.agent_id FROM swarm_settle_posts x));
        -- (no action: what an author said is its message)
        CREATE TEMP TABLE swarm_settle_checked ON COMMIT DROP AS
        SELECT m.id, NULL::text AS kind, NULL::bigint AS target, NULL::bigint AS community, NULL::text AS said,
               NULL::bigint AS post_author, NULL::text AS reason
        FROM swarm_settle_messages m WHERE false;
    END IF;
    INSERT INTO swarm.agent_memory AS am (agent_id, owner, memory, updated_at)
    SELECT m.agent_id, job_owner,
           swarm._remembered(old.mem,
                             CASE WHEN with_actions
                                  THEN swarm._action_said(c.kind, c.reason IS NULL, c.said, c.community,
                                                          CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target
                                                               ELSE c.post_author END, ta.name)
                                  ELSE m.content END,
                             g.glimpse, m.step),
           now()
    FROM swarm_settle_messages m
    LEFT JOIN swarm_settle_memory old ON old.agent_id = m.agent_id
    LEFT JOIN swarm_settle_checked c ON c.id = m.id
    LEFT JOIN swarm_settle_named ta
           ON ta.id = CASE WHEN c.kind IN ('follow', 'unfollow', 'mute') THEN c.target ELSE c.post_author END
    LEFT JOIN LATERAL (
        SELECT jsonb_agg(left(coalesce(sa.name, 'agent ' || sp.agent_id) || ': ' || coalesce(sp.content, ''), 120)
                         ORDER BY u.ord) AS glimpse
        FROM unnest(m.seen[1:2]) WITH ORDINALITY AS u(id, ord)
        JOIN swarm_settle_posts sp ON sp.id = u.id
        LEFT JOIN swarm_settle_named sa ON sa.id = sp.agent_id) g ON true
    ON CONFLICT (agent_id, owner) DO UPDATE SET memory = EXCLUDED.memory, updated_at = EXCLUDED.updated_at;

    DROP TABLE IF EXISTS swarm_settle_messages, swarm_settle_posts, swarm_settle_parsed, swarm_settle_named,
                         swarm_settle_communities, swarm_settle_ties, swarm_settle_member, swarm_settle_seeded,
                         swarm_settle_checked, swarm_settle_memory;
    RETURN settled;
END
$$;

COMMENT ON FUNCTION swarm._settle_step_distributed(bigint, integer) IS
'Private, distributed swarm: run by the coordinator''s step builder when a simulation step has ended; records and applies its actions and the authors'' memories, as the worker does per batch on one server.';
