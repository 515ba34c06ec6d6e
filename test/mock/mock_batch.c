/*
 * mock_batch.c
 *	  OpenAI's Files and Batch APIs for mock_llm: upload a JSONL file of chat
 *	  requests, run it as a batch, read its output and error files.
 *
 * Endpoints (docs/mock.md, "Batch API"):
 *	 POST   /v1/files               multipart/form-data upload, purpose=batch
 *	 GET    /v1/files               list (optional ?purpose=)
 *	 GET    /v1/files/{id}          the File object
 *	 GET    /v1/files/{id}/content  the file's bytes
 *	 DELETE /v1/files/{id}
 *	 POST   /v1/batches             create a batch from an uploaded file
 *	 GET    /v1/batches             list, newest first (?limit=, ?after=)
 *	 GET    /v1/batches/{id}
 *	 POST   /v1/batches/{id}/cancel
 *
 * The store.  Files and batches live in memory, in two lists (newest
 * first) behind one mutex, store_lock, shared by all worker threads.  A file
 * is reference-counted: the list holds one reference, a batch that still has
 * lines to answer holds another, so deleting an input file while its batch
 * runs is safe.  Nothing is ever written to disk, and nothing is forgotten
 * until the process ends (a file is forgotten when deleted).
 *
 * Validation.  POST /v1/batches checks the request at once (400/404), then
 * checks every line of the input file (outside the lock; the file cannot
 * change): a JSON object with a string custom_id, unique in the file,
 * method POST, url the batch's endpoint, an object body, the same
 * body.model on every line.  The verdict is only shown when the validating
 * time is over: the batch then becomes "failed" with the errors (line
 * numbers from 1), or "in_progress".
 *
 * The state machine runs on wall-clock time, without threads or timers:
 * every request that reads a batch first calls batch_advance(), which moves
 * it through the states whose time has come and answers the lines that have
 * become due.  With V, P, F the --batch-validating-ms, --batch-processing-ms
 * and --batch-finalizing-ms, and t0 the creation:
 *
 *	 validating  t0 .. t0+V          then failed, or in_progress
 *	 in_progress t0+V .. t0+V+P      line k (of n) is answered at t0+V+P*(k+1)/n
 *	 finalizing  t0+V+P .. t0+V+P+F  then completed, the files are made
 *	 expired     at t0+V+P with --batch-expire: only n/2 lines were due by then
 *	 cancelling  from a cancel .. +F then cancelled
 *
 * The timestamps a batch shows are those of these instants, whenever it is
 * read.  Lines left unanswered by an expiry or a cancel go to the error file
 * with code batch_expired or batch_cancelled.
 *
 * A line's answer is what POST /v1/chat/completions answers for its body
 * (chat_batch_answer() in mock_chat.c: same content, same directives), or,
 * for the --batch-fail-share of lines chosen by the hash of their
 * custom_id, a 500.  A 2xx answer goes to the output file, any other to the
 * error file.  The answering happens under store_lock, with one scratch
 * reply that the lock protects.
 *
 * Answers in flight.  With --batch-api-delay-ms N, the answers to POST
 * /v1/files, POST /v1/batches and GET /v1/files/{id}/content (errors
 * included) leave N ms after the call has acted: the file is stored, the
 * batch created (its clock started) at once, and the reply waits on the
 * worker's timer heap like a chat reply's latency, so a test can kill the
 * client while the provider has acted and the client has not heard.  Every
 * other answer here is immediate.
 */
#define _GNU_SOURCE				/* memmem */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "mock.h"

/* OpenAI's limits on a batch input file. */
#define BATCH_MAX_FILE_BYTES	(200u * 1024 * 1024)
#define BATCH_MAX_LINES			50000
/* Validation errors a failed batch lists, at most. */
#define BATCH_MAX_ERRORS		100
/* The only completion window, and what expires_at is counted with. */
#define BATCH_WINDOW_S			(24 * 3600)
/* Batches and files listed per page by default, and at most. */
#define LIST_DEFAULT			20
#define LIST_MAX				100
/* Longest multipart boundary accepted (RFC 2046 says 70). */
#define MAX_BOUNDARY			200

typedef struct MockFile
{
	struct MockFile *next;		/* in the store's list, newest first */
	char		id[32];
	MockBuf		filename;		/* raw bytes as uploaded, escaped on output */
	const char *purpose;		/* "batch" or "batch_output" */
	int64_t		created_at;		/* Unix seconds */
	MockBuf		data;
	int			refs;			/* the list's, plus each running batch's */
} MockFile;

typedef enum BatchStatus
{
	BATCH_VALIDATING,
	BATCH_FAILED,
	BATCH_IN_PROGRESS,
	BATCH_FINALIZING,
	BATCH_COMPLETED,
	BATCH_EXPIRED,
	BATCH_CANCELLING,
	BATCH_CANCELLED
} BatchStatus;

static const char *const status_names[] = {
	"validating", "failed", "in_progress", "finalizing", "completed", "expired",
	"cancelling", "cancelled"
};

/* One request of a batch; both spans point into the input file's bytes. */
typedef struct BatchLine
{
	MockSpan	custom_id;		/* raw bytes between the quotes */
	MockSpan	body;			/* the raw JSON object */
} BatchLine;

typedef struct MockBatch
{
	struct MockBatch *next;		/* in the store's list, newest first */
	char		id[32];
	char		input_file_id[32];
	MockFile   *input;			/* referenced until the batch ends */
	MockBuf		metadata;		/* raw JSON object; empty: null */
	BatchStatus status;
	bool		valid;			/* the verdict validation will show */
	MockBuf		errors;			/* validation errors: JSON objects, comma-separated */
	BatchLine  *lines;			/* NULL once the batch has ended */
	uint32_t	total;
	uint32_t	due_total;		/* lines answered by the end of processing */
	uint32_t	answered;		/* lines answered so far, in file order */
	uint32_t	completed;
	uint32_t	failed;
	MockBuf		output;			/* output file being written */
	MockBuf		error_lines;	/* error file being written */
	char		output_file_id[32];
	char		error_file_id[32];
	uint64_t	created_ns;		/* CLOCK_MONOTONIC */
	int64_t		created_ms;		/* Unix milliseconds */
	uint64_t	cancel_ns;		/* when cancel was asked (monotonic) */
	int64_t		in_progress_at; /* Unix seconds; 0: null */
	int64_t		finalizing_at;
	int64_t		completed_at;
	int64_t		failed_at;
	int64_t		expired_at;
	int64_t		cancelling_at;
	int64_t		cancelled_at;
} MockBatch;

static pthread_mutex_t store_lock = PTHREAD_MUTEX_INITIALIZER;
static MockFile *files;
static MockBatch *batches;
static uint64_t serial;			/* ids: one counter for files and batches */
static uint64_t id_salt;
static MockReply line_reply;	/* scratch for answering lines */


/* ---- small helpers ---- */

