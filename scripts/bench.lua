-- aiotk bench: replay cost against a bare C loop, io_setup calls per convergence
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"
local core = aiotk.core

local parser = argparse("aiotk bench",
	"Replay cost per event against a bare C loop of the same request kind, measured in " ..
	"this run, for rings of 127 to 131199 slots; io_setup calls per convergence over a " ..
	"sweep of n; how long dumps stop a process (by aiotk's clock and by a thread of the " ..
	"process); restores into a live process against the same restore in-process. Raises " ..
	"fs.aio-max-nr for the run if io_setup(65536) would not fit, and puts it back.")
parser:flag("--json", "machine-readable output")
parser:option("--reps", "measurements per ring size (median is reported; twice that and one " ..
	"more for rings of 8319+ slots and dumps, four times that and one for restores into a live " ..
	"process)", "7"):convert(tonumber)
parser:option("--kind", "request kind: poll or pwrite", "poll"):choices { "poll", "pwrite" }
parser:flag("--whole", "only the whole commands: show -p and dump -p of a 2-ring process, " ..
	"restore -p of the 131199-slot ring, each a fresh aiotk as a user runs it")
parser:flag("--uring", "only io_uring: the stop of dump -p of a process with 4 io_uring instances " ..
	"and 2 AIO rings, and one kernel-view read of its instances")
parser:flag("--uring-restore", "only the io_uring restore: a 4096-entry instance with counters " ..
	"near 2^31 rebased into the liburing workload, against a bare in-process floor")
local args = parser:parse({ ... })
if args.uring_restore then
	local ub = require "aiotk.uring_bench"
	local row = ub.row(args.reps)
	print(args.json and aiotk.json(row) or ub.text(row))
	return 0
end

local REPLAY_N = { 1, 64, 128, 4096, 65534, 65536 }
local SWEEP_N = { 1, 2, 7, 8, 9, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096,
	10000, 32768, 65534, 65535, 65536 }

