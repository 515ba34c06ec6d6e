/*
 * mock_http.c
 *	  HTTP/1.x request framing for mock_llm, and the byte buffer every other
 *	  file appends to.
 *
 * http_parse() is pure: it looks at the unread bytes of one connection and
 * says "need more", "here is one complete request, it took N bytes", or
 * "this is not a request I will serve, answer STATUS and close".  It never
 * reads or writes a socket, so the event loop stays the only I/O owner.
 *
 * The parser is incremental without being a byte-at-a-time state machine:
 * it remembers how far it scanned for the end of the head, and, for chunked
 * bodies, which chunk comes next, so a client dribbling bytes costs linear
 * time in total.  Offsets are kept relative to the first byte of the request
 * because the connection compacts its buffer between calls.
 *
 * What is accepted: HTTP/1.0 and HTTP/1.1; bare LF line ends as well as CRLF;
 * bodies by Content-Length or Transfer-Encoding: chunked (extensions and
 * trailers skipped); Connection: close / keep-alive; Expect: 100-continue.
 * Limits: a head over MOCK_MAX_HEAD is 431, a body over MOCK_MAX_BODY is 413
 * (MOCK_MAX_UPLOAD for POST /v1/files, whose multipart body carries a batch
 * input file of up to 200 MB), other transfer codings are 501, other HTTP
 * versions 505.  The request also carries its query string and its
 * Content-Type header, for the batch API (list pagination, multipart).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mock.h"

/* Raw bytes a chunked request of BODY_LIMIT may occupy before we give up. */
#define MAX_RAW_CHUNKED(body_limit)	(2 * (size_t) (body_limit) + MOCK_MAX_HEAD)
/* Longest chunk-size line we are willing to wait for. */
#define MAX_CHUNK_LINE		4096


/* ---- byte buffer ---- */

void
buf_reserve(MockBuf *buf, size_t extra)
{
	size_t		need = buf->len + extra;
	size_t		cap;
	char	   *grown;

	if (need <= buf->cap)
		return;
	cap = buf->cap ? buf->cap : 256;
	while (cap < need)
		cap *= 2;
	grown = realloc(buf->data, cap);
	if (grown == NULL)
	{
		fprintf(stderr, "mock_llm: out of memory (buffer of %zu bytes)\n", cap);
		abort();
	}
	buf->data = grown;
	buf->cap = cap;
}

void
buf_append(MockBuf *buf, const void *bytes, size_t len)
{
	if (len == 0)
		return;
	buf_reserve(buf, len);
	memcpy(buf->data + buf->len, bytes, len);
	buf->len += len;
}

void
buf_append_str(MockBuf *buf, const char *str)
{
	buf_append(buf, str, strlen(str));
}

void
buf_append_u64(MockBuf *buf, uint64_t value)
{
	char		digits[24];
	size_t		at = sizeof(digits);

	do
	{
		digits[--at] = (char) ('0' + value % 10);
		value /= 10;
	} while (value != 0);
	buf_append(buf, digits + at, sizeof(digits) - at);
}

void
buf_append_i64(MockBuf *buf, int64_t value)
{
	if (value < 0)
	{
		buf_append(buf, "-", 1);
		buf_append_u64(buf, (uint64_t) 0 - (uint64_t) value);
	}
	else
		buf_append_u64(buf, (uint64_t) value);
}

/*
 * Append arbitrary bytes as the inside of a JSON string.  Used for text we
 * did not validate (request paths in error messages): quotes, backslashes
 * and control bytes are escaped, non-ASCII bytes become '?' so the result is
 * valid UTF-8 whatever came in.
 */
void
buf_append_json_escaped(MockBuf *buf, const char *bytes, size_t len)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++)
	{
		unsigned char ch = (unsigned char) bytes[i];

		if (ch == '"' || ch == '\\')
		{
			char		escaped[2] = {'\\', (char) ch};

			buf_append(buf, escaped, 2);
		}
		else if (ch < 0x20)
		{
			char		escaped[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};

			buf_append(buf, escaped, 6);
		}
		else if (ch >= 0x80)
			buf_append(buf, "?", 1);
		else
			buf_append(buf, &bytes[i], 1);
	}
}

void
buf_free(MockBuf *buf)
{
	free(buf->data);
	buf->data = NULL;
	buf->len = buf->cap = 0;
}


/* ---- request head ---- */

/*
 * Find the end of the head: the byte after the first empty line.  Returns 0
 * while the blank line has not arrived, remembering where to resume.
 */
