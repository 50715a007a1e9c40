-- aiotk bench's io_uring restore row: a 4096-entry instance with its
-- counters near 2^31 (the image and the workload's liburing moved on
-- alike: a real one gets there after 2^31 SQEs), rebased into the live
-- liburing workload, against a bare in-process floor in the same run
-- (core.bench.bare_uring: setup, mappings, the same NOPs, the ring memory
-- written, with nothing in the way).
local core = require "aiotk.core"
local aiotk = require "aiotk"

local M = {}

M.ENTRIES = 4096
M.SHIFT = 2 ^ 31

local function binary()
	local dir = AIOTK_EXE_DIR or "."
	for _, p in ipairs { dir .. "/uring_workload", dir .. "/../libexec/aiotk/uring_workload" } do
		local f = io.open(p)
		if f then f:close() return p end
	end
	error("uring_workload not found next to aiotk nor in libexec/aiotk")
end

local function read_until(w, upto)
	for line in w.pipe:lines() do
		if line == upto then return end
		local pid = line:match("^pid (%d+)$")
		if pid then w.pid = tonumber(pid) end
	end
	error("uring_workload ended before " .. upto)
end

-- One restore: the workload's instance dumped, moved on, lost, restored.
local function once(dir)
	local w = { pipe = assert(io.popen("exec " .. binary() .. " --lose 0 --entries " .. M.ENTRIES ..
		" --shift " .. M.SHIFT, "r")) }
	read_until(w, "READY")
	local ok, res = pcall(function()
		core.remove_tree(dir)
		assert(aiotk.dump_process(w.pid, dir))
		local img = assert(aiotk.read_image(dir))
		assert(core.uring_image_shift(img, 1, M.SHIFT))
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		return assert(require("aiotk.uring_restore").restore_process(w.pid, img))
	end)
	core.kill(w.pid, "KILL")
	w.pipe:close()
	if not ok then error(res, 0) end
	assert(not res[1].exact, "the instance was not rebased")
	return res
end

local function median(t)
	table.sort(t)
	return t[math.ceil(#t / 2)]
end

-- { stopped_ns, rebuild_ns, floor_ns, ratio, nops, reps }: medians.
function M.row(reps)
	local dir = os.tmpname()
	os.remove(dir)
	local stopped, rebuild, floor, ratios, nops = {}, {}, {}, {}, 0
	for i = 1, reps do
		local res = once(dir)
		local r = res[1]
		stopped[i] = res.stopped_ns
		rebuild[i] = r.ns_setup + r.ns_place + r.ns_counters + r.ns_memory + r.ns_copies
		floor[i] = core.bench.bare_uring(M.ENTRIES, r.nops)
		ratios[i] = stopped[i] / floor[i]
		nops = r.nops
	end
	core.remove_tree(dir)
	return { entries = M.ENTRIES, shift = M.SHIFT, stopped_ns = median(stopped), rebuild_ns = median(rebuild),
		floor_ns = median(floor), ratio = median(ratios), nops = nops, reps = reps }
end

function M.text(r)
	return string.format("io_uring restore -p, %d entries, counters near 2^31 (rebase, %d NOPs), median of %d: " ..
		"stopped %.3f ms (rebuild %.3f ms) against a bare in-process floor %.3f ms: ratio %.1f; goal 5 ms",
		r.entries, r.nops, r.reps, r.stopped_ns / 1e6, r.rebuild_ns / 1e6, r.floor_ns / 1e6, r.ratio)
end

return M
