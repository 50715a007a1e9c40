-- Restore plans: for a host, what happens to every ring (exact with which
-- n, grow by how much, relocate, skip, or fail and why) and to the aio-max-nr
-- budget, decided by the policy. Pure: touches nothing. check prints a
-- plan, migrate writes one, restore follows one.
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local core = aiotk.core

local M = {}

-- Events the ring io_setup(n) makes on model can hold (core geometry).
function M.capacity(n, model)
	return assert(aiotk.geometry(n, model)).capacity
end

-- The aio-max-nr budget for io_setup calls asking `needed` in all on host:
-- { needed, free, aio_nr, aio_max_nr, short } (short: 0 when it fits).
function M.budget(needed, host)
	local aio_nr = host.aio_nr or 0
	local free = host.aio_max_nr - aio_nr
	return { needed = needed, free = free, aio_nr = aio_nr, aio_max_nr = host.aio_max_nr,
		short = needed > free and needed - free or 0 }
end

-- How the budget b reads in every message (the core's sentences).
function M.budget_need(b)
	return core.budget_need(b.needed, b.aio_nr, b.aio_max_nr)
end

-- What to tell a user whose restore does not fit the budget b.
function M.budget_message(b)
	return core.budget_short("restoring", b.needed, b.aio_nr, b.aio_max_nr) ..
		" or let the policy raise it"
end

-- Whether [addr, addr + len) is free of the other saved rings and, where
-- the process's layout is known, of its mappings (true, false), or not
-- known (nil: from an image alone the space after the last ring is).
local function room_for(ring, len, others, layout)
	local from, to = ring.addr + ring.ring_len, ring.addr + len
	for _, o in ipairs(others) do
		if o ~= ring and o.addr < to and from < o.addr + o.ring_len then return false end
	end
	if not layout then return nil end
	for _, m in ipairs(layout) do
		if m.start < to and from < m.finish then return false end
	end
	return true
end

-- What occupies a ring's saved range in the process (the description of
-- the first mapping there that is neither an AIO ring, which --replace
-- deals with, nor what an interrupted aiotk left, which a restore
-- removes), or nil.
local function taken_by(ring, layout)
	for _, m in ipairs(layout or {}) do
		if m.start < ring.addr + ring.ring_len and ring.addr < m.finish and
			not (m.ring or m.placeholder or m.journal) then
			return m.desc
		end
	end
end

-- A ring this host cannot make at its size: the policy's answer carried
-- out on the step. grow and relocate make the smallest ring the host
-- makes (its events at the same slots: not for a wrapped ring); relocate
-- puts it at a free address chosen when the process is stopped, every
-- reference to the old id rewritten (restore.lua).
local function impossible_step(step, ring, why, model, host, policy, ctx)
	local gn = assert(core.fit_n(ring.ring_len, model))
	local g = assert(aiotk.geometry(gn, model))
	local layout = ctx.layout
	if type(layout) == "function" then layout = layout() end
	local room = room_for(ring, g.ring_len, ctx.rings, layout)
	local choice = policy.impossible(ring, why, host, { room = room, layout = layout ~= nil })
	step.reason = why
	if choice == "skip" then
		step.action = "skip"
	elseif choice ~= "grow" and choice ~= "relocate" then
		step.action = "fail"
	elseif ring.wrapped then
		step.action = "fail"
		step.reason = why .. "; a larger ring (grown or relocated) is impossible for a wrapped ring"
	elseif choice == "grow" then
		step.action, step.n, step.grow_to = "grow", gn, g.ring_len
		step.grow_bytes = g.ring_len - ring.ring_len
		if room == false then step.reason = why .. "; the space after it is taken" end
	else
		step.action, step.n, step.relocate_len = "relocate", gn, g.ring_len
	end
end

-- A ring this host makes exactly, whose saved range something else holds
-- in the process: the impossible hook is asked too (ctx.taken says by
-- what). "relocate" moves it at its own size, "skip" leaves it out; any
-- other answer keeps the plan exact, and the restore refuses the taken
-- range as it always has.
local function taken_step(step, ring, taken, host, policy)
	local why = "its address range is taken by " .. taken
	local choice = policy.impossible(ring, why, host, { taken = taken, layout = true })
	if choice == "relocate" then
		step.action, step.relocate_len, step.reason = "relocate", ring.ring_len, why
	elseif choice == "skip" then
		step.action, step.reason = "skip", why
	end
end

