-- pg_swarm: what the worker of each node keeps for itself when the swarm is
-- distributed with Citus (see docs/scale-out.md and swarm.distribute()).
--
-- On a distributed swarm every node's worker claims and stores the requests
-- of the shards placed on its own node.  It counts what it stored here, in a
-- table of its node that is never distributed (one row per job, one upsert
-- per stored batch), instead of adding to the row of swarm.jobs: that is a
-- reference table, a copy on every node, and a write to it would be a
-- two-phase commit across all nodes on one hot row at every batch.  The
-- coordinator's worker sums every node's rows into swarm.jobs.  On one
-- server the table stays empty.  It is keyed by the job, not by an agent:
-- it is not a per-agent table and has one row per job on each node.

CREATE TABLE swarm.job_node_progress (
    job_id              bigint PRIMARY KEY,
    succeeded           bigint NOT NULL DEFAULT 0,
    failed              bigint NOT NULL DEFAULT 0,
    prompt_tokens       bigint NOT NULL DEFAULT 0,
    completion_tokens   bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE swarm.job_node_progress IS 'Distributed swarm only: what this node''s worker stored of each job (summed into swarm.jobs by the coordinator''s worker). Never distributed; empty on one server.';
COMMENT ON COLUMN swarm.job_node_progress.job_id IS 'The job.';
COMMENT ON COLUMN swarm.job_node_progress.succeeded IS 'Requests of the job this node answered (messages stored).';
COMMENT ON COLUMN swarm.job_node_progress.failed IS 'Requests of the job this node marked failed.';
COMMENT ON COLUMN swarm.job_node_progress.prompt_tokens IS 'Prompt tokens of the messages stored here.';
COMMENT ON COLUMN swarm.job_node_progress.completion_tokens IS 'Completion tokens of the messages stored here.';
COMMENT ON COLUMN swarm.job_node_progress.updated_at IS 'When this node last stored a result of the job.';

-- The coordinator's own: how far its worker has read each node's messages of
-- each running interact job (message ids made on node group g lie in
-- [g << 48, (g + 1) << 48) and grow in commit order there), so that every
-- stored turn gets its next turn (swarm._conduct()).  Never distributed;
-- empty on one server.
CREATE TABLE swarm.job_conductor_cursors (
    job_id          bigint NOT NULL,
    node_group      integer NOT NULL,
    last_message_id bigint NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, node_group)
);

COMMENT ON TABLE swarm.job_conductor_cursors IS 'Distributed swarm, coordinator only: the last message of each node read for each interact job, whose next turns are enqueued. Never distributed; empty on one server.';
COMMENT ON COLUMN swarm.job_conductor_cursors.job_id IS 'The job.';
COMMENT ON COLUMN swarm.job_conductor_cursors.node_group IS 'The Citus node group whose messages this is the cursor of.';
COMMENT ON COLUMN swarm.job_conductor_cursors.last_message_id IS 'The last message of that node read.';
COMMENT ON COLUMN swarm.job_conductor_cursors.updated_at IS 'When the cursor last moved.';
