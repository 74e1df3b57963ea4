-- Shared by the wrk scripts that POST a template with a fresh value per request (dofile'd).
-- Each thread gets a number `tid`; `post_init(path)` reads the template and sets the method,
-- JSON content type and the bearer token of env PINV_TOKEN; any answer but 201 is counted and
-- the first three are printed.
local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function post_init(path)
  local f = assert(io.open(path, "r"))
  template = f:read("*a")
  f:close()
  counter = 0
  run = os.time()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("PINV_TOKEN")
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
    if errors <= 3 then io.stderr:write("unexpected status " .. status .. ": " .. body:sub(1, 300) .. "\n") end
  end
end
