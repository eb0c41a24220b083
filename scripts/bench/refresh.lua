-- POST /auth/refresh, each request with a refresh token never presented before.
-- The pool starts with the pre-minted tokens of a file (one a line, FIFO); every 200 response's
-- new refresh token (the successor, itself unused) joins the pool's tail, so the pool cannot run
-- dry however fast the service is. No token is ever sent twice: a reuse would not be measuring
-- rotation. An empty pool sends an empty token, which the service answers 401 (an error).
-- Usage: wrk -t1 -s refresh.lua URL -- REFRESH_TOKENS_FILE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local pool, head, tail = {}, 1, 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(args[1]) do
    if #line > 0 then
      tail = tail + 1
      pool[tail] = line
    end
  end
end

function request()
  local token = ""
  if head <= tail then
    token = pool[head]
    pool[head] = nil
    head = head + 1
  end
  return wrk.format(nil, nil, nil, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token"%s*:%s*"([^"]+)"')
    if token then
      tail = tail + 1
      pool[tail] = token
    end
  end
end
