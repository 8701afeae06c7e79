-- wrk script: provider callbacks for existing jobs, cycling through a pool file.
-- wrk -s bench/callbacks.lua URL -- POOL_FILE PATH_PREFIX OFFSET
-- Each pool line is "job_id token task_id". Thread t of n sends lines offset+t, offset+t+n, ...
-- done() prints one line "BENCH_JSON {...}" with the summary and latency percentiles (us).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  pool_file, prefix, offset = args[1], args[2], tonumber(args[3])
  nthreads = tonumber(args[4]) or 1
  jobs, tokens, tasks = {}, {}, {}
  for line in io.lines(pool_file) do
    local job, token, task = line:match("^(%S+) (%S+) (%S+)$")
    jobs[#jobs + 1] = job
    tokens[#tokens + 1] = token
    tasks[#tasks + 1] = task
  end
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  local i = (offset + tid + counter * nthreads) % #jobs + 1
  counter = counter + 1
  local body = '{"code":200,"msg":"success","data":{"task_id":"' .. tasks[i] ..
    '","status":"finished","progress":100,"files":[{"file_url":"https://cdn.example.com/videos/' ..
    tasks[i] .. '.mp4","file_type":"video"}],"created_time":"2025-11-12T10:30:00",' ..
    '"error_message":null}}'
  return wrk.format("POST", prefix .. "/" .. jobs[i] .. "/" .. tokens[i], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"non_2xx":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
