/*-------------------------------------------------------------------------
 *
 * tick.h
 *		The worker's transactions: store results, rescan jobs and endpoints,
 *		claim requests (tick.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_TICK_H
#define SWARM_TICK_H

#include "utils/timestamp.h"

extern void tick_init(void);
extern void tick_reconcile(void);
extern void tick_rescan(void);
extern bool tick_due(TimestampTz now, int max_in_flight);
extern int	tick_run(int max_in_flight, bool claim);
extern long tick_wait_ms(TimestampTz now);
extern bool tick_extension_ready(void);

#endif