static size_t
find_head_end(const char *data, size_t len, size_t *scan_from)
{
	size_t		at = *scan_from;

	while (at < len)
	{
		const char *newline = memchr(data + at, '\n', len - at);

		if (newline == NULL)
			break;
		at = (size_t) (newline - data);
		if (at + 1 >= len)
		{
			*scan_from = at;
			return 0;
		}
		if (data[at + 1] == '\n')
			return at + 2;
		if (data[at + 1] == '\r')
		{
			if (at + 2 >= len)
			{
				*scan_from = at;
				return 0;
			}
			if (data[at + 2] == '\n')
				return at + 3;
		}
		at++;
	}
	*scan_from = len;
	return 0;
}

/* RFC 9110 token characters, the only ones allowed in methods and header names. */
static bool
is_token_char(unsigned char ch)
{
	if (ch >= '0' && ch <= '9')
		return true;
	if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z')
		return true;
	return strchr("!#$%&'*+-.^_`|~", ch) != NULL && ch != '\0';
}

static bool
span_equals_nocase(const char *ptr, size_t len, const char *word)
{
	return strlen(word) == len && strncasecmp(ptr, word, len) == 0;
}

/* Does a comma-separated header value contain TOKEN (case-insensitive)? */
static bool
header_has_token(const char *value, size_t len, const char *token)
{
	size_t		at = 0;

	while (at < len)
	{
		size_t		start,
					end;

		while (at < len && (value[at] == ' ' || value[at] == '\t' || value[at] == ','))
			at++;
		start = at;
		while (at < len && value[at] != ',')
			at++;
		end = at;
		while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
			end--;
		if (end > start && span_equals_nocase(value + start, end - start, token))
			return true;
	}
	return false;
}

/*
 * The largest body a request may carry: uploads (POST /v1/files, the Files
 * API of mock_batch.c) get room for a 200 MB file and its multipart framing,
 * everything else MOCK_MAX_BODY.
 */
static uint64_t
body_limit_for(const char *method, size_t method_len, const char *path, size_t path_len)
{
	if (method_len == 4 && memcmp(method, "POST", 4) == 0 &&
		path_len == strlen("/v1/files") && memcmp(path, "/v1/files", path_len) == 0)
		return MOCK_MAX_UPLOAD;
	return MOCK_MAX_BODY;
}

/*
 * Parse the request line and the headers we care about.  Returns 0, or the
 * HTTP status to answer before closing the connection.
 */
static int
parse_head(HttpFraming *framing, const char *data, size_t head_len)
{
	const char *line_end = memchr(data, '\n', head_len);
	size_t		line_len = (size_t) (line_end - data);
	size_t		at = 0;
	size_t		target_off,
				target_len;
	size_t		path_len;
	bool		saw_content_length = false;
	bool		connection_close = false;
	bool		connection_keep_alive = false;
	bool		transfer_encoding = false;

	if (line_len > 0 && data[line_len - 1] == '\r')
		line_len--;

	/* method SP request-target SP HTTP-version */
	while (at < line_len && is_token_char((unsigned char) data[at]))
		at++;
	if (at == 0 || at >= line_len || data[at] != ' ')
		return 400;
	framing->method_off = 0;
	framing->method_len = at;
	target_off = ++at;
	while (at < line_len && data[at] != ' ')
		at++;
	target_len = at - target_off;
	if (target_len == 0 || at >= line_len)
		return 400;
	at++;
	if (line_len - at != 8 || memcmp(data + at, "HTTP/1.", 7) != 0)
		return (line_len - at >= 5 && memcmp(data + at, "HTTP/", 5) == 0) ? 505 : 400;
	if (data[at + 7] == '0')
		framing->minor_version = 0;
	else if (data[at + 7] == '1')
		framing->minor_version = 1;
	else
		return 505;

	if (data[target_off] != '/')
		return 400;
	path_len = 0;
	while (path_len < target_len && data[target_off + path_len] != '?' &&
		   data[target_off + path_len] != '#')
		path_len++;
	framing->path_off = target_off;
	framing->path_len = path_len;
	framing->query_off = target_off + path_len;
	framing->query_len = 0;
	if (path_len < target_len && data[target_off + path_len] == '?')
	{
		framing->query_off++;
		while (path_len + 1 + framing->query_len < target_len &&
			   data[framing->query_off + framing->query_len] != '#')
			framing->query_len++;
	}
	framing->body_limit = body_limit_for(data, framing->method_len,
										 data + target_off, path_len);

	/* header lines, up to the empty line that ends the head */
	at = line_end - data + 1;
	while (at < head_len)
	{
		const char *line = data + at;
		const char *next = memchr(line, '\n', head_len - at);
		size_t		len = (size_t) (next - line);
		size_t		name_len = 0;
		size_t		value_off;
		size_t		value_len;

		at += len + 1;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		if (len == 0)
			break;
		if (line[0] == ' ' || line[0] == '\t')
			return 400;			/* obsolete line folding */
		while (name_len < len && is_token_char((unsigned char) line[name_len]))
			name_len++;
		if (name_len == 0 || name_len >= len || line[name_len] != ':')
			return 400;
		value_off = name_len + 1;
		while (value_off < len && (line[value_off] == ' ' || line[value_off] == '\t'))
			value_off++;
		value_len = len - value_off;
		while (value_len > 0 && (line[value_off + value_len - 1] == ' ' ||
								 line[value_off + value_len - 1] == '\t'))
			value_len--;

		if (span_equals_nocase(line, name_len, "content-length"))
		{
			uint64_t	length = 0;

			if (value_len == 0 || value_len > 18)
				return value_len > 18 ? 413 : 400;
			for (size_t i = 0; i < value_len; i++)
			{
				char		ch = line[value_off + i];

				if (ch < '0' || ch > '9')
					return 400;
				length = length * 10 + (uint64_t) (ch - '0');
			}
			if (saw_content_length && length != framing->content_length)
				return 400;
			saw_content_length = true;
			framing->content_length = length;
		}
		else if (span_equals_nocase(line, name_len, "transfer-encoding"))
		{
			if (!span_equals_nocase(line + value_off, value_len, "chunked"))
				return 501;
			transfer_encoding = true;
		}
		else if (span_equals_nocase(line, name_len, "connection"))
		{
			if (header_has_token(line + value_off, value_len, "close"))
				connection_close = true;
			if (header_has_token(line + value_off, value_len, "keep-alive"))
				connection_keep_alive = true;
		}
		else if (span_equals_nocase(line, name_len, "expect"))
		{
			if (span_equals_nocase(line + value_off, value_len, "100-continue"))
				framing->expect_continue = true;
		}
		else if (span_equals_nocase(line, name_len, "content-type"))
		{
			framing->content_type_off = (size_t) (line - data) + value_off;
			framing->content_type_len = value_len;
		}
	}

	if (transfer_encoding)
	{
		framing->chunked = true;
		framing->content_length = 0;
	}
	else if (framing->content_length > framing->body_limit)
		return 413;

	if (connection_close)
		framing->keep_alive = false;
	else if (framing->minor_version == 0)
		framing->keep_alive = connection_keep_alive;
	else
		framing->keep_alive = true;
	return 0;
}