static bool
span_is(MockSpan span, const char *text)
{
	return span.len == strlen(text) && memcmp(span.ptr, text, span.len) == 0;
}

/* If SPAN starts with PREFIX, *rest gets what follows. */
static bool
span_after(MockSpan span, const char *prefix, MockSpan *rest)
{
	size_t		len = strlen(prefix);

	if (span.len < len || memcmp(span.ptr, prefix, len) != 0)
		return false;
	rest->ptr = span.ptr + len;
	rest->len = span.len - len;
	return true;
}

static bool
span_equal(MockSpan a, MockSpan b)
{
	return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* A JSON value (already validated) that is a string: *inside gets its raw bytes. */
static bool
json_value_string(MockSpan value, MockSpan *inside)
{
	if (value.len < 2 || value.ptr[0] != '"')
		return false;
	inside->ptr = value.ptr + 1;
	inside->len = value.len - 2;
	return true;
}

static uint64_t
ms_to_ns(int ms)
{
	return (uint64_t) ms * 1000000;
}

static int64_t
unix_ms_now(void)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	return (int64_t) now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The Unix second of the monotonic instant AT_NS, counted from BATCH's creation. */
static int64_t
batch_unix(const MockBatch *batch, uint64_t at_ns)
{
	return (batch->created_ms + (int64_t) ((at_ns - batch->created_ns) / 1000000)) / 1000;
}

/*
 * A new id: PREFIX and 24 hex digits, the first 8 a serial number (ids sort
 * by creation), the rest a hash that differs from run to run.  Caller holds
 * store_lock.
 */
static void
make_id(char *out, size_t size, const char *prefix)
{
	uint64_t	key[2];

	if (id_salt == 0)
		id_salt = (uint64_t) unix_ms_now() ^ ((uint64_t) getpid() << 32);
	key[0] = ++serial;
	key[1] = id_salt;
	snprintf(out, size, "%s%08llx%016llx", prefix, (unsigned long long) (serial & 0xffffffff),
			 (unsigned long long) mock_hash_bytes(key, sizeof(key)));
}

/*
 * DIGITS (at most 32) hex digits from a hash of (BATCH_ID, INDEX, KIND): the
 * ids of a batch's line INDEX, one KIND per id.
 */
static void
append_hex_id(MockBuf *out, const char *batch_id, uint32_t index, uint64_t kind, int digits)
{
	char		text[40];
	uint64_t	key[4];
	uint64_t	first;
	uint64_t	second;

	key[0] = mock_hash_bytes(batch_id, strlen(batch_id));
	key[1] = index;
	key[2] = kind;
	key[3] = 1;
	first = mock_hash_bytes(key, sizeof(key));
	key[3] = 2;
	second = mock_hash_bytes(key, sizeof(key));
	snprintf(text, sizeof(text), "%016llx%016llx",
			 (unsigned long long) first, (unsigned long long) second);
	buf_append(out, text, (size_t) digits);
}

/*
 * An OpenAI error: {"error":{"message","type","param","code"}}.  The
 * message is formatted and JSON-escaped here; PARAM and CODE (NULL: null)
 * must be JSON-safe.
 */
static void
batch_error(MockReply *reply, int status, const char *param, const char *code,
			const char *fmt,...) __attribute__((format(printf, 5, 6)));

static void
batch_error(MockReply *reply, int status, const char *param, const char *code,
			const char *fmt,...)
{
	char		message[512];
	va_list		args;
	MockBuf    *out = &reply->body;

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);
	reply->status = status;
	reply->content_type = "application/json";
	out->len = 0;
	buf_append_str(out, "{\"error\":{\"message\":\"");
	buf_append_json_escaped(out, message, strlen(message));
	buf_append_str(out, "\",\"type\":\"invalid_request_error\",\"param\":");
	if (param != NULL)
	{
		buf_append(out, "\"", 1);
		buf_append_str(out, param);
		buf_append(out, "\"", 1);
	}
	else
		buf_append_str(out, "null");
	buf_append_str(out, ",\"code\":");
	if (code != NULL)
	{
		buf_append(out, "\"", 1);
		buf_append_str(out, code);
		buf_append(out, "\"", 1);
	}
	else
		buf_append_str(out, "null");
	buf_append_str(out, "}}");
}

/* An id from a path, for messages: at most 64 bytes of it. */
static int
id_shown(MockSpan id)
{
	return id.len > 64 ? 64 : (int) id.len;
}

/*
 * The value of NAME in a query string ("a=1&b=2"), raw (no %-decoding:
 * the values we read are ids and numbers).
 */
static bool
query_param(MockSpan query, const char *name, MockSpan *value)
{
	size_t		name_len = strlen(name);
	size_t		at = 0;

	while (at < query.len)
	{
		size_t		end = at;

		while (end < query.len && query.ptr[end] != '&')
			end++;
		if (end - at > name_len && memcmp(query.ptr + at, name, name_len) == 0 &&
			query.ptr[at + name_len] == '=')
		{
			value->ptr = query.ptr + at + name_len + 1;
			value->len = end - at - name_len - 1;
			return true;
		}
		at = end + 1;
	}
	return false;
}


/* ---- JSON pieces ---- */

/* ,"KEY":VALUE, or ,"KEY":null when VALUE is 0 (not happened). */
static void
append_timestamp(MockBuf *out, const char *key, int64_t value)
{
	buf_append_str(out, ",\"");
	buf_append_str(out, key);
	buf_append_str(out, "\":");
	if (value != 0)
		buf_append_i64(out, value);
	else
		buf_append_str(out, "null");
}

/* ,"KEY":"ID", or ,"KEY":null when ID is "". */
static void
append_id_or_null(MockBuf *out, const char *key, const char *id)
{
	buf_append_str(out, ",\"");
	buf_append_str(out, key);
	buf_append_str(out, "\":");
	if (id[0])
	{
		buf_append(out, "\"", 1);
		buf_append_str(out, id);
		buf_append(out, "\"", 1);
	}
	else
		buf_append_str(out, "null");
}

/* The end of a list object: ],"first_id","last_id","has_more"}. */
static void
append_list_end(MockBuf *out, const char *first_id, const char *last_id, bool has_more)
{
	buf_append_str(out, "]");
	append_id_or_null(out, "first_id", first_id);
	append_id_or_null(out, "last_id", last_id);
	buf_append_str(out, has_more ? ",\"has_more\":true}" : ",\"has_more\":false}");
}


/* ---- files ---- */

/* Drop one reference to FILE; the last one frees it. Caller holds store_lock. */
static void
file_release(MockFile *file)
{
	if (--file->refs > 0)
		return;
	buf_free(&file->data);
	buf_free(&file->filename);
	free(file);
}

/*
 * Add a file holding DATA (taken over) to the store.  Caller holds
 * store_lock.
 */
