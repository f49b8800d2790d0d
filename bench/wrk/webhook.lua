-- POST /payments/webhook: one signed Midtrans settlement a line of OGP_WRK_DATA, each thread its own share.
local lib = dofile(os.getenv("OGP_WRK_DIR") .. "/lib.lua")
local bodies, i, step

function init(args)
  bodies = lib.lines(os.getenv("OGP_WRK_DATA"))
  step = tonumber(os.getenv("OGP_WRK_THREADS"))
  i = id
end

function request()
  local body = bodies[(i % #bodies) + 1][1]
  i = i + step
  return wrk.format("POST", "/payments/webhook", { ["Content-Type"] = "application/json" }, body)
end
