-- wrk script for benchmarks/scale/workers.py: POST one small chat completion with a gateway key
-- and count the responses that are a correct completion. Environment: BENCH_KEY, BENCH_MODEL.
-- Prints one line "BENCHJSON {...}" at the end.

wrk.method = "POST"
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "m") ..
  '","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "")

ok = 0
bad = 0
sample = ""

function response(status, headers, body)
  if status == 200 and body and body:find('"object":"chat.completion"', 1, true)
      and body:find("Hello! How can I help you today?", 1, true) then
    ok = ok + 1
  else
    bad = bad + 1
    if sample == "" then sample = tostring(status) .. " " .. (body or ""):sub(1, 200) end
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local t_ok, t_bad, t_sample = 0, 0, ""
  for _, th in ipairs(threads) do
    t_ok = t_ok + (th:get("ok") or 0)
    t_bad = t_bad + (th:get("bad") or 0)
    if t_sample == "" then t_sample = th:get("sample") or "" end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"duration_us":%d,"ok":%d,"bad":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"sample":"%s"}\n',
    summary.duration, t_ok, t_bad, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), (t_sample:gsub('[%c"\\]', "?"))))
end
