-- fio (libaio, O_DIRECT, iodepth 16, verify=crc32c) on a throttled loop
-- device, dumped again and again while it writes and verifies: every dump
-- consistent, every request in flight at the stop in the image, and fio
-- finishes with its own verification passing.
local helper = require "helper"
local json = require "dkjson"
local core = require "aiotk.core"
local run = helper.run

-- fio in the disk's blkio group, writing then verifying 6 MiB; returns its
-- pid and a function that waits for it and returns its JSON report.
local function start_fio(disk, out)
	local cmd = string.format("sh -c 'echo $$; echo $$ > %s; exec fio --name=aiotk --filename=%s " ..
		"--ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bs=4k --size=6M " ..
		"--verify=crc32c --verify_state_save=0 --thread --output-format=json --output=%s'", disk.procs, disk.dev, out)
	local p = io.popen(cmd)
	local pid = tonumber(p:read("*l"))
	return pid, function()
		p:read("*a")
		p:close()
		return json.decode(helper.slurp(out))
	end
end

local function has_ring(pid)
	return helper.slurp("/proc/" .. pid .. "/maps"):find("/%[aio%]") ~= nil
end

describe("fio under repeated dumps", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("every dump holds the events unreaped and in flight at its stop; fio finishes and verifies", function()
		if not helper.need_program(pending, "fio") then return end
		local disk = helper.throttled_disk(1536, 1000, true)
		local pid, finish
		finally(function()
			if pid and not helper.ended(pid) then core.kill(pid, "KILL") end
			if finish then finish() end
			disk:teardown()
		end)
		pid, finish = start_fio(disk, dir .. "/fio.json")
		assert(helper.wait_until(function() return has_ring(pid) or helper.ended(pid) end, 10000))
		local dumps, held = 0, 0
		while true do
			local code, out, err = run("dump --json -p " .. pid .. " -D " .. dir .. "/img" .. dumps)
			if code ~= 0 then
				-- only fio's end may stop the dumps: no ring, or no process
				assert.is_true(helper.ended(pid) or not has_ring(pid), err)
				break
			end
			local doc = json.decode(out)
			for _, r in ipairs(doc.rings) do
				assert.are.equal(r.unreaped_at_stop + r.in_flight_at_stop, r.nevents, out)
				assert.are.same({ r.tail, 16 }, { r.kernel_tail, r.n })
				held = held + r.in_flight_at_stop
			end
			dumps = dumps + 1
			core.sleep_ms(150)
		end
		local report = finish()
		finish = nil
		local job = report.jobs[1]
		assert.are.equal(0, job.error)
		assert.are.same({ 1536, 1536 }, { job.write.total_ios, job.read.total_ios },
			"fio wrote every block and read each back to verify it")
		assert.is_true(dumps >= 3, "dumped " .. dumps .. " times")
		assert.is_true(held > 0, "requests were in flight at some stop")
	end)
end)
