-- POST /auth/login, cycling through a file of "email<TAB>password" lines (one user a line).
-- Usage: wrk -s login.lua URL -- CREDENTIALS_FILE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local requests, index = {}, 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(args[1]) do
    local email, password = line:match("^([^\t]+)\t(.+)$")
    if email then
      requests[#requests + 1] = wrk.format(
        nil, nil, nil, '{"email":"' .. email .. '","password":"' .. password .. '"}')
    end
  end
  assert(#requests > 0, "no credentials in " .. tostring(args[1]))
end

function request()
  index = index % #requests + 1
  return requests[index]
end
