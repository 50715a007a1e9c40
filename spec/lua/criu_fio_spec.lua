-- fio (libaio, O_DIRECT, iodepth 16, verify=crc32c) checkpointed by real
-- CRIU mid-run on a slow device (an ext4 on a loop device throttled by a
-- blkio cgroup), so that writes are still in flight when CRIU freezes it:
-- plain CRIU saves the ring without their completions and the restored fio
-- waits for them for ever; with aiotk's plugin the dump waits for them and
-- the restored fio finishes and verifies every block.
local helper = require "helper"
local core = require "aiotk.core"
local json = require "dkjson"
local C = require "criu_helper"

local IOPS, BLOCKS = 30, 64 -- 16 in flight drain in about 0.5 s

-- fio in its own IPC namespace (it keeps job state in SysV shared memory,
-- which CRIU dumps only in a namespace of the dumped tree) and session,
-- in the disk's blkio group. Returns unshare's pid and fio's.
local function start_fio(disk, out)
	local ok, o = helper.sh(string.format("sh -c 'echo $$ > %s; exec unshare --ipc --fork setsid fio " ..
		"--name=aiotk --filename=%s/data --ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite " ..
		"--bs=4k --size=%dk --verify=crc32c --verify_state_save=0 --thread --output-format=json --output=%s' " ..
		"</dev/null >/dev/null 2>&1 & echo $!", disk.procs, disk.mnt, BLOCKS * 4, out))
	assert(ok, o)
	local u = tonumber(o:match("%d+"))
	local fio
	assert(helper.wait_until(function()
		fio = tonumber(helper.slurp("/proc/" .. u .. "/task/" .. u .. "/children"):match("%d+"))
		return fio and helper.slurp("/proc/" .. fio .. "/maps"):find("/%[aio%]")
	end, 10000), "fio did not start")
	return u, fio
end

-- The restored fio's only ring, as show -p sees it.
local function ring_of(pid)
	local code, out = helper.run("show --json -p " .. pid)
	return code == 0 and json.decode(out).rings[1] or nil
end

describe("fio checkpointed by real CRIU on a slow device", function()
	local dir
	before_each(function() dir = helper.tmpdir() end)
	after_each(function() helper.rmdir(dir) end)

	it("loses writes in flight with plain CRIU (fio hangs); with the plugin fio finishes and verifies", function()
		if not C.need(pending) then return end
		if not helper.need_program(pending, "fio") then return end
		helper.write(dir .. "/wait.lua", "return { in_flight_wait_ms = 5000 }")
		-- one finally for both rounds (busted keeps one per test): every
		-- process killed and reaped, then every disk torn down
		local disks, procs = {}, {}
		finally(function()
			for _, p in ipairs(procs) do
				if not helper.ended(p) then core.kill(p, "KILL") end
				C.gone(p)
			end
			for _, d in ipairs(disks) do d:teardown() end
		end)
		for _, plugin in ipairs { false, true } do
			local name = plugin and "with" or "plain"
			local img, out = dir .. "/" .. name, dir .. "/" .. name .. ".json"
			assert(core.mkdir(img))
			local disk = helper.throttled_disk(8192, IOPS, true, true)
			disks[#disks + 1] = disk
			assert(helper.sh("fallocate -l 1M " .. disk.mnt .. "/data"))
			local u, fio = start_fio(disk, out)
			procs[#procs + 1], procs[#procs + 2] = fio, u
			-- writes held by the throttle (the case under test), seen just
			-- before the dump; the 64 of them last about 2 s
			assert(helper.wait_until(function()
				local r = ring_of(fio)
				return r and r.in_flight > 0
			end, 10000), "fio has no write in flight")
			local ok, o = C.criu("dump -t " .. fio .. " -D " .. img, plugin,
				"AIOTK_POLICY=" .. dir .. "/wait.lua")
			local log = helper.slurp(img .. "/criu.log")
			assert(ok, "criu dump: " .. o .. log:sub(-2000))
			if plugin then
				assert.matches("aiotk: ring 0x%x+: %d+ request%(s%) in flight %(%d+ that finish on their own" ..
					".-waited [%d.]+ ms", log)
			end
			-- the dumped fio exits once its writes are done (io_destroy waits for them)
			assert(C.gone(fio, 10000), "the dumped fio is still there")
			C.gone(u)
			ok, o = C.criu("restore -d -D " .. img, plugin)
			assert(ok, "criu restore: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
			if plugin then
				assert(C.gone(fio, 30000), "the restored fio did not finish")
				local report = json.decode(helper.slurp(out))
				local job = report.jobs[1]
				assert.are.equal(0, job.error)
				assert.are.same({ BLOCKS, BLOCKS }, { job.write.total_ios, job.read.total_ios },
					"fio wrote every block and read each back to verify it")
			else
				-- the kernel has nothing in flight for it, yet fio still waits
				-- for the completions CRIU's image does not hold
				local r
				assert(helper.wait_until(function()
					r = ring_of(fio)
					return r and r.in_flight == 0
				end, 10000), "the restored fio's ring did not settle: " .. json.encode(r or {}) ..
					(helper.ended(fio) and " (fio ended: " .. helper.slurp(out):sub(1, 300) .. ")" or ""))
				core.sleep_ms(3000)
				r = ring_of(fio)
				assert(r and r.in_flight == 0, "requests in flight again: " .. json.encode(r or {}))
				assert.is_false(helper.ended(fio), "plain CRIU's fio finished")
				assert.are.equal("", helper.slurp(out))
			end
		end
	end)
end)
