-- pg_swarm 0.6.0 -> 0.7.0: what changes in the tables.
-- The Makefile appends every file of src/sql/functions/ and
-- src/sql/90_privileges.sql as they are in 0.7.0 (all written to run again)
-- to make pg_swarm--0.6.0--0.7.0.sql; TAP 005 checks that the result is the
-- same schema as a fresh install.
--
-- 0.7.0 runs simulations on a distributed swarm (Citus): the coordinator's
-- step builder records and applies a step's actions and memories when the
-- step has ended, then builds the next (docs/scale-out.md).  No table
-- changes; the functions that follow carry it.

\echo Use "ALTER EXTENSION pg_swarm UPDATE TO '0.7.0'" to load this file. \quit
