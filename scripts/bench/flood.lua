-- POST /auth/login with a made-up email and a random X-Forwarded-For on every request: a flood
-- of strangers from many addresses (10.0.0.0/8 and 2001:db8::/32 random /64s, documentation
-- and private ranges: header values only, the traffic goes to the URL). The service must trust
-- the sender as a proxy (AUTH_TRUSTED_PROXIES=127.0.0.1) for the header to name the client.
-- Counts the answers by status, and a 503 by its error code, in one "COUNTS {...}" line after
-- report.lua's BENCH line, with wrk's socket errors by kind.
-- Usage: wrk -t1 -s flood.lua URL
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")

local names = { "s200", "s401", "s429", "server_busy", "service_unavailable", "s503_other", "other" }
for _, name in ipairs(names) do _G[name] = 0 end

local threads = {}
local report_setup, report_done = setup, done

setup = function(thread)
  threads[#threads + 1] = thread
  report_setup(thread)
end

function init(args)
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

local function address()
  if math.random() < 0.5 then
    return string.format("10.%d.%d.%d", math.random(0, 255), math.random(0, 255),
      math.random(1, 254))
  end
  return string.format("2001:db8:%x:%x::%x", math.random(0, 0xffff), math.random(0, 0xffff),
    math.random(1, 0xffff))
end

function request()
  local email = string.format("flood-%08x%08x@example.com", math.random(0, 0x7fffffff),
    math.random(0, 0x7fffffff))
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = address(),
  }
  return wrk.format("POST", nil, headers,
    '{"email":"' .. email .. '","password":"not the password of anyone 123"}')
end

function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 401 then s401 = s401 + 1
  elseif status == 429 then s429 = s429 + 1
  elseif status == 503 then
    local code = body and body:match('"error"%s*:%s*"([%w_]+)"')
    if code == "server_busy" then server_busy = server_busy + 1
    elseif code == "service_unavailable" then service_unavailable = service_unavailable + 1
    else s503_other = s503_other + 1 end
  else other = other + 1 end
end

done = function(summary, latency, requests)
  report_done(summary, latency, requests)
  local parts = {}
  for _, name in ipairs(names) do
    local total = 0
    for _, thread in ipairs(threads) do
      total = total + (tonumber(thread:get(name)) or 0)
    end
    parts[#parts + 1] = string.format('"%s":%d', name, total)
  end
  for _, name in ipairs({ "connect", "read", "write", "timeout" }) do
    parts[#parts + 1] = string.format('"%s":%d', name, summary.errors[name])
  end
  io.write("COUNTS {" .. table.concat(parts, ",") .. "}\n")
end
