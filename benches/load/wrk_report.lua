-- wrk script for the load benchmark: sends the chat-completion POST and, when the run ends,
-- prints one machine-readable line the driver parses (latencies in microseconds). The body is
-- measure.py's REQUEST_BODY, in the file WRK_BODY_FILE names (oha gets the same one), so every
-- path sends the same bytes.
wrk.method = "POST"
local path = os.getenv("WRK_BODY_FILE") or error("WRK_BODY_FILE is not set (measure.py sets it)")
local file = assert(io.open(path, "rb"))
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