static MockFile *
file_add(const char *filename, size_t filename_len, const char *purpose, MockBuf *data,
		 int64_t created_at)
{
	MockFile   *file = calloc(1, sizeof(MockFile));

	if (file == NULL)
		abort();
	make_id(file->id, sizeof(file->id), "file-");
	buf_append(&file->filename, filename, filename_len);
	file->purpose = purpose;
	file->created_at = created_at;
	file->data = *data;
	*data = (MockBuf) {0};
	file->refs = 1;
	file->next = files;
	files = file;
	return file;
}

/* The listed file called ID, or NULL.  Caller holds store_lock. */
static MockFile *
file_find(MockSpan id)
{
	for (MockFile *file = files; file != NULL; file = file->next)
		if (span_is(id, file->id))
			return file;
	return NULL;
}

static void
append_file_json(MockBuf *out, const MockFile *file)
{
	buf_append_str(out, "{\"id\":\"");
	buf_append_str(out, file->id);
	buf_append_str(out, "\",\"object\":\"file\",\"bytes\":");
	buf_append_u64(out, file->data.len);
	buf_append_str(out, ",\"created_at\":");
	buf_append_i64(out, file->created_at);
	buf_append_str(out, ",\"filename\":\"");
	buf_append_json_escaped(out, file->filename.data, file->filename.len);
	buf_append_str(out, "\",\"purpose\":\"");
	buf_append_str(out, file->purpose);
	buf_append_str(out, "\",\"status\":\"processed\",\"expires_at\":null,\"status_details\":null}");
}

static void
reply_file_not_found(MockReply *reply, MockSpan id)
{
	batch_error(reply, 404, "file_id", NULL, "No file with id '%.*s' exists.",
				id_shown(id), id.ptr);
}


/* ---- multipart/form-data ---- */

/* The parts of an upload we use. */
typedef struct UploadForm
{
	bool		has_purpose;
	MockSpan	purpose;
	bool		has_file;
	MockSpan	file;
	MockSpan	filename;
} UploadForm;

/*
 * Find parameter NAME in a header value's "; name=value" list starting at
 * AT; the value may be a quoted string (its quotes are dropped, its
 * backslashes kept).
 */
static bool
header_param(const char *at, const char *end, const char *name, MockSpan *value)
{
	size_t		name_len = strlen(name);

	while (at < end)
	{
		const char *key;
		size_t		key_len;

		while (at < end && (*at == ';' || *at == ' ' || *at == '\t'))
			at++;
		key = at;
		while (at < end && *at != '=' && *at != ';')
			at++;
		key_len = (size_t) (at - key);
		while (key_len > 0 && (key[key_len - 1] == ' ' || key[key_len - 1] == '\t'))
			key_len--;
		if (at >= end || *at != '=')
			continue;
		at++;
		while (at < end && (*at == ' ' || *at == '\t'))
			at++;
		value->ptr = at;
		if (at < end && *at == '"')
		{
			value->ptr = ++at;
			while (at < end && *at != '"')
				at += (*at == '\\' && at + 1 < end) ? 2 : 1;
			value->len = (size_t) (at - value->ptr);
			if (at < end)
				at++;
		}
		else
		{
			while (at < end && *at != ';' && *at != ' ' && *at != '\t')
				at++;
			value->len = (size_t) (at - value->ptr);
		}
		if (key_len == name_len && strncasecmp(key, name, name_len) == 0)
			return true;
	}
	return false;
}

/* Does the line (LEN bytes) start with WORD, case-insensitively? */
static bool
starts_nocase(const char *line, size_t len, const char *word)
{
	size_t		word_len = strlen(word);

	return len >= word_len && strncasecmp(line, word, word_len) == 0;
}

/*
 * Read the headers of one part, from AT to the blank line; *name and
 * *filename get Content-Disposition's parameters.  Returns the first byte
 * of the content, or NULL if the headers do not end.
 */
static const char *
part_headers(const char *at, const char *end, MockSpan *name, bool *has_name,
			 MockSpan *filename)
{
	*has_name = false;
	filename->ptr = "";
	filename->len = 0;
	for (;;)
	{
		const char *newline = memchr(at, '\n', (size_t) (end - at));
		const char *line = at;
		size_t		len;

		if (newline == NULL)
			return NULL;
		len = (size_t) (newline - line);
		if (len > 0 && line[len - 1] == '\r')
			len--;
		at = newline + 1;
		if (len == 0)
			return at;
		if (starts_nocase(line, len, "content-disposition:"))
		{
			const char *value = line + strlen("content-disposition:");

			*has_name = header_param(value, line + len, "name", name);
			header_param(value, line + len, "filename", filename);
		}
	}
}

/*
 * Take the "purpose" and "file" parts from a multipart/form-data body.
 * Parts end at CRLF (or LF) "--" boundary; other parts are skipped.
 * Returns NULL, or what is wrong (for a 400).
 */
static const char *
multipart_parse(const MockRequest *request, UploadForm *form)
{
	const char *ct = request->content_type.ptr;
	size_t		ct_len = request->content_type.len;
	const char *body = request->body;
	const char *end = request->body + request->body_len;
	MockSpan	boundary;
	char		delimiter[MAX_BOUNDARY + 4];
	size_t		delimiter_len;
	const char *at;

	memset(form, 0, sizeof(*form));
	if (!starts_nocase(ct, ct_len, "multipart/form-data") ||
		!header_param(ct + strlen("multipart/form-data"), ct + ct_len, "boundary", &boundary))
		return "Uploads must be multipart/form-data with a boundary "
			"(Content-Type: multipart/form-data; boundary=...).";
	if (boundary.len == 0 || boundary.len > MAX_BOUNDARY)
		return "The multipart boundary must be 1 to 200 characters.";

	/* "\n--BOUNDARY" ends a part; the first one may start the body */
	delimiter_len = boundary.len + 3;
	delimiter[0] = '\n';
	delimiter[1] = delimiter[2] = '-';
	memcpy(delimiter + 3, boundary.ptr, boundary.len);
	if (request->body_len >= delimiter_len - 1 &&
		memcmp(body, delimiter + 1, delimiter_len - 1) == 0)
		at = body + delimiter_len - 1;
	else
	{
		at = memmem(body, request->body_len, delimiter, delimiter_len);
		if (at == NULL)
			return "The multipart body does not contain its boundary.";
		at += delimiter_len;
	}

	for (;;)
	{
		const char *newline;
		const char *content;
		const char *close;
		MockSpan	name;
		MockSpan	filename;
		bool		has_name;
		size_t		content_len;

		if (end - at >= 2 && at[0] == '-' && at[1] == '-')
			return NULL;		/* the close delimiter */
		newline = memchr(at, '\n', (size_t) (end - at));
		if (newline == NULL)
			return "The multipart body ends without its closing boundary.";
		content = part_headers(newline + 1, end, &name, &has_name, &filename);
		if (content == NULL)
			return "A multipart part's headers do not end with a blank line.";
		close = memmem(content, (size_t) (end - content), delimiter, delimiter_len);
		if (close == NULL)
			return "The multipart body ends without its closing boundary.";
		content_len = (size_t) (close - content);
		if (content_len > 0 && content[content_len - 1] == '\r')
			content_len--;
		if (has_name && span_is(name, "purpose"))
		{
			form->has_purpose = true;
			form->purpose = (MockSpan) {content, content_len};
		}
		else if (has_name && span_is(name, "file"))
		{
			form->has_file = true;
			form->file = (MockSpan) {content, content_len};
			form->filename = filename;
		}
		at = close + delimiter_len;
	}
}

