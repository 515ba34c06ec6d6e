/*-------------------------------------------------------------------------
 *
 * batch_http.c
 *		The batcher's calls to an endpoint's Files and Batch APIs: upload a
 *		file (multipart, purpose=batch), create, read, list and cancel
 *		batches, download an output or error file.  One blocking libcurl
 *		easy transfer per call: the batcher makes a few calls a second at
 *		most, each bounded by swarm.connect_timeout and
 *		swarm.batch_transfer_timeout, and a shutdown request aborts the one
 *		in progress (its progress callback), so blocking costs nothing and
 *		keeps the chat engine's multi loop out of it.
 *
 * Uploads stream from a temporary file and downloads stream into one, so a
 * 200 MB file never sits in memory.  The same transport rules as the
 * engine's: http and https only, no redirects, certificates verified
 * (swarm.ca_file), the key only in the Authorization header.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "postmaster/interrupt.h"

#include "batch_http.h"
#include "swarm.h"

/* Most of a non-downloaded answer kept (a page of batches is far less). */
#define BATCH_HTTP_MAX_BODY (16 * 1024 * 1024)

static CURL *easy = NULL;

void
batch_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(FATAL,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("pg_swarm batcher: could not initialize libcurl")));
}

static size_t
to_buffer(char *data, size_t size, size_t nmemb, void *arg)
{
	StringInfo	buf = arg;
	size_t		n = size * nmemb;

	if ((size_t) buf->len + n > BATCH_HTTP_MAX_BODY)
		return 0;				/* curl reports a write error */
	appendBinaryStringInfo(buf, data, (int) n);
	return n;
}

static size_t
to_file(char *data, size_t size, size_t nmemb, void *arg)
{
	return fwrite(data, size, nmemb, (FILE *) arg);
}

static size_t
from_file(char *buffer, size_t size, size_t nitems, void *arg)
{
	return fread(buffer, 1, size * nitems, (FILE *) arg);
}

static int
seek_file(void *arg, curl_off_t offset, int origin)
{
	return fseeko((FILE *) arg, (off_t) offset, origin) == 0 ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_FAIL;
}

/* A shutdown request (SIGTERM) ends the transfer in progress. */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return ShutdownRequestPending ? 1 : 0;
}

/* The handle, reset to the options every call shares. */
static struct curl_slist *
prepare(const BatchEndpoint *ep, const char *path, BatchHttpResult *res, bool json)
{
	struct curl_slist *headers = NULL;
	char	   *url = psprintf("%s%s%s", ep->base_url,
							   ep->base_url[strlen(ep->base_url) - 1] == '/' ? "" : "/",
							   path[0] == '/' ? path + 1 : path);

	if (easy == NULL && (easy = curl_easy_init()) == NULL)
		elog(ERROR, "pg_swarm batcher: could not create a curl handle");
	curl_easy_reset(easy);
	memset(res->error, 0, sizeof(res->error));
	initStringInfo(&res->body);
	res->status = 0;
	res->transport_ok = false;

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, res->error);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (swarm_ca_file != NULL && swarm_ca_file[0] != '\0')
		curl_easy_setopt(easy, CURLOPT_CAINFO, swarm_ca_file);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) swarm_connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) swarm_batch_transfer_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, to_buffer);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &res->body);
	if (ep->api_key != NULL && ep->api_key[0] != '\0')
	{
		char	   *auth = psprintf("Authorization: Bearer %s", ep->api_key);

		headers = curl_slist_append(headers, auth);
		/* (curl copies it; the key is not left in this process's memory) */
		explicit_bzero(auth, strlen(auth));
		pfree(auth);
	}
	if (json)
		headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Expect:");
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	pfree(url);
	return headers;
}

static void
perform(BatchHttpResult *res, struct curl_slist *headers)
{
	CURLcode	rc = curl_easy_perform(easy);

	if (rc == CURLE_OK)
	{
		res->transport_ok = true;
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res->status);
	}
	else if (res->error[0] == '\0')
		strlcpy(res->error, curl_easy_strerror(rc), sizeof(res->error));
	curl_slist_free_all(headers);
}

/* GET (json_body NULL) or POST a JSON body to <base_url>/<path>. */
void
batch_http_call(const BatchEndpoint *ep, const char *method, const char *path,
				const char *json_body, BatchHttpResult *res)
{
	struct curl_slist *headers = prepare(ep, path, res, json_body != NULL);

	if (strcmp(method, "POST") == 0)
	{
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, json_body ? json_body : "");
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) (json_body ? strlen(json_body) : 0));
	}
	perform(res, headers);
}

/* POST <base_url>/files: the file (size bytes) as multipart, purpose=batch. */
void
batch_http_upload(const BatchEndpoint *ep, FILE *file, long size, const char *file_name,
				  BatchHttpResult *res)
{
	struct curl_slist *headers = prepare(ep, "files", res, false);
	curl_mime  *mime = curl_mime_init(easy);
	curl_mimepart *part;

	part = curl_mime_addpart(mime);
	curl_mime_name(part, "purpose");
	curl_mime_data(part, "batch", CURL_ZERO_TERMINATED);
	part = curl_mime_addpart(mime);
	curl_mime_name(part, "file");
	curl_mime_filename(part, file_name);
	curl_mime_type(part, "application/jsonl");
	rewind(file);
	curl_mime_data_cb(part, (curl_off_t) size, from_file, seek_file, NULL, file);
	curl_easy_setopt(easy, CURLOPT_MIMEPOST, mime);
	perform(res, headers);
	curl_mime_free(mime);
}

/* GET <base_url>/files/<id>/content into `to` (an error answer too). */
void
batch_http_download(const BatchEndpoint *ep, const char *file_id, FILE *to, BatchHttpResult *res)
{
	char	   *path = psprintf("files/%s/content", file_id);
	struct curl_slist *headers = prepare(ep, path, res, false);

	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, to_file);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, to);
	perform(res, headers);
	pfree(path);
}

bool
batch_http_ok(const BatchHttpResult *res)
{
	return res->transport_ok && res->status >= 200 && res->status < 300;
}

/*
 * Is a failed call worth making again later?  Everything but a refusal the
 * provider would repeat: a 4xx other than 408, 409 and 429.
 */
bool
batch_http_retryable(const BatchHttpResult *res)
{
	if (!res->transport_ok)
		return true;
	if (res->status >= 400 && res->status < 500)
		return res->status == 408 || res->status == 409 || res->status == 429;
	return true;
}

/* "what: HTTP 400: <the answer's first 300 bytes>", or the transport error. */
char *
batch_http_describe(const BatchHttpResult *res, const char *what)
{
	if (!res->transport_ok)
		return psprintf("%s: %s", what, res->error);
	return psprintf("%s: HTTP %ld%s%.*s", what, res->status, res->body.len > 0 ? ": " : "",
					Min(res->body.len, 300), res->body.data);
}
