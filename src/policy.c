/*-------------------------------------------------------------------------
 *
 * policy.c
 *		Retry decisions and backoff, following the official OpenAI SDKs.
 *
 * Retried: 408, 409, 429 and every 5xx, timeouts and connection errors.  Not
 * retried: other 4xx, a 429 whose error code says the quota is exhausted,
 * bodies too large, malformed URLs.  The server's x-should-retry header
 * overrides the status rule (the caller applies it).
 *
 * Backoff: Retry-After (or retry-after-ms) is honoured exactly, never earlier;
 * without a hint, min(0.5 s * 2^n, 8 s) shortened by up to 25% random jitter,
 * n being the retries already taken.  Pure logic: no I/O, no SQL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "common/pg_prng.h"

#include "policy.h"

#define BACKOFF_INITIAL_MS	500.0
#define BACKOFF_MAX_MS		8000.0
/* a hint beyond an hour is treated as a bogus header, not obeyed literally */
#define RETRY_AFTER_MAX_MS	(3600.0 * 1000.0)

bool
policy_http_status_retryable(long status, const char *error_code)
{
	if (status == 429 && error_code != NULL &&
		(strcmp(error_code, "insufficient_quota") == 0 ||
		 strcmp(error_code, "credit_balance_exhausted") == 0 ||
		 (strstr(error_code, "_limit_exceeded") != NULL && strstr(error_code, "rate_limit") == NULL)))
		return false;
	return status == 408 || status == 409 || status == 429 || status >= 500;
}

bool
policy_transport_error_retryable(CURLcode code)
{
	switch (code)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
		case CURLE_NOT_BUILT_IN:
		case CURLE_WRITE_ERROR:	/* our cap on the body, or out of memory */
		case CURLE_FILESIZE_EXCEEDED:
		case CURLE_OUT_OF_MEMORY:
		case CURLE_BAD_FUNCTION_ARGUMENT:
			/* a certificate that does not verify will not verify next time */
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
			return false;
		default:
			return true;
	}
}

double
policy_backoff_ms(int retries_taken, double hinted_ms)
{
	double		delay;

	if (hinted_ms >= 0)
		return Min(hinted_ms, RETRY_AFTER_MAX_MS);
	delay = Min(BACKOFF_INITIAL_MS * pow(2.0, Max(retries_taken, 0)), BACKOFF_MAX_MS);
	return delay * (1.0 - 0.25 * pg_prng_double(&pg_global_prng_state));
}