/* ---- chunked bodies ---- */

/*
 * Decode as many complete chunks as have arrived into framing->chunked_body.
 * On HTTP_REQUEST_READY, *end is the offset just past the trailers.
 */
static HttpParseResult
decode_chunks(HttpFraming *framing, const char *data, size_t len,
			  size_t *end, int *error_status)
{
	for (;;)
	{
		size_t		pos = framing->chunk_pos;
		const char *newline = memchr(data + pos, '\n', len - pos);
		size_t		line_end;
		uint64_t	size = 0;
		size_t		digits = 0;
		size_t		data_end;
		size_t		after;

		if (newline == NULL)
		{
			if (len - pos > MAX_CHUNK_LINE)
			{
				*error_status = 400;
				return HTTP_BAD_REQUEST;
			}
			return HTTP_NEED_MORE;
		}
		line_end = (size_t) (newline - data) + 1;

		for (;;)
		{
			char		ch = data[pos + digits];
			int			nibble;

			if (ch >= '0' && ch <= '9')
				nibble = ch - '0';
			else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
				nibble = (ch | 0x20) - 'a' + 10;
			else
				break;
			if (++digits > 15)
			{
				*error_status = 413;
				return HTTP_BAD_REQUEST;
			}
			size = size * 16 + (uint64_t) nibble;
		}
		if (digits == 0)
		{
			*error_status = 400;
			return HTTP_BAD_REQUEST;
		}

		if (size == 0)
		{
			/* last chunk: skip trailer lines up to the empty line */
			size_t		at = line_end;

			for (;;)
			{
				const char *trailer_end = memchr(data + at, '\n', len - at);
				size_t		trailer_len;

				if (trailer_end == NULL)
				{
					if (len - at > MOCK_MAX_HEAD)
					{
						*error_status = 431;
						return HTTP_BAD_REQUEST;
					}
					return HTTP_NEED_MORE;
				}
				trailer_len = (size_t) (trailer_end - (data + at));
				if (trailer_len == 0 || (trailer_len == 1 && data[at] == '\r'))
				{
					*end = (size_t) (trailer_end - data) + 1;
					return HTTP_REQUEST_READY;
				}
				at = (size_t) (trailer_end - data) + 1;
			}
		}

		if (framing->chunked_body.len + size > framing->body_limit)
		{
			*error_status = 413;
			return HTTP_BAD_REQUEST;
		}
		data_end = line_end + (size_t) size;
		if (len < data_end + 1)
			return HTTP_NEED_MORE;
		if (data[data_end] == '\n')
			after = data_end + 1;
		else if (data[data_end] == '\r')
		{
			if (len < data_end + 2)
				return HTTP_NEED_MORE;
			if (data[data_end + 1] != '\n')
			{
				*error_status = 400;
				return HTTP_BAD_REQUEST;
			}
			after = data_end + 2;
		}
		else
		{
			*error_status = 400;
			return HTTP_BAD_REQUEST;
		}
		buf_append(&framing->chunked_body, data + line_end, (size_t) size);
		framing->chunk_pos = after;
	}
}


