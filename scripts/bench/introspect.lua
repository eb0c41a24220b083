-- POST /oauth/introspect (RFC 7662) cycling through a file of access tokens (one a line);
-- form bodies built once in init. Usage: wrk -s introspect.lua URL -- TOKENS_FILE
-- (client Basic header via -H). An answer {"active":false} counts as invalid.
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local requests, index = {}, 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
  for line in io.lines(args[1]) do
    if #line > 0 then  -- a JWT is URL-safe base64 and dots: no form escaping needed
      requests[#requests + 1] = wrk.format(nil, nil, nil, "token=" .. line)
    end
  end
  assert(#requests > 0, "no tokens in " .. tostring(args[1]))
end

function request()
  index = index % #requests + 1
  return requests[index]
end

invalid = 0

function response(status, headers, body)
  if status == 200 and body:find('"active":false', 1, true) then
    invalid = invalid + 1
  end
end
