-- Rings in known states, made with libaio in this process: the demo, the
-- benchmarks and the specs all start from these.
local core = require "aiotk.core"
local lab = core.lab

local M = {}

-- Cookie as in the CRIU fixtures: ring index, phase, sequence number.
function M.cookie(ring_index, phase, seq)
	return string.format("0x%02x%02x%012x", 0xA0 + ring_index, phase, seq)
end

-- make{n=, complete=, reap=, complete2=, index=}: io_setup(n), complete
-- `complete` requests, reap `reap` of them, complete `complete2` more.
-- Returns ctx and the expected {head, tail, live}.
function M.make(spec)
	local ctx, err, code = lab.setup(spec.n)
	if not ctx then return nil, err, code end
	local idx = spec.index or 0
	local function fill(count, phase)
		if count == 0 then return true end
		local got, e = lab.complete(ctx, count, { data = M.cookie(idx, phase, 0) })
		if got ~= count then
			lab.destroy(ctx)
			return nil, string.format("ring %d: %d of %d requests accepted (%s)", idx, got or 0, count, e or "ring full")
		end
		return true
	end
	local ok, e = fill(spec.complete or 0, 1)
	if not ok then return nil, e end
	if (spec.reap or 0) > 0 then
		local evs = lab.reap(ctx, spec.reap, spec.reap)
		assert(#evs == spec.reap, "reap fell short")
	end
	ok, e = fill(spec.complete2 or 0, 2)
	if not ok then return nil, e end
	return ctx
end

-- The demo's set: one of each replay case this host can produce with
-- libaio (empty, head == tail != 0, plain, wrapped, as full as this host
-- allows, big).
M.demo = {
	{ name = "empty", n = 1 },
	{ name = "drained", n = 64, complete = 200, reap = 200 },
	{ name = "plain", n = 1, complete = 15, reap = 10 },
	{ name = "wrapped", n = 128, complete = 333, reap = 333, complete2 = 100 },
	{ name = "host-full", n = 1, complete = 120 },
	{ name = "big", n = 4096, complete = 6000, reap = 5000 },
}

return M
