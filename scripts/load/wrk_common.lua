-- Shared by the wrk scripts that POST a template with a fresh value per request (dofile'd).
-- Each thread gets a number `tid`; `post_init(path, marker)` reads the template and sets the
-- method, JSON content type and the bearer token of env PINV_TOKEN; `filled(value)` is the
-- template with every `marker` replaced by `value`. wrk counts answers outside 2xx/3xx
-- itself; with PINV_LOAD_CHECK=1 any answer but 201 is counted and the first three are
-- printed (off by default: handing every answer to Lua costs wrk CPU the server then lacks).
local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

function post_init(path, marker)
  local f = assert(io.open(path, "r"))
  local template = f:read("*a")
  f:close()
  -- Split once, joined per request: a gsub over the whole body per request cost as much.
  pieces = {}
  for piece in (template .. marker):gmatch("(.-)" .. marker) do
    table.insert(pieces, piece)
  end
  joined = {}
  counter = 0
  run = os.time()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("PINV_TOKEN")
end

function filled(value)
  for i, piece in ipairs(pieces) do
    joined[2 * i - 1] = piece
    joined[2 * i] = value
  end
  joined[2 * #pieces] = nil
  return table.concat(joined)
end

if os.getenv("PINV_LOAD_CHECK") == "1" then
  function response(status, headers, body)
    if status ~= 201 then
      errors = (errors or 0) + 1
      if errors <= 3 then io.stderr:write("unexpected status " .. status .. ": " .. body:sub(1, 300) .. "\n") end
    end
  end
end
