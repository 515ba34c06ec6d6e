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

ALTER TABLE swarm.endpoints ADD COLUMN structured_output text NOT NULL DEFAULT 'json_schema'
    CHECK (structured_output IN ('json_schema', 'tools'));
COMMENT ON COLUMN swarm.endpoints.structured_output IS 'How it is asked for a structured reply (a simulation with actions): json_schema (response_format with a JSON schema: OpenAI, vLLM, llama.cpp server, Ollama) or tools (a function tool and tool_choice).';

DROP FUNCTION swarm.simulate(integer, text, real, integer, real, bigint, text, text, integer, text, text, text[], interval);
DROP FUNCTION swarm.add_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], name[], integer);
DROP FUNCTION swarm.alter_endpoint(text, text, text, text, integer, integer, integer, interval, integer, text[], text[], name[], integer);
