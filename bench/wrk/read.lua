-- GET OGP_WRK_PATH (the balance, or a page of history) as the seeded users in turn.
local lib = dofile(os.getenv("OGP_WRK_DIR") .. "/lib.lua")
local users, i, path

function init(args)
  users = lib.lines(os.getenv("OGP_WRK_DATA"))
  path = os.getenv("OGP_WRK_PATH")
  i = id
end

function request()
  i = i + 1
  return wrk.format("GET", path, { ["Authorization"] = "Bearer " .. users[(i % #users) + 1][1] })
end
