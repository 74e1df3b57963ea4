-- wrk script: POST /adapters/activation with one subscriber of the activation fixture, a
-- new subscriber number and message id on every request, so every request activates a new
-- line durably. Needs env PINV_TOKEN and PINV_ACTIVATION (path of the template
-- adapters.sh derives from tests/fixtures/adapters/activation.json).
dofile("scripts/load/wrk_common.lua")

function init(args)
  post_init(os.getenv("PINV_ACTIVATION"), "__NUMBER__")
end

function request()
  counter = counter + 1
  -- A ten-digit North American number per thread and request (area code 2xx-9xx).
  local number = string.format("%d%09d", tid + 2, counter)
  local body = filled(number)
  wrk.headers["X-ATT-MessageId"] = string.format("%d-%d-%d", run, tid, counter)
  return wrk.format(nil, "/adapters/activation", nil, body)
end
