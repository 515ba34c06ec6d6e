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

# directives that model other servers and proxies
chat 'junk [[mock:garbage]]' > /dev/null
rc=$?
check "garbage: raw bytes, not HTTP (curl: 'Received HTTP/0.9 when not allowed', exit 1)" \
	bash -c "test $rc -eq 1 && grep -q 'Received HTTP/0.9 when not allowed' '$tmp/curl.err'"
chat 'nothing [[mock:empty]]' > /dev/null
rc=$?
check "empty: closed without a byte (curl: 'Empty reply from server', exit 52)" \
	bash -c "test $rc -eq 52 && grep -q 'Empty reply from server' '$tmp/curl.err'"
chat 'broken framing [[mock:badchunk]]' > /dev/null
rc=$?
check "badchunk: 200 chunked, one good chunk, then a bad chunk size (curl exit 56)" \
	bash -c "test $rc -eq 56 && grep -q '^HTTP/1.1 200' '$tmp/headers' && grep -qi '^transfer-encoding: chunked' '$tmp/headers' && ! grep -qi '^content-length' '$tmp/headers' && grep -qi 'chunk' '$tmp/curl.err' && test -s '$tmp/body'"
chat 'no [[mock:refusal]]' > /dev/null
check "refusal: content null, refusal text, finish_reason stop" \
	body_is 'd["choices"][0]["message"]["content"] is None and d["choices"][0]["message"]["refusal"] == "I'"'"'m sorry, I cannot help with that." and d["choices"][0]["finish_reason"] == "stop" and d["usage"]["completion_tokens"] == 20'

# errshape: one line per shape: directive items | expected status | check on the body
while IFS='|' read -r items expected condition; do
	status=$(chat "shape [[mock:$items]]")
	check "errshape: [[mock:$items]] answers $expected, body as documented" \
		body_is "$status == $expected and ($condition)"
done <<'EOF'
status=503,errshape=openai|503|d == {"error": {"message": "mock error 503", "type": "server_error", "param": None, "code": None}}
status=500,errshape=flat|500|d == {"object": "error", "message": "mock error 500", "type": "InternalServerError", "param": None, "code": 500}
status=400,errshape=intcode|400|d == {"error": {"message": "mock error 400", "type": "BadRequestError", "param": None, "code": 400}}
status=500,errshape=string|500|d == {"error": "mock error 500"}
status=503,errshape=array|503|d == [{"error": {"code": 503, "message": "mock error 503", "status": "UNAVAILABLE"}}]
status=429,errshape=array|429|d[0]["error"]["status"] == "RESOURCE_EXHAUSTED" and d[0]["error"]["code"] == 429
status=500,errshape=detail|500|d == {"detail": "mock error 500"}
status=502,errshape=message|502|d == {"message": "mock error 502"}
status=529,errshape=anthropic|529|d == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
status=429,errshape=anthropic|429|d == {"type": "error", "error": {"type": "rate_limit_error", "message": "mock error 429"}}
status=500,errshape=text|500|d is None and raw == b"mock error 500"
errshape=flat|400|"errshape needs an error status" in d["error"]["message"]
status=500,errshape=xml|400|"errshape=xml" in d["error"]["message"]
EOF
chat 'shape [[mock:status=500,errshape=text]]' > /dev/null
check "errshape=text is sent as text/plain" header_is content-type text/plain

chat 'later [[mock:status=429,retry_after_date=31536000,ratelimit_remaining_tokens=0,ratelimit_reset_tokens=6m0s]]' > /dev/null
check "retry_after_date=31536000: retry-after is an IMF-fixdate a year from now" python3 - "$tmp/headers" 31536000 <<'EOF'
import email.utils, re, sys, time
value = [l.split(":", 1)[1].strip() for l in open(sys.argv[1]) if l.lower().startswith("retry-after:")][0]
assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT", value), value
when = email.utils.parsedate_to_datetime(value).timestamp()
assert abs(when - (time.time() + int(sys.argv[2]))) < 10, (value, when - time.time())
EOF
check "ratelimit_remaining_tokens / ratelimit_reset_tokens add x-ratelimit-*-tokens" \
	bash -c "grep -qi '^x-ratelimit-remaining-tokens: 0'$'\r''\$' '$tmp/headers' && grep -qi '^x-ratelimit-reset-tokens: 6m0s'$'\r''\$' '$tmp/headers'"
chat 'past [[mock:status=503,retry_after_date=-30]]' > /dev/null
check "retry_after_date=-30: a date in the past" python3 - "$tmp/headers" -30 <<'EOF'
import email.utils, sys, time
value = [l.split(":", 1)[1].strip() for l in open(sys.argv[1]) if l.lower().startswith("retry-after:")][0]
assert abs(email.utils.parsedate_to_datetime(value).timestamp() - (time.time() - 30)) < 10, value
EOF


# ---- structured actions ----

# actions.py PORT CASE: send structured requests (response_format or tools)
# and check the actions in the replies; prints why on failure.  An action
# is "valid" when it has the five keys in order, is allowed by the request's
# enum, and points only at ids the last user message offered; the four
# invalid forms are "unoffered" (like of a post not offered), "dance",
# "notjson" and "nobody" (follow with agent_id null).
cat > "$tmp/actions.py" <<'EOF'
import json, re, sys, urllib.error, urllib.request
port, case = sys.argv[1], sys.argv[2]
ALL = ["post", "reply", "like", "dislike", "repost", "quote", "follow", "unfollow",
       "mute", "join_community", "leave_community", "do_nothing"]
TARGET = {"reply": "post_id", "like": "post_id", "dislike": "post_id", "repost": "post_id",
          "quote": "post_id", "follow": "agent_id", "unfollow": "agent_id", "mute": "agent_id",
          "join_community": "community_id", "leave_community": "community_id"}
TEXT = {"post", "reply", "quote"}
KEYS = ["action", "post_id", "agent_id", "community_id", "text"]
OFFERING = "Feed:\n[post 12] by (agent 3): hi\n[post 40] by (agent 7) in [community 2]\n(agent 9) joined [community 5]; [post 977]"