/* Lines of DATA that are not blank. */
static size_t
count_lines(const char *data, size_t len)
{
	size_t		lines = 0;
	const char *at = data;
	const char *end = data + len;

	while (at < end)
	{
		const char *newline = memchr(at, '\n', (size_t) (end - at));
		const char *stop = newline ? newline : end;

		for (const char *ch = at; ch < stop; ch++)
			if (*ch != ' ' && *ch != '\t' && *ch != '\r')
			{
				lines++;
				break;
			}
		at = stop + 1;
	}
	return lines;
}

/* POST /v1/files */
static void
files_upload(const MockRequest *request, MockReply *reply)
{
	UploadForm	form;
	const char *problem = multipart_parse(request, &form);
	size_t		lines;
	MockBuf		data = {0};
	MockFile   *file;

	if (problem != NULL)
	{
		batch_error(reply, 400, NULL, NULL, "%s", problem);
		return;
	}
	if (!form.has_purpose)
	{
		batch_error(reply, 400, "purpose", NULL, "Missing required parameter: 'purpose'.");
		return;
	}
	if (!span_is(form.purpose, "batch"))
	{
		batch_error(reply, 400, "purpose", NULL,
					"Invalid value for 'purpose': mock_llm accepts only 'batch'.");
		return;
	}
	if (!form.has_file)
	{
		batch_error(reply, 400, "file", NULL, "Missing required parameter: 'file'.");
		return;
	}
	if (form.file.len > BATCH_MAX_FILE_BYTES)
	{
		batch_error(reply, 400, "file", NULL,
					"The file is %zu bytes; a batch input file may be at most %u bytes (200 MB).",
					form.file.len, BATCH_MAX_FILE_BYTES);
		return;
	}
	lines = count_lines(form.file.ptr, form.file.len);
	if (lines == 0)
	{
		batch_error(reply, 400, "file", NULL,
					"The file is empty: a batch input file needs at least one request.");
		return;
	}
	if (lines > BATCH_MAX_LINES)
	{
		batch_error(reply, 400, "file", NULL,
					"The file has %zu requests; a batch input file may have at most %d.",
					lines, BATCH_MAX_LINES);
		return;
	}

	buf_append(&data, form.file.ptr, form.file.len);	/* outside the lock */
	pthread_mutex_lock(&store_lock);
	file = file_add(form.filename.ptr, form.filename.len, "batch", &data, unix_ms_now() / 1000);
	append_file_json(&reply->body, file);
	pthread_mutex_unlock(&store_lock);
	stats_count_file_uploaded();
}

/* GET /v1/files[?purpose=P]: every file, newest first, in one page. */
static void
files_list(const MockRequest *request, MockReply *reply)
{
	MockSpan	purpose;
	bool		filter = query_param(request->query, "purpose", &purpose);
	const char *first_id = "";
	const char *last_id = "";

	pthread_mutex_lock(&store_lock);
	buf_append_str(&reply->body, "{\"object\":\"list\",\"data\":[");
	for (MockFile *file = files; file != NULL; file = file->next)
	{
		if (filter && !span_is(purpose, file->purpose))
			continue;
		if (first_id[0])
			buf_append(&reply->body, ",", 1);
		else
			first_id = file->id;
		append_file_json(&reply->body, file);
		last_id = file->id;
	}
	append_list_end(&reply->body, first_id, last_id, false);
	pthread_mutex_unlock(&store_lock);
}

/* GET, DELETE /v1/files/{id}; GET /v1/files/{id}/content */
static void
files_one(const MockRequest *request, MockReply *reply, MockSpan id, bool content)
{
	MockFile   *file;

	pthread_mutex_lock(&store_lock);
	file = file_find(id);
	if (file == NULL)
		reply_file_not_found(reply, id);
	else if (content)
	{
		reply->content_type = "application/octet-stream";
		buf_append(&reply->body, file->data.data, file->data.len);
	}
	else if (span_is(request->method, "DELETE"))
	{
		MockFile  **link = &files;

		while (*link != file)
			link = &(*link)->next;
		*link = file->next;
		buf_append_str(&reply->body, "{\"id\":\"");
		buf_append_str(&reply->body, file->id);
		buf_append_str(&reply->body, "\",\"object\":\"file\",\"deleted\":true}");
		file_release(file);
	}
	else
		append_file_json(&reply->body, file);
	pthread_mutex_unlock(&store_lock);
}


/* ---- validating a batch's input ---- */

/* The top-level members of one input line. */
typedef struct LineMembers
{
	bool		has_custom_id;
	MockSpan	custom_id;		/* the raw value */
	bool		has_method;
	MockSpan	method;
	bool		has_url;
	MockSpan	url;
	bool		has_body;
	MockSpan	body;
} LineMembers;

static bool
line_member(MockSpan key, MockSpan value, void *state)
{
	LineMembers *line = state;

	if (span_is(key, "custom_id"))
	{
		line->has_custom_id = true;
		line->custom_id = value;
	}
	else if (span_is(key, "method"))
	{
		line->has_method = true;
		line->method = value;
	}
	else if (span_is(key, "url"))
	{
		line->has_url = true;
		line->url = value;
	}
	else if (span_is(key, "body"))
	{
		line->has_body = true;
		line->body = value;
	}
	return true;
}

static bool
body_model_member(MockSpan key, MockSpan value, void *state)
{
	if (span_is(key, "model"))
		*(MockSpan *) state = value;
	return true;
}

/* What validation builds: the lines, and the errors as JSON objects. */
typedef struct Validation
{
	BatchLine  *lines;
	uint32_t	count;
	MockBuf		errors;
	uint32_t	error_count;
	uint32_t   *seen;			/* custom_id hash table: line index + 1, 0 = empty */
	size_t		seen_mask;
	bool		has_model;
	MockSpan	model;			/* body.model of the first line that has one */
} Validation;

