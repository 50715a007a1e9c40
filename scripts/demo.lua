-- aiotk demo: dump a libaio process's rings, let it lose them, restore, verify
local aiotk = require "aiotk"
local workload = require "aiotk.workload"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk demo",
	"Start aio_workload (a libaio program with threads blocked in nanosleep, read and " ..
	"epoll_wait) with rings in known states, dump it, have it destroy its contexts, " ..
	"restore into it, and let it verify itself: header fields, io_getevents returns " ..
	"exactly the saved events, the next request lands at the saved tail, no EINTR.")
parser:option("-D --dir", "keep the image in this directory")
parser:flag("--json", "machine-readable report: stopped times, per ring its state and costs, the verdict")
local args = parser:parse({ ... })

-- The shared ring states (aiotk.states): one of each replay case libaio
-- produces on this host.
local RINGS = require("aiotk.states").demo

local function ms(ns) return ns / 1e6 end

local function fail(w, msg)
	if w then w:finish() end
	return cmd.fail("demo", msg)
end

local dir = args.dir
if not dir then
	dir = os.tmpname()
	os.remove(dir)
end

local specs = {}
for _, r in ipairs(RINGS) do
	specs[#specs + 1] = string.format("--ring %d:%d:%d:%d", r.n, r.complete or 0, r.reap or 0, r.complete2 or 0)
end
local w, err = workload.start(table.concat(specs, " ") .. " --threads")
if not w then return fail(nil, err) end

-- An error raised inside a step still ends the workload (a popen'd child
-- left running would keep this command waiting for it at exit).
local function guarded(fn, ...)
	local r = { n = select("#", ...), pcall(fn, ...) }
	if not r[1] then
		w:finish()
		error(r[2], 0)
	end
	return unpack(r, 2)
end

local img, derr = guarded(aiotk.dump_process, w.pid, dir)
if not img then return fail(w, derr) end
local gone = w:destroy()
if gone ~= "DESTROYED" or w:ring_count() ~= 0 then return fail(w, "workload kept its rings") end

local rings = img:rings()
local res, rerr = guarded(aiotk.restore_process, w.pid, rings)
if not res then return fail(w, rerr) end
local state = w:state()
local verdict = w:verify() or "no answer"

local ok = verdict:match("^VERIFY OK") ~= nil and state ~= "t"
if args.json then
	if not args.dir then
		os.remove(dir .. "/rings.img")
		os.remove(dir)
	end
	local list = aiotk.array()
	for i, r in ipairs(rings) do
		local x = res[i]
		list[i] = { name = nil, addr = aiotk.hex(r.addr), nr = r.nr, head = r.head, tail = r.tail,
			events = #r, n = x.converge.n, io_setup_calls = x.converge.calls, setup_ns = x.ns_converge,
			replay_ns = x.ns_replay, events_ns = x.ns_events, move_ns = x.ns_remap,
			total_ns = x.ns_converge + x.ns_replay + x.ns_events + x.ns_remap }
		for j, a in ipairs(w.addrs) do if a == r.addr then list[i].name = RINGS[j].name end end
	end
	print(aiotk.json { pid = w.pid, dump_stopped_ns = img.stopped_ns, restore_stopped_ns = res.stopped_ns,
		rings = list, verdict = verdict, ok = ok, image = args.dir or aiotk.null })
	return ok and 0 or 1
end
print(string.format("aiotk demo: workload %d with %d rings and 3 blocked threads", w.pid, #rings))
print(string.format("  dump: stopped %.3f ms, image %s", ms(img.stopped_ns), dir))
print(string.format("  workload destroyed its contexts; restore: stopped %.3f ms, state after: %s",
	ms(res.stopped_ns), state))
-- per ring, inside the process: io_setup, replay, events written, move
print(string.format("%-10s %-16s %7s %6s %6s %6s %5s %7s %8s %8s %8s %8s", "ring", "addr", "nr", "head",
	"tail", "events", "n", "setups", "setup_us", "replay_us", "events_us", "move_us"))
local by_addr = {}
for i, a in ipairs(w.addrs) do by_addr[a] = RINGS[i].name end
for i, r in ipairs(rings) do
	local x = res[i]
	print(string.format("%-10s 0x%-14x %7d %6d %6d %6d %5d %7d %8.1f %9.1f %9.1f %8.1f", by_addr[r.addr] or "?",
		r.addr, r.nr, r.head, r.tail, #r, x.converge.n, x.converge.calls, x.ns_converge / 1e3,
		x.ns_replay / 1e3, x.ns_events / 1e3, x.ns_remap / 1e3))
end
if not args.dir then
	os.remove(dir .. "/rings.img")
	os.remove(dir)
end
print("workload: " .. verdict)
print(ok and "all rings verified" or "verification FAILED")
return ok and 0 or 1
