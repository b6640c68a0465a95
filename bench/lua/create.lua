-- wrk script: POST /v1/sessions with body {} (static request). args: [bearer token or "-"]
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
require("common")

wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  if args[1] and args[1] ~= "-" then
    wrk.headers["Authorization"] = "Bearer " .. args[1]
  end
end

done = bench_done