static void
validation_error(Validation *check, size_t line_number, const char *code,
				 const char *param, const char *message)
{
	if (check->error_count++ >= BATCH_MAX_ERRORS)
		return;
	if (check->errors.len > 0)
		buf_append(&check->errors, ",", 1);
	buf_append_str(&check->errors, "{\"code\":\"");
	buf_append_str(&check->errors, code);
	buf_append_str(&check->errors, "\",\"message\":\"");
	buf_append_str(&check->errors, message);
	buf_append_str(&check->errors, "\",\"param\":");
	if (param != NULL)
	{
		buf_append(&check->errors, "\"", 1);
		buf_append_str(&check->errors, param);
		buf_append(&check->errors, "\"", 1);
	}
	else
		buf_append_str(&check->errors, "null");
	buf_append_str(&check->errors, ",\"line\":");
	buf_append_u64(&check->errors, line_number);
	buf_append(&check->errors, "}", 1);
}

/* Record CUSTOM_ID as line INDEX; false if an earlier line has it. */
static bool
custom_id_unique(Validation *check, MockSpan custom_id, uint32_t index)
{
	size_t		slot = (size_t) mock_hash_bytes(custom_id.ptr, custom_id.len) & check->seen_mask;

	while (check->seen[slot] != 0)
	{
		if (span_equal(check->lines[check->seen[slot] - 1].custom_id, custom_id))
			return false;
		slot = (slot + 1) & check->seen_mask;
	}
	check->seen[slot] = index + 1;
	return true;
}

/* Check one non-blank line (LINE_NUMBER from 1); keep it if it is good. */
static void
validate_line(Validation *check, const char *text, size_t len, size_t line_number,
			  MockSpan endpoint)
{
	LineMembers line = {0};
	MockSpan	custom_id;
	MockSpan	url;
	MockSpan	model = {NULL, 0};
	BatchLine  *kept = &check->lines[check->count];

	if (!mock_json_members(text, len, line_member, &line))
	{
		validation_error(check, line_number, "invalid_json_line", NULL,
						 "This line is not a valid JSON object.");
		return;
	}
	if (!line.has_custom_id || !json_value_string(line.custom_id, &custom_id))
	{
		validation_error(check, line_number, "missing_required_parameter", "custom_id",
						 "The line has no string 'custom_id'.");
		return;
	}
	if (!line.has_method || !span_is(line.method, "\"POST\""))
	{
		validation_error(check, line_number, "invalid_method", "method",
						 "The line's 'method' must be \\\"POST\\\".");
		return;
	}
	if (!line.has_url || !json_value_string(line.url, &url) || !span_equal(url, endpoint))
	{
		validation_error(check, line_number, "invalid_url", "url",
						 "The line's 'url' must be the batch's endpoint, /v1/chat/completions.");
		return;
	}
	if (!line.has_body || line.body.ptr[0] != '{')
	{
		validation_error(check, line_number, "missing_required_parameter", "body",
						 "The line has no 'body' object.");
		return;
	}
	mock_json_members(line.body.ptr, line.body.len, body_model_member, &model);
	if (model.ptr != NULL)
	{
		if (!check->has_model)
		{
			check->has_model = true;
			check->model = model;
		}
		else if (!span_equal(model, check->model))
		{
			validation_error(check, line_number, "mismatched_model", "body.model",
							 "Every line of a batch must ask for the same model.");
			return;
		}
	}
	kept->custom_id = custom_id;
	kept->body = line.body;
	if (!custom_id_unique(check, custom_id, check->count))
	{
		validation_error(check, line_number, "duplicate_custom_id", "custom_id",
						 "Another line of the file has the same 'custom_id'.");
		return;
	}
	check->count++;
}

/*
 * Validate every line of DATA for ENDPOINT.  Returns the error count; the
 * good lines are in check->lines (the caller frees it and check->errors).
 */
static uint32_t
validate_input(Validation *check, const MockBuf *data, MockSpan endpoint)
{
	size_t		lines = count_lines(data->data, data->len);
	size_t		capacity = 16;
	const char *at = data->data;
	const char *end = data->data + data->len;
	size_t		line_number = 0;

	memset(check, 0, sizeof(*check));
	while (capacity < 2 * lines)
		capacity *= 2;
	check->lines = calloc(lines + 1, sizeof(BatchLine));
	check->seen = calloc(capacity, sizeof(uint32_t));
	if (check->lines == NULL || check->seen == NULL)
		abort();
	check->seen_mask = capacity - 1;

	while (at < end)
	{
		const char *newline = memchr(at, '\n', (size_t) (end - at));
		const char *stop = newline ? newline : end;
		size_t		len = (size_t) (stop - at);

		line_number++;
		if (count_lines(at, len) > 0)
			validate_line(check, at, len, line_number, endpoint);
		at = stop + 1;
	}
	free(check->seen);
	check->seen = NULL;
	return check->error_count;
}


/* ---- answering lines ---- */

/* Is this line one of the --batch-fail-share, by the hash of its custom_id? */
static bool
fail_share_hits(MockSpan custom_id)
{
	uint64_t	hash;

	if (mock_config.batch_fail_share <= 0)
		return false;
	hash = mock_hash_bytes(custom_id.ptr, custom_id.len);
	return (double) (hash >> 11) * (1.0 / 9007199254740992.0) < mock_config.batch_fail_share;
}

/* The start of an output or error line: id and custom_id. */
static void
append_line_head(MockBuf *out, const MockBatch *batch, uint32_t index)
{
	buf_append_str(out, "{\"id\":\"batch_req_");
	append_hex_id(out, batch->id, index, 1, 24);
	buf_append_str(out, "\",\"custom_id\":\"");
	buf_append(out, batch->lines[index].custom_id.ptr, batch->lines[index].custom_id.len);
	buf_append_str(out, "\",");
}

/* A line that got an HTTP answer: status and body from REPLY. */
static void
append_line_response(MockBuf *out, const MockBatch *batch, uint32_t index,
					 const MockReply *reply)
{
	append_line_head(out, batch, index);
	buf_append_str(out, "\"response\":{\"status_code\":");
	buf_append_u64(out, (uint64_t) reply->status);
	buf_append_str(out, ",\"request_id\":\"req_");
	append_hex_id(out, batch->id, index, 2, 32);
	buf_append_str(out, "\",\"body\":");
	buf_append(out, reply->body.data, reply->body.len);
	buf_append_str(out, "},\"error\":null}\n");
}

/* A line that got no HTTP answer: response null, an error CODE and MESSAGE. */
static void
append_line_error(MockBuf *out, const MockBatch *batch, uint32_t index,
				  const char *code, const char *message)
{
	append_line_head(out, batch, index);
	buf_append_str(out, "\"response\":null,\"error\":{\"code\":\"");
	buf_append_str(out, code);
	buf_append_str(out, "\",\"message\":\"");
	buf_append_str(out, message);
	buf_append_str(out, "\"}}\n");
}

