-- Whatever happens to aiotk or to its target, the target lives on as it
-- was, and aiotk neither hangs nor harms: aiotk SIGKILLed at random moments
-- of dump and restore, SIGTERM during a restore, the target killed during
-- a restore. The targets are multi-threaded libaio workloads that verify
-- their rings, their threads (no EINTR) and their main thread's registers
-- from the inside. AIOTK_SURVIVE_RUNS sets the runs per case (default 24).
local helper = require "helper"
local core = require "aiotk.core"
local aiotk = require "aiotk"
local run = helper.run

local RINGS = "--ring 1:15:10:0 --ring 128:333:333:100 --ring 64:200:200:0 " ..
	"--ring 4096:6000:5000:0 --ring 256:20:5:0 --threads"
-- Killed between stopping a thread and making its interrupted call
-- restartable (microseconds), aiotk leaves EINTR to the calls signal(7)
-- says fail after any stop and resume (epoll_wait, sigtimedwait); only the
-- SIGKILL cases accept that, and only from those calls.
local KILLED = RINGS .. " --tolerate-stop-eintr"
local NRINGS = 5
-- With a ring whose rebuild takes 10-20 ms: the others alone are rebuilt
-- in about a millisecond, too short for a signal sent 0-10 ms into the
-- stop to land in it reliably.
local SLOW = RINGS .. " --ring 32768:50000:30000:0"
local RUNS = tonumber(os.getenv("AIOTK_SURVIVE_RUNS") or "") or 24
-- The relocation sweeps kill aiotk at every change, or at every STRIDE-th
-- (the sanitizer pass: a SIGKILLed process reports nothing, so it needs
-- only some of the undo paths that follow; the plain pass has them all).
local STRIDE = tonumber(os.getenv("AIOTK_SWEEP_STRIDE") or "") or 1

local function tracer(pid) return tonumber(helper.status(pid, "TracerPid") or "0") end

-- A random instant within aiotk's time with the target: once it traces
-- the target (or has finished), 0 to max_ms later.
local function random_moment(apid, target, max_ms)
	helper.wait_until(function() return tracer(target) == apid or helper.ended(apid) end, 5000)
	local until_ns = core.now_ns() + math.random() * max_ms * 1e6
	while core.now_ns() < until_ns do end
end

