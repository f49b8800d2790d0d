-- GET OGP_WRK_PATH (a partner page, query string included) with the API key OGP_WRK_KEY (bench/partner_page.py).
dofile(os.getenv("OGP_WRK_DIR") .. "/lib.lua")
wrk.path = os.getenv("OGP_WRK_PATH")
wrk.headers["X-API-Key"] = os.getenv("OGP_WRK_KEY")
