/*-------------------------------------------------------------------------
 *
 * batch_lines.h
 *		The JSONL lines of OpenAI's Batch API: a request line written, an
 *		output or error line read (batch_lines.c).  Pure: no I/O, no SQL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SWARM_BATCH_LINES_H
#define SWARM_BATCH_LINES_H

#include "lib/stringinfo.h"

/* The endpoint every line of a batch calls, and the batch's "endpoint". */
#define BATCH_LINE_URL "/v1/chat/completions"

/* What one line of an output or error file says. */
typedef struct BatchLine
{
	int64		request_id;		/* from its custom_id; 0: none we can read */
	bool		readable;		/* valid JSON with the fields below where expected */
	bool		answered;		/* "response" is an object: an HTTP answer came */
	long		status_code;	/* response.status_code (answered) */
	const char *body;			/* response.body as raw JSON text (answered), not NUL-terminated */
	size_t		body_len;
	char	   *error_code;		/* error.code: batch_expired, batch_cancelled, ... */
	char	   *error_message;	/* error.message, or why the line is unreadable */
} BatchLine;

extern void batch_line_write(StringInfo out, int64 request_id, const char *body, int body_len);
extern void batch_line_read(const char *line, size_t len, BatchLine *out);

#endif
