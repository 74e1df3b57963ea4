-- wrk script: POST /adapters/activation with one subscriber of the activation fixture, a
-- new subscriber number and message id on every request, so every request activates a new
-- line durably. Needs env PINV_TOKEN and PINV_ACTIVATION (path of the template
-- adapters.sh derives from tests/fixtures/adapters/activation.json).
local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("PINV_ACTIVATION"), "r"))
  template = f:read("*a")
  f:close()
  counter = 0
  run = os.time()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("PINV_TOKEN")
end

function request()
  counter = counter + 1
  -- A ten-digit North American number per thread and request (area code 2xx-9xx).
  local number = string.format("%d%09d", tid + 2, counter)
  local body = template:gsub("__NUMBER__", number)
  wrk.headers["X-ATT-MessageId"] = string.format("%d-%d-%d", run, tid, counter)
  return wrk.format(nil, "/adapters/activation", nil, body)
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
    if errors <= 3 then io.stderr:write("unexpected status " .. status .. ": " .. body:sub(1, 300) .. "\n") end
  end
end