def send(user, system="sim", mode="json", enum=ALL, max_tokens=None, history=None):
    schema = {"type": "object", "properties": {"action": {"type": "string"},
              "post_id": {"type": ["integer", "null"]}, "text": {"type": ["string", "null"]}},
              "required": KEYS, "additionalProperties": False}
    if enum is not None:
        schema["properties"]["action"]["enum"] = enum
    messages = [{"role": "system", "content": system}]
    if history:
        messages += [{"role": "user", "content": history}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": user})
    request = {"model": "mock-small", "messages": messages}
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    if mode == "json":
        request["response_format"] = {"type": "json_schema", "json_schema":
                                      {"name": "action", "strict": True, "schema": schema}}
    elif mode == "tools":
        request["tools"] = [{"type": "function", "function": {"name": "choose_action",
                             "description": "one action", "parameters": schema}}]
        request["tool_choice"] = {"type": "function", "function": {"name": "choose_action"}}
    elif mode is not None:
        request["response_format"] = {"type": mode}
    data = json.dumps(request).encode()
    try:
        answer = urllib.request.urlopen(urllib.request.Request(
            "http://127.0.0.1:%s/v1/chat/completions" % port, data=data), timeout=10)
        return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

def payload(d, mode):
    """The action string of a reply, after checking the message's shape."""
    choice = d["choices"][0]
    message = choice["message"]
    if mode == "tools":
        assert message["content"] is None and choice["finish_reason"] == "tool_calls", d
        call, = message["tool_calls"]
        assert re.fullmatch(r"call_[0-9a-f]{16}", call["id"]) and call["type"] == "function", d
        assert call["function"]["name"] == "choose_action", d
        text = call["function"]["arguments"]
    else:
        assert choice["finish_reason"] == "stop" and "tool_calls" not in message, d
        text = message["content"]
    assert isinstance(text, str), d
    assert d["usage"]["completion_tokens"] == max(1, len(text.encode()) // 4), d
    return text

def classify(text, offered, allowed=ALL, words=None):
    """("valid", action) or ("invalid", form); fails on anything else."""
    try:
        pairs = json.loads(text, object_pairs_hook=lambda p: p)
    except ValueError:
        assert text == "I would like to post something", text
        return "invalid", "notjson"
    assert [k for k, _ in pairs] == KEYS, text
    a = dict(pairs)
    if a["action"] not in ALL:
        assert a == dict(zip(KEYS, ["dance", None, None, None, None])), text
        return "invalid", "dance"
    if a["action"] == "like" and a["post_id"] not in offered["post_id"]:
        assert a["agent_id"] is None and a["community_id"] is None and a["text"] is None, text
        assert a["post_id"] == max(offered["post_id"] or [998999999]) + 1000000, text
        return "invalid", "unoffered"
    if a["action"] == "follow" and a["agent_id"] is None:
        assert a == dict(zip(KEYS, ["follow", None, None, None, None])), text
        return "invalid", "nobody"
    assert a["action"] in allowed, text
    for key in ("post_id", "agent_id", "community_id"):
        if TARGET.get(a["action"]) == key:
            assert a[key] in offered[key], (text, offered)
        else:
            assert a[key] is None, text
    if a["action"] in TEXT:
        assert re.fullmatch(r"w\d{1,3}( w\d{1,3})*", a["text"]), text
        assert words is None or len(a["text"].split()) == words, (text, words)
    else:
        assert a["text"] is None, text
    return "valid", a["action"]

def offers(user):
    return {"post_id": [int(n) for n in re.findall(r"\[post (\d+)\]", user)],
            "agent_id": [int(n) for n in re.findall(r"\(agent (\d+)\)", user)],
            "community_id": [int(n) for n in re.findall(r"\[community (\d+)\]", user)]}

def run(n, mode="json", user=OFFERING, allowed=ALL, words=None, **kw):
    """Send N bodies (system prompts differ) and classify each reply."""
    out = []
    for i in range(n):
        status, d = send(user, system="sim %d" % i, mode=mode, enum=kw.pop("enum", allowed), **kw)
        assert status == 200, d
        out.append(classify(payload(d, mode), offers(user), allowed, words))
    return out

if case in ("json", "tools"):
    got = run(80, case)
    assert all(v == "valid" for v, _ in got), got
    actions = {a for _, a in got}
    assert len(actions) >= 6 and {"post", "like"} <= actions, actions
    assert actions & {"follow", "unfollow", "mute"} and actions & {"reply", "quote"}, actions
elif case == "same":
    for mode in ("json", "tools"):
        first, second = (send(OFFERING, system="same", mode=mode)[1] for _ in range(2))
        assert first["id"] != second["id"], (first, second)
        assert first["choices"] == second["choices"], (first, second)
elif case == "nothing":
    got = run(40, user="Nothing to see here.")
    assert all(v == "valid" and a in ("post", "do_nothing") for v, a in got), got
    assert sum(a == "post" for _, a in got) >= 32, got
    got = run(40, "tools", user="Nothing.", allowed=ALL[:-1])
    assert all(a == "post" for _, a in got), got
elif case == "restricted":
    got = run(30, user="Nothing offered.", allowed=["like", "do_nothing"])
    assert all(a == "do_nothing" for _, a in got), got
    got = run(30, "tools", allowed=["like", "do_nothing"])
    assert all(v == "valid" for v, _ in got) and {a for _, a in got} == {"like", "do_nothing"}, got
elif case == "enumless":
    got = run(40, enum=None) + run(40, mode="json_object")
    assert all(v == "valid" for v, _ in got) and len({a for _, a in got}) >= 6, got
    status, d = send(OFFERING, mode="text")
    assert status == 200 and d["choices"][0]["message"]["content"].startswith("[mock] sim :: Feed:"), d
elif case == "history":
    got = run(60, history="old feed: [post 999] (agent 999) [community 999]")
    assert all(v == "valid" for v, _ in got), got
elif case == "words":
    got = run(40, max_tokens=3, words=3) + run(40, "tools", words=20)
    assert all(v == "valid" for v, _ in got) and {a for _, a in got} & TEXT, got
elif case == "words40":
    got = run(40, words=40)
elif case == "all_invalid":
    for mode in ("json", "tools"):
        got = run(40, mode) + run(10, mode, user="nothing offered")
        assert all(v == "invalid" for v, _ in got), got
        assert {f for _, f in got} == {"unoffered", "dance", "notjson", "nobody"}, got
elif case == "share":
    got = run(100, "json", words=40) + run(100, "tools", words=40)
    share = sum(v == "invalid" for v, _ in got) / len(got)
    assert 0.15 <= share <= 0.45, share
    assert len({f for v, f in got if v == "invalid"}) == 4, got
elif case == "directive":
    for mode in ("json", "tools"):
        got = run(16, mode, user=OFFERING + " [[mock:invalid_action]]")
        assert all(v == "invalid" for v, _ in got), got
        assert len({f for _, f in got}) >= 3, got
    status, d = send("plain [[mock:invalid_action]]", mode=None)
    assert status == 200 and d["choices"][0]["message"]["content"].startswith("[mock] sim :: plain [[mock-invalid_action]] w"), d
elif case == "faults":
    status, d = send(OFFERING + " [[mock:status=503]]", mode="tools")
    assert status == 503 and d["error"]["message"] == "mock error 503", d
    status, d = send(OFFERING + " [[mock:nullcontent]]", mode="tools")
    message = d["choices"][0]["message"]
    assert message["content"] is None and "tool_calls" not in message, d
    assert d["choices"][0]["finish_reason"] == "stop", d
    status, d = send(OFFERING + " [[mock:finish=length]]", mode="tools")
    assert d["choices"][0]["finish_reason"] == "length" and d["choices"][0]["message"]["tool_calls"], d
else:
    sys.exit("unknown case " + case)
EOF
actions() { python3 "$tmp/actions.py" "$PORT" "$1"; }
check "JSON mode (response_format json_schema): 80 bodies, each content a valid action object (five keys in order, ids among those offered), several kinds" \
	actions json
check "tools mode: one tool call to the echoed name, id call_<16 hex>, arguments a valid action, finish_reason tool_calls" \
	actions tools
check "structured: the same body gets the same action (JSON and tools mode)" actions same
check "a prompt offering nothing gets post (or do_nothing); without do_nothing in the enum, always post" \
	actions nothing
check "enum [like, do_nothing] and no posts offered: do_nothing; with posts: like (an offered one) or do_nothing" \
	actions restricted
check "a schema without an enum, or json_object, allows all 12; response_format text is a plain reply" \
	actions enumless
check "only the last user message offers ids (an earlier [post 999] is never chosen)" actions history
check "an action's text has min(--words, max_tokens, 40) words (3 with max_tokens 3, else 20)" actions words
check "[[mock:invalid_action]] makes a structured reply invalid (and leaves a plain one alone)" \
	actions directive
check "fault directives apply first to structured requests (status=503, nullcontent, finish=length)" \
	actions faults

start_mock invalid1 --invalid-actions 1
PORT=$invalid1_PORT
check "--invalid-actions 1: every structured reply is one of the 4 invalid forms, all 4 seen" \
	actions all_invalid
start_mock invalid03 --invalid-actions 0.3 --words 100
PORT=$invalid03_PORT
check "--invalid-actions 0.3: 200 distinct bodies, 15-45% invalid; valid texts capped at 40 words" \
	actions share
PORT=$main_PORT
for value in 1.5 -0.1 abc; do
	"$MOCK" --port 0 --quiet --invalid-actions "$value" > /dev/null 2> "$tmp/bad.err"
	echo "$? $(cat "$tmp/bad.err")" >> "$tmp/bad_invalid"
done
check "--invalid-actions outside 0..1 is refused at start-up (exit 2, saying why)" \
	bash -c "test \$(grep -c '^2 mock_llm: --invalid-actions must be a number from 0 to 1' '$tmp/bad_invalid') -eq 3"


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
# ---- endpoint behaviour models: latency, tokens, saturation, rate limits ----

# burst.py EVAL PORT N [CONTENT [MAX_TOKENS [AT_SECOND]]] -- EXPRESSION...:
# open N connections, then send N chat requests at once (AT_SECOND=1: just
# after a wall-clock second starts), while polling /mock/stats every 10 ms.
# Then evaluate each Python expression on what happened, writing "ok" or
# why not to EVAL.1, EVAL.2, ...  In the expressions: b = {"total": s,
# "results": [{t, status, tokens, headers, body}], "max_in_service",
# "max_queued", "early" (the stats 100 ms in), "after" (the stats at the
# end)}, r = b["results"], t = the sorted times, ok = the 200s, median().
cat > "$tmp/burst.py" <<'EOF'
import http.client, json, sys, threading, time
split = sys.argv.index("--")
args, expressions = sys.argv[1:split], sys.argv[split + 1:]
eval_prefix, port, n = args[0], int(args[1]), int(args[2])
content = args[3] if len(args) > 3 else "burst"
max_tokens = int(args[4]) if len(args) > 4 else -1
at_second = len(args) > 5 and args[5] == "1"
results = [None] * n
gate = threading.Barrier(n + 1)
done = threading.Event()
def stats():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/mock/stats")
    return json.loads(c.getresponse().read())
def one(i):
    request = {"model": "m", "messages": [{"role": "user", "content": "%s %d" % (content, i)}]}
    if max_tokens >= 0:
        request["max_tokens"] = max_tokens
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.connect()
    gate.wait()
    start = time.monotonic()
    c.request("POST", "/v1/chat/completions", json.dumps(request))
    r = c.getresponse()
    raw = r.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    tokens = body.get("usage", {}).get("completion_tokens") if isinstance(body, dict) else None
    results[i] = {"t": time.monotonic() - start, "status": r.status, "tokens": tokens,
                  "headers": {k.lower(): v for k, v in r.getheaders()}, "body": body}
watch = {"max_in_service": 0, "max_queued": 0, "early": None}
def watcher(start):
    while not done.is_set():
        s = stats()
        watch["max_in_service"] = max(watch["max_in_service"], s["in_service"])
        watch["max_queued"] = max(watch["max_queued"], s["queued"])
        if watch["early"] is None and time.monotonic() - start >= 0.1:
            watch["early"] = s
        time.sleep(0.01)
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
if at_second:
    time.sleep(1.02 - time.time() % 1.0)
start = time.monotonic()
gate.wait()
w = threading.Thread(target=watcher, args=(start,))
w.start()
for t in threads:
    t.join()
total = time.monotonic() - start
done.set()
w.join()
b = dict(watch, total=total, results=results, after=stats())
r = b["results"]
t = sorted(x["t"] for x in r)
ok = [x for x in r if x["status"] == 200]
def median(values):
    v = sorted(values)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
for number, expression in enumerate(expressions, 1):
    try:
        result = eval(expression)
    except Exception as e:
        result = False
        expression += " raised %r" % e
    with open("%s.%d" % (eval_prefix, number), "w") as out:
        out.write("ok\n" if result else "false: %s\ntimes %s\nstats after %s\nearly %s\n" % (
            expression, [round(x, 3) for x in t], b["after"], b["early"]))
EOF
# burst ARGS -- EXPRESSION...: run burst.py; "check DESCRIPTION eval_ok N"
# then reports on the Nth expression
burst() {
	rm -f "$tmp"/eval.*
	python3 "$tmp/burst.py" "$tmp/eval" "$@" > "$tmp/burst.out" 2>&1
}
eval_ok() {
	[ "$(head -1 "$tmp/eval.$1" 2>/dev/null)" = ok ] && return 0
	cat "$tmp/eval.$1" 2>/dev/null || head -c 600 "$tmp/burst.out"
	return 1
}

start_mock fixed --latency fixed:150 --latency-ms 2000
elapsed=$(curl -sS -o "$tmp/body" -w '%{time_total}' --max-time 5 \
	--data-binary '{"model":"m","messages":[{"role":"user","content":"x"}]}' \
	"http://127.0.0.1:$fixed_PORT/v1/chat/completions")
check "--latency fixed:150 overrides --latency-ms 2000 (0.15 s)" body_is "0.15 <= $elapsed < 0.6 and d['choices']"

start_mock uniform --latency uniform:100-300 --threads 2
burst "$uniform_PORT" 100 -- 'len(ok) == 100 and t[0] >= 0.095 and t[-1] < 0.5 and t[10] < 0.16 and t[89] > 0.24 and 0.16 < median(t) < 0.24' \
	'160 < b["after"]["latency_ms_p50"] < 240 and 250 < b["after"]["latency_ms_p90"] < 310'
check "--latency uniform:100-300: 100 concurrent requests all take 0.1-0.3 s, spread over the range" eval_ok 1
check "... /mock/stats latency_ms_p50 ~200 (160-240), p90 ~280 (250-310)" eval_ok 2

start_mock lognormal --latency lognormal:200,0.5 --threads 2
burst "$lognormal_PORT" 200 -- 'len(ok) == 200 and 0.14 < median(t) < 0.26 and t[-1] < 3' \
	'1.35 < t[179] / median(t) < 2.7' \
	'140 < b["after"]["latency_ms_p50"] < 260 and 1.35 < b["after"]["latency_ms_p90"] / b["after"]["latency_ms_p50"] < 2.7'
check "--latency lognormal:200,0.5: median of 200 concurrent requests within 30% of 200 ms" eval_ok 1
check "... its spread is lognormal: p90 / p50 ~ e^(0.5 x 1.28) = 1.9 (1.35-2.7)" eval_ok 2
check "... so is /mock/stats': latency_ms_p50 within 30% of 200, p90 / p50 1.35-2.7" eval_ok 3

start_mock heavy --latency heavytail:50,0.1,0.2,10
burst "$heavy_PORT" 200 -- 'len(ok) == 200 and 0.08 <= sum(1 for x in t if x > 0.25) / 200 <= 0.34 and median(t) < 0.15 and 0.35 < t[-1] < 2'
check "--latency heavytail:50,0.1,0.2,10: about 20% of 200 requests take ~500 ms (8-34%), the rest ~50 ms" eval_ok 1

for spec in 'lognormal:200' 'uniform:300-100' 'normal:5,1' 'fixed:-5' 'heavytail:100,0.5,2,10'; do
	"$MOCK" --port 0 --quiet --latency "$spec" > /dev/null 2> "$tmp/bad.err"
	echo "$? $(cat "$tmp/bad.err")" >> "$tmp/bad_specs"
done
check "bad --latency specs are refused at start-up (exit 2, saying why)" \
	bash -c "test \$(grep -c '^2 mock_llm: --latency' '$tmp/bad_specs') -eq 5"
"$MOCK" --port 0 --quiet --saturate 4 --saturate-mode drop > /dev/null 2> "$tmp/bad.err"
check "--saturate-mode accepts only queue (exit 2 otherwise)" \
	bash -c "test $? -eq 2 && grep -q 'saturate-mode' '$tmp/bad.err'"

# the same seed and the same requests in the same order: the same draws
start_mock seedA --seed 42 --words lognormal:20,0.8 --latency lognormal:5,1
start_mock seedB --seed 42 --words lognormal:20,0.8 --latency lognormal:5,1
start_mock seedC --seed 43 --words lognormal:20,0.8 --latency lognormal:5,1
check "--seed 42 twice draws the same word counts; --seed 43 others" \
	python3 - "$seedA_PORT" "$seedB_PORT" "$seedC_PORT" <<'EOF'
import json, sys, urllib.request
def tokens(port):
    out = []
    for i in range(12):
        request = urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % port,
            data=b'{"model":"m","messages":[{"role":"user","content":"same"}]}')
        out.append(json.load(urllib.request.urlopen(request, timeout=5))["usage"]["completion_tokens"])
    return out
a, b, c = (tokens(port) for port in sys.argv[1:4])
assert a == b and a != c and len(set(a)) >= 4, (a, b, c)
EOF

start_mock words --words uniform:5-10
burst "$words_PORT" 40 -- 'all(5 <= x["tokens"] <= 10 and len(x["body"]["choices"][0]["message"]["content"].split(" :: ")[1].split()) == 2 + x["tokens"] for x in r) and len(set(x["tokens"] for x in r)) >= 4'
check "--words uniform:5-10: completion_tokens in 5..10, varied, = the filler words" eval_ok 1
burst "$words_PORT" 10 capped 3 -- 'all(x["tokens"] == 3 for x in r)'
check "... still capped by max_tokens (3)" eval_ok 1
start_mock wordslog --words lognormal:30,0.3
burst "$wordslog_PORT" 100 -- '21 <= median(x["tokens"] for x in r) <= 39 and len(set(x["tokens"] for x in r)) > 5'
check "--words lognormal:30,0.3: median completion_tokens of 100 requests ~30 (21-39)" eval_ok 1

start_mock tokens --latency fixed:50 --ms-per-token 10 --words 30
for case in "-1 30 0.33 0.6" "5 5 0.09 0.3"; do
	set -- $case
	burst "$tokens_PORT" 4 tok "$1" -- "all(x['tokens'] == $2 and $3 <= x['t'] < $4 for x in r)"
	check "--latency fixed:50 --ms-per-token 10: $2 tokens take 50 + $2 x 10 ms" eval_ok 1
done
elapsed=$(curl -sS -o "$tmp/body" -w '%{time_total}' --max-time 5 \
	--data-binary '{"model":"m","messages":[{"role":"user","content":"[[mock:status=500]]"}]}' \
	"http://127.0.0.1:$tokens_PORT/v1/chat/completions")
check "... an error reply has no tokens: 50 ms" body_is "0.045 <= $elapsed < 0.25 and d['error']"

for threads in 1 2; do
	start_mock "sat$threads" --saturate 4 --latency fixed:200 --threads "$threads"
	port_var=sat${threads}_PORT
	burst "${!port_var}" 16 -- 'len(ok) == 16 and 0.75 < b["total"] < 1.3' \
		'all(abs(t[i] - 0.2 * (i // 4 + 1)) < 0.1 for i in range(16))' \
		'b["max_in_service"] == 4 and b["max_queued"] == 12 and b["early"]["in_service"] == 4 and b["early"]["queued"] == 12 and b["early"]["inflight"] == 16' \
		'b["after"]["in_service"] == 0 and b["after"]["queued"] == 0 and 700 < b["after"]["latency_ms_p90"] < 900 and b["after"]["inflight_at_arrival_p90"] >= 10 and b["after"]["inflight_peak"] == 16'
	check "--saturate 4 --latency fixed:200 --threads $threads: 16 concurrent requests take ~4 x 200 ms" eval_ok 1
	check "... served in FIFO waves of 4: ~0.2, 0.4, 0.6, 0.8 s" eval_ok 2
	check "... /mock/stats: in_service never above 4; 4 in service and 12 queued early on" eval_ok 3
	check "... and afterwards nothing in service or queued, latency p90 ~800 ms, inflight at arrival p90 >= 10" eval_ok 4
done

start_mock sat1slot --saturate 1 --saturate-mode queue --latency fixed:300
check "--saturate 1: a queued request whose client resets gives up its place" \
	python3 - "$sat1slot_PORT" <<'EOF'
import json, socket, struct, sys, time, urllib.request
port = int(sys.argv[1])
body = b'{"model":"m","messages":[{"role":"user","content":"%s"}]}'
def send(text):
    b = body % text.encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
    return s
def stats():
    return json.load(urllib.request.urlopen("http://127.0.0.1:%d/mock/stats" % port, timeout=5))
start = time.monotonic()
first = send("first")
time.sleep(0.03)
leaver = send("leaver")
time.sleep(0.03)
s = stats()
assert s["in_service"] == 1 and s["queued"] == 1, s
leaver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
leaver.close()
time.sleep(0.03)
s = stats()
assert s["queued"] == 0, s
third = send("third")
for sock in (first, third):
    sock.settimeout(5)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "no answer"
elapsed = time.monotonic() - start
# first: 0-0.3 s, third: 0.3-0.6 s; had the leaver kept its place, 0.9 s
assert 0.55 < elapsed < 0.8, elapsed
EOF

start_mock rps --rps-limit 10 --threads 2
burst "$rps_PORT" 30 rps -1 1 -- 'len(ok) == 10 and sum(1 for x in r if x["status"] == 429) == 20' \
	'all(x["body"]["error"]["code"] == "rate_limit_exceeded" and x["body"]["error"]["type"] == "requests" and x["headers"]["x-ratelimit-limit-requests"] == "10" and x["headers"]["x-ratelimit-remaining-requests"] == "0" and x["headers"]["x-ratelimit-reset-requests"] == x["headers"]["retry-after-ms"] + "ms" and 1 <= int(x["headers"]["retry-after-ms"]) <= 1000 for x in r if x["status"] == 429)' \
	'max(x["t"] for x in r if x["status"] == 429) < 0.2 and b["after"]["rate_limited_rps"] == 20 and b["after"]["by_status"]["429"] == 20'
check "--rps-limit 10: a burst of 30 in one second gets 10 answers and 20 429s" eval_ok 1
check "... each 429 is OpenAI's rate_limit_exceeded with x-ratelimit-* and retry-after-ms headers" eval_ok 2
check "... the 429s are quick (< 0.2 s) and counted apart in /mock/stats (rate_limited_rps 20)" eval_ok 3
burst "$rps_PORT" 5 again -1 1 -- 'len(ok) == 5'
check "... the next second admits requests again" eval_ok 1
curl -sS -o /dev/null --max-time 5 -X POST "http://127.0.0.1:$rps_PORT/mock/reset"
PORT=$rps_PORT stats
check "POST /mock/reset zeroes rate_limited_rps and the percentiles" \
	body_is 'd["rate_limited_rps"] == 0 and d["latency_ms_p50"] == 0 and d["latency_ms_p90"] == 0 and d["inflight_at_arrival_p50"] == 0 and d["inflight_at_arrival_p90"] == 0 and d["requests"] == 0'

start_mock fault500 --fault status=500
PORT=$fault500_PORT
status=$(chat 'plain')
check "--fault status=500: a request without a directive answers 500" \
	body_is "$status == 500 and d['error']['message'] == 'mock error 500'"
status=$(chat 'own [[mock:status=503]]')
check "... a request with its own directive gets that instead" equals "$status" 503
status=$(chat 'own [[mock:delay=1]]')
check "... even one that changes only the delay (200)" equals "$status" 200
start_mock faultreset --fault reset
PORT=$faultreset_PORT
chat 'plain' > /dev/null
rc=$?
check "--fault reset: every request is reset" test "$rc" -ne 0 -a "$rc" -ne 28
"$MOCK" --port 0 --quiet --fault 'status=5000' > /dev/null 2> "$tmp/bad.err"
check "a bad --fault stops start-up (exit 2, naming the item)" \
	bash -c "test $? -eq 2 && grep -q 'status=5000' '$tmp/bad.err'"

# fixtures: recorded replies, head lines in CRLF or LF, a body of raw bytes
mkdir -p "$tmp/fixtures"
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req_fixture_1\r\nContent-Length: 9999\r\n\r\n{"id":"chatcmpl-rec","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"recorded \xc3\xa9"},"finish_reason":"stop"}]}' \
	> "$tmp/fixtures/openai_ok.http"
printf 'HTTP/1.1 429 Too Many Requests (recorded)\nContent-Type: application/json; charset=utf-8\nTransfer-Encoding: chunked\nretry-after: 20\nConnection: close\n\n{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}\n\n' \
	> "$tmp/fixtures/rate-limited.v1.http"
printf '{"not":"a reply"}\n' > "$tmp/fixtures/broken.http"
start_mock fix --fixtures "$tmp/fixtures"
PORT=$fix_PORT
# fixture_replayed NAME STATUS: the answer had STATUS, the file's body bytes,
# one correct Content-Length and no Transfer-Encoding
fixture_replayed() {
	python3 - "$tmp/fixtures/$1.http" "$tmp/body" "$tmp/headers" "$2" <<'EOF'
import re, sys
data = open(sys.argv[1], "rb").read()
m = re.search(rb"\r?\n\r?\n", data)
expected = data[m.end():]
got = open(sys.argv[2], "rb").read()
headers = open(sys.argv[3], "rb").read().decode()
lengths = re.findall(r"(?im)^content-length: *(\d+)\r$", headers)
assert got == expected, (got, expected)
assert lengths == [str(len(expected))], (lengths, len(expected))
assert not re.search(r"(?im)^transfer-encoding", headers), headers
assert headers.startswith("HTTP/1.1 %s " % sys.argv[4]), headers
EOF
}
chat 'replay [[mock:fixture=openai_ok]]' > /dev/null
check "fixture=openai_ok (CRLF head): 200, byte-exact body, one correct Content-Length" \
	fixture_replayed openai_ok 200
check "... the file's headers are sent" header_is x-request-id req_fixture_1
elapsed=$(chat 'replay [[mock:fixture=rate-limited.v1,delay=200]]' -w '%{time_total}')
check "fixture=rate-limited.v1 (LF head): 429, byte-exact body, one correct Content-Length" \
	fixture_replayed rate-limited.v1 429
check "... with its own reason phrase, after the latency (delay=200)" \
	bash -c "grep -q '^HTTP/1.1 429 Too Many Requests (recorded)'$'\r''\$' '$tmp/headers' && case '$elapsed' in 0.[01]*) exit 1;; esac"
check "... its headers go out with CRLF; its Connection header is the mock's own" \
	bash -c "grep -q '^retry-after: 20'$'\r''\$' '$tmp/headers' && test \$(grep -ci '^connection:' '$tmp/headers') -eq 1 && grep -qi '^content-type: application/json; charset=utf-8'$'\r' '$tmp/headers'"
status=$(chat 'replay [[mock:fixture=absent_one]]')
check "a missing fixture answers 400 naming the file" \
	body_is "$status == 400 and '$tmp/fixtures/absent_one.http' in d['error']['message']"
status=$(chat 'replay [[mock:fixture=broken]]')
check "a fixture that is not an HTTP reply answers 400" \
	body_is "$status == 400 and 'status line' in d['error']['message']"
status=$(chat 'replay [[mock:fixture=../fixtures/openai_ok]]')
check "a fixture name outside [A-Za-z0-9_.-] answers 400" \
	body_is "$status == 400 and 'fixture=../fixtures/openai_ok' in d['error']['message']"
pushd / > /dev/null
start_mock rootcwd
popd > /dev/null
PORT=$rootcwd_PORT
status=$(chat 'replay [[mock:fixture=surely_absent_fixture]]')
root=$(cd "$(dirname "$MOCK")/../.." && pwd -P); root=${root%/}
check "without --fixtures, from any cwd, fixtures come from test/fixtures/replies of the checkout" \
	body_is "$status == 400 and '$root/test/fixtures/replies/surely_absent_fixture.http' in d['error']['message']"
PORT=$main_PORT


# ---- Batch API: files, batches, output and error files ----

# batch.py PORT CASE: drive the Files and Batch APIs of the mock on PORT
# (uploads built by hand as multipart/form-data with CRLF), wait for the
# batches to end, and check their state, timestamps, counts and files;
# prints why on failure.  Lines are compared with what POST
# /v1/chat/completions answers for the same body bytes (less "id" and
# "created", which differ by design).
cat > "$tmp/batch.py" <<'EOF'
import json, socket, struct, sys, threading, time, urllib.error, urllib.request, uuid
port, case = sys.argv[1], sys.argv[2]
BASE = "http://127.0.0.1:%s" % port
TERMINAL = ("completed", "failed", "expired", "cancelled")

def call(method, path, body=None, headers=None):
    request = urllib.request.Request(BASE + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def jcall(method, path, obj=None):
    body = None if obj is None else json.dumps(obj).encode()
    status, raw = call(method, path, body, {"Content-Type": "application/json"})
    return status, json.loads(raw)

def form(data, filename="input.jsonl"):
    """The multipart/form-data body of an upload, and its Content-Type."""
    b = "----batchtest" + uuid.uuid4().hex
    body = ("--%s\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" % (b, b, filename)).encode()
    body += data + ("\r\n--%s--\r\n" % b).encode()
    return body, "multipart/form-data; boundary=" + b

def upload(data, filename="input.jsonl"):
    body, content_type = form(data, filename)
    status, raw = call("POST", "/v1/files", body, {"Content-Type": content_type})
    d = json.loads(raw)
    assert status == 200 and d["bytes"] == len(data), (status, d)
    return d["id"]

def body(user, system=None, **extra):
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return json.dumps(dict({"model": "mock-small", "messages": messages}, **extra), separators=(",", ":"))

def line(custom_id, body_text, url="/v1/chat/completions", method="POST"):
    return '{"custom_id":%s,"method":"%s","url":"%s","body":%s}' % (json.dumps(custom_id), method, url, body_text)

def create(file_id, **extra):
    request = dict({"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}, **extra)
    status, d = jcall("POST", "/v1/batches", request)
    assert status == 200 and d["object"] == "batch", (status, d)
    return d

def submit(lines, **extra):
    return create(upload(("\n".join(lines) + "\n").encode()), **extra)

def wait(batch_id, until=TERMINAL, timeout=15):
    """Poll until a status in UNTIL; returns (batch, statuses seen, counts seen)."""
    seen, counts = [], []
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, d = jcall("GET", "/v1/batches/" + batch_id)
        assert status == 200, d
        if not seen or seen[-1] != d["status"]:
            seen.append(d["status"])
        counts.append((d["status"], d["request_counts"]["completed"] + d["request_counts"]["failed"]))
        if d["status"] in until:
            return d, seen, counts
        time.sleep(0.02)
    raise AssertionError("batch %s did not reach %s: %s" % (batch_id, until, seen))

def lines_of(file_id):
    if file_id is None:
        return []
    status, raw = call("GET", "/v1/files/%s/content" % file_id)
    assert status == 200, (status, raw[:200])
    assert raw == b"" or raw.endswith(b"\n"), raw[-100:]
    return [json.loads(l) for l in raw.decode().splitlines()]

def chat(body_text):
    status, raw = call("POST", "/v1/chat/completions", body_text.encode(), {"Content-Type": "application/json"})
    return status, json.loads(raw)

def same(a, b):
    """Equal but for the completion's id and created, which always differ."""
    strip = lambda d: {k: v for k, v in d.items() if k not in ("id", "created")} if isinstance(d, dict) else d
    return strip(a) == strip(b)

def check_line(l, custom_id, status=200):
    assert l["custom_id"] == custom_id and l["id"].startswith("batch_req_") and len(l["id"]) == 34, l
    assert l["response"]["status_code"] == status and l["error"] is None, l
    assert l["response"]["request_id"].startswith("req_") and len(l["response"]["request_id"]) == 36, l

# --batch-api-delay-ms 700: a delayed answer takes at least DELAYED s, an
# immediate one less than PROMPT s.
DELAYED, PROMPT = 0.6, 0.4

def timed(fn, *args):
    started = time.time()
    result = fn(*args)
    return result, time.time() - started

def in_flight(start, probe, timeout=5):
    """Run START() in a thread and poll PROBE() (other connections) until it
    gives something.  Returns START's result and duration, what PROBE gave,
    and whether START was still unanswered when PROBE's answer was in."""
    out = {}
    def run():
        out["result"], out["elapsed"] = timed(start)
    thread = threading.Thread(target=run)
    thread.start()
    seen, pending = None, False
    deadline = time.time() + timeout
    while seen is None and time.time() < deadline:
        seen = probe()
        pending = "result" not in out
        if seen is None:
            time.sleep(0.02)
    thread.join(30)
    return out.get("result"), out.get("elapsed"), seen, pending

def raw_request(method, path, body=b"", content_type="application/json"):
    return ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
            % (method, path, content_type, len(body))).encode() + body

def send_and_leave(request, reset=False, after=0.2):
    """Send REQUEST on a new connection, close it AFTER s later (RST if RESET)."""
    s = socket.create_connection(("127.0.0.1", int(port)))
    s.sendall(request)
    time.sleep(after)
    if reset:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()

if case == "flow":
    bodies = {"plain": body("hello batch", "Be brief."),
              "short": body("cap me", max_tokens=3),
              "parts": json.dumps({"model": "mock-small", "messages": [{"role": "user", "content": [{"type": "text", "text": "part"}]}]}),
              "json": body("Feed: [post 7] (agent 3)", "sim", response_format={"type": "json_object"}),
              "spaced": '{ "model" : "mock-small", "messages" : [ {"role":"user","content":"spaces"} ] }'}
    d = submit([line(k, v) for k, v in bodies.items()], metadata={"run": "flow"})
    assert d["status"] == "validating" and d["request_counts"] == {"total": 0, "completed": 0, "failed": 0}, d
    assert d["expires_at"] - d["created_at"] == 86400 and d["metadata"] == {"run": "flow"}, d
    assert d["endpoint"] == "/v1/chat/completions" and d["completion_window"] == "24h" and d["errors"] is None, d
    assert d["id"].startswith("batch_") and d["output_file_id"] is None and d["in_progress_at"] is None, d
    d, seen, counts = wait(d["id"])
    assert seen == ["validating", "in_progress", "finalizing", "completed"], seen
    assert any(0 < n < 5 for s, n in counts if s == "in_progress"), counts
    assert [n for _, n in counts] == sorted(n for _, n in counts), counts
    assert d["created_at"] <= d["in_progress_at"] <= d["finalizing_at"] <= d["completed_at"], d
    assert d["failed_at"] is None and d["expired_at"] is None and d["cancelled_at"] is None, d
    assert d["request_counts"] == {"total": 5, "completed": 5, "failed": 0} and d["error_file_id"] is None, d
    out = lines_of(d["output_file_id"])
    assert [l["custom_id"] for l in out] == list(bodies), out
    for l in out:
        check_line(l, l["custom_id"])
        status, direct = chat(bodies[l["custom_id"]])
        assert status == 200 and same(l["response"]["body"], direct), (l, direct)
    assert json.loads(out[3]["response"]["body"]["choices"][0]["message"]["content"])["action"], out[3]
    status, f = jcall("GET", "/v1/files/" + d["output_file_id"])
    assert f["purpose"] == "batch_output" and f["filename"] == d["id"] + "_output.jsonl", f
elif case == "directives":
    bodies = {"ok": body("fine"),
              "down": body("down [[mock:status=503]]"),
              "flat": body("flat [[mock:status=500,errshape=flat]]"),
              "bad": json.dumps({"model": "mock-small"}),
              "refused": body("no [[mock:refusal]]"),
              "invalid": body("Feed: [post 1] [[mock:invalid_action]]", "sim", response_format={"type": "json_object"})}
    lines = [line(k, v) for k, v in bodies.items()] + [line("stuck", body("stuck [[mock:hang]]"))]
    d, _, _ = wait(submit(lines)["id"])
    assert d["status"] == "completed" and d["request_counts"] == {"total": 7, "completed": 3, "failed": 4}, d
    out, err = lines_of(d["output_file_id"]), lines_of(d["error_file_id"])
    assert [l["custom_id"] for l in out] == ["ok", "refused", "invalid"], out
    assert [l["custom_id"] for l in err] == ["down", "flat", "bad", "stuck"], err
    for l in out + err[:3]:
        status, direct = chat(bodies[l["custom_id"]])
        check_line(l, l["custom_id"], status)
        assert same(l["response"]["body"], direct), (l, direct)
    assert err[0]["response"]["status_code"] == 503 and err[1]["response"]["body"]["code"] == 500, err
    assert err[2]["response"]["status_code"] == 400, err
    assert err[3]["response"] is None and err[3]["error"]["code"] == "request_timeout", err
    assert out[1]["response"]["body"]["choices"][0]["message"]["refusal"], out
elif case == "share":
    lines = [line("row-%d" % i, body("share %d" % i)) for i in range(60)]
    file_id = upload(("\n".join(lines) + "\n").encode())
    failed_ids = []
    for _ in range(2):
        d, _, _ = wait(create(file_id)["id"])
        out, err = lines_of(d["output_file_id"]), lines_of(d["error_file_id"])
        assert d["status"] == "completed" and d["request_counts"]["failed"] == len(err), d
        assert len(out) + len(err) == 60 and d["request_counts"]["completed"] == len(out), d
        assert sorted(l["custom_id"] for l in out + err) == sorted("row-%d" % i for i in range(60))
        for l in err:
            check_line(l, l["custom_id"], 500)
            assert l["response"]["body"]["error"]["type"] == "server_error", l
        failed_ids.append([l["custom_id"] for l in err])
    assert 12 <= len(failed_ids[0]) <= 48, failed_ids
    assert failed_ids[0] == failed_ids[1], failed_ids
elif case == "expire":
    lines = [line("e%d" % i, body("expire %d" % i)) for i in range(10)]
    d, seen, _ = wait(submit(lines)["id"])
    assert seen[-1] == "expired" and "completed" not in seen and "finalizing" not in seen, seen
    assert d["expired_at"] and d["completed_at"] is None and d["in_progress_at"] <= d["expired_at"], d
    assert d["request_counts"] == {"total": 10, "completed": 5, "failed": 5}, d
    out, err = lines_of(d["output_file_id"]), lines_of(d["error_file_id"])
    assert [l["custom_id"] for l in out] == ["e%d" % i for i in range(5)], out
    assert [l["custom_id"] for l in err] == ["e%d" % i for i in range(5, 10)], err
    for l in err:
        assert l["response"] is None and l["error"]["code"] == "batch_expired" and l["error"]["message"], l
elif case == "cancel":
    lines = [line("c%d" % i, body("cancel %d" % i)) for i in range(20)]
    d = submit(lines)
    wait(d["id"], until=("in_progress",))
    time.sleep(0.4)
    status, c = jcall("POST", "/v1/batches/%s/cancel" % d["id"])
    assert status == 200 and c["status"] == "cancelling" and c["cancelling_at"], c
    assert c["cancelled_at"] is None and 0 < c["request_counts"]["completed"] < 20, c
    d, seen, _ = wait(d["id"])
    assert seen[-1] == "cancelled" and d["cancelled_at"] >= d["cancelling_at"], (seen, d)
    k = c["request_counts"]["completed"]
    out, err = lines_of(d["output_file_id"]), lines_of(d["error_file_id"])
    assert [l["custom_id"] for l in out] == ["c%d" % i for i in range(k)], (k, out)
    assert [l["custom_id"] for l in err] == ["c%d" % i for i in range(k, 20)], (k, err)
    assert all(l["response"] is None and l["error"]["code"] == "batch_cancelled" for l in err), err
    assert d["request_counts"] == {"total": 20, "completed": k, "failed": 20 - k}, d
    status, again = jcall("POST", "/v1/batches/%s/cancel" % d["id"])
    assert status == 400 and "cancelled" in again["error"]["message"], again
    status, missing = jcall("POST", "/v1/batches/batch_nope/cancel")
    assert status == 404 and missing["error"]["type"] == "invalid_request_error", missing
elif case == "invalid":
    good = line("ok", body("fine"))
    lines = [good, "{not json", '{"method":"POST","url":"/v1/chat/completions","body":{}}',
             line("u", body("x"), url="/v1/embeddings"), line("m", body("x"), method="GET"),
             '{"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":"text"}',
             line("model", '{"model":"another","messages":[{"role":"user","content":"x"}]}')]
    d, seen, _ = wait(submit(lines)["id"])
    assert seen == ["validating", "failed"] and d["failed_at"] and d["in_progress_at"] is None, (seen, d)
    assert d["output_file_id"] is None and d["error_file_id"] is None, d
    assert d["request_counts"] == {"total": 0, "completed": 0, "failed": 0}, d
    got = [(e["code"], e["line"], e["param"]) for e in d["errors"]["data"]]
    assert d["errors"]["object"] == "list" and all(e["message"] for e in d["errors"]["data"]), d
    assert got == [("invalid_json_line", 2, None), ("missing_required_parameter", 3, "custom_id"),
                   ("invalid_url", 4, "url"), ("invalid_method", 5, "method"),
                   ("missing_required_parameter", 6, "body"), ("mismatched_model", 7, "body.model")], got
elif case == "duplicate":
    d, seen, _ = wait(submit([line("same", body("one")), "", line("other", body("two")),
                              line("same", body("three"))])["id"])
    assert d["status"] == "failed", d
    assert [(e["code"], e["line"]) for e in d["errors"]["data"]] == [("duplicate_custom_id", 4)], d
elif case == "crlf":
    lines = [line("r%d" % i, body("crlf %d" % i)) for i in range(3)]
    d, _, _ = wait(create(upload(("\r\n".join(lines) + "\r\n").encode()))["id"])
    assert d["status"] == "completed" and d["request_counts"]["completed"] == 3, d
    assert [l["custom_id"] for l in lines_of(d["output_file_id"])] == ["r0", "r1", "r2"]
elif case == "list":
    ids = [submit([line("l", body("list %d" % i))])["id"] for i in range(3)]
    status, page = jcall("GET", "/v1/batches?limit=2")
    assert status == 200 and page["object"] == "list" and page["has_more"] is True, page
    assert [b["id"] for b in page["data"]] == ids[::-1][:2], (ids, page)
    assert page["first_id"] == ids[2] and page["last_id"] == ids[1], page
    status, rest = jcall("GET", "/v1/batches?limit=100&after=" + page["last_id"])
    assert rest["data"][0]["id"] == ids[0] and rest["has_more"] is False, rest
    assert not {b["id"] for b in rest["data"]} & {b["id"] for b in page["data"]}, rest
    status, everything = jcall("GET", "/v1/batches")
    assert len(everything["data"]) <= 20 and all(b["object"] == "batch" for b in everything["data"]), everything
    status, bad = jcall("GET", "/v1/batches?limit=500")
    assert status == 400 and bad["error"]["param"] == "limit", bad
elif case == "delete":
    file_id = upload(("\n".join(line("d%d" % i, body("delete %d" % i)) for i in range(4)) + "\n").encode())
    d = create(file_id)
    status, gone = jcall("DELETE", "/v1/files/" + file_id)
    assert status == 200 and gone == {"id": file_id, "object": "file", "deleted": True}, gone
    for method, path in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        status, raw = call(method, "/v1/files/" + file_id + path)
        assert status == 404 and json.loads(raw)["error"]["message"], (method, path, status, raw)
    d, _, _ = wait(d["id"])
    assert d["status"] == "completed" and len(lines_of(d["output_file_id"])) == 4, d
    status, listed = jcall("GET", "/v1/files?purpose=batch")
    assert file_id not in [f["id"] for f in listed["data"]], listed
    assert all(f["purpose"] == "batch" for f in listed["data"]), listed
    status, _ = jcall("DELETE", "/v1/files/" + d["output_file_id"])
    status, raw = call("GET", "/v1/files/%s/content" % d["output_file_id"])
    assert status == 404, status
elif case == "retry":
    text = body("retry [[mock:status=500,times=1]] %s" % uuid.uuid4().hex)
    first, _, _ = wait(submit([line("r", text)])["id"])
    second, _, _ = wait(submit([line("r", text)])["id"])
    err, out = lines_of(first["error_file_id"]), lines_of(second["output_file_id"])
    assert first["request_counts"]["failed"] == 1 and err[0]["response"]["status_code"] == 500, first
    assert second["request_counts"]["completed"] == 1 and second["error_file_id"] is None, second
    status, direct = chat(text)
    assert status == 200 and same(out[0]["response"]["body"], direct), (out, direct)
elif case == "fault":
    d, _, _ = wait(submit([line("f%d" % i, body("fault %d" % i)) for i in range(3)] +
                          [line("own", body("own [[mock:nousage]]"))])["id"])
    err, out = lines_of(d["error_file_id"]), lines_of(d["output_file_id"])
    assert [l["response"]["status_code"] for l in err] == [500] * 3, err
    assert [l["custom_id"] for l in out] == ["own"] and "usage" not in out[0]["response"]["body"], out
elif case == "instant":
    d = submit([line("i%d" % i, body("instant %d" % i)) for i in range(3)], metadata=None)
    assert d["status"] == "completed" and d["request_counts"] == {"total": 3, "completed": 3, "failed": 0}, d
    assert d["created_at"] == d["in_progress_at"] == d["finalizing_at"] == d["completed_at"], d
    assert [l["custom_id"] for l in lines_of(d["output_file_id"])] == ["i0", "i1", "i2"], d
elif case == "stats":
    call("POST", "/mock/reset")
    d, _, _ = wait(submit([line("s%d" % i, body("stats %d" % i)) for i in range(3)])["id"])
    status, s = jcall("GET", "/mock/stats")
    assert s["files_uploaded"] == 1 and s["batches_created"] == 1, s
    assert s["batch_lines_answered"] == 3 and s["batch_lines_failed"] == 0, s
    assert s["requests"] == 0 and s["completions"] == 0, s
elif case == "delay_upload":
    name = "delay-%s.jsonl" % uuid.uuid4().hex
    data = (line("u", body("delay upload")) + "\n").encode()
    def listed():
        status, d = jcall("GET", "/v1/files")
        return next((f["id"] for f in d["data"] if f["filename"] == name), None)
    file_id, elapsed, seen, pending = in_flight(lambda: upload(data, name), listed)
    assert file_id is not None and elapsed >= DELAYED, (file_id, elapsed)
    assert seen == file_id and pending, ("listed while the upload was pending?", seen, file_id, pending)
elif case == "delay_create":
    file_id = upload((line("c", body("delay create")) + "\n").encode())
    def listed():
        status, d = jcall("GET", "/v1/batches?limit=100")
        return next((b["id"] for b in d["data"] if b["input_file_id"] == file_id), None)
    d, elapsed, seen, pending = in_flight(lambda: create(file_id), listed)
    assert d is not None and elapsed >= DELAYED, (d, elapsed)
    assert seen == d["id"] and pending, ("listed while the create was pending?", seen, d["id"], pending)
    # the answer was made at creation; the batch's clock has run since
    # (validating lasts 200 ms by default, the answer came 700 ms later)
    status, now = jcall("GET", "/v1/batches/" + d["id"])
    assert d["status"] == "validating" and now["status"] != "validating", (d, now)
elif case == "delay_content":
    data = (line("t", body("delay content")) + "\n").encode()
    file_id = upload(data)
    (status, raw), elapsed = timed(call, "GET", "/v1/files/%s/content" % file_id)
    assert status == 200 and raw == data and elapsed >= DELAYED, (status, raw, elapsed)
    (status, raw), elapsed = timed(call, "GET", "/v1/files/file-absent/content")
    assert status == 404 and elapsed >= DELAYED, ("errors are delayed too", status, elapsed)
elif case == "delay_fast":
    file_id = upload((line("f", body("delay fast")) + "\n").encode())
    d = create(file_id)
    for method, path, payload in (("GET", "/v1/batches/" + d["id"], None),
                                  ("GET", "/v1/batches", None),
                                  ("GET", "/v1/files", None),
                                  ("GET", "/v1/files/" + file_id, None),
                                  ("POST", "/v1/batches/%s/cancel" % d["id"], None),
                                  ("POST", "/v1/chat/completions", body("not delayed").encode()),
                                  ("DELETE", "/v1/files/" + file_id, None)):
        (status, raw), elapsed = timed(call, method, path, payload, {"Content-Type": "application/json"})
        assert status == 200 and elapsed < PROMPT, (method, path, status, elapsed, raw[:200])
elif case == "delay_disconnect":
    call("POST", "/mock/reset")
    data = (line("x", body("delay disconnect")) + "\n").encode()
    file_id = upload(data)
    name = "left-%s.jsonl" % uuid.uuid4().hex
    upload_body, content_type = form(data, name)
    create_body = json.dumps({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                              "completion_window": "24h"}).encode()
    content = raw_request("GET", "/v1/files/%s/content" % file_id)
    send_and_leave(raw_request("POST", "/v1/files", upload_body, content_type))
    send_and_leave(raw_request("POST", "/v1/files", upload_body, content_type), reset=True)
    send_and_leave(raw_request("POST", "/v1/batches", create_body))
    send_and_leave(raw_request("POST", "/v1/batches", create_body), reset=True)
    send_and_leave(content)
    send_and_leave(content, reset=True)
    send_and_leave(content, after=0)
    (status, raw), elapsed = timed(call, "GET", "/health")
    assert status == 200 and raw == b"ok" and elapsed < PROMPT, (status, raw, elapsed)
    # the provider acted on what the clients that left asked for
    status, files = jcall("GET", "/v1/files")
    assert [f["filename"] for f in files["data"]].count(name) == 2, files
    status, listed = jcall("GET", "/v1/batches?limit=100")
    assert [b["input_file_id"] for b in listed["data"]].count(file_id) == 2, listed
    # a client that only half-closes still hears its answer
    half = socket.create_connection(("127.0.0.1", int(port)))
    started = time.time()
    half.sendall(content)
    half.shutdown(socket.SHUT_WR)
    answer = b""
    while True:
        chunk = half.recv(65536)
        if not chunk:
            break
        answer += chunk
    half.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(data) and time.time() - started >= DELAYED, answer[:200]
    # every delayed answer is due by now; the mock still answers, and no
    # connection is left behind (the one asking is the only one)
    time.sleep(0.8)
    deadline = time.time() + 5
    while True:
        status, st = jcall("GET", "/mock/stats")
        if st["connections"] == 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status == 200 and st["connections"] == 1 and st["files_uploaded"] == 3 and st["batches_created"] == 2, st
else:
    sys.exit("unknown case " + case)
EOF
batch() { python3 "$tmp/batch.py" "$1" "$2"; }

# uploads with curl -F, as a client would
python3 - "$tmp/in.jsonl" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(3):
        f.write(json.dumps({"custom_id": "q%d" % i, "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": "mock-small", "messages": [{"role": "user", "content": "q %d" % i}]}}) + "\n")
EOF
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 10 -F purpose=batch -F "file=@$tmp/in.jsonl" \
	"http://127.0.0.1:$PORT/v1/files")
size=$(wc -c < "$tmp/in.jsonl")
check "POST /v1/files (curl -F purpose=batch -F file=@in.jsonl) answers a File object" \
	body_is "$status == 200 and d['object'] == 'file' and d['id'].startswith('file-') and d['bytes'] == $size and d['filename'] == 'in.jsonl' and d['purpose'] == 'batch' and isinstance(d['created_at'], int)"
file_id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$tmp/body")
curl -sS -o "$tmp/content" --max-time 10 "http://127.0.0.1:$PORT/v1/files/$file_id/content"
check "GET /v1/files/{id}/content gives back the uploaded bytes" cmp "$tmp/content" "$tmp/in.jsonl"
curl -sS -o "$tmp/body" --max-time 10 "http://127.0.0.1:$PORT/v1/files/$file_id"
check "GET /v1/files/{id} answers the same File object" \
	body_is "d['id'] == '$file_id' and d['bytes'] == $size and d['object'] == 'file'"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 10 -H 'Transfer-Encoding: chunked' \
	-F purpose=batch -F "file=@$tmp/in.jsonl;filename=chunked.jsonl;type=application/jsonl" "http://127.0.0.1:$PORT/v1/files")
check "a chunked upload with its own filename and content type is accepted" \
	body_is "$status == 200 and d['bytes'] == $size and d['filename'] == 'chunked.jsonl'"

# bad uploads: curl arguments | what the 400's message must contain
printf '' > "$tmp/empty.jsonl"
python3 -c 'import sys; open(sys.argv[1], "w").write("{}\n" * 50001)' "$tmp/lines50001.jsonl"
head -c 209715201 /dev/zero | tr '\0' x > "$tmp/over200mb.jsonl"
while IFS='|' read -r description arguments expected; do
	eval "set -- $arguments"
	status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 30 "$@" "http://127.0.0.1:$PORT/v1/files")
	check "upload refused with 400 and an OpenAI error: $description" \
		body_is "$status == 400 and \"$expected\" in d['error']['message'] and d['error']['type'] == 'invalid_request_error'"