local function median(t)
	table.sort(t)
	return t[math.ceil(#t / 2)]
end

local function aiotk_replay(n)
	-- Everything but the ring made first: the bare loop too starts at once
	-- on a ring just made.
	local nr, opts = core.geometry(n).nr, { kind = args.kind }
	local ctx = assert(core.io_setup(n))
	local st = assert(core.replay(ctx, nr, nr - 1, nr - 1, opts))
	core.io_destroy(ctx)
	-- timed inside the C call, as the bare loop is (no Lua call around it)
	return st.ns, st.completions
end

-- Each aiotk run and a bare run go back to back, and the ratio is the
-- median of those pairs, so drift on a shared machine hits both sides alike. The
-- big rings, where per-event cost shows, get more pairs.
local function replay_row(n)
	local bare, ours, ratios, events = {}, {}, {}, 0
	local reps = n >= 4096 and args.reps * 2 + 1 or args.reps
	for i = 1, reps do
		-- Whichever runs second pays for the first one's io_destroy (its
		-- context is freed by deferred work on this CPU): measured 1.28x
		-- against 1.12x for 126 events with the order swapped, so the order
		-- alternates.
		if i % 2 == 1 then
			bare[i], events = core.bench.bare_replay(n, args.kind)
			ours[i] = aiotk_replay(n)
		else
			ours[i] = aiotk_replay(n)
			bare[i], events = core.bench.bare_replay(n, args.kind)
		end
		ratios[i] = ours[i] / bare[i]
	end
	local b, o = median(bare), median(ours)
	return { n = n, nr = core.geometry(n).nr, events = events, bare_ns = b, aiotk_ns = o,
		bare_ns_per_event = b / events, aiotk_ns_per_event = o / events, ratio = median(ratios),
		pairs = reps }
end

local function sweep_row(n)
	local g = core.geometry(n)
	local res = assert(core.converge(g.ring_len))
	core.io_destroy(res.ctx)
	return { n = n, ring_len = g.ring_len, nr = g.nr, smallest_n = res.n, calls = res.calls,
		exact = res.nr == g.nr and res.n == assert(core.min_n(g.ring_len)) }
end

local workload = require "aiotk.workload"
local states = require "aiotk.states"

-- Stops are short and this machine's noise is not: their medians take
-- as many measurements as the big rings' replay does.
local STOP_REPS = args.reps * 2 + 1
-- A live restore against its floor: single pairs spread 0.82-1.37 for the
-- big ring on this VM (its rebuild runs at one of two speeds, by
-- stretches), so the median takes twice as many pairs again.
local LIVE_REPS = args.reps * 4 + 1

-- Contexts destroyed just before (the last measurement's) are freed by
-- deferred work on this CPU that would land in the next one: every
-- measurement of a stop or a rebuild waits it out.
local SETTLE_MS = 20

-- Ring sets, as aio_workload's --ring N:COMPLETE:REAP:COMPLETE2 specs.
local SETS = {
	big = { name = "131199 slots, 40000 events", rings = { "65536:100000:60000:0" } },
	big1000 = { name = "io_setup(65535), 1000 events", rings = { "65535:61000:60000:0" } },
	innodb = { name = "8 x io_setup(256)", rings = { "256:20:5:0", "256:20:5:0", "256:20:5:0",
		"256:20:5:0", "256:20:5:0", "256:20:5:0", "256:20:5:0", "256:20:5:0" } },
	small = { name = "3 small rings", rings = { "1:15:10:0", "64:200:100:0", "128:333:333:100" } },
}

local function ring_args(set)
	local out = {}
	for _, r in ipairs(set.rings) do out[#out + 1] = "--ring " .. r end
	return table.concat(out, " ")
end

-- How long a dump keeps a process stopped (the workload has 5 threads
-- blocked in system calls), by aiotk's clock and by a thread of the
-- process that measures its own freeze (aio_workload --freeze-probe): the
-- longest freeze it saw that overlaps aiotk's stop. (This VM also freezes
-- threads by itself for 100-300 us at random; the window of the whole
-- call caught those.)
local DUMP_CASES = { { set = SETS.big1000, threads = true }, { set = SETS.innodb, threads = true },
	{ set = SETS.innodb, threads = false }, { set = SETS.small, threads = true },
	{ set = SETS.big, threads = true } }

local function dump_row(c)
	local set = c.set
	local stopped, freeze = {}, {}
	local dir = os.tmpname()
	local probe = os.tmpname()
	os.remove(dir)
	for _ = 1, STOP_REPS do
		local w = assert(workload.start(ring_args(set) .. (c.threads and " --threads" or "") ..
			" --freeze-probe " .. probe))
		core.sleep_ms(SETTLE_MS)
		local img, report = assert(aiotk.dump_process(w.pid, dir))
		stopped[#stopped + 1] = img.stopped_ns
		freeze[#freeze + 1] = w:freeze_ns(probe, report.stopped_at_ns, report.stopped_at_ns + img.stopped_ns)
		w:finish()
	end
	core.remove_tree(dir)
	os.remove(probe)
	-- threads: the process's threads besides the main one and the probe
	return { case = set.name .. (c.threads and "" or ", one thread"), rings = #set.rings,
		threads = c.threads and 5 or 0, stopped_ns = median(stopped), freeze_ns = median(freeze),
		reps = STOP_REPS }
end

-- Restoring rings into a live process against the same restore in this
-- process (the floor: the same placeholders and rebuild, no injection, no
-- ptrace stops), back to back. Both start from the same saved rings.

-- The rings of set made here, saved and destroyed; with claim, their
-- ranges held at once (as a restore holds them before anything else: an
-- allocation of this process could land in a hole a ring left), and the
-- time that took.
local function saved_rings(set, claim)
	local ctxs, saved = {}, {}
	for i, spec in ipairs(set.rings) do
		local n, c, r, c2 = spec:match("(%d+):(%d+):(%d+):(%d+)")
		ctxs[i] = assert(states.make { n = tonumber(n), complete = tonumber(c), reap = tonumber(r),
			complete2 = tonumber(c2), index = i - 1 })
		saved[i] = assert(core.snapshot(ctxs[i]))
	end
	-- one placeholder over rings that touch, as a restore claims them
	local ranges = {}
	for i, r in ipairs(saved) do ranges[i] = { addr = r.addr, len = r.ring_len } end
	local claims = claim and aiotk.joined_ranges(ranges) or {}
	for _, ctx in ipairs(ctxs) do core.lab.destroy(ctx) end
	local t0 = core.now_ns()
	for _, c in ipairs(claims) do assert(core.reserve(c.addr, c.len)) end
	return saved, core.now_ns() - t0
end

-- The floor: saved rings (their claims held, claim_ns) rebuilt here.
local function floor_run(saved, claim_ns, host)
	local t0 = core.now_ns()
	local jobs = {}
	for i, r in ipairs(saved) do jobs[i] = { ring = r, placeholder = true, model = host } end
	assert(core.restore_all(jobs))
	local ns = core.now_ns() - t0 + claim_ns
	for _, r in ipairs(saved) do core.lab.destroy(r.addr) end
	return ns
end

-- A workload with set's rings, dumped, its rings destroyed: ready for the
-- restore into it.
local function live_ready(set, dir, probe)
	local w = assert(workload.start(ring_args(set) .. " --freeze-probe " .. probe))
	assert(aiotk.dump_process(w.pid, dir))
	w:destroy()
	return { w = w, rings = assert(aiotk.read_image(dir)):rings() }
end

-- Where a live restore's stop went, phase by phase: aiotk's phases
-- (restore.lua), the restorer's run inside them (load: copied in; enter:
-- to its first instruction; claims, kit: its set-up; close; exit: to
-- aiotk seeing its end; answer: read back) and, summed over the rings,
-- each ring's io_setup, replay, events written and move.
local PHASES = { "stop", "look", "claims", "load", "enter", "r.claims", "kit", "setup", "replay", "events",
	"move", "close", "exit", "answer", "check", "finish", "detach" }

local function phases_of(res)
	local by = {}
	for _, p in ipairs(res.phases) do by[p.phase] = p.ns end
	local r = res.restorer or {}
	by.load, by.enter, by["r.claims"], by.kit = r.load, r.enter, r.claims, r.kit
	by.close, by.exit, by.answer = r.close, r.exit, r.answer
	by.setup, by.replay, by.events, by.move = 0, 0, 0, 0
	for _, x in ipairs(res) do
		by.setup, by.replay = by.setup + x.ns_converge, by.replay + x.ns_replay
		by.events, by.move = by.events + x.ns_events, by.move + x.ns_remap
	end
	return by
end

local function live_run(l, probe)
	local t0 = core.now_ns()
	local res = assert(aiotk.restore_process(l.w.pid, l.rings))
	local t1 = core.now_ns()
	local freeze = l.w:freeze_ns(probe, res.stopped_at_ns, res.stopped_at_ns + res.stopped_ns)
	l.w:finish()
	return t1 - t0, res.stopped_ns, freeze, phases_of(res)
end

-- The median of each phase over the runs.
local function phase_medians(runs)
	local out = {}
	for _, name in ipairs(PHASES) do
		local v = {}
		for i, r in ipairs(runs) do v[i] = r[name] or 0 end
		out[name] = median(v)
	end
	return out
end

local LIVE_CASES = { SETS.big, SETS.innodb, SETS.small }

local function live_restore_row(set, host)
	local floor, live, stopped, freeze, ratios, phases = {}, {}, {}, {}, {}, {}
	local dir = os.tmpname()
	local probe = os.tmpname()
	os.remove(dir)
	local totals = {}
	for i = 1, LIVE_REPS do
		-- Both sides made ready first, then timed back to back with only
		-- the settle between (either first, as in the replay pairs): with
		-- their set-up between them too, single pairs spread twice as wide.
		local l = live_ready(set, dir, probe)
		local saved, claim_ns = saved_rings(set, true)
		core.sleep_ms(SETTLE_MS)
		if i % 2 == 1 then
			floor[i] = floor_run(saved, claim_ns, host)
			core.sleep_ms(SETTLE_MS)
		end
		live[i], stopped[i], freeze[i], phases[i] = live_run(l, probe)
		if i % 2 == 0 then
			core.sleep_ms(SETTLE_MS)
			floor[i] = floor_run(saved, claim_ns, host)
		end
		ratios[i] = stopped[i] / floor[i]
		totals[i] = live[i] / floor[i]
	end
	core.remove_tree(dir)
	os.remove(probe)
	-- ratio: the process stopped (attach to detach: what the rebuild costs
	-- it) against the same rebuild here; total_ratio: the whole call
	-- (policy, plan, reading the process's code) against it.
	return { case = set.name, rings = #set.rings, floor_ns = median(floor), live_ns = median(live),
		stopped_ns = median(stopped), freeze_ns = median(freeze), ratio = median(ratios),
		total_ratio = median(totals), reps = LIVE_REPS, phases_ns = phase_medians(phases) }
end

-- A restore that fails at its last ring, against the same restore that
-- succeeds: what the rollback adds to the time the process is stopped
-- (the rings it made are destroyed by a thread of the process once it
-- runs, which the call waits for: in the whole call, not in the stop).
-- MySQL InnoDB's layout, 8 x io_setup(256).

local function restore_once(dir, fail)
	local w = assert(workload.start(ring_args(SETS.innodb)))
	assert(aiotk.dump_process(w.pid, dir))
	w:destroy()
	local rings = assert(aiotk.read_image(dir)):rings()
	local report = {}
	local t0 = core.now_ns()
	local ok = pcall(aiotk.restore_process, w.pid, rings, { report = report,
		on_ring = fail and function(i) if i == #rings then error("the last ring fails") end end,
	})
	local ns = core.now_ns() - t0
	assert(ok ~= fail, "the restore did not " .. (fail and "fail" or "succeed"))
	assert(w:ring_count() == (fail and 0 or #rings))
	w:finish()
	return ns, report.stopped_ns
end

local function failed_restore_row()
	local good, stopped, bad, bad_stopped = {}, {}, {}, {}
	local dir = os.tmpname()
	os.remove(dir)
	for _ = 1, args.reps do
		good[#good + 1], stopped[#stopped + 1] = restore_once(dir, false)
		bad[#bad + 1], bad_stopped[#bad_stopped + 1] = restore_once(dir, true)
	end
	core.remove_tree(dir)
	local g, b = median(good), median(bad)
	return { case = "8 x io_setup(256)", rings = 8, ok_ns = g, ok_stopped_ns = median(stopped),
		failed_ns = b, failed_stopped_ns = median(bad_stopped), rollback_ns = b - g,
		rollback_ns_per_ring = (b - g) / 8 }
end

-- One kernel-view read (BPF iterator run + records) of this process with
-- k contexts, against reading the same rings' headers from the process
-- side (/proc/PID/maps + process_vm_readv), measured alike. The program
-- load (verification) is paid once per command and reported apart.
local function kview_row(k, pid)
	local t0 = core.now_ns()
	local v, why = core.kviewer()
	local load_ns = core.now_ns() - t0
	if not v then return { contexts = k, error = why } end
	local ctxs = {}
	for i = 1, k do ctxs[i] = assert(core.lab.setup(1)) end
	local reads, maps = {}, {}
	for i = 1, args.reps * 5 do
		t0 = core.now_ns()
		assert(v:read(pid))
		reads[i] = core.now_ns() - t0
		t0 = core.now_ns()
		assert(core.live_rings(pid))
		maps[i] = core.now_ns() - t0
	end
	for _, c in ipairs(ctxs) do core.lab.destroy(c) end
	v:close()
	local r, m = median(reads), median(maps)
	return { contexts = k, read_ns = r, ring_side_ns = m, ratio = r / m, load_ns = load_ns }
end

-- Whole commands as a user runs them: a fresh aiotk process each (LuaJIT,
-- the policy, the kernel view opened from its pin, the work, exit), timed
-- around its spawn and wait as a shell runs a command (core.bench.run: no
-- /bin/sh in between), beside the time the process stayed stopped as the
-- command reports it (--json). A bare program's spawn (/bin/true) is
-- measured alike and reported, not subtracted.
SETS.two = { name = "2 rings", rings = { "1:15:10:0", "64:200:100:0" } }

local function timed(argv)
	local out = os.tmpname()
	local status, t0, t1 = core.bench.run(argv, out)
	local f = io.open(out)
	local text = f and f:read("*a") or ""
	if f then f:close() end
	os.remove(out)
	assert(status == 0, table.concat(argv, " ") .. ": " .. text)
	return t1 - t0, text, t0, t1
end

local function stopped_of(text)
	return assert(require("dkjson").decode(text)).stopped_ns
end

-- Where a whole restore -p went (t0, t1: this process's clock around it;
-- the command reports its own phases from when its Lua began): exec (the
-- spawn, exec, the dynamic loader, LuaJIT and aiotk.core made, up to the
-- command line's first line of Lua), modules (the library and argparse
-- loaded, arguments parsed), image (the policy and the image read), plan,
-- view, attach (before the stop), stopped (attach to detach), exit (the
-- JSON printed, the Lua state closed, the guardian reaped, the process
-- gone), other (the rest: taking the rings from the image, the plan file
-- looked for).
local WHOLE_PHASES = { "exec", "modules", "image", "plan", "view", "attach", "stopped", "exit", "other" }

local function whole_phases(text, t0, t1)
	local doc = assert(require("dkjson").decode(text))
	local by = { exec = doc.started_ns - t0, exit = t1 - doc.printed_ns, stopped = doc.stopped_ns }
	for _, p in ipairs(doc.phases) do
		if p.phase == "modules" or p.phase == "image" or p.phase == "plan" or p.phase == "view" or
			p.phase == "attach" then by[p.phase] = p.ns end
	end
	local known = 0
	for _, name in ipairs(WHOLE_PHASES) do known = known + (by[name] or 0) end
	by.other = (t1 - t0) - known
	return by
end

-- How this run's commands get the kernel view: this process opens it as
-- they do first (making the pin when there is none), then again.
local function kview_how()
	local kernel = require "aiotk.kernel"
	local opts = kernel.pin_opts()
	local t0 = core.now_ns()
	local v, why = core.kviewer(opts)
	local first_ns = core.now_ns() - t0
	if not v then return { error = why } end
	local first = v:info()
	v:close()
	t0 = core.now_ns()
	v = assert(core.kviewer(opts))
	local again_ns = core.now_ns() - t0
	local info = v:info()
	v:close()
	return { from_pin = info.from_pin, pin = info.pin, pin_error = info.pin_error,
		first_ns = first_ns, first_loaded = not first.from_pin, open_ns = again_ns }
end

local function whole_commands(host)
	local bin = (AIOTK_EXE_DIR or ".") .. "/aiotk"
	local out = { kernel_view = kview_how(), reps = STOP_REPS }
	local spawn = {}
	for i = 1, STOP_REPS do spawn[i] = timed({ "/bin/true" }) end
	out.spawn_ns = median(spawn)
	-- show -p and dump -p of one 2-ring process
	local w = assert(workload.start(ring_args(SETS.two)))
	local dir = os.tmpname()
	os.remove(dir)
	local show, dump, dstopped = {}, {}, {}
	for i = 1, STOP_REPS do
		show[i] = timed({ bin, "show", "-p", tostring(w.pid) })
		local ns, text = timed({ bin, "dump", "--json", "-p", tostring(w.pid), "-D", dir })
		dump[i], dstopped[i] = ns, stopped_of(text)
		core.remove_tree(dir)
	end
	w:finish()
	out.show_ns, out.dump_ns, out.dump_stopped_ns = median(show), median(dump), median(dstopped)
	-- restore -p of the big ring against its floor, pairs in either order
	local probe = os.tmpname()
	local whole, rstopped, floor, ratios, rphases = {}, {}, {}, {}, {}
	for i = 1, STOP_REPS do
		local l = live_ready(SETS.big, dir, probe)
		local saved, claim_ns = saved_rings(SETS.big, true)
		core.sleep_ms(SETTLE_MS)
		if i % 2 == 1 then
			floor[i] = floor_run(saved, claim_ns, host)
			core.sleep_ms(SETTLE_MS)
		end
		local ns, text, t0, t1 = timed({ bin, "restore", "--json", "-p", tostring(l.w.pid), "-D", dir })
		whole[i], rstopped[i] = ns, stopped_of(text)
		rphases[i] = whole_phases(text, t0, t1)
		l.w:finish()
		if i % 2 == 0 then
			core.sleep_ms(SETTLE_MS)
			floor[i] = floor_run(saved, claim_ns, host)
		end
		ratios[i] = whole[i] / floor[i]
		core.remove_tree(dir)
	end
	os.remove(probe)
	out.restore_ns, out.restore_stopped_ns = median(whole), median(rstopped)
	out.restore_floor_ns, out.restore_ratio = median(floor), median(ratios)
	local by = {}
	for _, name in ipairs(WHOLE_PHASES) do
		local v = {}
		for i, r in ipairs(rphases) do v[i] = r[name] or 0 end
		by[name] = median(v)
	end
	out.restore_phases_ns = by
	return out
end

-- What this machine's phases depend on: its CPUs' idle states (a
-- stopped or woken thread waits for its CPU to come out of them) and what
-- a page costs (faulted in, populated, written by process_vm_writev).
local function read_line(path)
	local f = io.open(path)
	local v = f and f:read("*l")
	if f then f:close() end
	return v
end

local function machine_row()
	local runs = {}
	for i = 1, STOP_REPS do runs[i] = core.bench.page_costs() end
	local out = {
		cpuidle_driver = read_line("/sys/devices/system/cpu/cpuidle/current_driver") or "none",
		cpuidle_governor = read_line("/sys/devices/system/cpu/cpuidle/current_governor_ro") or
			read_line("/sys/devices/system/cpu/cpuidle/current_governor") or "none",
	}
	for _, k in ipairs { "fault_ns", "populate_ns", "vm_write_fresh_ns", "vm_write_present_ns" } do
		local v = {}
		for i, r in ipairs(runs) do v[i] = r[k] end
		out[k] = median(v)
	end
	return out
end

-- io_uring: the liburing workload the specs use (built beside aiotk when
-- liburing-dev is there), with 4 instances (flags 0 with a POLL in
-- flight, SINGLE_ISSUER|DEFER_TASKRUN owned by a second thread, SQPOLL,
-- flags 0) and 2 AIO contexts: started, its pid once it is READY.
local function uring_workload()
	local bin = (AIOTK_EXE_DIR or ".") .. "/uring_workload"
	local f = io.open(bin)
	if not f then return nil, bin .. " not found (it is built with liburing-dev)" end
	f:close()
	local p = io.popen("exec " .. bin .. " --aio 2 --plain 1", "r")
	local pid
	for line in p:lines() do
		pid = pid or tonumber(line:match("^pid (%d+)$"))
		if line == "READY" then break end
	end
	if not pid then p:close() return nil, "uring_workload did not start" end
	return { pid = pid, stop = function() core.kill(pid, "KILL") p:close() end }
end

-- How long dump -p keeps that process stopped (aiotk's clock), and one
-- read of its instances by the kernel view (viewer:uring, not stopping
-- it) beside one read of its AIO contexts from the same viewer.
local function uring_rows()
	local w, why = uring_workload()
	if not w then return { error = why } end
	local dir = os.tmpname()
	os.remove(dir)
	local stopped = {}
	for i = 1, STOP_REPS do
		local img = assert(aiotk.dump_process(w.pid, dir))
		stopped[i] = img.stopped_ns
		core.remove_tree(dir)
		core.sleep_ms(SETTLE_MS)
	end
	local v = assert(core.kviewer())
	local uview, aview = {}, {}
	for i = 1, args.reps * 5 do
		local t0 = core.now_ns()
		local list = assert(v:uring(w.pid))
		uview[i] = core.now_ns() - t0
		assert(#list == 4, "4 io_uring instances")
		t0 = core.now_ns()
		assert(v:read(w.pid))
		aview[i] = core.now_ns() - t0
	end
	v:close()
	w.stop()
	return { case = "4 io_uring instances + 2 AIO rings", stopped_ns = median(stopped), reps = STOP_REPS,
		uring_view_ns = median(uview), aio_view_ns = median(aview), view_reps = args.reps * 5 }
end

local function run()
	if args.uring then return { host = core.host(), kind = args.kind, uring = uring_rows() } end
	if args.whole then
		local host = core.host()
		return { host = host, kind = args.kind, whole = whole_commands(host) }
	end
	local out = { host = core.host(), kind = args.kind, replay = aiotk.array(),
		converge = aiotk.array(), dump = aiotk.array() }
	-- As the bare loop is, aiotk's replays are pinned once for the series
	-- (a restore pins once for all its rings), not once per ring.
	local me = core.self()
	assert(me:pin())
	for _, n in ipairs(REPLAY_N) do out.replay[#out.replay + 1] = replay_row(n) end
	assert(me:release())
	for _, n in ipairs(SWEEP_N) do out.converge[#out.converge + 1] = sweep_row(n) end
	for _, c in ipairs(DUMP_CASES) do out.dump[#out.dump + 1] = dump_row(c) end
	out.live_restore = aiotk.array()
	for _, c in ipairs(LIVE_CASES) do out.live_restore[#out.live_restore + 1] = live_restore_row(c, out.host) end
	out.failed_restore = failed_restore_row()
	out.kernel_view = aiotk.array { kview_row(1, core.getpid()), kview_row(64, core.getpid()) }
	out.uring_restore = require("aiotk.uring_bench").row(args.reps)
	out.whole = whole_commands(out.host)
	out.uring = uring_rows()
	out.machine = machine_row()
	return out
end

local out, err = aiotk.with_aio_headroom(65536 + 64, run)
if not out then return cmd.fail("bench", err) end

if args.json then
	print(aiotk.json(out))
	return 0
end

local function print_whole(wc)
	local kv = wc.kernel_view
	local how = kv.error and ("no kernel view: " .. kv.error) or kv.from_pin and
		string.format("opened from its pin %s in %.2f ms%s", kv.pin, kv.open_ns / 1e6,
			kv.first_loaded and string.format(" (loaded and pinned by this run: %.1f ms)", kv.first_ns / 1e6) or "") or
		string.format("loaded by each command, %.1f ms (not pinned: %s)", kv.open_ns / 1e6, kv.pin_error or "kview_pin is off")
	print(string.format("whole commands (a fresh aiotk each, median of %d; timed around its spawn and wait, as a shell runs it; /bin/true alone %.2f ms); kernel view %s:",
		wc.reps, wc.spawn_ns / 1e6, how))
	print(string.format("  %-34s whole %7.2f ms", "show -p, 2 rings", wc.show_ns / 1e6))
	print(string.format("  %-34s whole %7.2f ms   stopped %7.3f ms", "dump -p, 2 rings", wc.dump_ns / 1e6,
		wc.dump_stopped_ns / 1e6))
	print(string.format("  %-34s whole %7.2f ms   stopped %7.3f ms   floor %7.3f ms   whole/floor %.2f",
		"restore -p, " .. SETS.big.name, wc.restore_ns / 1e6, wc.restore_stopped_ns / 1e6, wc.restore_floor_ns / 1e6,
		wc.restore_ratio))
	local v = {}
	for i, name in ipairs(WHOLE_PHASES) do v[i] = string.format("%s %.2f", name, wc.restore_phases_ns[name] / 1e6) end
	print("  where the whole restore -p goes (medians, ms): " .. table.concat(v, ", "))
end

local function print_uring(u)
	if u.error then
		print("io_uring: not measured (" .. u.error .. ")")
		return
	end
	print(string.format("io_uring, %s: dump -p stopped %.3f ms (median of %d); one kernel-view read of " ..
		"its instances %.3f ms, of its AIO contexts %.3f ms (median of %d)", u.case, u.stopped_ns / 1e6, u.reps,
		u.uring_view_ns / 1e6, u.aio_view_ns / 1e6, u.view_reps))
end

if args.whole then
	print_whole(out.whole)
	return 0
end
if args.uring then
	print_uring(out.uring)
	return 0
end

print(string.format("aiotk bench: %s replay, median of %d (%d for rings of 8319+ slots and dumps, %d for restores; ratio: median of back-to-back pairs), kernel %s, %d CPUs", args.kind, args.reps, STOP_REPS,
	LIVE_REPS, out.host.release, out.host.cpus))
print(string.format("%8s %8s %9s %12s %12s %10s %10s %7s", "n", "nr", "events", "bare ms",
	"aiotk ms", "bare ns/ev", "aiotk ns/ev", "ratio"))
for _, r in ipairs(out.replay) do
	print(string.format("%8d %8d %9d %12.3f %12.3f %10.1f %10.1f %7.3f", r.n, r.nr, r.events,
		r.bare_ns / 1e6, r.aiotk_ns / 1e6, r.bare_ns_per_event, r.aiotk_ns_per_event, r.ratio))
end
print()
print(string.format("%8s %10s %8s %11s %9s  %s", "n", "ring_len", "nr", "smallest n", "io_setups", "exact"))
local calls = 0
for _, r in ipairs(out.converge) do
	calls = calls + r.calls
	print(string.format("%8d %10d %8d %11d %9d  %s", r.n, r.ring_len, r.nr, r.smallest_n, r.calls,
		tostring(r.exact)))
end
print(string.format("io_setup calls per convergence: %.2f", calls / #out.converge))
print()
print("process stopped during aiotk dump -p (5 threads blocked in system calls unless \"one thread\"; the probe thread besides), by aiotk's clock and as the process saw it (its longest freeze overlapping the stop):")
for _, d in ipairs(out.dump) do
	print(string.format("  %-42s stopped %7.3f ms   froze %7.3f ms", d.case, d.stopped_ns / 1e6, d.freeze_ns / 1e6))
end
print()
print("restore into a live process: stopped (aiotk's clock) and froze (the process's) against the same rebuild in this process (floor); ratio = stopped / floor, whole = the whole call / floor (medians of back-to-back pairs):")
for _, l in ipairs(out.live_restore) do
	print(string.format("  %-30s floor %7.3f ms   stopped %7.3f ms   froze %7.3f ms   ratio %6.3f   whole %7.3f ms (%.2f)",
		l.case, l.floor_ns / 1e6, l.stopped_ns / 1e6, l.freeze_ns / 1e6, l.ratio, l.live_ns / 1e6, l.total_ratio))
end
print("  where the stop goes (medians, us): " .. table.concat(PHASES, " "))
for _, l in ipairs(out.live_restore) do
	local v = {}
	for i, name in ipairs(PHASES) do v[i] = string.format("%.0f", l.phases_ns[name] / 1e3) end
	print(string.format("  %-30s %s", l.case, table.concat(v, " ")))
end
local m = out.machine
print(string.format("  this machine: cpuidle driver %s (governor %s); a page (median of %d x 256): faulted in %.0f ns, " ..
	"MAP_POPULATE %.0f ns, process_vm_writev into fresh pages %.0f ns, into present pages %.0f ns",
	m.cpuidle_driver, m.cpuidle_governor, STOP_REPS, m.fault_ns, m.populate_ns, m.vm_write_fresh_ns,
	m.vm_write_present_ns))
print("  what depends on the machine: stop, enter, exit, answer and detach are ptrace stops and wakeups " ..
	"(a thread waits for its CPU to leave its idle state: the cpuidle driver, the hypervisor's halt); " ..
	"load is process_vm_writev into fresh pages (the restorer and the events it carries: about a page per " ..
	"128 events) and events the restorer writing them into the ring; setup is io_setup allocating and " ..
	"zeroing the ring's pages (the page-fault cost); replay is system calls (two per batch of completions); " ..
	"look and check read the process's maps and its kernel view")
local fr = out.failed_restore
print(string.format("restore of %s failing at its last ring: stopped %.2f ms against %.2f ms when it succeeds; the whole call %.2f ms against %.2f ms (rollback %.2f ms, %.2f ms a ring: io_destroy, by a thread of the process while it runs)",
	fr.case, fr.failed_stopped_ns / 1e6, fr.ok_stopped_ns / 1e6, fr.failed_ns / 1e6, fr.ok_ns / 1e6,
	fr.rollback_ns / 1e6, fr.rollback_ns_per_ring / 1e6))
print()
for _, k in ipairs(out.kernel_view) do
	if k.error then
		print(string.format("kernel view, %d context(s): unavailable (%s)", k.contexts, k.error))
	else
		print(string.format("kernel view, %2d context(s): one read %.3f ms; ring side (maps + headers) %.3f ms; ratio %.2f",
			k.contexts, k.read_ns / 1e6, k.ring_side_ns / 1e6, k.ratio))
	end
end
if out.kernel_view[1].load_ns then
	print(string.format("kernel view program load (without a pin): %.1f ms", out.kernel_view[1].load_ns / 1e6))
end
print()
print(require("aiotk.uring_bench").text(out.uring_restore))
print()
print_whole(out.whole)
print_uring(out.uring)
return 0
