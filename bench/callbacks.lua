-- wrk script for bench/ingest: POST pre-signed callbacks, each body once.
--
-- Lua in wrk has no sha1, so bench/ingest writes the signed bodies to a file, one per line.
-- Thread t of n keeps lines t, t+n, t+2n, ... so no two threads send the same body, and each
-- thread builds its requests once in init(). A thread that runs out starts over and counts
-- a wrap: the receiver would answer "duplicate", and the benchmark reports it.
--
-- Usage: wrk -t2 -c32 -d10s --latency -s bench/callbacks.lua URL -- BODIES_FILE THREADS

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   -- Each thread runs init() in its own Lua state: it knows its id, but not how many threads.
   local path, n = args[1], tonumber(args[2])
   local headers = { ["Content-Type"] = "application/json" }
   requests = {}
   local line_no = 0
   for line in io.lines(path) do
      if line_no % n == id then
         requests[#requests + 1] = wrk.format("POST", wrk.path, headers, line)
      end
      line_no = line_no + 1
   end
   count = #requests
   index = 0
   wraps = 0
   if id == n - 1 then
      -- The last init(): wrk starts its clock next. bench/ingest starts its CPU meter on this.
      io.write("BENCH_READY\n")
      io.stdout:flush()
   end
end

function request()
   index = index + 1
   if index > count then
      index = 1
      wraps = wraps + 1
   end
   return requests[index]
end

function done(summary, latency, requests)
   local wrapped, bodies = 0, 0
   for _, thread in ipairs(threads) do
      wrapped = wrapped + thread:get("wraps")
      bodies = bodies + thread:get("count")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
      '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
      '"max_us":%d,"mean_us":%.1f,"wraps":%d,"bodies":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
      e.status, e.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean, wrapped, bodies))
end
