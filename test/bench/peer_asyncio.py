#!/usr/bin/python3
"""Peer baseline: the design document's asyncio approach, as its users write it.

One aiohttp.ClientSession (TCPConnector(limit=concurrency)), an
asyncio.Semaphore(concurrency), asyncio.gather over every agent; each task
POSTs an OpenAI chat completion, parses the JSON reply and hands the result to
a writer task through an asyncio.Queue; the writer stores results with
psycopg2.extras.execute_values, one INSERT + COMMIT per --batch results, as a
plain synchronous call inside the event loop (what a typical user writes).

Agents come from the same Postgres (SELECT id, name, persona::text FROM
swarm.agents ORDER BY id LIMIT N), all loaded into memory first.  Results go
to peer_bench.messages (created if missing, truncated at start).

Prints one JSON line on stdout:
  {"impl": "asyncio", "requests", "succeeded", "failed", "wall_s", "rps",
   "cpu_s", "cpu_us_per_request", "max_rss_mb", "backend_cpu_s"}
wall_s runs from loading the agents to the last batch committed.  cpu_s is
user+sys CPU of this process (getrusage RUSAGE_SELF, whole process);
backend_cpu_s is the CPU of the Postgres backend that ran the inserts (read
from /proc, null when the server is not local or not readable).  Exits 1 if
the number of stored rows differs from the number of successes.

Run with Debian's interpreter (python3-aiohttp, python3-psycopg2):
  /usr/bin/python3 test/bench/peer_asyncio.py --dsn "host=/tmp port=5432 user=postgres dbname=postgres" \
      --base-url http://127.0.0.1:8000/v1 --agents 2000 --concurrency 50
"""
import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time

import aiohttp
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
    p.add_argument("--concurrency", type=int, default=50, help="requests in flight at most (default 50)")
    p.add_argument("--batch", type=int, default=100, help="results per INSERT/COMMIT (default 100)")
    p.add_argument("--model", default="gpt-3.5-turbo")
    p.add_argument("--context", default="bench", help="the user message sent to every agent")
    return p.parse_args()


def backend_cpu_s(pid):
    """user+sys CPU seconds of a local Postgres backend, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


class Stats:
    def __init__(self):
        self.succeeded = 0
        self.failed = 0
        self.stored = 0


async def call_agent(session, sem, url, args, agent, queue, stats):
    agent_id, name, persona = agent
    payload = {
        "model": args.model,
        "messages": [
            {"role": "system", "content": SYSTEM_TEMPLATE.format(name=name, persona=persona)},
            {"role": "user", "content": args.context},
        ],
        "max_tokens": MAX_TOKENS,
    }
    async with sem:
        t0 = time.perf_counter()
        for attempt in range(MAX_RETRIES + 1):
            retryable = False
            try:
                async with session.post(url, json=payload) as resp:
                    if resp.status == 429 or resp.status >= 500:
                        retryable = True
                        await resp.read()
                    elif resp.status != 200:
                        body = await resp.text()
                        print(f"agent {agent_id}: HTTP {resp.status}: {body[:200]}", file=sys.stderr)
                        break
                    else:
                        data = await resp.json()
                        choice = data["choices"][0]
                        usage = data.get("usage") or {}
                        latency_ms = (time.perf_counter() - t0) * 1000.0
                        stats.succeeded += 1
                        await queue.put((agent_id, choice["message"]["content"], data.get("model", args.model),
                                         usage.get("prompt_tokens"), usage.get("completion_tokens"),
                                         latency_ms, choice.get("finish_reason")))
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                retryable = True
            except (ValueError, KeyError, IndexError, TypeError) as e:   # malformed JSON body
                print(f"agent {agent_id}: bad response: {e!r}", file=sys.stderr)
                break
            if not retryable or attempt == MAX_RETRIES:
                break
            delay = BACKOFF_BASE_S * (2 ** attempt)
            await asyncio.sleep(delay + random.uniform(0, delay / 10))
    stats.failed += 1


async def writer(conn, queue, batch_size, stats):
    """Drain the queue; INSERT + COMMIT every batch_size results (synchronous psycopg2 call)."""
    buf = []
    cur = conn.cursor()
    while True:
        row = await queue.get()
        if row is None:
            break
        buf.append(row)
        if len(buf) >= batch_size:
            psycopg2.extras.execute_values(cur, INSERT, buf, page_size=batch_size)
            conn.commit()
            stats.stored += len(buf)
            buf = []
    if buf:
        psycopg2.extras.execute_values(cur, INSERT, buf, page_size=batch_size)
        conn.commit()
        stats.stored += len(buf)
    cur.close()


async def run(args, conn, agents, stats):
    url = args.base_url.rstrip("/") + "/chat/completions"
    queue = asyncio.Queue()
    sem = asyncio.Semaphore(args.concurrency)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        writer_task = asyncio.create_task(writer(conn, queue, args.batch, stats))
        await asyncio.gather(*(call_agent(session, sem, url, args, a, queue, stats) for a in agents))
        await queue.put(None)
        await writer_task


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

    stats = Stats()
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SELECT id, name, persona::text FROM swarm.agents ORDER BY id LIMIT %s", (args.agents,))
        agents = cur.fetchall()
    conn.commit()
    asyncio.run(run(args, conn, agents, stats))
    wall = time.perf_counter() - t0
    bcpu1 = backend_cpu_s(backend_pid)

    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM peer_bench.messages")
        rows = cur.fetchone()[0]
    conn.commit()
    conn.close()

    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime
    n = len(agents)
    out = {
        "impl": "asyncio",
        "requests": n,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "wall_s": round(wall, 3),
        "rps": round(stats.succeeded / wall, 1) if wall > 0 else 0.0,
        "cpu_s": round(cpu, 3),
        "cpu_us_per_request": round(cpu * 1e6 / max(n, 1), 1),
        "max_rss_mb": round(ru.ru_maxrss / 1024, 1),
        "backend_cpu_s": round(bcpu1 - bcpu0, 3) if bcpu0 is not None and bcpu1 is not None else None,
    }
    print(json.dumps(out), flush=True)
    if rows != stats.succeeded:
        print(f"peer_asyncio: {rows} rows in peer_bench.messages, expected {stats.succeeded}", file=sys.stderr)
        sys.exit(1)
    if n < args.agents:
        print(f"peer_asyncio: only {n} agents in swarm.agents, {args.agents} asked", file=sys.stderr)


if __name__ == "__main__":
    main()
