-- Shared by the wrk scripts of bench/http_load.py: data from OGP_WRK_DATA (one tab-separated record a line),
-- one id per thread, 2xx counted per thread, and a JSON summary line at the end (read by http_load.py).
local lib = {}
local threads = {}
local next_id = 0

function lib.lines(path)
  local rows = {}
  for line in io.lines(path) do
    local fields = {}
    for field in string.gmatch(line, "[^\t]+") do fields[#fields + 1] = field end
    rows[#rows + 1] = fields
  end
  return rows
end

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  threads[#threads + 1] = thread
end

ok = 0
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 end
end

function done(summary, latency, requests)
  local ok_total = 0
  for _, t in ipairs(threads) do ok_total = ok_total + t:get("ok") end
  local e = summary.errors
  io.write(string.format(
    'OGP_WRK {"requests": %d, "ok": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, ok_total, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end

return lib
