-- io_uring's real clients on this distribution: fio's io_uring engine
-- dumped again and again while it writes and verifies, and Debian's
-- MariaDB in its default configuration (innodb_linux_aio=auto, which picks
-- io_uring) under a sysbench write load: shown and dumped while it works,
-- dumped then verified once it is quiet. The dumps only read: each client
-- must go on unharmed, fio's own verification and MariaDB's CHECK TABLE
-- and clean shutdown say so. See mariadb_helper.lua for the server's tree.
local helper = require "helper"
local json = require "dkjson"
local core = require "aiotk.core"
local M = require "mariadb_helper"
local run = helper.run

local function has_uring(pid)
	return helper.slurp("/proc/" .. pid .. "/maps"):find("anon_inode:%[io_uring%]") ~= nil
end

local function has(list, name)
	for _, x in ipairs(list) do if x == name then return true end end
	return false
end

describe("io_uring clients", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("fio's io_uring engine: dumped again and again while it writes and verifies; fio's verification passes", function()
		if not helper.need_program(pending, "fio") then return end
		local file, out = dir .. "/fio.dat", dir .. "/fio.json"
		-- fio writes 4 KiB blocks at 2000 a second and reads back every 256
		-- to verify them, until it is told to stop: the dumps happen while it
		-- works, however long each takes on this machine
		local p = io.popen(string.format("sh -c 'echo $$; exec fio --name=aiotk --filename=%s " ..
			"--ioengine=io_uring --registerfiles --fixedbufs --direct=1 --iodepth=16 --rw=randwrite " ..
			"--bs=4k --size=32M --rate_iops=2000 --verify=crc32c --verify_backlog=256 --verify_state_save=0 " ..
			"--time_based --runtime=600 --thread --output-format=json --output=%s'", file, out))
		local pid = tonumber(p:read("*l"))
		finally(function()
			if pid and not helper.ended(pid) then core.kill(pid, "KILL") end
			if p then p:read("*a") p:close() end
		end)
		assert(helper.wait_until(function() return has_uring(pid) or helper.ended(pid) end, 10000))
		-- fio's instance is DEFER_TASKRUN: completions that arrive while it
		-- is stopped wait for its thread, and the shipped policy refuses
		-- such a dump; this one records them as a warning, so that every
		-- dump gives an image to check
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		local DUMPS, waiting = 4, 0
		for _ = 1, DUMPS do
			local code, jout, err = run("dump --json -p " .. pid .. " -D " .. dir .. "/img --policy " .. policy)
			assert.are.equal(0, code, err)
			local doc = json.decode(jout)
			assert.are.equal(1, #doc.urings, jout)
			local u = doc.urings[1]
			assert.is_true(has(u.flag_names, "SINGLE_ISSUER") and has(u.flag_names, "DEFER_TASKRUN"), jout)
			assert.are.same({ 1, file, 16 }, { #u.files, u.files[1].path, #u.bufs })
			assert.is_true(u.maps[1].saved > 0, "ring memory saved")
			-- what the image lacks is named: the completions still waiting
			assert.are.equal(u.completions_waiting > 0, (doc.warnings or ""):find("completion(s) waiting for a " ..
				"thread to run its task work", 1, true) ~= nil, jout)
			waiting = waiting + (u.completions_waiting > 0 and 1 or 0)
			helper.rmdir(dir .. "/img")
			core.sleep_ms(100)
		end
		-- fio stops on SIGINT, reporting what it wrote and verified
		core.kill(pid, "INT")
		p:read("*a")
		p:close()
		p = nil
		local report = helper.slurp(out)
		local job = json.decode(report:sub((assert(report:find("{", 1, true), report)))).jobs[1]
		assert.are.equal(0, job.error)
		assert.is_true(job.write.total_ios > 0 and job.read.total_ios > 0,
			"fio wrote blocks and read them back to verify them: " .. job.write.total_ios .. ", " .. job.read.total_ios)
		print(string.format("fio: %d dumps (%d with completions waiting); %d writes, %d verified", DUMPS, waiting,
			job.write.total_ios, job.read.total_ios))
	end)

	it("MariaDB (default: io_uring): show -p and dump -p under a write load, unharmed; quiet, dump -p then verify -p match", function()
		if not M.need(pending) then return end
		local base = dir .. "/base"
		assert(M.make_base(base))
		local c = M.new_case(base, dir .. "/run", dir)
		finally(function() M.kill_tree(c.root) end)
		-- innodb_linux_aio's default, over the helper's "aio"
		M.start(c, 8, "--innodb-linux-aio=auto")
		assert(helper.wait_until(function()
			return helper.slurp(c.run .. "/error.log"):find("InnoDB: Using io_uring", 1, true) ~= nil
		end, 10000), helper.slurp(c.run .. "/error.log"):sub(-2000))
		local pid = c.server
		local function answers()
			return helper.sh(string.format("nsenter -t %d -n mariadb-admin --no-defaults -uroot -h127.0.0.1 " ..
				"--connect-timeout=5 ping", pid))
		end
		assert(M.load_running(c, 2), helper.slurp(c.run .. "/sysbench.out"))

		-- under the load
		local code, out, err = run("show --json -p " .. pid)
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		assert.is_true(#doc.urings >= 1, out)
		assert.are.equal(0, #doc.rings, "no AIO ring: io_uring is used")
		-- a write completing during the stop waits as task work of its
		-- thread, which the shipped policy refuses; this dump records it
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		code, out, err = run("dump --json -p " .. pid .. " -D " .. dir .. "/loaded --policy " .. policy)
		assert.are.equal(0, code, err .. out)
		local loaded = json.decode(out)
		assert.are.equal(#doc.urings, #loaded.urings)
		for _, u in ipairs(loaded.urings) do
			if u.completions_waiting > 0 then
				assert.truthy((loaded.warnings or ""):find(string.format("io_uring fd %d: %d completion(s) " ..
					"waiting", u.fd, u.completions_waiting), 1, true), out)
			end
		end
		assert.is_true(answers(), "the server answers after the dump")

		-- quiet: the load over, and the instances' counters still (read
		-- without stopping the server) for 2 s; background I/O may start
		-- between a dump and its verify, so a difference then is tried again
		assert(helper.wait_until(function() return M.exists(c.run .. "/sysbench.rc") end, 30000))
		local function counters()
			local _, o = run("show --json -p " .. pid)
			local t = {}
			for _, u in ipairs(json.decode(o).urings) do t[#t + 1] = u.sq_tail .. "/" .. u.cq_head end
			return table.concat(t, " ")
		end
		local diffs
		for attempt = 1, 3 do
			local last, still = counters(), 0
			assert(helper.wait_until(function()
				core.sleep_ms(200)
				local now = counters()
				still = now == last and still + 1 or 0
				last = now
				return still >= 10
			end, 40000), "the server did not go quiet")
			local img = dir .. "/quiet" .. attempt
			code, out, err = run("dump -p " .. pid .. " -D " .. img)
			-- background I/O may also complete during the stop: refused by
			-- name, and tried again
			if code ~= 0 then
				assert.truthy(err:find("completion(s) waiting for a thread to run its task work", 1, true), err)
				diffs = { "dump refused: " .. err }
			else
				local vcode, vout = run("verify --json -p " .. pid .. " -D " .. img)
				diffs = json.decode(vout).differences
				assert.is_true(vcode == 0 or vcode == 1, vout)
				if vcode == 0 then break end
			end
		end
		assert.are.same({}, diffs)
		assert.is_true(answers(), "the server answers")

		-- CHECK TABLE and a clean shutdown
		helper.write(c.run .. "/go", "")
		assert(helper.wait_until(function()
			M.reap_orphans()
			return helper.status(c.root, "Pid") == nil
		end, 30000), "the server did not shut down")
		local r = M.outcome(c)
		local log = "\n" .. r.sysbench:sub(-1500) .. "\n" .. r.check .. "\n" .. r.log:sub(-2500)
		assert.are.equal(0, r.sysbench_rc, "sysbench" .. log)
		assert.are.equal(M.TABLES, r.tables_ok, "CHECK TABLE" .. log)
		assert.are.same({}, r.innodb_errors, "InnoDB errors" .. log)
		assert.are.equal(0, r.server_rc, "the server's exit" .. log)
	end)
end)
