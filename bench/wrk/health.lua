-- GET /health: the same-run baseline (what this machine serves through uvicorn with no work behind it).
dofile(os.getenv("OGP_WRK_DIR") .. "/lib.lua")
wrk.path = "/health"
