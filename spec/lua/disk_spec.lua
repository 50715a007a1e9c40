-- Disk reads held in flight by a throttled block device (a loop device
-- limited by a blkio cgroup), against the kernel view, the dump's wait and
-- its limits, and a restore the workload verifies byte for byte.
local helper = require "helper"
local json = require "dkjson"
local run = helper.run
local core = require "aiotk.core"

local K = 8

describe("disk I/O in flight", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	-- A workload with K O_DIRECT reads of a disk throttled to iops, and a
	-- small ring beside them; the disk is torn down on every path.
	local function reading(iops)
		local disk = helper.throttled_disk(K, iops)
		finally(function()
			helper.reap_workloads()
			disk:teardown()
		end)
		return helper.workload("--join " .. disk.procs .. " --ring 1:2:0:0 --disk " .. disk.dev .. ":" .. K)
	end

	local function disk_ring(doc)
		for _, r in ipairs(doc.rings) do if r.n == K then return r end end
	end

	it("shows reads in flight: in flight + completed = the reads submitted, while they trickle in", function()
		local w = reading(4)
		local seen = {}
		for _ = 1, 3 do
			local code, out, err = run("show -p " .. w.pid .. " --json")
			assert.are.equal(0, code, err)
			local r = assert(disk_ring(json.decode(out)))
			assert.are.equal(K, r.in_flight + (r.kernel_tail - r.head), out)
			assert.are.equal(0, r.cancellable)
			seen[#seen + 1] = r.in_flight
			core.sleep_ms(300)
		end
		assert.is_true(seen[1] >= 1, "reads are held in flight by the throttle")
		assert.is_true(seen[3] < seen[1], "and complete meanwhile")
	end)

	it("dump waits for them with the process stopped: events saved = unreaped + in flight at the stop", function()
		helper.write(dir .. "/p.lua", "return { in_flight_wait_ms = 10000 }")
		local w = reading(10)
		local code, out, err = run("dump --json -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/p.lua")
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		local r = assert(disk_ring(doc))
		assert.is_true(r.in_flight_at_stop >= 1, out)
		assert.are.equal(K, r.nevents)
		assert.are.equal(r.unreaped_at_stop + r.in_flight_at_stop, r.nevents)
		assert.is_true(doc.waited_ms > 0 and doc.stopped_ns / 1e6 >= doc.waited_ms, out)
		assert.matches("request%(s%) in flight %(%d+ that finish on their own.-waited", err)
		-- nothing in flight any more: the image matches the process
		assert.are.equal(0, (run("verify -p " .. w.pid .. " -D " .. dir .. "/img")))
		w:destroy()
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		code, out = run("verify -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, out)
		-- every read completed once, whole, with its iocb, data and block
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("a wait longer than the policy allows fails the dump, writes nothing and leaves the reads to finish", function()
		helper.write(dir .. "/p.lua", "return { in_flight_wait_ms = 50 }")
		local w = reading(4)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/p.lua")
		assert.are.equal(1, code)
		assert.matches("ring 0x%x+: %d request%(s%) in flight %(%d that finish on their own.-still in " ..
			"flight after %d+ ms; .-nothing was written%. A larger in_flight_wait_ms in the policy %(now 50%) " ..
			"lets the dump wait longer for them, and the process stays stopped", err)
		assert.is_nil(io.open(dir .. "/img/rings.img"))
		assert.are.equal("S", w:state())
		-- unharmed: once the reads are in, a dump with nothing to wait for round-trips
		assert(helper.wait_until(function()
			local _, out = run("show -p " .. w.pid .. " --json")
			local r = disk_ring(json.decode(out))
			return r and r.in_flight == 0
		end, 10000))
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		w:destroy()
		assert.are.equal(0, (run("restore -p " .. w.pid .. " -D " .. dir .. "/img")))
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("the fail policy refuses at once, naming the ring and the reads", function()
		helper.write(dir .. "/p.lua", [[return { in_flight = function() return "fail" end }]])
		local w = reading(4)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/p.lua")
		assert.are.equal(1, code)
		assert.matches("ring 0x%x+: %d request%(s%) in flight %(%d that finish on their own.-0 cancellable" ..
			".-%(policy in_flight: fail%)", err)
		assert.is_nil(io.open(dir .. "/img/rings.img"))
	end)
end)
