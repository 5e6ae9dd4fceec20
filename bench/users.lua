-- wrk script for bench/run.sh's model modes: GET /recommend?user=u<1..1000>&limit=10, the default data set's users
-- in a fixed scrambled order (each wrk thread walks it from its own start), so every request is a personal one.
local n = 0
local users = tonumber(os.getenv("BENCH_USERS") or "1000")
local limit = os.getenv("BENCH_LIMIT") or "10"

setup = function(thread)
    thread:set("n", math.random(users))
end

request = function()
    n = n + 1
    return wrk.format("GET", "/recommend?user=u" .. ((n * 7919) % users + 1) .. "&limit=" .. limit)
end
