#!/usr/bin/python3
"""Peer baseline: one request after another, the simplest thing a user writes.

Same prompt, same retries, same Postgres writes as peer_asyncio.py, but a
plain loop over the agents with one keep-alive HTTP connection
(http.client.HTTPConnection: Debian's python3 has no `requests` unless
python3-requests is installed).  Results are stored with
psycopg2.extras.execute_values, one INSERT + COMMIT per --batch results.
--limit-seconds stops sending new requests after that many seconds and reports
the rate so far ("requests" is then the number of agents attempted).

Prints one JSON line on stdout, with "impl": "sequential" and the same keys as
peer_asyncio.py (plus "stopped_early").  Exits 1 if the number of stored rows
differs from the number of successes.

  /usr/bin/python3 test/bench/peer_sequential.py --dsn "host=/tmp port=5432 user=postgres dbname=postgres" \
      --base-url http://127.0.0.1:8000/v1 --agents 200 --limit-seconds 60
"""
import argparse
import http.client
import json
import os
import random
import resource
import sys
import time
import urllib.parse

import psycopg2
import psycopg2.extras

SYSTEM_TEMPLATE = ("You are {name}, a member of an online community. Your persona: {persona}. "
                   "Stay in character and answer as {name} would, in a few sentences.")
MAX_TOKENS = 150
MAX_RETRIES = 3          # retries after the first attempt
BACKOFF_BASE_S = 0.5     # 0.5 s, 1 s, 2 s (plus up to 10 % jitter)

DDL = """
CREATE SCHEMA IF NOT EXISTS peer_bench;
CREATE TABLE IF NOT EXISTS peer_bench.messages (
    agent_id bigint,
    content text,
    model text,
    prompt_tokens int,
    completion_tokens int,
    latency_ms float8,
    finish_reason text,
    created_at timestamptz DEFAULT now()
);
"""
INSERT = ("INSERT INTO peer_bench.messages "
          "(agent_id, content, model, prompt_tokens, completion_tokens, latency_ms, finish_reason) VALUES %s")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True, help='libpq string, e.g. "host=/tmp port=5432 user=postgres dbname=postgres"')
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--agents", type=int, required=True, help="number of agents (requests)")
    p.add_argument("--batch", type=int, default=100, help="results per INSERT/COMMIT (default 100)")
    p.add_argument("--model", default="gpt-3.5-turbo")
    p.add_argument("--context", default="bench", help="the user message sent to every agent")
    p.add_argument("--limit-seconds", type=float, default=None,
                   help="stop sending new requests after this many seconds and report the rate so far")
    return p.parse_args()


def backend_cpu_s(pid):
    """user+sys CPU seconds of a local Postgres backend, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Client:
    """A keep-alive HTTP/1.1 connection to the endpoint, reopened after an error."""

    def __init__(self, base_url):
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.path = u.path + "/chat/completions"
        self.conn = None

    def post(self, body):
        if self.conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self.conn = cls(self.host, self.port, timeout=60)
        try:
            self.conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except Exception:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def call_agent(client, args, agent):
    """One chat completion with retries; returns the result row or None."""
    agent_id, name, persona = agent
    body = json.dumps({
        "model": args.model,
        "messages": [
            {"role": "system", "content": SYSTEM_TEMPLATE.format(name=name, persona=persona)},
            {"role": "user", "content": args.context},
        ],
        "max_tokens": MAX_TOKENS,
    }).encode()
    t0 = time.perf_counter()
    for attempt in range(MAX_RETRIES + 1):
        retryable = False
        try:
            status, raw = client.post(body)
            if status == 429 or status >= 500:
                retryable = True
            elif status != 200:
                print(f"agent {agent_id}: HTTP {status}: {raw[:200]!r}", file=sys.stderr)
                return None
            else:
                data = json.loads(raw)
                choice = data["choices"][0]
                usage = data.get("usage") or {}
                latency_ms = (time.perf_counter() - t0) * 1000.0
                return (agent_id, choice["message"]["content"], data.get("model", args.model),
                        usage.get("prompt_tokens"), usage.get("completion_tokens"),
                        latency_ms, choice.get("finish_reason"))
        except (OSError, http.client.HTTPException):
            retryable = True
        except (ValueError, KeyError, IndexError, TypeError) as e:   # malformed JSON body
            print(f"agent {agent_id}: bad response: {e!r}", file=sys.stderr)
            return None
        if not retryable or attempt == MAX_RETRIES:
            return None
        delay = BACKOFF_BASE_S * (2 ** attempt)
        time.sleep(delay + random.uniform(0, delay / 10))
    return None


def main():
    args = parse_args()
    conn = psycopg2.connect(args.dsn)
    with conn.cursor() as cur:
        cur.execute(DDL)
        cur.execute("TRUNCATE peer_bench.messages")
        cur.execute("SELECT pg_backend_pid()")
        backend_pid = cur.fetchone()[0]
    conn.commit()
    bcpu0 = backend_cpu_s(backend_pid)

    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT id, name, persona::text FROM swarm.agents ORDER BY id LIMIT %s", (args.agents,))
        agents = cur.fetchall()
    conn.commit()

    client = Client(args.base_url)
    cur = conn.cursor()
    buf = []
    attempted = succeeded = failed = 0
    stopped_early = False
    for agent in agents:
        if args.limit_seconds is not None and time.perf_counter() - t0 >= args.limit_seconds:
            stopped_early = True
            break
        attempted += 1
        row = call_agent(client, args, agent)
        if row is None:
            failed += 1
            continue
        succeeded += 1
        buf.append(row)
        if len(buf) >= args.batch:
            psycopg2.extras.execute_values(cur, INSERT, buf, page_size=args.batch)
            conn.commit()
            buf = []
    if buf:
        psycopg2.extras.execute_values(cur, INSERT, buf, page_size=args.batch)
        conn.commit()
    client.close()
    wall = time.perf_counter() - t0
    bcpu1 = backend_cpu_s(backend_pid)

    cur.execute("SELECT count(*) FROM peer_bench.messages")
    rows = cur.fetchone()[0]
    conn.commit()
    cur.close()
    conn.close()

    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    out = {
        "impl": "sequential",
        "requests": attempted,
        "succeeded": succeeded,
        "failed": failed,
        "wall_s": round(wall, 3),
        "rps": round(succeeded / wall, 1) if wall > 0 else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu * 1e6 / max(attempted, 1), 1),
        "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
        "backend_cpu_s": round(bcpu1 - bcpu0, 3) if bcpu0 is not None and bcpu1 is not None else None,
        "stopped_early": stopped_early,
    }
    print(json.dumps(out), flush=True)
    if rows != succeeded:
        print(f"peer_sequential: {rows} rows in peer_bench.messages, expected {succeeded}", file=sys.stderr)
        sys.exit(1)
    if len(agents) < args.agents:
        print(f"peer_sequential: only {len(agents)} agents in swarm.agents, {args.agents} asked", file=sys.stderr)


if __name__ == "__main__":
    main()