/* Answer the next line of BATCH.  Caller holds store_lock. */
static void
answer_next_line(MockBatch *batch)
{
	uint32_t	index = batch->answered++;
	BatchLine  *line = &batch->lines[index];
	MockReply  *reply = &line_reply;
	MockLineOutcome outcome = LINE_HTTP;
	bool		failed;

	reply_clear(reply);
	if (fail_share_hits(line->custom_id))
		reply_openai_error(reply, 500, "mock error 500 (mock_llm --batch-fail-share)",
						   "server_error", NULL);
	else
		outcome = chat_batch_answer(line->body.ptr, line->body.len, reply);

	if (outcome == LINE_TIMEOUT)
	{
		failed = true;
		append_line_error(&batch->error_lines, batch, index, "request_timeout",
						  "The request to the model timed out (mock_llm: hang).");
	}
	else
	{
		failed = reply->status < 200 || reply->status >= 300;
		append_line_response(failed ? &batch->error_lines : &batch->output, batch, index, reply);
	}
	if (failed)
		batch->failed++;
	else
		batch->completed++;
	stats_count_batch_line(failed);
}

/* Answer the lines of BATCH due by NOW_NS (see the state machine above). */
static void
answer_due_lines(MockBatch *batch, uint64_t now_ns)
{
	uint64_t	start = batch->created_ns + ms_to_ns(mock_config.batch_validating_ms);
	uint64_t	span = ms_to_ns(mock_config.batch_processing_ms);
	uint32_t	due;

	if (now_ns >= start + span)
		due = batch->due_total;
	else if (now_ns <= start)
		due = 0;
	else
		due = (uint32_t) ((uint64_t) batch->due_total * (now_ns - start) / span);
	while (batch->answered < due)
		answer_next_line(batch);
}

/* Turn a finished batch's output or error lines into a file. */
static void
batch_make_file(MockBatch *batch, MockBuf *lines, const char *suffix, char *id_out,
				int64_t created_at)
{
	char		filename[64];
	MockFile   *file;

	if (lines->len == 0)
		return;
	snprintf(filename, sizeof(filename), "%s_%s.jsonl", batch->id, suffix);
	file = file_add(filename, strlen(filename), "batch_output", lines, created_at);
	strcpy(id_out, file->id);
}

/*
 * End BATCH in STATUS at AT_NS: the lines not answered go to the error file
 * with CODE and MESSAGE (CODE NULL: they are answered now), the output and
 * error files are made, the input is let go.  Caller holds store_lock.
 */
static void
batch_end(MockBatch *batch, BatchStatus status, uint64_t at_ns, const char *code,
		  const char *message)
{
	int64_t		at = batch_unix(batch, at_ns);

	while (code == NULL && batch->answered < batch->total)
		answer_next_line(batch);	/* completed: every line has its answer */
	for (uint32_t index = batch->answered; index < batch->total; index++)
	{
		append_line_error(&batch->error_lines, batch, index, code, message);
		batch->failed++;
	}
	batch->answered = batch->total;
	batch_make_file(batch, &batch->output, "output", batch->output_file_id, at);
	batch_make_file(batch, &batch->error_lines, "error", batch->error_file_id, at);
	buf_free(&batch->output);
	buf_free(&batch->error_lines);
	free(batch->lines);
	batch->lines = NULL;
	if (batch->input != NULL)
		file_release(batch->input);
	batch->input = NULL;
	batch->status = status;
	if (status == BATCH_COMPLETED)
		batch->completed_at = at;
	else if (status == BATCH_EXPIRED)
		batch->expired_at = at;
	else if (status == BATCH_CANCELLED)
		batch->cancelled_at = at;
}

/*
 * Move BATCH through every state whose time has come by NOW_NS, answering
 * the lines that became due.  Caller holds store_lock.
 */
static void
batch_advance(MockBatch *batch, uint64_t now_ns)
{
	uint64_t	validated = batch->created_ns + ms_to_ns(mock_config.batch_validating_ms);
	uint64_t	processed = validated + ms_to_ns(mock_config.batch_processing_ms);
	uint64_t	finalized = processed + ms_to_ns(mock_config.batch_finalizing_ms);

	if (batch->status == BATCH_VALIDATING)
	{
		if (now_ns < validated)
			return;
		if (!batch->valid)
		{
			batch->status = BATCH_FAILED;
			batch->failed_at = batch_unix(batch, validated);
			free(batch->lines);
			batch->lines = NULL;
			file_release(batch->input);
			batch->input = NULL;
			return;
		}
		batch->status = BATCH_IN_PROGRESS;
		batch->in_progress_at = batch_unix(batch, validated);
	}
	if (batch->status == BATCH_IN_PROGRESS)
	{
		answer_due_lines(batch, now_ns);
		if (now_ns < processed)
			return;
		if (mock_config.batch_expire)
		{
			batch_end(batch, BATCH_EXPIRED, processed, "batch_expired",
					  "The request was not run before the batch's completion window ended.");
			return;
		}
		batch->status = BATCH_FINALIZING;
		batch->finalizing_at = batch_unix(batch, processed);
	}
	if (batch->status == BATCH_FINALIZING && now_ns >= finalized)
		batch_end(batch, BATCH_COMPLETED, finalized, NULL, NULL);
	if (batch->status == BATCH_CANCELLING &&
		now_ns >= batch->cancel_ns + ms_to_ns(mock_config.batch_finalizing_ms))
		batch_end(batch, BATCH_CANCELLED,
				  batch->cancel_ns + ms_to_ns(mock_config.batch_finalizing_ms),
				  "batch_cancelled", "The batch was cancelled before the request was run.");
}


/* ---- batches ---- */

/* The Batch object.  Caller holds store_lock. */
static void
append_batch_json(MockBuf *out, const MockBatch *batch)
{
	bool		counted = batch->status != BATCH_VALIDATING && batch->status != BATCH_FAILED;
	int64_t		created_at = batch->created_ms / 1000;

	buf_append_str(out, "{\"id\":\"");
	buf_append_str(out, batch->id);
	buf_append_str(out, "\",\"object\":\"batch\",\"endpoint\":\"/v1/chat/completions\",\"errors\":");
	if (batch->status == BATCH_FAILED)
	{
		buf_append_str(out, "{\"object\":\"list\",\"data\":[");
		buf_append(out, batch->errors.data, batch->errors.len);
		buf_append_str(out, "]}");
	}
	else
		buf_append_str(out, "null");
	buf_append_str(out, ",\"input_file_id\":\"");
	buf_append_str(out, batch->input_file_id);
	buf_append_str(out, "\",\"completion_window\":\"24h\",\"status\":\"");
	buf_append_str(out, status_names[batch->status]);
	buf_append(out, "\"", 1);
	append_id_or_null(out, "output_file_id", batch->output_file_id);
	append_id_or_null(out, "error_file_id", batch->error_file_id);
	append_timestamp(out, "created_at", created_at);
	append_timestamp(out, "in_progress_at", batch->in_progress_at);
	append_timestamp(out, "expires_at", created_at + BATCH_WINDOW_S);
	append_timestamp(out, "finalizing_at", batch->finalizing_at);
	append_timestamp(out, "completed_at", batch->completed_at);
	append_timestamp(out, "failed_at", batch->failed_at);
	append_timestamp(out, "expired_at", batch->expired_at);
	append_timestamp(out, "cancelling_at", batch->cancelling_at);
	append_timestamp(out, "cancelled_at", batch->cancelled_at);
	buf_append_str(out, ",\"request_counts\":{\"total\":");
	buf_append_u64(out, counted ? batch->total : 0);
	buf_append_str(out, ",\"completed\":");
	buf_append_u64(out, counted ? batch->completed : 0);
	buf_append_str(out, ",\"failed\":");
	buf_append_u64(out, counted ? batch->failed : 0);
	buf_append_str(out, "},\"metadata\":");
	if (batch->metadata.len > 0)
		buf_append(out, batch->metadata.data, batch->metadata.len);
	else
		buf_append_str(out, "null");
	buf_append(out, "}", 1);
}

