-- test/mock/post.lua
--   wrk script for benchmarking mock_llm: every request is the same small
--   chat completion, so the numbers measure the server, not the client.
--   Usage: wrk -t1 -c50 -d10s -s test/mock/post.lua http://127.0.0.1:8000
--   A request body with a [[mock:...]] directive benchmarks a fault path.
wrk.method = "POST"
wrk.path = "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"mock-small","max_tokens":20,"messages":['
  .. '{"role":"system","content":"You are a terse planning agent."},'
  .. '{"role":"user","content":"Summarise the state of job 42 in one line."}]}'
