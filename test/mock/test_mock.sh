#!/usr/bin/env bash
#
# test/mock/test_mock.sh
#	Behaviour tests of mock_llm (test/mock/mock_llm), TAP output.
#
# Starts the mock on a free port (--port 0, read back from the ready line),
# talks to it with curl and a few lines of python3, and stops it with
# SIGTERM.  Each check is one "ok N - ..." / "not ok N - ..." line; the plan
# "1..N" comes last, and the exit status is non-zero if anything failed.
#
# Usage: test/mock/test_mock.sh            (after `make mock`)
#        MOCK_LLM=/path/to/binary test/mock/test_mock.sh
#
# Needs: bash, curl, python3.  Sends traffic to 127.0.0.1 only.

set -u

here=$(cd "$(dirname "$0")" && pwd)
MOCK=${MOCK_LLM:-$here/mock_llm}
tmp=$(mktemp -d)
pids=()
count=0
failed=0

cleanup() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

ok() { count=$((count + 1)); echo "ok $count - $1"; }
not_ok() {
	count=$((count + 1)); failed=$((failed + 1))
	echo "not ok $count - $1"
	[ -n "${2:-}" ] && echo "$2" | sed 's/^/#   /'
	return 0
}
# check DESCRIPTION COMMAND...: ok if COMMAND succeeds
check() {
	local description=$1; shift
	if "$@" > "$tmp/check.out" 2>&1; then ok "$description"
	else not_ok "$description" "$(head -c 600 "$tmp/check.out")"; fi
}

# start_mock NAME ARGS...: start a mock, set ${NAME}_PORT and ${NAME}_PID
start_mock() {
	local name=$1; shift
	"$MOCK" --port 0 --quiet "$@" > "$tmp/$name.ready" 2> "$tmp/$name.log" &
	local pid=$!
	pids+=("$pid")
	for _ in $(seq 100); do
		grep -q listening "$tmp/$name.ready" 2>/dev/null && break
		sleep 0.05
	done
	printf -v "${name}_PID" '%s' "$pid"
	printf -v "${name}_PORT" '%s' "$(sed -n 's/^mock_llm listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$tmp/$name.ready")"
}

# chat USER_CONTENT [CURL ARGS...]: POST a chat request to the main mock.
# USER_CONTENT is pasted into the JSON as is (so it may hold escapes).
# Leaves the body in $tmp/body, headers in $tmp/headers; prints the status.
chat() {
	local content=$1; shift
	curl -sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' --max-time 10 \
		-H 'Content-Type: application/json' \
		--data-binary "{\"model\":\"mock-small\",\"max_tokens\":50,\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"$content\"}]}" \
		"$@" "http://127.0.0.1:$PORT/v1/chat/completions" 2> "$tmp/curl.err"
}

# body_is PYTHON_EXPRESSION: evaluate with d = parsed JSON body, raw = bytes
body_is() {
	python3 - "$tmp/body" "$1" <<'EOF'
import json, sys
raw = open(sys.argv[1], 'rb').read()
try:
    d = json.loads(raw)
except ValueError:
    d = None
ok = eval(sys.argv[2])
if not ok:
    print('expression false; body was: %r' % raw[:400])
sys.exit(0 if ok else 1)
EOF
}

header_is() { grep -qi "^$1: $2"$'\r'"\$" "$tmp/headers"; }
equals() { [ "$1" = "$2" ] || { echo "expected '$2', got '$1'"; return 1; }; }
stats() { curl -sS --max-time 5 "http://127.0.0.1:$PORT/mock/stats" > "$tmp/body"; }

[ -x "$MOCK" ] || { echo "Bail out! $MOCK not built (make mock)"; exit 1; }


# ---- start-up ----

start_mock main
PORT=$main_PORT
check "prints exactly 'mock_llm listening on 127.0.0.1:PORT' when ready" \
	test -n "$PORT" -a "$(wc -l < "$tmp/main.ready")" -eq 1

