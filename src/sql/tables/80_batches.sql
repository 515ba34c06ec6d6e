-- pg_swarm: batch mode (docs/batch.md).
--
-- A job made with mode => 'batch' is not sent request by request: the
-- batcher (a background worker beside the worker and the step builder,
-- src/batcher.c) gathers its queued requests into files of JSON lines,
-- uploads them to the endpoint's Files API, runs each as a batch of the
-- Batch API, polls it, downloads its output and error files and stores
-- every line's answer through the worker's own store (the same messages,
-- failures, NOTIFY and progress as a synchronous job).
--
-- One row per batch.  Every id the provider gives is written here, and
-- committed, before the batcher depends on it; every step that talks to the
-- provider first commits that it is about to (state 'uploading', 'creating'),
-- so that after a crash the batcher looks for what the provider may already
-- have (a file by its name, a batch by its input file) instead of making it
-- twice.  A request is in a batch when its swarm.requests.batch_id says so;
-- the worker never claims a batch-mode job's requests.
--
-- Keyed by its own id and its job, not by an agent: a batch holds requests
-- of many agents, as a job does, and like swarm.jobs it lives where the jobs
-- are made.  (Batch mode is refused on a distributed swarm for now; there
-- each node would send its own shards' batches, and this table would be each
-- node's own, as swarm.job_node_progress is.)

CREATE TABLE swarm.batches (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id              bigint NOT NULL,
    owner               name NOT NULL,
    endpoint            text NOT NULL,
    state               text NOT NULL DEFAULT 'uploading'
                        CHECK (state IN ('uploading', 'uploaded', 'creating', 'submitted',
                                         'downloading', 'stored', 'abandoned')),
    status              text,
    requests            integer NOT NULL CHECK (requests > 0),
    bytes               bigint,
    file_name           text NOT NULL,
    input_file_id       text,
    provider_batch_id   text,
    output_file_id      text,
    error_file_id       text,
    completed           integer NOT NULL DEFAULT 0,
    failed              integer NOT NULL DEFAULT 0,
    stored              integer NOT NULL DEFAULT 0,
    retried             integer NOT NULL DEFAULT 0,
    request_errors      integer NOT NULL DEFAULT 0,
    polls               integer NOT NULL DEFAULT 0,
    next_poll_at        timestamptz NOT NULL DEFAULT now(),
    cancel_requested    boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    submitted_at        timestamptz,
    ended_at            timestamptz,
    finished_at         timestamptz,
    last_error          text
);

-- the batcher's scan: the batches it still has work on
CREATE INDEX batches_active_idx ON swarm.batches (next_poll_at)
    WHERE state NOT IN ('stored', 'abandoned');
CREATE INDEX batches_job_idx ON swarm.batches (job_id);

-- the requests of a batch, to store its answers and put back the unanswered
CREATE INDEX requests_batch_idx ON swarm.requests (batch_id) WHERE batch_id IS NOT NULL;

COMMENT ON TABLE swarm.batches IS 'Batch mode: one row per batch sent to an endpoint''s Batch API (a file of up to swarm.batch_max_requests requests of one job). See docs/batch.md.';
COMMENT ON COLUMN swarm.batches.job_id IS 'The job whose requests it carries.';
COMMENT ON COLUMN swarm.batches.owner IS 'The owner of the job (row-level security, as for requests).';
COMMENT ON COLUMN swarm.batches.endpoint IS 'The endpoint it was sent to (the first of the job''s endpoints).';
COMMENT ON COLUMN swarm.batches.state IS 'The batcher''s step: uploading (the file may be on its way), uploaded (input_file_id known), creating (the batch may exist), submitted (provider_batch_id known, polled), downloading (ended; answers being stored), stored (every request of it stored, failed or put back), abandoned (its job was cancelled or is gone).';
COMMENT ON COLUMN swarm.batches.status IS 'The provider''s status of the batch: validating, in_progress, finalizing, completed, failed, expired, cancelling, cancelled.';
COMMENT ON COLUMN swarm.batches.requests IS 'Requests (lines) in its file.';
COMMENT ON COLUMN swarm.batches.bytes IS 'Size of its input file.';
COMMENT ON COLUMN swarm.batches.file_name IS 'The name it is uploaded under (unique per database and batch), by which a crashed upload is found again.';
COMMENT ON COLUMN swarm.batches.completed IS 'The provider''s count of lines answered with success so far.';
COMMENT ON COLUMN swarm.batches.failed IS 'The provider''s count of lines answered with an error so far.';
COMMENT ON COLUMN swarm.batches.stored IS 'Lines stored as messages.';
COMMENT ON COLUMN swarm.batches.retried IS 'Requests put back in the queue for a later batch (a retryable error, no answer, the batch expired).';
COMMENT ON COLUMN swarm.batches.request_errors IS 'Requests that ended failed (see swarm.requests.last_error).';
COMMENT ON COLUMN swarm.batches.polls IS 'Times its status was asked for.';
COMMENT ON COLUMN swarm.batches.next_poll_at IS 'When the batcher next works on it (backoff between polls, and after errors).';
COMMENT ON COLUMN swarm.batches.cancel_requested IS 'Its job was cancelled and the provider was asked to cancel the batch.';
COMMENT ON COLUMN swarm.batches.last_error IS 'The last error talking to the provider about this batch (it is retried), or why it failed.';
