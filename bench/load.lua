-- wrk script of bench/run and bench/email. Three kinds of load, chosen by the first argument
-- after `--`:
--
--   me     FILE    GET /auth/me with a bearer token, cycling through the tokens in FILE (one
--                  per line, many users), so the load is not a single hot row.
--   login  FILE    POST /auth/login with the right password ($BENCH_PASSWORD), cycling through
--                  the emails in FILE; each request costs one bcrypt verification.
--   signup PREFIX  POST /auth/signup of a new address every time (PREFIX-<thread>-<n>@…,
--                  password $BENCH_PASSWORD); each request costs one bcrypt hash.
--
-- Requests of me and login are built once in init(): wrk shares the 2 cores with the
-- server, and formatting a request per call would take CPU from the thing being measured.
-- A signup must be new each time, but at cost 12 there are only ~10 a second. done() prints
-- one machine-readable line (latencies in microseconds) for the script to parse.

local threads = 0

function setup(thread)
  -- Each thread starts at another offset, so threads do not walk the list in lock step;
  -- its number also keeps two threads' signup addresses apart.
  thread:set("offset", threads * 7919)
  thread:set("thread_no", threads)
  threads = threads + 1
end

local function signup(prefix, n)
  local password = os.getenv("BENCH_PASSWORD") or error("BENCH_PASSWORD is not set")
  local body = string.format('{"email":"%s-%d-%d@example.com","password":"%s"}',
    prefix, thread_no, n, password)
  return wrk.format("POST", "/auth/signup", { ["Content-Type"] = "application/json" }, body)
end

local function build(kind, line)
  if kind == "me" then
    return wrk.format("GET", "/auth/me", { ["Authorization"] = "Bearer " .. line })
  elseif kind == "login" then
    local password = os.getenv("BENCH_PASSWORD") or error("BENCH_PASSWORD is not set")
    local body = string.format('{"email":"%s","password":"%s"}', line, password)
    return wrk.format("POST", "/auth/login", { ["Content-Type"] = "application/json" }, body)
  end
  error("usage: wrk ... -s load.lua URL -- me|login FILE | signup PREFIX")
end

function init(args)
  local kind, path = args[1], args[2]
  if kind == "signup" then
    prefix, sent = path or error("no address prefix given"), 0
    return
  end
  requests = {}
  for line in io.lines(path or error("no input file given")) do
    if line ~= "" then requests[#requests + 1] = build(kind, line) end
  end
  if #requests == 0 then error("nothing to send in " .. path) end
  i = (offset or 0) % #requests
end

function request()
  if prefix then
    sent = sent + 1
    return signup(prefix, sent)
  end
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "JPBENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d connect_err=%d read_err=%d write_err=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
