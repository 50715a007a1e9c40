-- Ring layouts, through real processes and the aiotk commands: a libaio
-- workload makes its rings, aiotk dumps them, the workload destroys its
-- contexts, aiotk restores them and the workload verifies from inside.
-- The randomized part prints its seed; AIOTK_LAYOUT_SEED replays a run and
-- AIOTK_LAYOUTS sets how many layouts (default 120).
local helper = require "helper"
local core = require "aiotk.core"
local run = helper.run

local function restore_round_trip(spec, dir)
	local w = helper.workload(spec)
	local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
	if code ~= 0 then return false, "dump: " .. err end
	if w:destroy() ~= "DESTROYED" then return false, "workload did not destroy its rings" end
	code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
	if code ~= 0 then w:finish() return false, "restore: " .. err end
	local verdict = w:verify()
	if not (verdict or ""):match("^VERIFY OK") then return false, "verify: " .. tostring(verdict) end
	return true
end

-- One ring: io_setup(n), then complete c, reap r, complete c2 more, all
-- within what this host lets be outstanding (nr - 7 here; the workload
-- submits POLLs that complete at once). Random heads, tails and wraps.
local function random_ring(n)
	local nr = core.geometry(n).nr
	local room = nr - 4 * 2 * 1 - 1 -- at most nr - 7 outstanding; keep one spare
	local c = math.random(0, room)
	local r = math.random(0, c)
	local c2 = math.random(0, room - (c - r))
	return string.format("--ring %d:%d:%d:%d", n, c, r, c2), n
end

local function random_layout(budget)
	local k = math.random(2, 10)
	local parts, used = {}, 0
	for i = 1, k do
		local n = math.random(1, 4096)
		if math.random() < 0.03 then n = ({ 8192, 16384, 32768 })[math.random(3)] end
		if used + n > budget - (k - i) then n = 1 end
		local s, u = random_ring(n)
		parts[#parts + 1] = s
		used = used + u
	end
	return table.concat(parts, " ")
end

describe("ring layouts", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("MySQL InnoDB's layout: 8, then 16, io_setup(256) rings made in a row", function()
		for _, k in ipairs { 8, 16 } do
			local spec = string.rep("--ring 256:20:5:0 ", k)
			local ok, err = restore_round_trip(spec, dir)
			assert(ok, k .. " rings: " .. tostring(err))
		end
	end)

	it("a ring of every size class from 1 to 1025 pages beside small ones", function()
		-- io_setup(65535) is a 1025-page ring and all but one of the budget.
		local nr_now, max = assert(core.aio_nr())
		assert(max - nr_now >= 65536, "needs the whole fs.aio-max-nr budget free")
		for _, spec in ipairs {
			"--ring 65535:200:100:50 --ring 1:3:1:0",
			"--ring 1:0:0:0 --ring 2048:4000:4000:300 --ring 32:60:0:0 --ring 16384:32800:32800:300",
		} do
			local ok, err = restore_round_trip(spec, dir)
			assert(ok, spec .. ": " .. tostring(err))
		end
	end)

	it("randomized layouts: 2 to 10 rings of random n, heads and tails", function()
		local seed = tonumber(os.getenv("AIOTK_LAYOUT_SEED") or "") or os.time()
		local count = tonumber(os.getenv("AIOTK_LAYOUTS") or "") or 120
		math.randomseed(seed)
		local nr_now, max = assert(core.aio_nr())
		for i = 1, count do
			local spec = random_layout(max - nr_now)
			local ok, err = restore_round_trip(spec, dir)
			assert(ok, string.format("layout %d of %d failed (replay with AIOTK_LAYOUT_SEED=%d): %s\n  aio_workload %s",
				i, count, seed, tostring(err), spec))
		end
	end)
end)
