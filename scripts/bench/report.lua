-- Prints one machine-readable line after a wrk run: requests, duration, errors, latency percentiles.
-- A script may also count responses that are 2xx but wrong (e.g. {"valid": false}) in a global
-- `invalid` of its thread; they are summed over the threads into "invalid".
local threads = {}

setup = function(thread)
  threads[#threads + 1] = thread
end

done = function(summary, latency, requests)
  local e = summary.errors
  local invalid = 0
  for _, thread in ipairs(threads) do
    invalid = invalid + (tonumber(thread:get("invalid")) or 0)
  end
  io.write(string.format(
    "BENCH {\"requests\":%d,\"duration_us\":%d,\"socket_errors\":%d,\"non_2xx\":%d,\"invalid\":%d,\"p50_us\":%d,\"p99_us\":%d}\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    invalid, latency:percentile(50), latency:percentile(99)))
end
