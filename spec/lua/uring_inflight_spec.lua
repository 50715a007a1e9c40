-- io_uring disk reads held in flight by a throttled block device (a loop
-- device limited by a blkio cgroup), against the kernel view and the
-- dump: reads on no kernel list are counted (the threads' in-flight
-- counters less the listed requests), named, and let finish by stopping
-- the process again once its threads have posted them.
local core = require "aiotk.core"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local BIN = (helper.bin:match("^(.*)/[^/]*$") or ".") .. "/uring_workload"
local K = 8
local COOP, DEFER = 0x100, 0x1000 + 0x2000 -- COOP_TASKRUN; SINGLE_ISSUER | DEFER_TASKRUN

describe("io_uring disk I/O in flight", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	-- uring_workload --disk: K reads of a disk throttled to iops, on an
	-- instance set up with flags; the disk and the workload go on every path.
	local function reading(iops, flags)
		local disk = helper.throttled_disk(K, iops)
		local p = assert(io.popen(string.format("%s --disk %s %d %d --join %s", BIN, disk.dev, K, flags,
			disk.procs), "r"))
		local w = { pipe = p, disk = disk }
		for line in p:lines() do
			if line == "READY" then break end
			local name, v = line:match("^(%S+) (%d+)$")
			if name then w[name] = tonumber(v) end
		end
		finally(function()
			if w.pid then core.kill(w.pid, "KILL") end
			p:close()
			disk:teardown()
		end)
		assert(w.pid, "the io_uring workload did not start")
		return w
	end

	-- The throttle let go: what is left of the reads completes at once.
	local function unthrottle(disk)
		local mm = helper.slurp("/sys/block/" .. disk.dev:match("loop%d+") .. "/dev"):match("(%d+:%d+)")
		helper.write(disk.cgroup .. "/blkio.throttle.read_iops_device", mm .. " 0\n")
	end

	-- SIGUSR2: the workload reaps its K reads and checks each.
	local function reaped(w)
		core.kill(w.pid, "USR2")
		for line in w.pipe:lines() do
			local ok = line:match("^disk_ok (%d+)$")
			if ok then return tonumber(ok) end
		end
	end

	local function policy(text)
		helper.write(dir .. "/p.lua", text)
		return " --policy " .. dir .. "/p.lua"
	end

	it("counts reads on no kernel list through the stop, and the fail policy refuses them by name", function()
		local w = reading(1, 0)
		local code, out, err = run("dump --json -p " .. w.pid .. " -D " .. dir .. "/rec" ..
			policy("return { in_flight = function() return 'record' end }"))
		assert.are.equal(0, code, err)
		local at = json.decode(out).urings_at_first_stop[1]
		-- held by the throttle (one read a second): most of them still in
		-- flight; while stopped nothing reaches the CQ ring, done or not
		assert.is_true(at.unlisted >= 1, out)
		assert.are.equal(K, at.unlisted + at.completions_waiting + at.unreaped, out)
		assert.truthy(err:find("request(s) in flight on no list the kernel view reads", 1, true), err)
		local _, text = run("show -p " .. w.pid)
		assert.truthy(text:find("request(s) in flight on no list the kernel view reads", 1, true), text)
		code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img" ..
			policy("return { in_flight = function() return 'fail' end }"))
		assert.are.equal(1, code)
		assert.truthy(err:find("io_uring fd " .. w["f.fd"] .. ": %d+ request%(s%) in flight on no list"), err)
		assert.truthy(err:find("(policy in_flight: fail); nothing was written", 1, true), err)
		assert.is_nil(core.listdir(dir .. "/img"))
		unthrottle(w.disk)
		assert.are.equal(K, reaped(w))
	end)

	for _, flags in ipairs { 0, COOP } do
		it("dump lets them finish: the process runs between stops until its threads posted them (flags " ..
			flags .. ")", function()
			local w = reading(1, flags)
			local pid, out = helper.spawn("dump --json -p " .. w.pid .. " -D " .. dir .. "/img" ..
				policy("return { in_flight_wait_ms = 120000 }"))
			-- held by the throttle while the dump stops the process again and again
			assert(helper.wait_until(function() return (helper.status(w.pid, "State") or ""):sub(1, 1) == "t" end,
				20000), "the dump never stopped the process")
			unthrottle(w.disk)
			assert(helper.wait_until(function() return helper.ended(pid) end, 60000), "the dump did not end")
			local text = helper.slurp(out)
			os.remove(out)
			local doc = assert(json.decode(text), text)
			local at, u = doc.urings_at_first_stop[1], doc.urings[1]
			assert.is_true(at.unlisted >= 1 and doc.uring_stops > 1, text)
			-- every read in the image, as a CQE the program has yet to reap
			assert.are.same({ 0, 0, K }, { u.unlisted, u.completions_waiting, (u.cq_tail - u.cq_head) % 2 ^ 32 })
			assert.are.equal(0, (run("verify -p " .. w.pid .. " -D " .. dir .. "/img")))
			assert.are.equal(K, reaped(w))
		end)
	end

	it("DEFER_TASKRUN: completions wait for the owner thread, which never enters; the dump gives up by name", function()
		local w = reading(100000, DEFER)
		local function shown()
			local _, out = run("show -p " .. w.pid .. " --json")
			return json.decode(out).urings[1]
		end
		assert(helper.wait_until(function() return shown().completions_waiting == K end, 20000))
		assert.are.same({ 0, 0 }, { shown().unlisted, shown().cached_cq_tail })
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img" ..
			policy("return { in_flight_wait_ms = 200 }"))
		assert.are.equal(1, code)
		assert.truthy(err:find(K .. " completion(s) waiting for a thread to run its task work, not in the CQ " ..
			"ring: a stopped thread never posts them (DEFER_TASKRUN: only its owner thread", 1, true), err)
		assert.truthy(err:find("stops (the process ran between them, so that its threads could post them); " ..
			"nothing was written. A larger in_flight_wait_ms in the policy (now 200)", 1, true), err)
		assert.is_nil(core.listdir(dir .. "/img"))
		assert.are.equal(K, reaped(w)) -- unharmed: the owner enters, all of them come
	end)

	it("a frozen dump (CRIU's) cannot let the process run: it refuses them by name", function()
		local w = reading(1, 0)
		core.kill(w.pid, "STOP")
		local ok, e = pcall(function()
			assert(helper.wait_until(function() return (helper.status(w.pid, "State") or ""):sub(1, 1) == "T" end, 5000))
			local img, err, code = require("aiotk").dump_frozen(w.pid, dir .. "/img")
			assert.are.same({ "in_flight", false }, { code, img ~= nil })
			assert.truthy(err:find("request(s) in flight on no list the kernel view reads", 1, true), err)
			assert.truthy(err:find("CRIU holds the process frozen, and they reach the CQ ring only once its " ..
				"threads run; nothing was written", 1, true), err)
			assert.is_nil(core.listdir(dir .. "/img"))
		end)
		core.kill(w.pid, "CONT")
		if not ok then error(e, 0) end
		unthrottle(w.disk)
		assert.are.equal(K, reaped(w))
	end)
end)
