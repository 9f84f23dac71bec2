-- wrk script for the load benchmarks: sends the chat-completion POST and, when the run ends,
-- prints one machine-readable line the driver parses (latencies in microseconds). The body is
-- measure.py's REQUEST_BODY, in the file WRK_BODY_FILE names (oha gets the same one), so every
-- path sends the same bytes.
wrk.method = "POST"
local function read(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end
wrk.body = read(os.getenv("WRK_BODY_FILE") or error("WRK_BODY_FILE is not set (measure.py sets it)"))
wrk.headers["Content-Type"] = "application/json"

-- WRK_STREAM_BODY_FILE (the LLM benchmark): every other request sends that body instead, which
-- asks for a streamed answer. Both requests are formatted once per thread.
local stream_path = os.getenv("WRK_STREAM_BODY_FILE")
if stream_path then
  local stream_body = read(stream_path)
  local plain, streamed, sent = nil, nil, 0
  request = function()
    if not plain then
      plain = wrk.format()
      streamed = wrk.format(nil, nil, nil, stream_body)
    end
    sent = sent + 1
    return sent % 2 == 0 and streamed or plain
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