check "GET /health answers 200 ok" \
	equals "$(curl -sS --max-time 5 "http://127.0.0.1:$PORT/health")" "ok"


# ---- a normal completion ----

status=$(chat 'hello mock')
check "a chat completion answers 200" equals "$status" 200
check "its body is valid JSON (python3 -m json.tool)" python3 -m json.tool "$tmp/body"
check "content begins with '[mock] '" \
	body_is 'd["choices"][0]["message"]["content"].startswith("[mock] ")'
check "content echoes the system and the user text" \
	body_is 'd["choices"][0]["message"]["content"].startswith("[mock] Be brief. :: hello mock w")'
check "the object has the OpenAI shape (id, object, model, role, finish_reason)" \
	body_is 'd["id"].startswith("chatcmpl-mock-") and d["object"] == "chat.completion" and d["model"] == "mock-small" and isinstance(d["created"], int) and d["choices"][0]["index"] == 0 and d["choices"][0]["message"]["role"] == "assistant" and d["choices"][0]["finish_reason"] == "stop"'
check "usage: prompt = content bytes / 4, completion = 20 words, total = sum" \
	body_is 'd["usage"] == {"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24} and len(d["choices"][0]["message"]["content"].split(" :: ")[1].split()) == 22'
cp "$tmp/body" "$tmp/first"
chat 'hello mock' > /dev/null
check "the same request gets the same content" python3 - "$tmp/first" "$tmp/body" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"], (a, b)
assert a["id"] != b["id"]
EOF
chat 'hello mock!' > /dev/null
check "a different request gets different filler" python3 - "$tmp/first" "$tmp/body" <<'EOF'
import json, sys
a, b = (json.load(open(p))["choices"][0]["message"]["content"] for p in sys.argv[1:3])
assert a.split(" :: ")[1].split()[2:] != b.split(" :: ")[1].split()[2:], (a, b)
EOF

curl -sS -o "$tmp/body" --max-time 5 "http://127.0.0.1:$PORT/v1/chat/completions" \
	--data-binary '{"model":"m","max_completion_tokens":3,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"last one"}]}'
check "max_completion_tokens caps the words; the last user message is echoed" \
	body_is 'd["choices"][0]["message"]["content"].startswith("[mock]  :: last one w") and len(d["choices"][0]["message"]["content"].split()) == 7 and d["usage"]["completion_tokens"] == 3'

long_utf8=$(python3 -c 'print("é" * 200)')
chat "$long_utf8" > /dev/null
check "a long UTF-8 message is cut to 160 bytes between characters" \
	body_is 'd["choices"][0]["message"]["content"].split(" :: ")[1].split(" w")[0] == "é" * 80'
chat "a$(printf '\\n%.0s' $(seq 100))" > /dev/null
check "a long message of escapes is cut between escapes (1 + 79 x \\n)" \
	body_is 'd["choices"][0]["message"]["content"].split(" :: ")[1].split(" w")[0] == "a" + "\n" * 79'
chat "$(printf '\\ud83d\\ude00%.0s' $(seq 20))" > /dev/null
check "surrogate pairs are never split (13 x 12-byte pairs = 156 bytes)" \
	body_is 'd["choices"][0]["message"]["content"].split(" :: ")[1].split(" w")[0] == "\U0001F600" * 13'


# ---- errors of the protocol ----

status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 \
	--data-binary '{"model":"m","messages":[' "http://127.0.0.1:$PORT/v1/chat/completions")
check "malformed JSON answers 400 with an OpenAI error body" \
	body_is "$status == 400 and d['error']['type'] == 'invalid_request_error' and d['error']['param'] is None and d['error']['code'] is None and d['error']['message']"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 \
	--data-binary '{"model":"m"}' "http://127.0.0.1:$PORT/v1/chat/completions")
check "missing messages answers 400" \
	body_is "$status == 400 and 'messages' in d['error']['message']"