local function ring_step(ring, model, host, policy, ctx)
	local step = { addr = ring.addr, ring_len = ring.ring_len, nr = ring.nr, head = ring.head,
		tail = ring.tail, events = #ring }
	-- The n the process gave io_setup (recorded from the kernel at dump)
	-- when it makes the same ring here; else the smallest n that does.
	local n, why
	local g = ring.n > 0 and aiotk.geometry(ring.n, model)
	if g and g.ring_len == ring.ring_len then
		n = ring.n
	else
		n, why = aiotk.min_n(ring.ring_len, model)
	end
	if n then
		step.action, step.n = "exact", n
		local taken = type(ctx.layout) == "table" and taken_by(ring, ctx.layout)
		if taken then taken_step(step, ring, taken, host, policy) end
	else
		impossible_step(step, ring, why, model, host, policy, ctx)
	end
	local cap = step.n and M.capacity(step.n, model)
	-- A ring within capacity never needs a nudge; the replay is told so,
	-- and a kernel refusing it anyway is an error, not a silent nudge.
	step.nudge = false
	if step.action ~= "fail" and step.action ~= "skip" and #ring > cap then
		step.overfull = policy.overfull(ring, cap, host)
		step.nudge = step.overfull == "nudge"
		if step.overfull == "fail" then
			step.action = "fail"
			step.reason = string.format("%d events, more than the %d this host lets be outstanding",
				#ring, cap)
		end
	end
	return step
end

-- What the rebuilt rings ask of fs.aio-max-nr: the sum of their n.
local function needed_of(steps)
	local needed = 0
	for _, s in ipairs(steps) do
		if s.action == "exact" or s.action == "grow" or s.action == "relocate" then needed = needed + s.n end
	end
	return needed
end

-- plan(rings, host, policy[, layout]) -> { host=, steps={...}, budget={...} }
-- layout: the process's mappings (core.maps(pid)) when a live process is
-- planned for; it tells the impossible hook whether a ring has room to
-- grow, and whether its saved range is taken. Or a function giving the
-- layout the rings were saved in (a CRIU dump's VMAs), called only when
-- a ring needs room: there each ring's range is its own.
function M.make(rings, host, policy, layout)
	local model = hostmodel.model(host, policy)
	local kept = {}
	for _, r in ipairs(rings) do
		if policy.filter(r, { phase = "restore" }) then kept[#kept + 1] = r end
	end
	kept = policy.order(kept)
	local plan = { host = host, model = model, steps = aiotk.array() }
	for _, r in ipairs(kept) do
		plan.steps[#plan.steps + 1] = ring_step(r, model, host, policy, { rings = kept, layout = layout })
	end
	plan.budget = M.decide_budget(needed_of(plan.steps), host, policy)
	return plan
end

-- The budget with the policy's decision: action "ok", "raise" (raise_by)
-- or "fail".
function M.decide_budget(needed, host, policy)
	local b = M.budget(needed, host)
	b.action = "ok"
	if b.short > 0 then
		b.action = policy.budget(b, host)
		b.raise_by = b.short
	end
	return b
end

-- A plan made elsewhere (aiotk migrate), checked against the host it is
-- now followed on; its budget is re-decided with today's aio-nr.
function M.for_host(plan, host, policy, where)
	local m, h = plan.model, hostmodel.model(host, policy)
	if m.cpus ~= h.cpus or m.page_size ~= h.page_size or m.formula ~= h.formula then
		return nil, string.format("%s was made for a host with %d CPUs, %d-byte pages, %s formula; " ..
			"this one has %d, %d, %s: run aiotk migrate for this host, or use --no-plan", where,
			m.cpus, m.page_size, m.formula, h.cpus, h.page_size, h.formula), "plan"
	end
	plan.budget = M.decide_budget(needed_of(plan.steps), host, policy)
	return plan
end

-- Following a plan: its steps joined with the rings they are about (by
-- address), skipped rings left out; a failing step stops everything.
function M.follow(plan, rings)
	local by_addr = {}
	for _, r in ipairs(rings) do by_addr[r.addr] = r end
	local steps = {}
	for _, s in ipairs(plan.steps) do
		local ring = by_addr[s.addr]
		if not ring then return nil, string.format("the plan names ring 0x%x, which the image lacks", s.addr), "plan" end
		if s.action == "fail" then
			return nil, string.format("ring 0x%x: %s", s.addr, s.reason or "impossible"), "impossible"
		end
		if s.action ~= "skip" then
			-- plans written before the nudge field allow it, as they did
			steps[#steps + 1] = { ring = ring, n = s.n, grow_to = s.grow_to,
				len = s.grow_to or s.relocate_len or ring.ring_len, nudge = s.nudge ~= false,
				relocate = s.action == "relocate" }
		end
	end
	return steps
end

-- Why a relocated ring whose old id is found nowhere in the process
-- (memory, `scanned` bytes of it, or registers) is refused.
function M.unreferenced(addr, scanned)
	return string.format("relocating ring 0x%x means rewriting its id, and no copy of it was found in the " ..
		"process's writable memory (%d bytes read) or its threads' registers: the program keeps it where " ..
		"aiotk cannot see (the policy's relocate_unreferenced relocates it anyway)", addr, scanned)
end

-- The references a process holds to each ring the plan relocates, counted
-- now (found: by old address, {ids=, pointers=}; scanned: bytes read;
-- skipped: bytes a bounded count left unread) noted on the plan's steps;
-- a ring with no copy of its id fails as a restore would refuse it,
-- unless the policy relocates it anyway or the count did not read it all.
function M.note_references(plan, found, scanned, policy, skipped)
	for _, s in ipairs(plan.steps) do
		local f = s.action == "relocate" and found[s.addr]
		if f then
			s.refs, s.pointers = f.ids, f.pointers
			s.refs_scanned, s.refs_skipped = scanned, skipped or 0
			if f.ids == 0 and not policy.relocate_unreferenced and s.refs_skipped == 0 then
				s.action, s.reason = "fail", M.unreferenced(s.addr, scanned)
			end
		end
	end
end

-- 0: every ring exact and within budget; 3: restorable under the policy
-- (grow, relocate, skip, raise); 4: something fails.
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
	if s.action == "relocate" then
		local refs = s.refs and string.format("%d cop%s of its id found in the process%s", s.refs,
			s.refs == 1 and "y" or "ies", s.pointers > 0 and string.format(" (and %d pointer(s) into it)",
			s.pointers) or "") or "if copies of its id are found in the process (check -p PID counts them)"
		if s.refs and (s.refs_skipped or 0) > 0 then
			refs = refs .. string.format(" in the first %d bytes of its memory read (check's bound; %d more " ..
				"bytes not read here, which the restore reads)", s.refs_scanned, s.refs_skipped)
		end
		return string.format("relocate as a %d-byte ring (io_setup(%d)) at a free address, %s", s.relocate_len,
			s.n, refs)
	end
	if s.action == "skip" then return "skipped by the policy (" .. (s.reason or "") .. ")" end
	return "impossible: " .. (s.reason or "?")
end

return M
