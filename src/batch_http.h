/*-------------------------------------------------------------------------
 *
 * batch_http.h
 *		The batcher's calls to an endpoint's Files and Batch APIs: one
 *		blocking libcurl transfer each (batch_http.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_BATCH_HTTP_H
#define SWARM_BATCH_HTTP_H

#include <stdio.h>

#include "lib/stringinfo.h"

/* Where the calls go: <base_url>/files, <base_url>/batches. */
typedef struct BatchEndpoint
{
	char	   *name;
	char	   *base_url;
	char	   *model;			/* sent in place of the job's; NULL: the job's */
	char	   *api_key;		/* NULL: none */
	bool		tools;			/* structured output as tools */
} BatchEndpoint;

/* What one call came to. */
typedef struct BatchHttpResult
{
	bool		transport_ok;	/* a whole HTTP answer came back */
	long		status;			/* its status */
	StringInfoData body;		/* its body (calls that do not download to a file) */
	char		error[256];		/* transport_ok false: curl's words */
} BatchHttpResult;

extern void batch_http_init(void);
extern void batch_http_call(const BatchEndpoint *ep, const char *method, const char *path,
							const char *json_body, BatchHttpResult *res);
extern void batch_http_upload(const BatchEndpoint *ep, FILE *file, long size, const char *file_name,
							  BatchHttpResult *res);
extern void batch_http_download(const BatchEndpoint *ep, const char *file_id, FILE *to,
								BatchHttpResult *res);
extern bool batch_http_ok(const BatchHttpResult *res);
extern bool batch_http_retryable(const BatchHttpResult *res);
extern char *batch_http_describe(const BatchHttpResult *res, const char *what);

#endif
