-- pg_swarm 0.5.0 -> 0.6.0: what changes in the tables.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.6.0 (all written to run again)
-- to make pg_swarm--0.5.0--0.6.0.sql; TAP 005 checks that the result is the
-- same schema as a fresh install.
--
-- 0.6.0 adds simulations with actions (swarm.simulate(actions => true),
-- docs/interactions.md): how an endpoint takes a structured reply, and the
-- functions whose arguments grew (dropped here, made again by the functions
-- that follow).  The tables they record into are made by
-- src/sql/tables/70_actions.sql, which the Makefile appends next (NEW_TABLES).

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.6.0'" to load this file. \quit

-- (added empty and filled, rather than with its default: a default on
-- ADD COLUMN is kept as the column's "missing value", which a fresh
-- install does not have)
ALTER TABLE swarm.endpoints ADD COLUMN structured_output text;
UPDATE swarm.endpoints SET structured_output = 'json_schema';
ALTER TABLE swarm.endpoints ALTER COLUMN structured_output SET DEFAULT 'json_schema',
    ALTER COLUMN structured_output SET NOT NULL,
    ADD CONSTRAINT endpoints_structured_output_check CHECK (structured_output IN ('json_schema', 'tools'));
COMMENT ON COLUMN swarm.endpoints.structured_output IS 'How it is asked for a structured reply (a simulation with actions): json_schema (response_format with a JSON schema: OpenAI, vLLM, llama.cpp server, Ollama) or tools (a function tool and tool_choice).';

DROP FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval);
DROP FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer);
DROP FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer);
