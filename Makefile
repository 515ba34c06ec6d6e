# pg_swarm: PGXS build.
#
# The version lives in pg_swarm.control only; the Makefile reads it from there and
# hands it to the C code (SWARM_VERSION) and to the install script's name.
#
# The install script pg_swarm--$(EXTVERSION).sql is assembled from src/sql/:
# tables/*.sql (run once: every table stated as it is in this version), then
# functions/*.sql (functions and views, all CREATE OR REPLACE) and
# 90_privileges.sql (grants and policies, written to run again), in name
# order.  The upgrade from the previous version is its changes to the tables
# (src/sql/upgrades/<from>--<to>.sql, then the files of the tables new in this
# version, NEW_TABLES) followed by the same functions and
# privileges, so an upgraded database ends up exactly as a fresh install
# (TAP 005 compares the two with pg_dump).  When the version moves on, the
# install and upgrade scripts just released are frozen into src/sql/upgrades/
# (edited afterwards only where they name a C symbol the library no longer
# has, which CREATE FUNCTION ... LANGUAGE c refuses; each edit says so).
# Regression tests (sql/*.sql) and C sources (src/*.c, and the social world's in
# src/social/*.c) are picked up by wildcard.

EXTENSION   = pg_swarm
EXTVERSION  = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" pg_swarm.control)
PREVIOUS    = 0.7.0

MODULE_big  = pg_swarm
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c src/social/*.c)))

SQL_TABLES    = $(sort $(wildcard src/sql/tables/*.sql))
SQL_FUNCTIONS = $(sort $(wildcard src/sql/functions/*.sql))
SQL_PRIVILEGES = src/sql/90_privileges.sql
DATA_built  = pg_swarm--$(EXTVERSION).sql pg_swarm--$(PREVIOUS)--$(EXTVERSION).sql
# Earlier versions' install and upgrade scripts, frozen as released.  Listed
# by name, not by wildcard: a frozen script missing from the checkout must
# fail the build, not silently install nothing.
DATA        = src/sql/upgrades/pg_swarm--0.1.0.sql \
              src/sql/upgrades/pg_swarm--0.1.0--0.2.0.sql \
              src/sql/upgrades/pg_swarm--0.2.0.sql \
              src/sql/upgrades/pg_swarm--0.2.0--0.3.0.sql \
              src/sql/upgrades/pg_swarm--0.3.0.sql \
              src/sql/upgrades/pg_swarm--0.3.0--0.4.0.sql \
              src/sql/upgrades/pg_swarm--0.4.0.sql \
              src/sql/upgrades/pg_swarm--0.4.0--0.5.0.sql \
              src/sql/upgrades/pg_swarm--0.5.0.sql \
              src/sql/upgrades/pg_swarm--0.5.0--0.6.0.sql \
              src/sql/upgrades/pg_swarm--0.6.0.sql \
              src/sql/upgrades/pg_swarm--0.6.0--0.7.0.sql \
              src/sql/upgrades/pg_swarm--0.7.0.sql

REGRESS     = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --use-existing --inputdir=.

ISOLATION   = $(patsubst test/specs/%.spec,%,$(sort $(wildcard test/specs/*.spec)))
ISOLATION_OPTS = --use-existing --inputdir=test

PG_CPPFLAGS = -DSWARM_VERSION=\"$(EXTVERSION)\" -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK  = -lcurl -lmsgpackc

EXTRA_CLEAN = $(DATA_built) test/mock/mock_llm

PG_CONFIG  ?= pg_config
PGXS       := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# No LLVM bitcode: JIT inlining buys nothing here and would need clang on every machine.
override with_llvm = no

# The worker serves one database (swarm.database); isolation specs must run in
# the same one as the regression suites.
override ISOLATION_TESTDB = contrib_regression

# A frozen script missing from the checkout fails the build with a reason.
all: $(DATA)
$(DATA):
	@echo "ERROR: $@ is missing: the install scripts of released versions must be committed (see src/sql/upgrades/)" >&2; exit 1

# Every object depends on every header (a changed struct must rebuild all
# users), and on the control file (SWARM_VERSION comes from it).
$(OBJS): $(wildcard src/*.h src/social/*.h) pg_swarm.control

pg_swarm--$(EXTVERSION).sql: $(SQL_TABLES) $(SQL_FUNCTIONS) $(SQL_PRIVILEGES) pg_swarm.control
	cat $(SQL_TABLES) $(SQL_FUNCTIONS) $(SQL_PRIVILEGES) > $@

# Tables new in this version are made by their own files in the upgrade too
# (written once, in src/sql/tables/); emptied when the version moves on.
NEW_TABLES  = src/sql/tables/80_batches.sql

# (the Makefile too: NEW_TABLES is set here)
pg_swarm--$(PREVIOUS)--$(EXTVERSION).sql: src/sql/upgrades/$(PREVIOUS)--$(EXTVERSION).sql \
		$(NEW_TABLES) $(SQL_FUNCTIONS) $(SQL_PRIVILEGES) pg_swarm.control Makefile
	cat $< $(NEW_TABLES) $(SQL_FUNCTIONS) $(SQL_PRIVILEGES) > $@

# The mock OpenAI-compatible endpoint used by tests, the demo and benchmarks.
mock: test/mock/mock_llm
test/mock/mock_llm: $(wildcard test/mock/*.c test/mock/*.h)
	$(CC) -O2 -Wall -Wextra -pthread -o $@ $(filter %.c,$^) -lm

ifneq ($(wildcard test/mock/*.c),)
all: mock
endif

.PHONY: mock bench

# Benchmarks (minutes; needs root): the engine's own figures, then pg_swarm side
# by side with the Python asyncio design and a sequential loop, then
# conversations and the feed at 100,000 agents.  See docs/benchmarks.md.
bench: all
	bash test/bench/engine_bench.sh "0 50 50000" "0 1000 50000" "100 50 5000" "100 500 20000" "100 1000 50000" "100 2000 100000" "100 2000 1000000"
	bash test/bench/compare.sh
	bash test/bench/interact_bench.sh