# more bad requests, each with the words its 400 message must contain
deep=$(python3 -c 'print("[" * 100 + "]" * 100)')
while IFS='|' read -r description request expected; do
	status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 --data-binary "$request" \
		"http://127.0.0.1:$PORT/v1/chat/completions")
	check "400 for $description" \
		body_is "$status == 400 and \"$expected\" in d['error']['message'] and d['error']['type'] == 'invalid_request_error'"
done <<EOF
empty messages|{"model":"m","messages":[]}|empty array
no model|{"messages":[{"role":"user","content":"x"}]}|'model'
a non-string model|{"model":7,"messages":[{"role":"user","content":"x"}]}|'model'
fractional max_tokens|{"model":"m","max_tokens":2.5,"messages":[{"role":"user","content":"x"}]}|max_tokens
negative max_tokens|{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}|max_tokens
a body that is an array|[{"model":"m"}]|JSON object
bytes after the object|{"model":"m","messages":[{"role":"user","content":"x"}]} x|parse
a message that is not an object|{"model":"m","messages":["hi"]}|expected an object
a bad string escape|{"model":"m","messages":[{"role":"user","content":"a\\qb"}]}|parse
nesting deeper than 64|{"model":"m","messages":[{"role":"user","content":"x"}],"x":$deep}|parse
a bad directive value|{"model":"m","messages":[{"role":"user","content":"[[mock:status=99]]"}]}|status=99
an unterminated directive|{"model":"m","messages":[{"role":"user","content":"[[mock:status=503"}]}|closing
EOF

# good requests in less common shapes
curl -sS -o "$tmp/body" --max-time 5 "http://127.0.0.1:$PORT/v1/chat/completions" --data-binary \
	'{"model":"m","stream":true,"max_tokens":null,"temperature":0.2,"messages":[{"role":"system","content":[{"type":"text","text":"sys part"}]},{"role":"user","content":[{"type":"text","text":"part one"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part two"}]},{"role":"assistant","content":null,"tool_calls":[]}]}'
check "content arrays echo their first text part; stream and null max_tokens are accepted" \
	body_is 'd["choices"][0]["message"]["content"].startswith("[mock] sys part :: part one w") and d["usage"]["prompt_tokens"] == 6'

status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/v2/nothing")
check "an unknown path answers 404 with a JSON error" \
	body_is "$status == 404 and d['error']['type'] == 'invalid_request_error'"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/v1/chat/completions")
check "GET on the chat path answers 405" body_is "$status == 405 and 'error' in d"
curl -sS -o "$tmp/body" --max-time 5 "http://127.0.0.1:$PORT/v1/models"
check "GET /v1/models lists models" \
	body_is 'd["object"] == "list" and len(d["data"]) > 0 and d["data"][0]["object"] == "model"'
status=$(chat 'x [[mock:stauts=500]]')
check "an unknown directive answers 400 naming it" \
	body_is "$status == 400 and 'stauts=500' in d['error']['message']"


# ---- fault directives ----

s1=$(chat 'flaky [[mock:status=503,times=2]]'); cp "$tmp/body" "$tmp/first"
s2=$(chat 'flaky [[mock:status=503,times=2]]')
s3=$(chat 'flaky [[mock:status=503,times=2]]')
check "status=503,times=2: attempts 1 and 2 get 503, attempt 3 gets 200" \
	equals "$s1 $s2 $s3" "503 503 200"
cp "$tmp/body" "$tmp/third"; cp "$tmp/first" "$tmp/body"
check "the 503 body is a server_error with message 'mock error 503'" \
	body_is 'd["error"]["type"] == "server_error" and d["error"]["message"] == "mock error 503" and d["error"]["code"] is None'
cp "$tmp/third" "$tmp/body"
check "the answer after the faults echoes the directive defused ([[mock-...)" \
	body_is '"[[mock-status=503,times=2]]" in d["choices"][0]["message"]["content"]'

status=$(chat 'slow down [[mock:status=429,retry_after=2,retry_after_ms=1500,should_retry=true]]')
check "status=429 answers 429 with code rate_limit_exceeded" \
	body_is "$status == 429 and d['error']['code'] == 'rate_limit_exceeded' and d['error']['message'] == 'mock error 429'"
