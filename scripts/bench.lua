-- aiotk bench: replay cost against a bare C loop, io_setup calls per convergence
local aiotk = require "aiotk"
local argparse = require "argparse"
local core = aiotk.core

local parser = argparse("aiotk bench",
	"Replay cost per event against a bare C loop of the same request kind, measured in " ..
	"this run, for rings of 127 to 131199 slots; io_setup calls per convergence over a " ..
	"sweep of n. Raises fs.aio-max-nr for the run if io_setup(65536) would not fit, and " ..
	"puts it back.")
parser:flag("--json", "machine-readable output")
parser:option("--reps", "measurements per ring size (median is reported)", "7"):convert(tonumber)
parser:option("--kind", "request kind: poll or pwrite", "poll"):choices { "poll", "pwrite" }
local args = parser:parse({ ... })

local REPLAY_N = { 1, 64, 128, 4096, 65534, 65536 }
local SWEEP_N = { 1, 2, 7, 8, 9, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096,
	10000, 32768, 65534, 65535, 65536 }

local function median(t)
	table.sort(t)
	return t[math.ceil(#t / 2)]
end

local function aiotk_replay(n)
	local ctx = assert(core.io_setup(n))
	local nr = core.geometry(n).nr
	local t0 = core.now_ns()
	local st = assert(core.replay(ctx, nr, nr - 1, nr - 1, { kind = args.kind }))
	local ns = core.now_ns() - t0
	core.io_destroy(ctx)
	return ns, st.completions
end

-- Alternate the two so drift on a shared machine hits both alike.
local function replay_row(n)
	local bare, ours, events = {}, {}, 0
	for _ = 1, args.reps do
		bare[#bare + 1], events = core.bench.bare_replay(n, args.kind)
		ours[#ours + 1] = aiotk_replay(n)
	end
	local b, o = median(bare), median(ours)
	return { n = n, nr = core.geometry(n).nr, events = events, bare_ns = b, aiotk_ns = o,
		bare_ns_per_event = b / events, aiotk_ns_per_event = o / events, ratio = o / b }
end

local function sweep_row(n)
	local g = core.geometry(n)
	local res = assert(core.converge(g.ring_len))
	core.io_destroy(res.ctx)
	return { n = n, ring_len = g.ring_len, nr = g.nr, smallest_n = res.n, calls = res.calls,
		exact = res.nr == g.nr and res.n == assert(core.min_n(g.ring_len)) }
end

local function run()
	local out = { host = core.host(), kind = args.kind, replay = aiotk.array(), converge = aiotk.array() }
	for _, n in ipairs(REPLAY_N) do out.replay[#out.replay + 1] = replay_row(n) end
	for _, n in ipairs(SWEEP_N) do out.converge[#out.converge + 1] = sweep_row(n) end
	return out
end

local out, err = aiotk.with_aio_headroom(65536 + 64, run)
if not out then
	io.stderr:write("aiotk bench: ", err, "\n")
	return 1
end

if args.json then
	print(aiotk.json(out))
	return 0
end

print(string.format("aiotk bench: %s replay, median of %d, kernel %s, %d CPUs", args.kind, args.reps,
	out.host.release, out.host.cpus))
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
return 0
