-- POST /api/payment/transfer to another seeded wallet (by account id), a new Idempotency-Key each time.
local lib = dofile(os.getenv("OGP_WRK_DIR") .. "/lib.lua")
local users, i, n, run

function init(args)
  users = lib.lines(os.getenv("OGP_WRK_DATA"))
  run = os.getenv("OGP_WRK_RUN") or "run"
  i, n = id, 0
end

function request()
  i = i + 1
  n = n + 1
  local user = users[(i % #users) + 1]
  return wrk.format("POST", "/api/payment/transfer", {
    ["Authorization"] = "Bearer " .. user[1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = run .. "-" .. id .. "-" .. n,
  }, '{"amount": "1000.00", "to": "' .. user[3] .. '"}')
end