check "retry_after, retry_after_ms and should_retry add their headers" \
	bash -c "grep -qi '^retry-after: 2' '$tmp/headers' && grep -qi '^retry-after-ms: 1500' '$tmp/headers' && grep -qi '^x-should-retry: true' '$tmp/headers'"
status=$(chat 'broke [[mock:status=429,code=insufficient_quota]]')
check "code=insufficient_quota overrides error.code" \
	body_is "$status == 429 and d['error']['code'] == 'insufficient_quota'"
status=$(chat 'bad [[mock:status=400]]')
check "status=400 answers an invalid_request_error" \
	body_is "$status == 400 and d['error']['type'] == 'invalid_request_error'"

chat 'wait forever [[mock:hang]]' --max-time 1 > /dev/null
check "hang: the request times out (curl exit 28)" equals "$?" 28
chat 'cut [[mock:reset]]' > /dev/null
rc=$?
check "reset: curl fails with a connection error" test "$rc" -ne 0 -a "$rc" -ne 28
chat 'cut later [[mock:reset_mid]]' > /dev/null
rc=$?
check "reset_mid: curl fails after part of the body" \
	bash -c "test $rc -ne 0 -a $rc -ne 28 && grep -q '^HTTP/1.1 200' '$tmp/headers' && test -s '$tmp/body'"
status=$(chat 'bad json [[mock:malformed]]')
check "malformed: 200 with a body that is not valid JSON" \
	bash -c "test $status = 200 && ! python3 -m json.tool '$tmp/body' >/dev/null 2>&1"
status=$(chat 'proxy [[mock:html]]')
check "html: 502 text/html" \
	bash -c "test $status = 502 && grep -qi '^content-type: text/html' '$tmp/headers' && grep -q '<html>' '$tmp/body'"
chat 'n [[mock:nochoices]]' > /dev/null
check "nochoices: JSON without choices" body_is '"choices" not in d and "usage" in d'
chat 'e [[mock:emptychoices]]' > /dev/null
check "emptychoices: choices is []" body_is 'd["choices"] == []'
chat 'u [[mock:nousage]]' > /dev/null
check "nousage: no usage" body_is '"usage" not in d and d["choices"][0]["message"]["content"]'
chat 'c [[mock:nullcontent]]' > /dev/null
check "nullcontent: content is null" body_is 'd["choices"][0]["message"]["content"] is None'
chat 'f [[mock:finish=length]]' > /dev/null
check "finish=length sets finish_reason" body_is 'd["choices"][0]["finish_reason"] == "length"'
status=$(chat 'big [[mock:huge=5000000]]')
check "huge=5000000: 200, at least 5000000 bytes, valid JSON, 5000000 x's of content" \
	body_is "$status == 200 and len(raw) >= 5000000 and d['choices'][0]['message']['content'] == 'x' * 5000000"
chat 'z [[mock:nul]]' > /dev/null
check "nul: content holds the escape \\u0000" body_is 'b"\\u0000" in raw and "\x00" in d["choices"][0]["message"]["content"]'
chat 'z [[mock:rawnul]]' > /dev/null
check "rawnul: a raw 0x00 byte inside the content string" body_is 'b"\x00" in raw and d is None'
chat 'z [[mock:badutf8]]' > /dev/null
check "badutf8: raw bytes C3 28 inside the content" body_is 'b"\xc3\x28" in raw'
chat 'z [[mock:surrogate]]' > /dev/null
check "surrogate: a lone \\ud800 escape" body_is 'b"\\ud800" in raw and b"\\ud800\\u" not in raw'
elapsed=$(chat 'slowly [[mock:drip=2]]' -w ' %{time_total}' | cut -d' ' -f2)
check "drip=2: the body arrives a byte per 2 ms (>= 0.4 s) and is complete" \
	body_is "$elapsed >= 0.4 and d['choices'][0]['message']['content'].startswith('[mock] ')"
