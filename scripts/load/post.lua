-- wrk script: POST /products with the seed document, a new event id, local id and
-- CircuitID on every request, so every request stores a new product durably.
-- Needs env PINV_TOKEN and PINV_TEMPLATE (path of the template run.sh derives from
-- docs/examples/seed-adi-request.json).
dofile("scripts/load/wrk_common.lua")

function init(args)
  post_init(os.getenv("PINV_TEMPLATE"), "__ID__")
end

function request()
  counter = counter + 1
  local body = filled(string.format("%d-%d-%d", run, tid, counter))
  return wrk.format(nil, "/products", nil, body)
end