/* The batch called ID, or NULL.  Caller holds store_lock. */
static MockBatch *
batch_find(MockSpan id)
{
	for (MockBatch *batch = batches; batch != NULL; batch = batch->next)
		if (span_is(id, batch->id))
			return batch;
	return NULL;
}

/* The body of POST /v1/batches. */
typedef struct CreateRequest
{
	MockSpan	input_file_id;
	MockSpan	endpoint;
	MockSpan	completion_window;
	MockSpan	metadata;		/* raw value; ptr NULL if absent */
	const char *problem;		/* what is wrong, for a 400 */
	const char *param;
	int			metadata_pairs;
} CreateRequest;

static bool
metadata_member(MockSpan key, MockSpan value, void *state)
{
	CreateRequest *create = state;
	MockSpan	text;

	create->metadata_pairs++;
	if (!json_value_string(value, &text) && create->problem == NULL)
	{
		create->problem = "Invalid 'metadata': every value must be a string.";
		create->param = "metadata";
	}
	else if ((key.len > 64 || text.len > 512) && create->problem == NULL)
	{
		create->problem = "Invalid 'metadata': keys may have 64 characters, values 512.";
		create->param = "metadata";
	}
	return true;
}

static bool
create_member(MockSpan key, MockSpan value, void *state)
{
	CreateRequest *create = state;
	MockSpan   *string = NULL;

	if (span_is(key, "input_file_id"))
		string = &create->input_file_id;
	else if (span_is(key, "endpoint"))
		string = &create->endpoint;
	else if (span_is(key, "completion_window"))
		string = &create->completion_window;
	else if (span_is(key, "metadata") && !span_is(value, "null"))
		create->metadata = value;
	if (string != NULL && !json_value_string(value, string) && create->problem == NULL)
	{
		create->problem = "Invalid type: expected a string.";
		create->param = span_is(key, "input_file_id") ? "input_file_id" :
			span_is(key, "endpoint") ? "endpoint" : "completion_window";
	}
	return true;
}

/* Check the body of POST /v1/batches; false with a 400 in REPLY. */
static bool
create_parse(const MockRequest *request, MockReply *reply, CreateRequest *create)
{
	memset(create, 0, sizeof(*create));
	if (!mock_json_members(request->body, request->body_len, create_member, create))
	{
		batch_error(reply, 400, NULL, NULL, "The request body must be a JSON object.");
		return false;
	}
	if (create->problem == NULL && create->input_file_id.ptr == NULL)
		create->problem = "Missing required parameter: 'input_file_id'.", create->param = "input_file_id";
	else if (create->problem == NULL && create->endpoint.ptr == NULL)
		create->problem = "Missing required parameter: 'endpoint'.", create->param = "endpoint";
	else if (create->problem == NULL && !span_is(create->endpoint, "/v1/chat/completions"))
		create->problem = "Invalid 'endpoint': mock_llm runs batches of /v1/chat/completions only.",
			create->param = "endpoint";
	else if (create->problem == NULL && create->completion_window.ptr == NULL)
		create->problem = "Missing required parameter: 'completion_window'.",
			create->param = "completion_window";
	else if (create->problem == NULL && !span_is(create->completion_window, "24h"))
		create->problem = "Invalid 'completion_window': only '24h' is supported.",
			create->param = "completion_window";
	if (create->problem == NULL && create->metadata.ptr != NULL)
	{
		if (!mock_json_members(create->metadata.ptr, create->metadata.len, metadata_member, create))
			create->problem = "Invalid 'metadata': expected an object or null.", create->param = "metadata";
		else if (create->problem == NULL && create->metadata_pairs > 16)
			create->problem = "Invalid 'metadata': at most 16 pairs.", create->param = "metadata";
	}
	if (create->problem != NULL)
	{
		batch_error(reply, 400, create->param, NULL, "%s", create->problem);
		return false;
	}
	return true;
}

/* POST /v1/batches */
static void
batches_create(const MockRequest *request, MockReply *reply)
{
	CreateRequest create;
	MockFile   *input;
	MockBatch  *batch;
	Validation	check;
	MockSpan	endpoint = {"/v1/chat/completions", strlen("/v1/chat/completions")};

	if (!create_parse(request, reply, &create))
		return;

	pthread_mutex_lock(&store_lock);
	input = file_find(create.input_file_id);
	if (input != NULL && strcmp(input->purpose, "batch") != 0)
	{
		batch_error(reply, 400, "input_file_id", NULL,
					"The file '%s' was not uploaded with purpose 'batch'.", input->id);
		input = NULL;
	}
	else if (input == NULL)
		batch_error(reply, 404, "input_file_id", NULL, "No file with id '%.*s' exists.",
					id_shown(create.input_file_id), create.input_file_id.ptr);
	else
		input->refs++;			/* the batch's reference, kept until it ends */
	pthread_mutex_unlock(&store_lock);
	if (input == NULL)
		return;

	/* the file cannot change, so it is read without the lock */
	validate_input(&check, &input->data, endpoint);

	batch = calloc(1, sizeof(MockBatch));
	if (batch == NULL)
		abort();
	batch->input = input;
	batch->valid = check.error_count == 0;
	batch->errors = check.errors;
	batch->lines = check.lines;
	batch->total = batch->valid ? check.count : 0;
	batch->due_total = mock_config.batch_expire ? batch->total / 2 : batch->total;
	if (create.metadata.ptr != NULL)
		buf_append(&batch->metadata, create.metadata.ptr, create.metadata.len);
	batch->status = BATCH_VALIDATING;
	batch->created_ns = mock_monotonic_ns();
	batch->created_ms = unix_ms_now();

	pthread_mutex_lock(&store_lock);
	make_id(batch->id, sizeof(batch->id), "batch_");
	strcpy(batch->input_file_id, input->id);
	batch->next = batches;
	batches = batch;
	batch_advance(batch, batch->created_ns);
	append_batch_json(&reply->body, batch);
	pthread_mutex_unlock(&store_lock);
	stats_count_batch_created();
}

