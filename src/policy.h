/*-------------------------------------------------------------------------
 *
 * policy.h
 *		What to do with an attempt's outcome: keep it, retry it, or fail it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_POLICY_H
#define SWARM_POLICY_H

#include <curl/curl.h>

typedef enum SwarmVerdict
{
	SWARM_VERDICT_SUCCESS,
	SWARM_VERDICT_RETRY,
	SWARM_VERDICT_FAIL
} SwarmVerdict;

extern bool policy_http_status_retryable(long status, const char *error_code);
extern bool policy_transport_error_retryable(CURLcode code);
extern double policy_backoff_ms(int retries_taken, double hinted_ms);

#endif
