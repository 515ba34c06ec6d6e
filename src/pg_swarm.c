/*
 * pg_swarm.c
 *		Module entry point.  (Skeleton; the worker and GUCs land with the core engine.)
 */
#include "postgres.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
}
