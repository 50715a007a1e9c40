-- aiotk dump -p / restore -p against real libaio workload processes that
-- verify themselves from the inside.
local helper = require "helper"
local core = require "aiotk.core"
local run = helper.run

-- The shipped scripts directory, for copies of the program.
local function aiotk_scripts()
	return (package.searchpath and package.searchpath("aiotk", package.path) or "scripts/aiotk/init.lua")
		:gsub("/aiotk/init%.lua$", ""):gsub("/aiotk%.lua$", "")
end

local RINGS = "--ring 1:15:10:0 --ring 128:333:333:100 --ring 1:120:0:0 " ..
	"--ring 64:200:200:0 --ring 4096:6000:5000:0"

describe("live process", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("dumps, the workload destroys its contexts, restores, and it verifies itself", function()
		local w = helper.workload(RINGS .. " --threads")
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.matches("dumped 5 ring%(s%)", out)
		assert.are_not.equal("t", w:state())
		local show = require("dkjson").decode((select(2, run("show --json " .. dir))))
		assert.are.equal(w.pid, show.pid)
		assert.is_true(show.stopped_ns > 0)
		assert.are.equal("DESTROYED", w:destroy())
		assert.are.equal(0, w:ring_count())
		code, out, err = run("restore -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.matches("restored 5 ring%(s%)", out)
		assert.are.equal(5, w:ring_count())
		assert.are_not.equal("t", w:state())
		assert.are.equal("VERIFY OK 5 rings", w:verify())
	end)

	it("restores into a second, fresh process at the same addresses", function()
		local expect = dir .. "/expect"
		local a = helper.workload(RINGS .. " --expect " .. expect, true)
		assert.are.equal(0, (run("dump -p " .. a.pid .. " -D " .. dir)))
		a:finish()
		local b = helper.workload("--verify-from " .. expect, true)
		local code, _, err = run("restore -p " .. b.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.are.equal("VERIFY OK 5 rings", b:verify())
	end)

	it("refuses an occupied address, names the occupant and leaves it intact", function()
		local expect = dir .. "/expect"
		local a = helper.workload("--ring 1:15:10:0 --ring 64:30:5:0 --expect " .. expect, true)
		assert.are.equal(0, (run("dump -p " .. a.pid .. " -D " .. dir)))
		a:finish()
		local b = helper.workload("--occupy-from " .. expect, true)
		local code, _, err = run("restore -p " .. b.pid .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("is mapped there", err)
		assert.matches("rw%-p", err)
		assert.are.equal(0, b:ring_count())
		assert.are_not.equal("t", b:state())
		assert.are.equal("VERIFY OK 2 occupants intact", b:verify())
	end)

	it("replaces live rings only with --replace", function()
		local w = helper.workload("--ring 1:15:10:0 --ring 128:333:333:100")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("/%[aio%]", err)
		assert.matches("%-%-replace", err)
		code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.are.equal(2, w:ring_count())
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("reports a target killed during restore, without hanging", function()
		local w = helper.workload("--ring 1:15:10:0 --ring 64:30:5:0")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		w:destroy()
		helper.write(dir .. "/kill.lua", [[
			local pid, dir = tonumber(arg[1]), arg[2]
			local rings = assert(aiotk.read_image(dir)):rings()
			local ok, err = aiotk.restore_process(pid, rings, {
				on_ring = function(i) if i == 1 then os.execute("kill -9 " .. pid) end end,
			})
			io.stderr:write(tostring(err), "\n")
			return ok and 0 or 1
		]])
		local code, _, err = run(dir .. "/kill.lua " .. w.pid .. " " .. dir)
		assert.are.equal(1, code)
		assert.matches("exited during restore", err)
	end)

	it("undoes everything when a callback raises mid-restore", function()
		local w = helper.workload("--ring 1:15:10:0 --ring 64:30:5:0 --threads")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		w:destroy()
		helper.write(dir .. "/raise.lua", [[
			local pid, dir = tonumber(arg[1]), arg[2]
			local rings = assert(aiotk.read_image(dir)):rings()
			local ok, err = pcall(aiotk.restore_process, pid, rings, {
				on_ring = function(i) if i == 2 then error("hook failed") end end,
			})
			io.stderr:write(tostring(err), "\n")
			return ok and 0 or 1
		]])
		local code, _, err = run(dir .. "/raise.lua " .. w.pid .. " " .. dir)
		assert.are.equal(1, code)
		assert.matches("hook failed", err)
		assert.are.equal(0, w:ring_count())
		assert.are.equal("0", w:status("TracerPid"))
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("gives a clear EPERM to an unprivileged user, and the target is unharmed", function()
		if not helper.is_root() then
			pending("needs root to start a root workload and drop to nobody: skipped")
			return
		end
		local w = helper.workload("--ring 1:15:10:0")
		-- nobody may not reach the build tree (a clone under /root): run an
		-- installed-layout copy from the world-readable scratch directory
		local inst = dir .. "/inst"
		assert(os.execute(string.format(
			"mkdir -p %s/bin %s/share/aiotk && cp %s %s/bin/ && cp -r %s %s/share/aiotk/scripts && chmod -R a+rX %s",
			inst, inst, helper.bin, inst, aiotk_scripts(), inst, dir)) == 0)
		local code, _, err = helper.run_as_nobody(inst .. "/bin/aiotk",
			"dump -p " .. w.pid .. " -D " .. dir .. "/x")
		assert.are.equal(1, code)
		assert.matches("runs as uid 0 and you are uid 65534", err)
		assert.matches("run aiotk as root", err)
		assert.are_not.equal("t", w:state())
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("names a seccomp filter that refuses an injected call; nothing changes", function()
		local w = helper.workload("--ring 1:15:10:0 --threads --seccomp")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		w:destroy()
		local nr_before = require("aiotk.core").aio_nr()
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("seccomp filter", err)
		assert.matches("io_setup", err)
		assert.are.equal(0, w:ring_count())
		assert.are.equal(nr_before, (require("aiotk.core").aio_nr()))
		assert.are_not.equal("t", w:state())
		assert.are.equal("6", w:status("Threads"))
	end)

	it("a failed --replace puts the rings it moved aside back, as they were", function()
		-- the filter refuses io_setup: the restore fails after the live
		-- rings were parked and their ranges claimed
		local w = helper.workload("--ring 1:15:10:0 --ring 128:333:333:100 --threads --seccomp")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		local maps_before = helper.slurp("/proc/" .. w.pid .. "/maps")
		local code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("seccomp filter", err)
		assert.are.equal(maps_before, helper.slurp("/proc/" .. w.pid .. "/maps"))
		assert.are_not.equal("t", w:state())
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	-- What aiotk puts into a process to rebuild its rings (scratch memory,
	-- a /dev/null descriptor, its main thread pinned next to aiotk's CPU)
	-- is gone after the restore, whether it succeeds or fails, and aiotk's
	-- own CPU affinity is back too.
	local function traces(pid)
		local maps = {}
		for l in helper.slurp("/proc/" .. pid .. "/maps"):gmatch("[^\n]+") do
			if not l:find("/%[aio%]") then maps[#maps + 1] = l end
		end
		local fds = {}
		for _, fd in ipairs(core.listdir("/proc/" .. pid .. "/fd")) do fds[#fds + 1] = fd end
		table.sort(fds)
		local cpus = {}
		for _, tid in ipairs(core.listdir("/proc/" .. pid .. "/task")) do
			cpus[#cpus + 1] = tid .. ":" .. helper.status(tid, "Cpus_allowed_list")
		end
		table.sort(cpus)
		return { maps = table.concat(maps, "\n"), fds = table.concat(fds, " "), cpus = table.concat(cpus, " "),
			aiotk_cpus = helper.status("self", "Cpus_allowed_list") }
	end

	it("leaves nothing of its own in the process, restored or not", function()
		local aiotk = require "aiotk"
		local w = helper.workload("--ring 1:15:10:0 --ring 256:20:5:0 --ring 256:20:5:0 --threads")
		assert(aiotk.dump_process(w.pid, dir))
		w:destroy()
		-- After the destroy: the workload's own destroying threads leave
		-- their stacks mapped.
		local before = traces(w.pid)
		local rings = assert(aiotk.read_image(dir)):rings()
		local ok, err = pcall(aiotk.restore_process, w.pid, rings, {
			on_ring = function(i) if i == #rings then error("the last ring fails") end end })
		assert.is_false(ok, err)
		assert.are.same(before, traces(w.pid))
		assert.are.equal(0, w:ring_count())
		local res = assert(aiotk.restore_process(w.pid, rings))
		assert.are.equal(3, #res)
		assert.are.same(before, traces(w.pid))
		assert.are.equal("VERIFY OK 3 rings", w:verify())
	end)

	-- A failed restore hands the rings it made to a thread of the process,
	-- which destroys them while the process runs (io_destroy waits about
	-- 35 ms each): once that thread has ended, nothing of aiotk's is left.
	local INNODB = string.rep("--ring 256:20:5:0 ", 8) .. "--threads"

	local function tasks(pid)
		local list = core.listdir("/proc/" .. pid .. "/task")
		table.sort(list)
		return table.concat(list, " ")
	end

	-- Restore w from dir, failing at the last ring (with --replace when
	-- replace); report as it was filled.
	local function failed_restore(w, wait, replace)
		local aiotk = require "aiotk"
		local rings = assert(aiotk.read_image(dir)):rings()
		local report = {}
		local ok, err = pcall(aiotk.restore_process, w.pid, rings, { report = report, wait_undo = wait,
			replace = replace, on_ring = function(i) if i == #rings then error("the last ring fails") end end })
		assert.is_false(ok)
		assert.matches("the last ring fails", err)
		assert.is_true(report.stopped_ns > 0)
		return report, rings
	end

	it("fails at the last of 8 rings, lets the process run, and a thread of its own destroys the rings", function()
		local aiotk = require "aiotk"
		local w = helper.workload(INNODB)
		assert(aiotk.dump_process(w.pid, dir))
		w:destroy()
		local before, threads, nr = traces(w.pid), tasks(w.pid), core.aio_nr()
		-- aio-nr back, no ring (marked or not), no mapping, descriptor,
		-- CPU mask or thread of aiotk's left once the thread has ended
		local function nothing_left()
			assert.are.equal(nr, (core.aio_nr()))
			assert.are.equal(0, w:ring_count())
			assert.are.same(before, traces(w.pid))
			assert.are.equal(threads, tasks(w.pid))
		end
		local report, rings = failed_restore(w, false)
		assert.is_number(report.undo_tid, "no thread was made")
		assert(require("aiotk.process").wait_undo_threads(w.pid))
		io.stderr:write(string.format("\n  failed restore of 8 x io_setup(256): stopped %.2f ms\n",
			report.stopped_ns / 1e6))
		nothing_left()
		-- the same, restore_process waiting for the thread itself
		report = failed_restore(w, true)
		assert.is_number(report.undone_ns)
		nothing_left()
		assert(aiotk.restore_process(w.pid, rings))
		assert.are.equal("VERIFY OK 8 rings", w:verify())
	end)

	-- Its rings' parking slots are made before any destination is left: a
	-- spot the kernel picked was the home the previous ring had just left,
	-- and the occupant could not go back (the workload died once the
	-- thread destroyed the ring there).
	it("a --replace failing at its last ring puts every occupant back, its rings destroyed by its thread", function()
		local aiotk = require "aiotk"
		local w = helper.workload(string.rep("--ring 256:20:5:0 ", 3) .. "--threads")
		assert(aiotk.dump_process(w.pid, dir))
		local maps_before, nr = helper.slurp("/proc/" .. w.pid .. "/maps"), core.aio_nr()
		local report = failed_restore(w, true, true)
		assert.is_number(report.undo_tid, "no thread was made")
		assert.are.equal(nr, (core.aio_nr()))
		assert.are.equal(maps_before, helper.slurp("/proc/" .. w.pid .. "/maps"))
		assert.are.equal("VERIFY OK 3 rings", w:verify())
	end)

	it("under a seccomp filter that refuses clone, destroys the rings of a failed restore itself", function()
		local aiotk = require "aiotk"
		local w = helper.workload(INNODB .. " --seccomp-clone")
		assert(aiotk.dump_process(w.pid, dir))
		w:destroy()
		local before, threads, nr = traces(w.pid), tasks(w.pid), core.aio_nr()
		local report, rings = failed_restore(w, true)
		assert.is_nil(report.undo_tid)
		assert.are.equal(nr, (core.aio_nr()))
		assert.are.equal(0, w:ring_count())
		assert.are.same(before, traces(w.pid))
		assert.are.equal(threads, tasks(w.pid))
		assert(aiotk.restore_process(w.pid, rings))
		assert.are.equal("VERIFY OK 8 rings", w:verify())
	end)

	it("forks one guardian for its pins, which holds nothing of aiotk's but its socket", function()
		local aiotk = require "aiotk"
		local w = helper.workload("--ring 256:20:5:0")
		assert(aiotk.with_process(w.pid, function() return true end))
		local g = core.guardian()
		assert.is_number(g)
		assert(aiotk.with_process(w.pid, function() return true end))
		assert.are.equal(g, core.guardian(), "one guardian for every attach")
		assert.are.equal(tostring(core.getpid()), helper.status(g, "PPid"))
		-- its own session (a signal to aiotk's process group is not for it),
		-- no descriptor but its socket (no output of aiotk's held open)
		assert.are.equal(tostring(g), (helper.slurp("/proc/" .. g .. "/stat"):match("%) %S+ %d+ %d+ (%d+)")))
		local fds = core.listdir("/proc/" .. g .. "/fd")
		table.sort(fds)
		assert.are.same({ "0" }, fds)
		assert.matches("^socket:", select(2, helper.sh("readlink /proc/" .. g .. "/fd/0")))
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("the aiotk command forks its guardian before anything else, holds a process only while attached, reaps the guardian at exit", function()
		local w = helper.workload("--ring 256:20:5:0")
		local script = helper.tmpdir() .. "/g.lua"
		helper.write(script, string.format([[
local core = require "aiotk.core"
local g = core.guardian()
-- what it inherited at the fork, closed once it runs
local fds = core.listdir("/proc/" .. g .. "/fd")
for _ = 1, 500 do
	if #fds == 1 then break end
	core.sleep_ms(10)
	fds = core.listdir("/proc/" .. g .. "/fd")
end
print("guardian", g, #fds, core.targets_held())
local t = assert(core.attach(%d))
print("attached", core.guardian(), core.targets_held())
assert(t:detach())
print("detached", core.targets_held())
]], w.pid))
		local code, out, err = helper.run(script)
		assert.are.equal(0, code, err)
		local g, nfds, held0 = out:match("guardian\t(%d+)\t(%d+)\t(%d+)")
		assert.is_truthy(g, out)
		-- forked first: there before any attach, holding only its socket
		assert.are.equal("1", nfds)
		assert.are.equal("0", held0)
		-- the attach uses it rather than forking another
		assert.matches("attached\t" .. g .. "\t1\n", out)
		assert.matches("detached\t0\n", out)
		-- reaped by the command's exit (not left a zombie to this subreaper
		-- or to PID 1)
		assert.is_nil(io.open("/proc/" .. g .. "/stat"))
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("fails on a thread another tracer holds, naming it, and the threads it had stopped run on without EINTR", function()
		if not helper.need_program(pending, "strace") then return end
		local w = helper.workload("--ring 256:20:5:0 --threads")
		local tasks = core.listdir("/proc/" .. w.pid .. "/task")
		table.sort(tasks, function(a, b) return tonumber(a) < tonumber(b) end)
		-- the last thread: the others (epoll_wait and sigtimedwait among
		-- them) are seized and asked to stop before aiotk meets it
		local held = tasks[#tasks]
		local ok, out = helper.sh("strace -p " .. held .. " -o /dev/null >/dev/null 2>&1 & echo $!")
		assert(ok, out)
		local strace = tonumber(out:match("%d+"))
		assert(helper.wait_until(function()
			return tonumber(helper.status(held, "TracerPid") or "0") == strace
		end, 5000), "strace did not attach")
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
		core.kill(strace, "INT")
		assert(helper.wait_until(function() return helper.status(held, "TracerPid") == "0" end, 5000))
		assert.are.equal(1, code)
		assert.matches("thread " .. held .. " of process " .. w.pid .. " is being traced already, by process " ..
			strace, err, 1, true)
		assert.is_nil(io.open(dir .. "/rings.img"))
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("holds every thread while stopped, also threads made while it stops the others", function()
		local aiotk = require "aiotk"
		local w = helper.workload("--ring 256:20:5:0 --threads --spawner")
		local me = tostring(core.getpid())
		local counts = {}
		for i = 1, 30 do
			assert(aiotk.with_process(w.pid, function()
				local tasks = core.listdir("/proc/" .. w.pid .. "/task")
				for _, tid in ipairs(tasks) do
					local dir = "/proc/" .. w.pid .. "/task/" .. tid
					-- flags (field 9) without PF_EXITING: a thread that still
					-- runs its program (one on its way out never will again)
					local flags = tonumber(helper.slurp(dir .. "/stat"):match("%) %S+" .. (" %S+"):rep(5) .. " (%d+)") or "4")
					if math.floor(flags / 4) % 2 == 0 then
						local status = helper.slurp(dir .. "/status")
						assert.are.equal(me, status:match("TracerPid:%s*(%d+)"), "thread " .. tid .. " is traced by aiotk")
						assert.matches("State:%s*t", status, "thread " .. tid .. " is stopped")
					end
				end
				counts[i] = #tasks
				return true
			end))
		end
		table.sort(counts)
		assert.is_true(counts[#counts] > counts[1], "threads came and went between the stops")
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("holds the CPUs out of deep idle only while the process is stopped, and as the policy says", function()
		local aiotk = require "aiotk"
		if not helper.is_root() then
			pending("needs root for /dev/cpu_dma_latency: skipped")
			return
		end
		-- a request of 0 held makes the machine's value 0, whoever else holds
		-- one; that none is held is seen in this process's descriptors
		local me = core.getpid()
		local function mine() return helper.holds_latency(me) and 0 or "none" end
		local w = helper.workload("--ring 256:20:5:0")
		local seen = {}
		for _, hold in ipairs { true, false } do
			local before, target = core.now_ns(), nil
			assert(aiotk.with_process(w.pid, function(t)
				seen[#seen + 1] = { held = t.cpu_latency_held,
					latency = hold and helper.holds_latency(me) and helper.cpu_latency() or mine() }
				target = t
				return true
			end, { cpu_latency = hold }))
			assert.is_false(helper.holds_latency(me))
			-- the stop's start and length, on core.now_ns's clock
			assert.is_true(target.stopped_at_ns > before and
				target.stopped_at_ns + target.stopped_ns < core.now_ns())
		end
		assert.are.same({ { held = true, latency = 0 }, { held = false, latency = "none" } }, seen)
		-- a dump holds it as its policy says (with a request in flight the
		-- in_flight hook runs while the process is stopped)
		local policy = require "aiotk.policy"
		assert.is_true(policy.cpu_latency)
		local pending = helper.workload("--ring 1:15:10:0 --pending")
		for _, hold in ipairs { true, false } do
			local p, during = policy.load(nil), {}
			p.cpu_latency = hold
			p.in_flight = function()
				during[#during + 1] = hold and helper.holds_latency(me) and helper.cpu_latency() or mine()
				return "capture"
			end
			assert(aiotk.dump_process(pending.pid, dir .. "/" .. tostring(hold), { policy = p }))
			assert.are.same({ hold and 0 or "none" }, during)
			assert.is_false(helper.holds_latency(me))
		end
		assert.are.equal("VERIFY OK 1 rings", w:verify())
		assert.are.equal("VERIFY OK 1 rings", pending:verify())
	end)

	it("says so when there is no such process", function()
		-- a free PID below pid_max (no process of ours is touched)
		local f = io.open("/proc/sys/kernel/pid_max")
		local free = tonumber(f:read("*l")) - 1
		f:close()
		while io.open("/proc/" .. free .. "/stat") do free = free - 1 end
		local code, _, err = run("restore -p " .. free .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("rings.img", err)
		code, _, err = run("dump -p " .. free .. " -D " .. dir)
		assert.are.equal(1, code)
		assert.matches("no such process: " .. free, err)
	end)

	it("rebuilds the largest ring (io_setup(65536)) in a live process", function()
		local w = helper.workload("--ring 65536:100000:60000:0 --threads")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir)))
		w:destroy()
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
		assert.are.equal(0, code, err)
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)
end)
