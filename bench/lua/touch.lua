-- wrk script: POST /v1/sessions/<id>/touch with a random id per request.
-- args: <ids file: fixed-width lines, 43-char id + "\n"> [bearer token or "-"]
-- The ids file is read as one string (fast even for 1,000,000 ids) and sliced per request.
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
require("common")

local data, count, headers
local WIDTH = 44

function init(args)
  local f = assert(io.open(args[1], "rb"))
  data = f:read("*a")
  f:close()
  count = math.floor(#data / WIDTH)
  assert(count > 0, "empty ids file")
  headers = {}
  if args[2] and args[2] ~= "-" then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  -- distinct seed per thread
  local addr = tonumber(tostring(headers):match("0x(%x+)"), 16) or 0
  math.randomseed(os.time() + addr % 1000003)
end

function request()
  local k = math.random(0, count - 1) * WIDTH
  return wrk.format("POST", "/v1/sessions/" .. data:sub(k + 1, k + 43) .. "/touch", headers)
end

done = bench_done