done <<EOF
no purpose|-F "file=@$tmp/in.jsonl"|'purpose'
purpose other than batch|-F purpose=fine-tune -F "file=@$tmp/in.jsonl"|only 'batch'
no file part|-F purpose=batch|'file'
a JSON body, not multipart|-H 'Content-Type: application/json' --data-binary '{"purpose":"batch"}'|multipart/form-data
an empty file|-F purpose=batch -F "file=@$tmp/empty.jsonl"|empty
50,001 lines|-F purpose=batch -F "file=@$tmp/lines50001.jsonl"|at most 50000
200 MB + 1 byte|-F purpose=batch -F "file=@$tmp/over200mb.jsonl"|at most 209715200 bytes
a part that never ends|-H 'Content-Type: multipart/form-data; boundary=zz' --data-binary \$'--zz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch'|closing boundary
EOF
rm -f "$tmp/over200mb.jsonl"

check "a batch goes validating, in_progress (lines answered as time passes), finalizing, completed; timestamps, counts, metadata; each output line is what /v1/chat/completions answers for the same body" \
	batch "$PORT" flow
check "[[mock:...]] in a line: status= and a bad body go to the error file as chat answers them, hang is request_timeout, refusal and invalid_action as in chat" \
	batch "$PORT" directives
check "a line that is not JSON, lacks custom_id, has another url or method, no body object, another model: the batch fails validation with each error and its line" \
	batch "$PORT" invalid