/* GET /v1/batches[?limit=N][&after=ID] */
static void
batches_list(const MockRequest *request, MockReply *reply)
{
	MockSpan	value;
	long		limit = LIST_DEFAULT;
	MockBatch  *batch;
	const char *first_id = "";
	const char *last_id = "";
	uint64_t	now = mock_monotonic_ns();
	long		listed = 0;

	if (query_param(request->query, "limit", &value))
	{
		char		text[16] = {0};
		char	   *end;

		memcpy(text, value.ptr, value.len < sizeof(text) - 1 ? value.len : sizeof(text) - 1);
		limit = strtol(text, &end, 10);
		if (value.len == 0 || value.len >= sizeof(text) || *end != '\0' ||
			limit < 1 || limit > LIST_MAX)
		{
			batch_error(reply, 400, "limit", NULL, "Invalid 'limit': expected 1 to %d.", LIST_MAX);
			return;
		}
	}

	pthread_mutex_lock(&store_lock);
	batch = batches;
	if (query_param(request->query, "after", &value))
	{
		MockBatch  *after = batch_find(value);

		if (after == NULL)
		{
			batch_error(reply, 400, "after", NULL, "Invalid 'after': no batch with id '%.*s'.",
						id_shown(value), value.ptr);
			pthread_mutex_unlock(&store_lock);
			return;
		}
		batch = after->next;
	}
	buf_append_str(&reply->body, "{\"object\":\"list\",\"data\":[");
	for (; batch != NULL && listed < limit; batch = batch->next, listed++)
	{
		batch_advance(batch, now);
		if (listed > 0)
			buf_append(&reply->body, ",", 1);
		append_batch_json(&reply->body, batch);
		if (listed == 0)
			first_id = batch->id;
		last_id = batch->id;
	}
	append_list_end(&reply->body, first_id, last_id, batch != NULL);
	pthread_mutex_unlock(&store_lock);
}

/* GET /v1/batches/{id}; POST /v1/batches/{id}/cancel */
static void
batches_one(MockReply *reply, MockSpan id, bool cancel)
{
	MockBatch  *batch;
	uint64_t	now = mock_monotonic_ns();

	pthread_mutex_lock(&store_lock);
	batch = batch_find(id);
	if (batch == NULL)
	{
		batch_error(reply, 404, "batch_id", NULL, "No batch with id '%.*s' exists.",
					id_shown(id), id.ptr);
		pthread_mutex_unlock(&store_lock);
		return;
	}
	batch_advance(batch, now);
	if (cancel)
	{
		switch (batch->status)
		{
			case BATCH_VALIDATING:
			case BATCH_IN_PROGRESS:
			case BATCH_FINALIZING:
				batch->status = BATCH_CANCELLING;
				batch->cancel_ns = now;
				batch->cancelling_at = batch_unix(batch, now);
				batch_advance(batch, now);
				break;
			case BATCH_CANCELLING:
				break;
			default:
				batch_error(reply, 400, NULL, NULL, "A batch whose status is '%s' cannot be cancelled.",
							status_names[batch->status]);
				pthread_mutex_unlock(&store_lock);
				return;
		}
	}
	append_batch_json(&reply->body, batch);
	pthread_mutex_unlock(&store_lock);
}


/* ---- dispatch ---- */

/* Split "{id}" or "{id}/REST" after a prefix; *rest is "" or "/REST". */
static void
split_id(MockSpan tail, MockSpan *id, MockSpan *rest)
{
	const char *slash = memchr(tail.ptr, '/', tail.len);

	id->ptr = tail.ptr;
	id->len = slash ? (size_t) (slash - tail.ptr) : tail.len;
	rest->ptr = tail.ptr + id->len;
	rest->len = tail.len - id->len;
}

/*
 * --batch-api-delay-ms: REPLY, already acted on, leaves N ms from now (from
 * when the route is done, not from the request's arrival).
 */
static void
delay_answer(MockReply *reply)
{
	if (mock_config.batch_api_delay_ms <= 0)
		return;
	reply->delay_us = (uint64_t) mock_config.batch_api_delay_ms * 1000;
	reply->delay_from_done = true;
}

/* /v1/files and what is under it. */
static void
files_route(const MockRequest *request, MockReply *reply, bool root, MockSpan tail)
{
	bool		is_get = span_is(request->method, "GET");
	MockSpan	id;
	MockSpan	rest;

	if (root)
	{
		if (span_is(request->method, "POST"))
		{
			files_upload(request, reply);
			delay_answer(reply);
		}
		else if (is_get)
			files_list(request, reply);
		else
			reply_method_not_allowed(reply, request, "GET, POST");
		return;
	}
	split_id(tail, &id, &rest);
	if (id.len == 0 || (rest.len > 0 && !span_is(rest, "/content")))
		reply_not_found(reply, request);
	else if (rest.len > 0)
	{
		if (is_get)
		{
			files_one(request, reply, id, true);
			delay_answer(reply);
		}
		else
			reply_method_not_allowed(reply, request, "GET");
	}
	else if (is_get || span_is(request->method, "DELETE"))
		files_one(request, reply, id, false);
	else
		reply_method_not_allowed(reply, request, "GET, DELETE");
}

/* /v1/batches and what is under it. */
static void
batches_route(const MockRequest *request, MockReply *reply, bool root, MockSpan tail)
{
	bool		is_get = span_is(request->method, "GET");
	bool		is_post = span_is(request->method, "POST");
	MockSpan	id;
	MockSpan	rest;

	if (root)
	{
		if (is_post)
		{
			batches_create(request, reply);
			delay_answer(reply);
		}
		else if (is_get)
			batches_list(request, reply);
		else
			reply_method_not_allowed(reply, request, "GET, POST");
		return;
	}
	split_id(tail, &id, &rest);
	if (id.len == 0 || (rest.len > 0 && !span_is(rest, "/cancel")))
		reply_not_found(reply, request);
	else if (rest.len > 0)
	{
		if (is_post)
			batches_one(reply, id, true);
		else
			reply_method_not_allowed(reply, request, "POST");
	}
	else if (is_get)
		batches_one(reply, id, false);
	else
		reply_method_not_allowed(reply, request, "GET");
}

/*
 * Answer REQUEST if its path is one of the Files or Batch APIs' (every
 * answer is immediate, but for the three --batch-api-delay-ms delays);
 * false if the path is not theirs.
 */
bool
batch_answer(const MockRequest *request, MockReply *reply)
{
	MockSpan	tail;

	if (span_is(request->path, "/v1/files"))
		files_route(request, reply, true, tail = (MockSpan) {"", 0});
	else if (span_after(request->path, "/v1/files/", &tail))
		files_route(request, reply, false, tail);
	else if (span_is(request->path, "/v1/batches"))
		batches_route(request, reply, true, tail = (MockSpan) {"", 0});
	else if (span_after(request->path, "/v1/batches/", &tail))
		batches_route(request, reply, false, tail);
	else
		return false;
	return true;
}
