-- MariaDB as a test: Debian's mariadbd (InnoDB on Linux native AIO, one
-- io_setup(2048) ring, O_DIRECT, a 16 MiB buffer pool) under a sysbench
-- write load, server and client checkpointed together by real CRIU
-- mid-load and restored, with aiotk's plugin and with plain CRIU beside
-- it: on a fast disk, and with the data directory on a throttled one (the
-- redo log stays on the fast disk, so that CRIU's freeze is quick), where
-- the page cleaner has writes in flight at every dump. There the plugin
-- refuses (default policy) or waits (in_flight_wait_ms raised), never
-- loses; what plain CRIU does there is printed, not asserted. See
-- mariadb_helper.lua for the tree and its namespaces.
local helper = require "helper"
local core = require "aiotk.core"
local json = require "dkjson"
local C = require "criu_helper"
local M = require "mariadb_helper"

local DUMP = "--tcp-established --file-locks"
local LOAD_S = 8           -- the load's running time (the time namespace stops it across a dump)
-- The throttled disk: writes limited to IOPS a second from the load's
-- second second until the dump ends. The page cleaner then writes batches
-- of up to 128 pages, which drain at 20 to 40 a second here (a sawtooth
-- from about 125 down to 0); a dump started with QUEUED or more in flight
-- (early in a batch) still has writes in flight for two seconds or more
-- after CRIU's freeze (about 0.2 s), longer than the default
-- in_flight_wait_ms (500 ms).
local IOPS = 20
local QUEUED = 80
local DISK_BLOCKS = 32768  -- 128 MiB
local DIRTY = "--innodb-max-dirty-pages-pct=0" -- the page cleaner writes all the time

describe("MariaDB under a sysbench write load, checkpointed by real CRIU", function()
	local dir, base

	setup(function() dir = helper.tmpdir() end)
	teardown(function()
		helper.rmdir(dir)
	end)

	local function need()
		if not C.need(pending) or not M.need(pending) then return false end
		if not base then
			base = dir .. "/base"
			assert(M.make_base(base))
		end
		return true
	end

	-- The tree (restored, or never dumped) runs to its end: the load within
	-- load_ms, then (after go) CHECK TABLE and a clean shutdown within
	-- rest_ms; killed past either. Returns the outcome and whether the tree
	-- ended by itself.
	local function finish(c, load_ms, rest_ms)
		local ended = helper.wait_until(function() return M.exists(c.run .. "/sysbench.rc") end, load_ms)
		helper.write(c.run .. "/go", "")
		ended = ended and helper.wait_until(function()
			M.reap_orphans()
			return helper.status(c.root, "Pid") == nil
		end, rest_ms)
		if not ended then M.kill_tree(c.root) end
		return M.outcome(c), ended
	end

	local function healthy(r, ended, what)
		local log = "\n" .. r.sysbench:sub(-1500) .. "\n" .. r.check .. "\n" .. r.log:sub(-2500)
		assert(ended, what .. ": the tree did not finish" .. log)
		assert.are.equal(0, r.sysbench_rc, what .. ": sysbench failed" .. log)
		assert.is_nil(r.sysbench:find("FATAL"), what .. ": sysbench" .. log)
		assert.are.equal(M.TABLES, r.tables_ok, what .. ": CHECK TABLE" .. log)
		assert.are.same({}, r.innodb_errors, what .. ": InnoDB errors" .. log)
		assert.are.equal(0, r.server_rc, what .. ": the server's exit" .. log)
	end

	-- The server's only ring, as the kernel view sees it (not stopping it),
	-- and show's output.
	local function ring_of(pid)
		local code, out = helper.run("show --json -p " .. pid)
		local doc = code == 0 and json.decode(out)
		return doc and doc.rings[1], out
	end

	local function ring_n(pid)
		local r, out = ring_of(pid)
		return r and r.n, out
	end

	local function in_flight(pid)
		local r = ring_of(pid)
		return r and r.in_flight
	end

	-- The plugin's lines in a CRIU log.
	local function aiotk_lines(log)
		local t = {}
		for l in log:gmatch("[^\n]*aiotk:[^\n]*") do t[#t + 1] = l end
		return table.concat(t, "\n")
	end

	-- The last match of pattern in s.
	local function last(s, pattern)
		local found
		for m in s:gmatch(pattern) do found = m end
		return found
	end

	local function ms_since(t0) return (core.now_ns() - t0) / 1e6 end

	-- One round: a case started (its data directory on disk when given,
	-- whose writes are throttled to IOPS from the load's second second until
	-- the dump ends) and dumped by CRIU mid-load, with the plugin or not, env before criu. Returns the
	-- case and the dump's result: ok, CRIU's output and log, ms taken.
	-- cases collects what the test's finally kills.
	local function dump_round(name, plugin, cases, disk, env)
		local c = M.new_case(base, dir .. "/" .. name, disk and disk.mnt or (dir .. "/" .. name))
		cases[#cases + 1] = c
		c.img = c.run .. "/img"
		assert(core.mkdir(c.img))
		M.start(c, LOAD_S, disk and DIRTY, disk and disk.procs)
		assert(M.load_running(c, 2), name .. ": no load: " .. helper.slurp(c.run .. "/sysbench.out"))
		local queued
		if disk then
			-- the page cleaner's writes queue up behind the throttle
			M.throttle(disk, "write", IOPS)
			assert(helper.wait_until(function()
				queued = in_flight(c.server)
				if queued and queued >= QUEUED then return true end
				core.sleep_ms(50)
			end, 15000), name .. ": the server's writes did not queue up: " .. tostring(queued))
		end
		local t0 = core.now_ns()
		local ok, o = C.criu("dump -t " .. c.root .. " -D " .. c.img .. " " .. DUMP, plugin, env)
		-- what was in flight at the dump is waited for, refused or lost by
		-- now: the rest of the round runs at full speed
		if disk then M.throttle(disk, "write", 0) end
		return c, { ok = ok, out = o, log = helper.slurp(c.img .. "/criu.log"), ms = ms_since(t0), queued = queued }
	end

	-- The dumped tree gone (CRIU killed it) and reaped, so that its PIDs
	-- come free; then restored by CRIU.
	local function restore_round(c, plugin)
		assert(helper.wait_until(function()
			M.reap_orphans()
			return helper.status(c.root, "Pid") == nil and helper.status(c.server, "Pid") == nil
		end, 10000), "the dumped tree is still there")
		C.gone(c.unshare)
		M.reap_orphans()
		local t0 = core.now_ns()
		local ok, o = C.criu("restore -d -D " .. c.img .. " " .. DUMP, plugin)
		return { ok = ok, out = o, log = helper.slurp(c.img .. "/criu.log"), ms = ms_since(t0) }
	end

	-- Every tree the test started killed and reaped, then the disk torn
	-- down (unmounted, loop device and cgroup removed).
	local function cleanup(cases, disk)
		for _, c in ipairs(cases) do
			M.kill_tree(c.root)
			M.kill_tree(c.unshare)
		end
		if disk then disk:teardown() end
	end

	-- The throttled disk, its limits lifted until a load runs. It says it
	-- has no volatile write cache, so that the block layer completes a
	-- flush (the server's fdatasync of its data files) at once: else the
	-- flush queues behind the throttled writes, the fdatasync holds a
	-- thread of the server in D state and CRIU's freeze waits for it, as
	-- long as the writes take (they have all landed when the plugin looks).
	local function slow_disk()
		local disk = helper.throttled_disk(DISK_BLOCKS, IOPS, true, true)
		M.throttle(disk, "read", 0)
		M.throttle(disk, "write", 0)
		helper.write("/sys/block/" .. disk.dev:match("loop%d+") .. "/queue/write_cache", "write through")
		return disk
	end

	-- dump_round on a throttled disk of its own, torn down with every tree
	-- the round started when the test ends, however it ends.
	local function slow_dump(name, plugin, env)
		local cases, disk = {}, nil
		finally(function() cleanup(cases, disk) end)
		disk = slow_disk()
		return dump_round(name, plugin, cases, disk, env)
	end

	it("comes through dump and restore mid-load on a fast disk, plain and with the plugin (n 2048 recorded and restored)", function()
		if not need() then return end
		local cases = {}
		finally(function() cleanup(cases) end)
		for _, plugin in ipairs { false, true } do
			local name = plugin and "fast-plugin" or "fast-plain"
			local t0 = core.now_ns()
			local c, d = dump_round(name, plugin, cases)
			assert(d.ok, name .. ": criu dump: " .. d.out .. d.log:sub(-3000))
			if plugin then
				-- the plugin recorded io_setup's n, and fitted the dump to it
				local code, out = helper.run("show --json --task " .. c.server .. " " .. c.img .. "/aiotk-rings.img")
				assert.are.equal(0, code, out)
				local rings = json.decode(out).rings
				assert.are.equal(1, #rings, out)
				assert.are.equal(2048, rings[1].n, out)
				assert.matches("aiotk: 1 AIO ring%(s%) fitted to this host %(nr_req the n recorded at dump%); stamped", d.log)
			end
			local r = restore_round(c, plugin)
			assert(r.ok, name .. ": criu restore: " .. r.out .. r.log:sub(-3000))
			local n, show = ring_n(c.server)
			if plugin then
				assert.matches("aiotk: 1 AIO ring%(s%) fitted to this host at dump %(aiotk%-fitted.stamp%): nothing to do", r.log)
				-- nr_req was the recorded n: io_setup(2048) made the restored ring
				assert.are.equal(2048, n, show)
			end
			local out, ended = finish(c, LOAD_S * 1000 + 15000, 30000)
			healthy(out, ended, name)
			print(string.format("%s: dump %.0f ms, restore %.0f ms, restored ring n %s, round %.1f s",
				name, d.ms, r.ms, tostring(n), ms_since(t0) / 1000))
		end
	end)

	describe("with the data directory on a throttled disk (" .. IOPS .. " writes a second, " .. QUEUED ..
		"+ in flight at the dump)", function()
		it("the plugin refuses the dump under the default policy, naming in_flight_wait_ms and its cost; the server runs on unharmed", function()
			if not need() then return end
			local t0 = core.now_ns()
			-- no AIOTK_POLICY from the caller's environment: the shipped 500 ms
			local c, d = slow_dump("slow-refused", true, "env -u AIOTK_POLICY")
			assert.is_false(d.ok, "the dump went through: " .. d.log:sub(-2000))
			local msg = d.log:match("aiotk: (ring 0x%x+: %d+ request%(s%) in flight[^\n]*)")
			assert(msg, "no refusal in CRIU's log: " .. d.log:sub(-3000))
			assert.matches("still in flight after 5%d%d ms; the image would lose them, so nothing was written", msg)
			assert.matches("a larger in_flight_wait_ms in the policy %(now 500%) lets the dump wait longer", msg:lower())
			assert.matches("the process stays stopped %(frozen under CRIU%) up to that long", msg)
			assert.matches("Dumping FAILED", d.log)
			for _, name in ipairs(core.listdir(c.img)) do assert.is_nil(name:match("^aiotk"), "aiotk wrote " .. name) end
			-- CRIU let the tree run on: the load, CHECK TABLE and shutdown as if never dumped
			local out, ended = finish(c, LOAD_S * 1000 + 15000, 30000)
			healthy(out, ended, "after the refused dump")
			print(string.format("slow-refused: %d in flight before the dump, refused after %.0f ms: %s; round %.1f s",
				d.queued, d.ms, msg, ms_since(t0) / 1000))
		end)

		it("the plugin waits for the writes with in_flight_wait_ms raised; the restored server is healthy", function()
			if not need() then return end
			helper.write(dir .. "/wait.lua", "return { in_flight_wait_ms = 20000 }")
			local t0 = core.now_ns()
			local c, d = slow_dump("slow-waited", true, "AIOTK_POLICY=" .. dir .. "/wait.lua")
			assert(d.ok, "criu dump: " .. d.out .. d.log:sub(-3000))
			local count, waited = d.log:match("aiotk: ring 0x%x+: (%d+) request%(s%) in flight %(.-; waited ([%d.]+) ms")
			assert(count, "the plugin did not wait: " .. aiotk_lines(d.log))
			assert.is_true(tonumber(waited) > 0, aiotk_lines(d.log))
			local r = restore_round(c, true)
			assert(r.ok, "criu restore: " .. r.out .. r.log:sub(-3000))
			local n, show = ring_n(c.server)
			assert.are.equal(2048, n, show)
			local out, ended = finish(c, LOAD_S * 1000 + 20000, 30000)
			healthy(out, ended, "restored after the plugin waited")
			print(string.format("slow-waited: %d in flight before the dump, %s at the freeze, waited for %s ms " ..
				"(dump %.0f ms), restore %.0f ms, round %.1f s", d.queued, count, waited, d.ms, r.ms, ms_since(t0) / 1000))
		end)

		it("plain CRIU: what happens is printed, not asserted; a hung restored server is killed", function()
			if not need() then return end
			local t0 = core.now_ns()
			local c, d = slow_dump("slow-plain", false)
			local what
			if not d.ok then
				what = "dump failed: " .. d.out:sub(-300)
				finish(c, LOAD_S * 1000 + 15000, 20000)
			else
				local r = restore_round(c, false)
				if not r.ok then
					what = "restore failed: " .. (r.log:match("Error[^\n]*") or r.out:sub(-300))
				else
					local out, ended = finish(c, LOAD_S * 1000 + 15000, 20000)
					-- the load's last report, and InnoDB's own account of a stall
					local report, stall = last(out.sysbench, "%[ %d+s %][^\n]*"), last(out.log, "Long wait[^\n]*")
					local pending = last(out.log, "Pending Write: %d+")
					what = string.format("restored; %s; sysbench exit %s (last report: %s); CHECK TABLE %d of %d OK; " ..
						"%d InnoDB error(s); server log: %s%s", ended and "the tree finished" or "the tree hung and was killed",
						tostring(out.sysbench_rc), report or "none", out.tables_ok, M.TABLES, #out.innodb_errors,
						stall or "no long wait", pending and (", " .. pending) or "")
				end
			end
			print(string.format("slow-plain (plain CRIU, data on the throttled disk, %d in flight before the dump): " ..
				"%s; round %.1f s", d.queued, what, ms_since(t0) / 1000))
		end)
	end)
end)