check "a duplicate custom_id fails validation (blank lines are skipped but counted)" batch "$PORT" duplicate
check "a file with CRLF line ends runs" batch "$PORT" crlf
check "DELETE /v1/files/{id}: deleted, then 404 (GET, content, DELETE); its running batch still completes" \
	batch "$PORT" delete
check "/mock/stats counts files uploaded, batches created and batch lines answered" batch "$PORT" stats
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 -X PUT "http://127.0.0.1:$PORT/v1/batches")
check "PUT /v1/batches answers 405; an unknown batch 404" \
	bash -c "test $status = 405 && test \$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 'http://127.0.0.1:$PORT/v1/batches/batch_nope') = 404"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/v1/batches" \
	--data-binary "{\"input_file_id\":\"$file_id\",\"endpoint\":\"/v1/embeddings\",\"completion_window\":\"24h\"}")
check "POST /v1/batches for another endpoint answers 400 naming the param" \
	body_is "$status == 400 and d['error']['param'] == 'endpoint'"
status=$(curl -sS -o "$tmp/body" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$PORT/v1/batches" \
	--data-binary '{"input_file_id":"file-absent","endpoint":"/v1/chat/completions","completion_window":"24h"}')
check "POST /v1/batches for an unknown file answers 404" \
	body_is "$status == 404 and d['error']['param'] == 'input_file_id'"

start_mock batchfast --batch-validating-ms 50 --batch-processing-ms 300 --batch-finalizing-ms 50
check "GET /v1/batches lists newest first, ?limit= pages with has_more, first_id, last_id, ?after=" \
	batch "$batchfast_PORT" list
check "times= counts batch lines with chat requests: [[mock:status=500,times=1]] fails in one batch, succeeds in the next" \
	batch "$batchfast_PORT" retry
check "--fault applies to batch lines without their own directive" batch "$fault500_PORT" fault
start_mock batchnow --batch-validating-ms 0 --batch-processing-ms 0 --batch-finalizing-ms 0
check "with the three --batch-*-ms at 0 a batch is completed when created" batch "$batchnow_PORT" instant
start_mock batchshare --batch-fail-share 0.5 --batch-validating-ms 20 --batch-processing-ms 100 --batch-finalizing-ms 20
check "--batch-fail-share 0.5: about half the lines (by custom_id hash, the same ones every time) end in the error file with 500" \
	batch "$batchshare_PORT" share
start_mock batchexpire --batch-expire --batch-validating-ms 20 --batch-processing-ms 200 --batch-finalizing-ms 20
check "--batch-expire: the batch ends expired, half its lines in the output file, the rest batch_expired in the error file" \
	batch "$batchexpire_PORT" expire
start_mock batchcancel --batch-validating-ms 50 --batch-processing-ms 1000 --batch-finalizing-ms 200
check "POST /v1/batches/{id}/cancel: cancelling, then cancelled; the lines answered so far in the output file, the rest batch_cancelled" \
	batch "$batchcancel_PORT" cancel
start_mock batchdelay --batch-api-delay-ms 700
check "--batch-api-delay-ms 700: POST /v1/files answers after >= 0.6 s; the file is listed by GET /v1/files (another connection) while the answer is pending" \
	batch "$batchdelay_PORT" delay_upload
check "--batch-api-delay-ms 700: POST /v1/batches answers after >= 0.6 s; GET /v1/batches lists the batch before that, and its clock started at creation" \
	batch "$batchdelay_PORT" delay_create
check "--batch-api-delay-ms 700: GET /v1/files/{id}/content answers after >= 0.6 s (a 404 too)" \
	batch "$batchdelay_PORT" delay_content
check "--batch-api-delay-ms 700: GET /v1/batches/{id}, the lists, GET and DELETE /v1/files/{id}, cancel and chat answer at once (< 0.4 s)" \
	batch "$batchdelay_PORT" delay_fast
check "--batch-api-delay-ms 700: clients that close (FIN or RST) during the delay leave the mock answering, their calls done, no connection left; a half-closed client still gets its answer" \
	bash -c "python3 '$tmp/batch.py' '$batchdelay_PORT' delay_disconnect && kill -0 $batchdelay_PID"
"$MOCK" --port 0 --batch-api-delay-ms 700 > "$tmp/apidelay.ready" 2> "$tmp/apidelay.err" &
apidelay=$!
for _ in $(seq 40); do grep -q listening "$tmp/apidelay.ready" 2>/dev/null && break; sleep 0.05; done
kill "$apidelay"; wait "$apidelay" 2>/dev/null
check "the start-up log gives --batch-api-delay-ms with the other batch settings" \
	grep -q -- 'batches: validating 200 ms, .* answered 700 ms after acting (--batch-api-delay-ms)' "$tmp/apidelay.err"
for option in "--batch-fail-share 2" "--batch-processing-ms -1" "--batch-validating-ms x" \
	"--batch-api-delay-ms -1" "--batch-api-delay-ms abc" "--batch-api-delay-ms 600001"; do
	"$MOCK" --port 0 $option > /dev/null 2> "$tmp/badbatch.err"
	code=$?
	check "$option is refused at start-up (exit 2, saying why)" \
		bash -c "test $code -eq 2 && grep -q -- '${option%% *}' '$tmp/badbatch.err'"
done
"$MOCK" --help > "$tmp/help"
check "--help describes the batch options" \
	bash -c "for o in --batch-validating-ms --batch-processing-ms --batch-finalizing-ms --batch-fail-share --batch-expire --batch-api-delay-ms; do grep -q -- \"\$o \" '$tmp/help' || { echo \"no \$o\"; exit 1; }; done"


"$MOCK" --help > "$tmp/help"
check "--help describes the new options" \
	bash -c "for o in --latency --ms-per-token --seed --words --saturate --saturate-mode --rps-limit --invalid-actions --fault --fixtures; do grep -q -- \"\$o \" '$tmp/help' || { echo \"no \$o\"; exit 1; }; done"
"$MOCK" --port 0 --latency lognormal:500,0.5 --ms-per-token 20 --words uniform:5-50 --saturate 8 \
	--rps-limit 50 --invalid-actions 0.25 --fault status=503 --seed 9 > "$tmp/verbose.ready" 2> "$tmp/verbose.err" &
verbose=$!
for _ in $(seq 40); do grep -q listening "$tmp/verbose.ready" 2>/dev/null && break; sleep 0.05; done
kill "$verbose"; wait "$verbose" 2>/dev/null
check "the start-up log says which endpoint behaviour the run models" \
	bash -c "for w in 'lognormal median 500 sigma 0.5' 'ms-per-token 20' 'uniform 5..50' 'saturate 8' 'rps-limit 50' 'invalid-actions 0.25' 'status=503' 'seed 9' 'fixtures from'; do grep -q -- \"\$w\" '$tmp/verbose.err' || { echo \"no \$w\"; cat '$tmp/verbose.err'; exit 1; }; done"

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