elapsed=$(chat 'later [[mock:delay=300]]' -w ' %{time_total}' | cut -d' ' -f2)
check "delay=300: the answer takes at least 0.3 s" body_is "$elapsed >= 0.3 and d['choices']"
status=$(chat 'all at once [[mock:status=500,retry_after=7,delay=100,times=1]]')
check "directives combine (status, retry_after, delay, times)" \
	bash -c "test $status = 500 && grep -qi '^retry-after: 7' '$tmp/headers' && grep -qi '^x-mock-attempt: 1' '$tmp/headers'"


# ---- HTTP framing ----

curl -sS -v -o "$tmp/body" --max-time 5 -H 'Expect: 100-continue' \
	--data-binary '{"model":"m","messages":[{"role":"user","content":"expecting"}]}' \
	"http://127.0.0.1:$PORT/v1/chat/completions" 2> "$tmp/verbose"
check "Expect: 100-continue gets 'HTTP/1.1 100 Continue', then the answer" \
	bash -c "grep -q '< HTTP/1.1 100 Continue' '$tmp/verbose' && grep -q 'expecting' '$tmp/body'"
printf '%s' '{"model":"m","messages":[{"role":"user","content":"sent in chunks"}]}' > "$tmp/request.json"
curl -sS -o "$tmp/body" --max-time 5 -H 'Transfer-Encoding: chunked' \
	--data-binary @"$tmp/request.json" "http://127.0.0.1:$PORT/v1/chat/completions"
check "a chunked request body is decoded" \
	body_is '"sent in chunks" in d["choices"][0]["message"]["content"]'
check "pipelined requests are answered in order, whatever their delays" python3 - "$PORT" <<'EOF'
import socket, sys
port = int(sys.argv[1])
def post(text):
    body = '{"model":"m","messages":[{"role":"user","content":"%s"}]}' % text
    return ("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)).encode()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(post("first [[mock:delay=300]]") + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
          + post("third") + b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
s.settimeout(5)
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
first, third = data.find(b"first"), data.find(b"third")
health = data.find(b"\r\n\r\nok")
assert data.count(b"HTTP/1.1 200 OK") == 4, data
assert 0 < first < health < third, data
EOF
curl -sS -o "$tmp/body" -D "$tmp/headers" --max-time 5 --http1.0 "http://127.0.0.1:$PORT/health"
check "HTTP/1.0 is answered with Connection: close" header_is connection close
head -c 9000000 /dev/zero | tr '\0' 'a' > "$tmp/big"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 10 --data-binary @"$tmp/big" \
	"http://127.0.0.1:$PORT/v1/chat/completions" 2>/dev/null)
check "a 9 MB body answers 413" equals "$status" 413


# ---- counters ----

curl -sS -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$PORT/mock/reset"
chat 'count me' > /dev/null
chat 'count me too' > /dev/null
chat 'and fail [[mock:status=503]]' > /dev/null
stats
check "/mock/stats after /mock/reset counts requests, completions, by_status" \
	body_is 'd["requests"] == 3 and d["completions"] == 2 and d["by_status"] == {"200": 2, "503": 1} and d["inflight"] == 0 and d["peak_inflight"] >= 1 and d["connections"] >= 1 and d["peak_connections"] >= 1'
status=$(chat 'flaky [[mock:status=503,times=2]]')
check "/mock/reset forgets attempts (times=2 fails again)" equals "$status" 503

check "abrupt disconnects mid-request do not hurt the server" python3 - "$PORT" <<'EOF'
import socket, struct, sys, time
port = int(sys.argv[1])
body = b'{"model":"m","messages":[{"role":"user","content":"bye [[mock:delay=200]]"}]}'
full = b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
pieces = [b"POS", b"POST /v1/chat/completions HTTP/1.1\r\nContent-Le",
          full[:-10], full, full * 3, b"GET /health HTTP/1.1\r\n\r\n" * 50]