-- Orphans (a killed aiotk's guardian) come to this process, so that
-- latency_holders sees every process aiotk left.
core.subreaper()

local function cpus(pid) return helper.status(pid, "Cpus_allowed_list") end

-- The target runs, is not traced and not stopped, its main thread has its
-- CPU mask (w.cpus, as the workload started); aiotk's hold on the CPUs'
-- idle states went with it. That one is read at once, not waited for: a
-- process's descriptors are closed before it is a zombie (outcome waits
-- for that), and nothing else may hold aiotk's request (its guardian did,
-- until it ran, when forked after the request was opened).
local function assert_unharmed(w, context)
	assert(helper.wait_until(function() return tracer(w.pid) == 0 end, 2000),
		context .. ": target still traced")
	assert(helper.wait_until(function() return cpus(w.pid) == w.cpus end, 2000),
		context .. ": the main thread's CPUs are " .. tostring(cpus(w.pid)) .. ", were " .. w.cpus)
	-- (the device's value is the machine's: another program's request
	-- would show there too, so aiotk's processes are looked at)
	local holders = helper.latency_holders(core.getpid())
	assert(#holders == 0, context .. ": CPU latency request left, held by " .. table.concat(holders, ", "))
	local state = w:state()
	assert(state ~= "t" and state ~= "T" and state ~= "Z" and state ~= "",
		context .. ": target state " .. state)
end

-- Wait for aiotk (apid) to end; then its stdout and stderr, files removed.
local function outcome(apid, out, errf, timeout_ms, ctx)
	assert(helper.wait_until(function() return helper.ended(apid) end, timeout_ms),
		ctx .. ": aiotk still running after " .. timeout_ms .. " ms")
	local o, e = helper.slurp(out), helper.slurp(errf)
	os.remove(out)
	os.remove(errf)
	return o, e
end

local function workload(spec)
	local w = helper.workload(spec)
	w.cpus = cpus(w.pid)
	return w
end

local function ready_to_restore(dir, spec)
	local w = workload(spec or RINGS)
	local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
	assert(code == 0, err)
	assert(w:destroy() == "DESTROYED")
	return w
end

describe("survival", function()
	local dir
	helper.scratch_each(function(d) dir = d end)
	local seed = tonumber(os.getenv("AIOTK_SURVIVE_SEED") or "") or os.time()
	math.randomseed(seed)

	-- aiotk ARGS against workload w; sig goes to aiotk, or to the target
	-- when `at_target`, at a random moment; aiotk's stdout and stderr once
	-- it has ended (within timeout_ms).
	local function interrupt(args, w, max_ms, sig, at_target, timeout_ms, ctx)
		local apid, out, errf = helper.spawn(args)
		random_moment(apid, w.pid, max_ms)
		core.kill(at_target and w.pid or apid, sig)
		return outcome(apid, out, errf, timeout_ms, ctx)
	end

	-- (what: "N rings", or a number of rings)
	local function assert_verifies(w, ctx, what)
		local verdict = w:verify()
		what = type(what) == "string" and what or (what or NRINGS) .. " rings"
		assert(verdict == "VERIFY OK " .. what, ctx .. ": " .. tostring(verdict))
	end

	local function context(i) return string.format("run %d (AIOTK_SURVIVE_SEED=%d)", i, seed) end

	it("aiotk restore SIGKILLed at random moments: the target lives, --replace finishes the job", function()
		for i = 1, RUNS do
			local ctx = context(i)
			local w = ready_to_restore(dir, KILLED)
			interrupt("restore -p " .. w.pid .. " -D " .. dir, w, 12, "KILL", false, 2000, ctx)
			assert_unharmed(w, ctx)
			local code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, ctx .. ": second restore: " .. err)
			assert(w:ring_count() == NRINGS, ctx .. ": " .. w:ring_count() .. " rings, a leftover")
			assert_verifies(w, ctx)
		end
	end)

	-- A restore failing at its last ring hands its rings to a thread of the
	-- target (aiotk-undo) that destroys them while the target runs; aiotk
	-- killed at a random moment of the restore or its rollback, or once
	-- that thread runs: the rings still go (by the thread, or by the next
	-- restore, which removes what an interrupted aiotk left; rings it had
	-- finished look like the program's, hence --replace, as above).
	it("aiotk SIGKILLed around a failed restore's rollback: its rings still go, the target lives", function()
		local cmds = helper.tmpdir()
		helper.write(cmds .. "/failing-restore.lua", [[
-- aiotk failing-restore: a restore that fails at its last ring (survive_spec)
local aiotk = require "aiotk"
local pid, dir = ...
local rings = assert(aiotk.read_image(dir)):rings()
aiotk.restore_process(tonumber(pid), rings,
	{ on_ring = function(i) if i == #rings then error("the last ring fails") end end })
]])
		local spec = string.rep("--ring 256:20:5:0 ", 8) .. "--threads --tolerate-stop-eintr"
		local threaded = 0
		for i = 1, RUNS do
			local ctx = context(i)
			local w = workload(spec)
			local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, err)
			assert(w:destroy() == "DESTROYED")
			local nr = core.aio_nr()
			local apid, out, errf = helper.spawn("failing-restore " .. w.pid .. " " .. dir, "AIOTK_PATH=" .. cmds)
			local by_thread = i % 2 == 0 and helper.wait_until(function()
				return #core.undo_threads(w.pid) > 0 or helper.ended(apid)
			end, 5000) and #core.undo_threads(w.pid) > 0
			if not by_thread then random_moment(apid, w.pid, 4) end
			core.kill(apid, "KILL")
			outcome(apid, out, errf, 2000, ctx)
			assert_unharmed(w, ctx)
			assert(require("aiotk.process").wait_undo_threads(w.pid))
			if by_thread then
				threaded = threaded + 1
				assert(core.aio_nr() == nr, ctx .. ": aio-nr " .. core.aio_nr() .. ", was " .. nr)
				assert(w:ring_count() == 0, ctx .. ": " .. w:ring_count() .. " rings left")
			end
			code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, ctx .. ": restore after: " .. err)
			assert(w:ring_count() == 8, ctx .. ": " .. w:ring_count() .. " rings, a leftover")
			assert_verifies(w, ctx, 8)
		end
		assert(threaded > 0, "aiotk was never killed while its thread ran")
		helper.rmdir(cmds)
	end)

	-- The same by construction: aiotk kills itself at the n-th change its
	-- rollback makes to the target (core.die_after), for every n until the
	-- rollback ends; each time the target lives, no mapping of aiotk's is
	-- left once the next restore has run (a reservation of a ring's length
	-- left on a destination made it refuse: the park spot the kernel picked
	-- was the destination the previous ring had just left), and aio-nr is
	-- back.
	it("aiotk killed at each change of a failed restore's rollback: the next restore removes what it left", function()
		local cmds = helper.tmpdir()
		helper.write(cmds .. "/dying-restore.lua", [[
-- aiotk dying-restore: a restore failing at its last ring, aiotk killed at the n-th change of its rollback (survive_spec)
local aiotk, core = require "aiotk", require "aiotk.core"
local pid, dir, n = ...
local rings = assert(aiotk.read_image(dir)):rings()
local ok = pcall(aiotk.restore_process, tonumber(pid), rings, { on_ring = function(i)
	if i == #rings then core.die_after(tonumber(n)) error("the last ring fails") end
end })
print(ok and "restored" or "rolled back")
]])
		local spec = string.rep("--ring 256:20:5:0 ", 8) .. "--threads --tolerate-stop-eintr"
		-- aiotk's shapes: shared anonymous (placeholders, journals, its
		-- thread's mapping) and rings; PROT_NONE private reservations
		local function shapes(pid)
			local shared, rings, reservations = 0, 0, 0
			for l in helper.slurp("/proc/" .. pid .. "/maps"):gmatch("[^\n]+") do
				if l:find("/dev/zero") then shared = shared + 1 end
				if l:find("%[aio%]") then rings = rings + 1 end
				if l:match("^%x+%-%x+ %-%-%-p 0+ 00:00 0%s*$") then reservations = reservations + 1 end
			end
			return shared, rings, reservations
		end
		local n, ended = 0, false
		while not ended do
			n = n + 1
			local ctx = "aiotk killed at change " .. n .. " of the rollback"
			local w = workload(spec)
			local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, err)
			assert(w:destroy() == "DESTROYED")
			local nr, _, _, reservations = core.aio_nr(), shapes(w.pid)
			local apid, out, errf = helper.spawn("dying-restore " .. w.pid .. " " .. dir .. " " .. n,
				"AIOTK_PATH=" .. cmds)
			ended = outcome(apid, out, errf, 5000, ctx):find("rolled back") ~= nil
			assert_unharmed(w, ctx)
			assert(require("aiotk.process").wait_undo_threads(w.pid))
			code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, ctx .. ": restore after: " .. err)
			local shared, rings, res = shapes(w.pid)
			assert(shared == 0 and rings == 8 and res == reservations, string.format(
				"%s: %d shared anonymous mappings, %d rings, %d reservations more than before", ctx,
				shared, rings, res - reservations))
			assert_verifies(w, ctx, 8)
			assert(helper.wait_until(function() return core.aio_nr() == nr end, 2000),
				ctx .. ": aio-nr " .. core.aio_nr() .. " once the target is gone, was " .. nr)
			assert(n < 200, "the rollback never ended")
		end
		-- its thread's mapping, 8 rings parked, the thread started
		assert(n > 8 * 2 + 2, "only " .. n .. " changes")
		helper.rmdir(cmds)
	end)

	-- A relocating restore (3 rings made one after the other, a policy
	-- planned as 16 CPUs relocating what it cannot make in place: all 3)
	-- killed by construction at each of its changes (core.die_after), from
	-- the first until one the restore outlives: its relocation journal
	-- tells the next restore which ids it was swapping, so that one puts
	-- back every copy of each new id and removes what was made at the new
	-- addresses before relocating again. Each time the target lives, the
	-- next restore --replace succeeds, the workload verifies its rings
	-- (every copy of each id agrees, in heap, stack, static data and TLS;
	-- head, tail, events, a new request, io_destroy), no mapping of aiotk's
	-- is left in it, and aio-nr is back once it is gone. With `live`, the
	-- program's own rings are still there (the restore replaces them) and a
	-- thread waits in io_getevents on one: killed after the commit, only
	-- their destruction was left, and they are marked as aiotk's for the
	-- next restore to destroy; the program runs on the relocated rings.
	local function relocation_sweep(live)
		local cmds = helper.tmpdir()
		helper.write(cmds .. "/dying-relocate.lua", [[
-- aiotk dying-relocate: a restore relocating every ring, aiotk killed at its n-th change (survive_spec)
local aiotk, core = require "aiotk", require "aiotk.core"
local pid, dir, n, pol, replace = ...
local rings = assert(aiotk.read_image(dir)):rings()
local policy = require("aiotk.policy").load(pol)
core.die_after(tonumber(n))
local ok, err = aiotk.restore_process(tonumber(pid), rings, { policy = policy, replace = replace == "replace" })
print(ok and "restored" or "failed: " .. tostring(err))
]])
		local pol = cmds .. "/p16.lua"
		helper.write(pol, [[return { model = { cpus = 16 }, impossible = function() return "relocate" end }]])
		local spec = "--dense --keep heap,stack,static,tls --allow-grow --threads --tolerate-stop-eintr " ..
			(live and "--blocked 1 " or "") .. "--ring 1:4:0:0 --ring 1:5:5:0 --ring 1:6:2:0"
		local function lines(pid, what)
			local n = 0
			for l in helper.slurp("/proc/" .. pid .. "/maps"):gmatch("[^\n]+") do
				if l:find(what, 1, true) then n = n + 1 end
			end
			return n
		end
		-- rings marked as aiotk's (what a restore killed after its commit left)
		local function marked(pid)
			local t, k = assert(aiotk.attach(pid)), 0
			for _, m in ipairs(assert(t:mappings())) do
				if m.ring and t:header(m.start).building then k = k + 1 end
			end
			t:detach()
			return k
		end
		local n, ended, undone, after, t0 = 1 - STRIDE, false, 0, 0, core.now_ns()
		while not ended do
			n = n + STRIDE
			local ctx = string.format("aiotk killed at change %d of a relocating restore%s", n,
				live and " of live rings" or "")
			local nr = core.aio_nr()
			local w = workload(spec)
			local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, err)
			if not live then assert(w:destroy() == "DESTROYED") end
			local apid, out, errf = helper.spawn(string.format("dying-relocate %d %s %d %s %s", w.pid, dir, n, pol,
				live and "replace" or "-"), "AIOTK_PATH=" .. cmds)
			local said = outcome(apid, out, errf, 10000, ctx)
			ended = said:find("^restored") ~= nil
			assert(ended or said == "", ctx .. ": " .. said)
			assert_unharmed(w, ctx)
			assert(require("aiotk.process").wait_undo_threads(w.pid))
			-- (its first change makes the journal, the commit removes it)
			local committed = ended or (n > 1 and lines(w.pid, "3a1060000000-") == 0)
			if not committed then
				code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir .. " --policy " .. pol)
				assert(code == 0, ctx .. ": restore after: " .. err)
				if err:find("undid the relocation of 3 ring%(s%)") then undone = undone + 1 end
			elseif not ended then
				after = after + 1
			end
			local left = committed and marked(w.pid) or 0
			assert(w:ring_count() == 3 + left, ctx .. ": " .. w:ring_count() .. " rings, " .. left .. " marked")
			assert(lines(w.pid, "/dev/zero") == 0, ctx .. ": a mapping of aiotk's left")
			-- (the workload's verify ends with io_destroy of each ring, then it exits)
			assert_verifies(w, ctx, "3 rings (3 relocated)")
			assert(helper.wait_until(function() return core.aio_nr() == nr end, 2000),
				ctx .. ": aio-nr " .. core.aio_nr() .. " once the target is gone, was " .. nr)
			assert(n < 400, "the relocating restore never ended")
		end
		-- its journal made, 3 rings built, 6+ copies of each id rewritten
		assert(undone > 3 * 6 / STRIDE, "only " .. undone .. " kills left a relocation to undo, of " .. n)
		-- live: the 3 old rings destroyed after the commit (one kill point
		-- each: a stride may step over them)
		if STRIDE == 1 then assert(after == (live and 3 or 0), after .. " kills after the commit") end
		print(string.format("relocation kill sweep%s: %d changes or fewer (killed at every %d), %d left a relocation to undo, " ..
			"%d came after the commit, %.1f s", live and " (live rings)" or "", n - 1, STRIDE, undone, after,
			(core.now_ns() - t0) / 1e9))
		helper.rmdir(cmds)
	end

	it("aiotk killed at each change of a relocating restore: the next restore undoes it and relocates", function()
		relocation_sweep(false)
	end)

	it("aiotk killed at each change of a restore relocating live rings a thread waits on: undone, or the old rings marked", function()
		relocation_sweep(true)
	end)

	it("aiotk SIGKILLed while it holds the main thread on its CPU: the guardian gives the thread its CPUs back", function()
		local w = ready_to_restore(dir, SLOW)
		if not w.cpus:find("[-,]") then
			pending("one CPU: a pin changes nothing to see; skipped")
			return
		end
		local apid, out, errf = helper.spawn("restore -p " .. w.pid .. " -D " .. dir)
		local pinned = helper.wait_until(function()
			local c = cpus(w.pid)
			return c and not c:find("[-,]") or helper.ended(apid)
		end, 5000)
		assert(pinned and not helper.ended(apid), "the restore never pinned the main thread")
		core.kill(apid, "KILL")
		outcome(apid, out, errf, 2000, "pinned")
		assert_unharmed(w, "killed while pinned")
		-- Killed once it had made the rings (the pin lasts the whole stop),
		-- the next restore replaces them and needs room for both sets at
		-- once: SLOW's big ring is over half of the default fs.aio-max-nr.
		-- Its policy may raise the limit, put back here on every path.
		local _, max = aiotk.aio_nr()
		finally(function() aiotk.set_aio_max_nr(max) end)
		local pol = dir .. "/raise.lua"
		helper.write(pol, 'return { budget = function() return "raise" end }')
		local code, _, err = run("restore --replace -p " .. w.pid .. " -D " .. dir .. " --policy " .. pol)
		assert(code == 0, err)
		assert_verifies(w, "killed while pinned", NRINGS + 1)
	end)

	it("aiotk dump SIGKILLed at random moments: the target lives and dumps again", function()
		for i = 1, RUNS do
			local ctx = context(i)
			local w = workload(KILLED)
			interrupt("dump -p " .. w.pid .. " -D " .. dir .. "/killed", w, 2, "KILL", false, 2000, ctx)
			assert_unharmed(w, ctx)
			local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, ctx .. ": " .. err)
			assert(w:destroy() == "DESTROYED")
			code, _, err = run("restore -p " .. w.pid .. " -D " .. dir)
			assert(code == 0, ctx .. ": " .. err)
			assert_verifies(w, ctx)
			helper.rmdir(dir .. "/killed")
		end
	end)

	-- (SIGINT is ignored in a background job, as aiotk runs here, and
	-- aiotk keeps ignored signals ignored.)
	it("SIGTERM or SIGHUP during a restore: it rolls back, detaches and says so", function()
		local interrupted = 0
		for i = 1, RUNS do
			local ctx = context(i)
			local sig = ({ "TERM", "HUP" })[i % 2 + 1]
			local w = ready_to_restore(dir, SLOW) -- see the target-killed case
			local o, err = interrupt("restore -p " .. w.pid .. " -D " .. dir, w, 10, sig, false, 3000, ctx)
			assert_unharmed(w, ctx)
			if o:match("^restored") then
				assert(w:ring_count() == NRINGS + 1, ctx)
			else
				interrupted = interrupted + 1
				assert(err:find("interrupted by SIG" .. sig .. "; everything done was undone", 1, true), ctx .. ": " .. err)
				assert(w:ring_count() == 0, ctx .. ": rings left after rollback")
				local code, _, e2 = run("restore -p " .. w.pid .. " -D " .. dir)
				assert(code == 0, ctx .. ": " .. e2)
			end
			assert_verifies(w, ctx, NRINGS + 1)
		end
		assert(interrupted > 0, "no run was interrupted mid-restore")
	end)

	it("the target killed during a restore: aiotk exits within a second, saying so", function()
		local hit = 0
		for i = 1, RUNS do
			local ctx = context(i)
			-- (SLOW: a kill 0-10 ms into the stop came after the restore of
			-- the small rings alone in every run of one CI pass)
			local w = ready_to_restore(dir, SLOW)
			local o, err = interrupt("restore -p " .. w.pid .. " -D " .. dir, w, 10, "KILL", true, 1000, ctx)
			if not o:match("^restored") then
				hit = hit + 1
				assert(err:match("exited") or err:match("no such process"), ctx .. ": " .. err)
			end
			w:finish()
		end
		assert(hit > 0, "the target never died mid-restore")
	end)
end)
