-- POST /validate (batch size 1), /validate/batch (size n) or /oauth/introspect (mode
-- "introspect": form bodies): request bodies are built once, in init, from a file of access
-- tokens (one a line), and each request takes the next, cycling.
-- Usage: wrk -s validate.lua URL -- TOKENS_FILE [BATCH_SIZE | introspect]   (Basic via -H)
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local requests, index = {}, 0

function init(args)
  local introspect = args[2] == "introspect"
  local size = introspect and 1 or tonumber(args[2] or "1")
  local tokens = {}
  for line in io.lines(args[1]) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  assert(#tokens > 0, "no tokens in " .. tostring(args[1]))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if introspect then  -- a JWT is URL-safe base64 and dots: no form escaping needed
    wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    for i, token in ipairs(tokens) do
      requests[i] = wrk.format(nil, nil, nil, "token=" .. token)
    end
  elseif size == 1 then
    for i, token in ipairs(tokens) do
      requests[i] = wrk.format(nil, nil, nil, '{"token":"' .. token .. '"}')
    end
  else
    for first = 1, #tokens, size do
      local batch = {}
      for i = first, math.min(first + size - 1, #tokens) do
        batch[#batch + 1] = '"' .. tokens[i] .. '"'
      end
      requests[#requests + 1] =
        wrk.format(nil, nil, nil, '{"tokens":[' .. table.concat(batch, ",") .. ']}')
    end
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

-- A 200 that says a token is not valid (or not active) would measure the rejection path:
-- count it as an error.
invalid = 0

function response(status, headers, body)
  if status == 200 and (body:find('"valid":false', 1, true) or body:find('"active":false', 1, true)) then
    invalid = invalid + 1
  end
end