/* ---- the entry point ---- */

/*
 * Try to take one request from the LEN unread bytes at DATA.
 *
 * HTTP_NEED_MORE: call again with more bytes (the same ones first).
 * HTTP_REQUEST_READY: *request points into DATA or into the framing's
 *   chunked body buffer, valid until http_framing_reset(); *consumed bytes
 *   of DATA belong to it.
 * HTTP_BAD_REQUEST: answer *error_status and close the connection.
 */
HttpParseResult
http_parse(HttpFraming *framing, const char *data, size_t len,
		   MockRequest *request, size_t *consumed, int *error_status)
{
	size_t		end;

	if (!framing->head_done)
	{
		int			status;

		end = find_head_end(data, len, &framing->head_scan_from);
		if (end == 0)
		{
			if (len > MOCK_MAX_HEAD)
			{
				*error_status = 431;
				return HTTP_BAD_REQUEST;
			}
			return HTTP_NEED_MORE;
		}
		if (end > MOCK_MAX_HEAD)
		{
			*error_status = 431;
			return HTTP_BAD_REQUEST;
		}
		status = parse_head(framing, data, end);
		if (status != 0)
		{
			*error_status = status;
			return HTTP_BAD_REQUEST;
		}
		framing->head_done = true;
		framing->head_len = end;
		framing->chunk_pos = end;
	}

	if (framing->chunked)
	{
		HttpParseResult result = decode_chunks(framing, data, len, &end, error_status);

		if (result == HTTP_NEED_MORE && len > MAX_RAW_CHUNKED(framing->body_limit))
		{
			*error_status = 413;
			return HTTP_BAD_REQUEST;
		}
		if (result != HTTP_REQUEST_READY)
			return result;
		request->body = framing->chunked_body.data ? framing->chunked_body.data : "";
		request->body_len = framing->chunked_body.len;
	}
	else
	{
		end = framing->head_len + (size_t) framing->content_length;
		if (len < end)
			return HTTP_NEED_MORE;
		request->body = data + framing->head_len;
		request->body_len = (size_t) framing->content_length;
	}

	request->method.ptr = data + framing->method_off;
	request->method.len = framing->method_len;
	request->path.ptr = data + framing->path_off;
	request->path.len = framing->path_len;
	request->query.ptr = data + framing->query_off;
	request->query.len = framing->query_len;
	request->content_type.ptr = data + framing->content_type_off;
	request->content_type.len = framing->content_type_len;
	request->minor_version = framing->minor_version;
	request->keep_alive = framing->keep_alive;
	*consumed = end;
	return HTTP_REQUEST_READY;
}

/* Forget the request just served; keep a small chunk buffer for the next one. */
void
http_framing_reset(HttpFraming *framing)
{
	MockBuf		chunked_body = framing->chunked_body;

	if (chunked_body.cap > 64 * 1024)
		buf_free(&chunked_body);
	chunked_body.len = 0;
	memset(framing, 0, sizeof(*framing));
	framing->chunked_body = chunked_body;
}

const char *
http_reason_phrase(int status)
{
	switch (status)
	{
		case 100: return "Continue";
		case 200: return "OK";
		case 201: return "Created";
		case 202: return "Accepted";
		case 204: return "No Content";
		case 400: return "Bad Request";
		case 401: return "Unauthorized";
		case 402: return "Payment Required";
		case 403: return "Forbidden";
		case 404: return "Not Found";
		case 405: return "Method Not Allowed";
		case 408: return "Request Timeout";
		case 409: return "Conflict";
		case 413: return "Content Too Large";
		case 422: return "Unprocessable Content";
		case 429: return "Too Many Requests";
		case 431: return "Request Header Fields Too Large";
		case 500: return "Internal Server Error";
		case 501: return "Not Implemented";
		case 502: return "Bad Gateway";
		case 503: return "Service Unavailable";
		case 504: return "Gateway Timeout";
		case 505: return "HTTP Version Not Supported";
		case 520: return "Unknown Error";
		case 529: return "Site Overloaded";
		default: return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
	}
}
