-- Restore plans: for a host, what happens to every ring (exact with which
-- n, grow by how much, skip, or fail and why) and to the aio-max-nr
-- budget, decided by the policy. Pure: touches nothing. check prints a
-- plan, migrate writes one, restore follows one.
local aiotk = require "aiotk"

local M = {}

local function model_of(host, policy)
	local m = policy.model or {}
	return { cpus = m.cpus or host.cpus, page_size = m.page_size or host.page_size,
		formula = m.formula or host.formula }
end

-- Slots the kernel lets be outstanding in the ring io_setup(n) makes on
-- model: free slots move between per-CPU caches in req_batch units, and
-- the remainder of nr - 1 is stranded.
function M.capacity(n, model)
	local g = assert(aiotk.geometry(n, model))
	return (g.nr - 1) - (g.nr - 1) % g.req_batch
end

local function ring_step(ring, model, host, policy)
	local step = { addr = ring.addr, ring_len = ring.ring_len, nr = ring.nr, head = ring.head,
		tail = ring.tail, events = #ring }
	local n, why = aiotk.min_n(ring.ring_len, model)
	if n then
		step.action, step.n = "exact", n
	else
		local choice = policy.impossible(ring, why, host)
		step.reason = why
		if choice == "grow" then
			local gn = assert(aiotk.core.fit_n(ring.ring_len, model))
			local g = assert(aiotk.geometry(gn, model))
			if ring.wrapped then
				step.action = "fail"
				step.reason = why .. "; growing in place is impossible for a wrapped ring"
			else
				step.action, step.n, step.grow_to = "grow", gn, g.ring_len
				step.grow_bytes = g.ring_len - ring.ring_len
			end
		elseif choice == "skip" then
			step.action = "skip"
		else
			step.action = "fail"
		end
	end
	local cap = step.n and M.capacity(step.n, model)
	if step.action ~= "fail" and step.action ~= "skip" and #ring > cap then
		step.overfull = policy.overfull(ring, cap, host)
		if step.overfull == "fail" then
			step.action = "fail"
			step.reason = string.format("%d events, more than the %d this host lets be outstanding",
				#ring, cap)
		end
	end
	return step
end

-- plan(rings, host, policy) -> { host=, steps={...}, budget={...} }
function M.make(rings, host, policy)
	local model = model_of(host, policy)
	local kept = {}
	for _, r in ipairs(rings) do
		if policy.filter(r, { phase = "restore" }) then kept[#kept + 1] = r end
	end
	kept = policy.order(kept)
	local plan = { host = host, model = model, steps = aiotk.array() }
	local needed = 0
	for _, r in ipairs(kept) do
		local s = ring_step(r, model, host, policy)
		if s.action == "exact" or s.action == "grow" then needed = needed + s.n end
		plan.steps[#plan.steps + 1] = s
	end
	local free = host.aio_max_nr - (host.aio_nr or 0)
	plan.budget = { needed = needed, free = free, aio_nr = host.aio_nr or 0,
		aio_max_nr = host.aio_max_nr, action = "ok" }
	if needed > free then
		plan.budget.action = policy.budget(plan.budget, host) == "raise" and "raise" or "fail"
		plan.budget.raise_by = needed - free
	end
	return plan
end

-- 0: every ring exact and within budget; 3: restorable under the policy
-- (grow, skip, raise); 4: something fails.
function M.verdict(plan)
	local code = 0
	for _, s in ipairs(plan.steps) do
		if s.action == "fail" then return 4 end
		if s.action ~= "exact" then code = 3 end
	end
	if plan.budget.action == "fail" then return 4 end
	if plan.budget.action == "raise" then code = 3 end
	return code
end

function M.describe(s)
	if s.action == "exact" then return string.format("exact with io_setup(%d)", s.n) end
	if s.action == "grow" then
		return string.format("grow in place by %d bytes to %d (io_setup(%d))", s.grow_bytes, s.grow_to, s.n)
	end
	if s.action == "skip" then return "skipped by the policy (" .. (s.reason or "") .. ")" end
	return "impossible: " .. (s.reason or "?")
end

return M
