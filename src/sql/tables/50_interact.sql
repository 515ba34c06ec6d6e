-- pg_swarm: interactions' own objects (conversations and the feed reuse the
-- tables of 00_core.sql; see functions/50_interact.sql).

CREATE SEQUENCE swarm.conversation_ids;

COMMENT ON SEQUENCE swarm.conversation_ids IS 'Identifiers of the conversations made by swarm.interact().';

SELECT pg_catalog.pg_extension_config_dump('swarm.conversation_ids', '');
