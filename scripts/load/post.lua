-- wrk script: POST /products with the seed document, a new event id, local id and
-- CircuitID on every request, so every request stores a new product durably.
-- Needs env PINV_TOKEN and PINV_TEMPLATE (path of the template run.sh derives from
-- docs/examples/seed-adi-request.json).
local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(os.getenv("PINV_TEMPLATE"), "r"))
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
  local id = string.format("%d-%d-%d", run, tid, counter)
  local body = template:gsub("__ID__", id)
  return wrk.format(nil, "/products", nil, body)
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
    if errors <= 3 then io.stderr:write("unexpected status " .. status .. ": " .. body:sub(1, 300) .. "\n") end
  end
end