for round in range(20):
    for piece in pieces:
        for rst in (False, True):
            s = socket.create_connection(("127.0.0.1", port))
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(piece)
            s.close()
time.sleep(0.5)
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
assert s.recv(1000).endswith(b"ok")
EOF
sleep 0.3
stats
check "after the disconnects nothing is left in flight or open" \
	body_is 'd["inflight"] == 0 and d["connections"] == 1'

check "hostile clients (garbage, floods, trickles, resets) do not hurt it" \
	python3 "$here/abuse_mock.py" "$PORT" 30

if command -v wrk > /dev/null; then
	wrk -t1 -c20 -d2s -s "$here/post.lua" "http://127.0.0.1:$PORT" > "$tmp/wrk" 2>&1
	check "wrk for 2 s: no socket errors, all 200, over 1,000 requests/s" python3 - "$tmp/wrk" <<'EOF'
import re, sys
out = open(sys.argv[1]).read()
assert "Socket errors" not in out and "Non-2xx" not in out, out
assert float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)) > 1000, out
EOF
else
	ok "wrk smoke test # SKIP wrk not installed"
fi


# ---- options ----

start_mock limited --max-inflight 1 --latency-ms 600
curl -sS -o /dev/null --max-time 5 --data-binary '{"model":"m","messages":[{"role":"user","content":"one"}]}' \
	"http://127.0.0.1:$limited_PORT/v1/chat/completions" &
pids+=($!)
sleep 0.2
status=$(curl -sS -o "$tmp/body" -D "$tmp/headers" -w '%{http_code} %{time_total}' --max-time 5 \
	--data-binary '{"model":"m","messages":[{"role":"user","content":"two"}]}' \
	"http://127.0.0.1:$limited_PORT/v1/chat/completions")
check "--max-inflight 1: a second concurrent request gets 429 at once" \
	body_is "'$status'.startswith('429 ') and float('$status'.split()[1]) < 0.3 and d['error']['code'] == 'rate_limit_exceeded' and d['error']['type'] == 'requests'"
check "... with retry-after-ms: 100 and retry-after: 1" \
	bash -c "grep -qi '^retry-after-ms: 100' '$tmp/headers' && grep -qi '^retry-after: 1' '$tmp/headers'"
wait "${pids[-1]}"
elapsed=$(curl -sS -o "$tmp/body" -w '%{time_total}' --max-time 5 \
	--data-binary '{"model":"m","messages":[{"role":"user","content":"three"}]}' \
	"http://127.0.0.1:$limited_PORT/v1/chat/completions")
check "--latency-ms 600 delays a completion by 0.6 s" body_is "0.6 <= $elapsed < 1.5 and d['choices']"

start_mock threaded --threads 2 --words 3
check "--threads 2 serves many connections, --words 3 gives 3 words" python3 - "$threaded_PORT" <<'EOF'
import json, sys, urllib.request
for i in range(40):
    req = urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % sys.argv[1],
        data=b'{"model":"m","messages":[{"role":"user","content":"hi %d"}]}' % i)
    d = json.load(urllib.request.urlopen(req, timeout=5))
    assert len(d["choices"][0]["message"]["content"].split(" :: ")[1].split()) == 5, d
EOF
"$MOCK" --port "$PORT" --quiet > /dev/null 2>&1 &
second=$!
sleep 0.3
if kill -0 "$second" 2>/dev/null; then
	kill "$second"; not_ok "a second mock on a port in use refuses to start"
else
	ok "a second mock on a port in use refuses to start"
fi

kill -TERM "$main_PID"
for _ in $(seq 40); do kill -0 "$main_PID" 2>/dev/null || break; sleep 0.05; done
wait "$main_PID"
check "SIGTERM stops the mock with exit status 0" equals "$?" 0

# anything a mock said on stderr (with --quiet: only crashes, sanitizer reports)
for log in "$tmp"/*.log; do
	[ -s "$log" ] && sed "s|^|# $(basename "$log"): |" "$log"
done
echo "1..$count"
[ "$failed" -eq 0 ]
