#!/usr/bin/env python3
"""
test/mock/abuse_mock.py
    Hostile clients against a running mock_llm, to show it survives them.

Several threads open connections and, at random, send garbage, oversized
heads, broken chunked bodies, absurd Content-Lengths, pipelined floods,
half requests, slowloris-style trickles, and fault directives (huge, drip,
hang, reset, reset_mid); then read some, all or none of the answer, and
close normally or with an RST.  Afterwards the mock must still answer
/health and, once the dust settles, hold no connection or request but ours.

Usage: abuse_mock.py PORT [ROUNDS_PER_THREAD]    exits 0 on success
Deterministic (seeded) so a failure can be replayed.
"""
import json
import os
import random
import socket
import struct
import sys
import threading
import time

PORT = int(sys.argv[1])
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
THREADS = 8


def post(body):
    return b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def chat(content):
    return post(b'{"model":"m","messages":[{"role":"user","content":"%s"}]}' % content)


NORMAL = chat(b"hi [[mock:delay=50]]")
REQUESTS = [
    lambda rng: rng.randbytes(rng.randint(1, 5000)),
    lambda rng: b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
    lambda rng: b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    lambda rng: (b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"1\r\na\r\n" * 1000 + b"0\r\n\r\n"),
    lambda rng: b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    lambda rng: b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    lambda rng: b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    lambda rng: b"GET /health HTTP/2.0\r\n\r\n",
    lambda rng: b"\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    lambda rng: NORMAL * 300,
    lambda rng: NORMAL[:rng.randint(0, len(NORMAL))],
    lambda rng: post(b"[" * 20),
    lambda rng: post(b'{"a":' * 5000),
    lambda rng: chat(b"[[mock:huge=20000000]]"),
    lambda rng: chat(b"[[mock:drip=5]]"),
    lambda rng: chat(b"[[mock:hang]]"),
    lambda rng: chat(b"[[mock:reset]]"),
    lambda rng: chat(b"[[mock:reset_mid,huge=3000000]]"),
    lambda rng: b"POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
]


def abuse(seed):
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        try:
            sock = socket.create_connection(("127.0.0.1", PORT))
            if rng.random() < 0.3:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            data = rng.choice(REQUESTS)(rng)
            if rng.random() < 0.2:
                for at in range(0, min(len(data), 40), 3):     # a slow trickle
                    sock.sendall(data[at:at + 3])
                    time.sleep(0.002)
            else:
                sock.sendall(data)
            sock.settimeout(0.2)
            reading = rng.random()
            try:
                if reading < 0.4:
                    sock.recv(rng.randint(1, 100000))
                elif reading < 0.5:
                    while sock.recv(1 << 20):
                        pass
            except OSError:
                pass
            sock.close()
        except OSError:
            pass        # the mock may reset us; that is the point


def get(path):
    sock = socket.create_connection(("127.0.0.1", PORT))
    sock.settimeout(5)
    sock.sendall(b"GET %s HTTP/1.1\r\nConnection: close\r\n\r\n" % path)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.split(b"\r\n\r\n", 1)[1]
        data += chunk


threads = [threading.Thread(target=abuse, args=(seed,)) for seed in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert get(b"/health") == b"ok", "no answer from /health after the abuse"
# Hung and lingering connections close when their clients do; give them a moment.
for _ in range(50):
    stats = json.loads(get(b"/mock/stats"))
    if stats["connections"] == 1 and stats["inflight"] == 0:
        break
    time.sleep(0.1)
assert stats["connections"] == 1 and stats["inflight"] == 0, stats
print("survived %d hostile connections: %s" % (THREADS * ROUNDS, stats))
