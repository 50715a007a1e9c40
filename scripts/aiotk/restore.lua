-- Restore into a running process: all or nothing. Every destination is
-- checked, then claimed, before anything is built; the changes are
-- recorded in an undo list as they are made, and any failure, a hook that
-- raises, or SIGINT, SIGTERM or SIGHUP undoes them in reverse (occupants
-- moved back, placeholders removed, new rings destroyed, rewritten ids of
-- relocated rings put back: relocate.lua).
local core = require "aiotk.core"
local kernel = require "aiotk.kernel"
local process = require "aiotk.process"
local relocate = require "aiotk.relocate"

local M = {}

-- A refused injected call (EPERM, ENOSYS: what seccomp filters answer) in
-- a process under a seccomp filter: say so.
local function seccomp_hint(pid, err, errno)
	if errno ~= core.errno.EPERM and errno ~= core.errno.ENOSYS then return err end
	local f = io.open("/proc/" .. pid .. "/status")
	local status = f and f:read("*a") or ""
	if f then f:close() end
	if status:match("Seccomp:%s*2") then
		return err .. string.format("; process %d runs under a seccomp filter (Seccomp: 2 in " ..
			"/proc/%d/status) that refuses a system call aiotk injects; nothing was changed", pid, pid)
	end
	return err
end

local function apply_budget(plan, policy)
	local b = plan.budget
	if b.action == "fail" then
		return nil, require("aiotk.plan").budget_message(b), "budget"
	elseif b.action == "raise" then
		-- kept if the restore succeeds, put back if it fails (or aiotk is killed)
		local ok, err, code = core.raise_aio_max_nr(b.aio_max_nr, b.aio_max_nr + b.raise_by)
		if not ok then return nil, err, code end
		policy.log(string.format("raised fs.aio-max-nr from %d to %d (by the %d missing)",
			b.aio_max_nr, b.aio_max_nr + b.raise_by, b.raise_by))
		return true, "raised"
	end
	return true
end

-- The first of maps (t:mappings()) overlapping [addr, addr+len).
local function mapping_in(maps, addr, len)
	for _, m in ipairs(maps) do
		if m.start < addr + len and addr < m.finish then return m end
	end
end

-- What each destination holds, checked before anything changes: nothing,
-- or (with replace) exactly one AIO ring, which is then moved aside.
-- Returns the occupant per step index.
local function occupants(maps, steps, replace)
	local out = {}
	for i, s in ipairs(steps) do
		local m = mapping_in(maps, s.ring.addr, s.len)
		if m then
			if not (replace and m.ring) then
				return nil, string.format(
					"ring %d of %d (0x%x, %d bytes): %s is mapped there%s",
					i, #steps, s.ring.addr, s.len, m.desc,
					m.ring and "; --replace moves an AIO ring there aside and destroys it once all are restored" or
					"; nothing was changed"), "occupied"
			end
			if m.start < s.ring.addr or m.finish > s.ring.addr + s.len then
				return nil, string.format("ring %d of %d (0x%x, %d bytes): the AIO ring %s there does not fit " ..
					"the saved range; nothing was changed", i, #steps, s.ring.addr, s.len, m.desc), "occupied"
			end
			out[i] = { addr = m.start, len = m.finish - m.start }
		end
	end
	return out
end

-- ranges ({ {addr=, len=}, ... }) in address order, those that touch
-- joined, those whose index is in skip left out: { {addr, len, members =
-- indexes into ranges}, ... }. A restore holds one placeholder per run.
function M.joined_ranges(ranges, skip)
	local idx = {}
	for i in ipairs(ranges) do if not (skip and skip[i]) then idx[#idx + 1] = i end end
	table.sort(idx, function(a, b) return ranges[a].addr < ranges[b].addr end)
	local runs, cur = {}, nil
	for _, i in ipairs(idx) do
		local r = ranges[i]
		if cur and cur.addr + cur.len == r.addr then
			cur.len = cur.len + r.len
			cur.members[#cur.members + 1] = i
		else
			cur = { addr = r.addr, len = r.len, members = { i } }
			runs[#runs + 1] = cur
		end
	end
	return runs
end

-- The saved range of each step.
local function ranges_of(steps)
	local ranges = {}
	for i, s in ipairs(steps) do ranges[i] = { addr = s.ring.addr, len = s.len } end
	return ranges
end

-- What an interrupted aiotk left: contexts it was building or had parked
-- (marked), placeholders on saved ranges, journal pages. Removed first.
-- Returns the mappings as they are then (one read of the maps when
-- nothing was left, which is the usual case).
local function remove_leftovers(t, steps, policy)
	local ranges = ranges_of(steps)
	local maps, me, mc = t:mappings(ranges)
	if not maps then return nil, me, mc end
	local removed = false
	-- A placeholder covers one saved range or a run of touching ones.
	for _, run in ipairs(M.joined_ranges(ranges)) do
		for _, m in ipairs(maps) do
			if m.placeholder and m.start >= run.addr and m.finish <= run.addr + run.len then
				local ok, err, code = t:unmap(m.start, m.finish - m.start)
				if not ok then return nil, err, code end
				removed = true
				policy.log(string.format("removed the placeholder at 0x%x left by an interrupted aiotk", m.start))
			end
		end
	end
	local journals = false
	for _, m in ipairs(maps) do journals = journals or m.journal or m.destroyer end
	if journals then
		local j, je, jc = t:remove_journals()
		if not j then return nil, je, jc end
		if j > 0 then
			removed = true
			policy.log(string.format("destroyed %d ring(s) an interrupted aiotk had just made", j))
		end
	end
	for _, m in ipairs(maps) do
		local h = m.ring and t:header(m.start)
		if h and h.building then
			local ok, err, code = t:io_destroy(m.start)
			if not ok then return nil, err, code end
			removed = true
			policy.log(string.format("destroyed ring 0x%x, left built halfway or parked by an interrupted aiotk", m.start))
		end
	end
	if removed then return t:mappings(ranges) end
	return maps
end

local EXITED = "the process exited during restore: "

-- Everything a restore changed, undone in reverse: what it made, where.
local Undo = {}
Undo.__index = Undo

-- The rings it made go first, but are not destroyed here: io_destroy
-- waits about 35 ms each (an RCU grace period), which a thread made in
-- the process for that spends while the process runs. While every
-- destination is still held, the mapping that thread runs from is made,
-- with a parking slot for each ring (t:undo_area: at a fixed address, so
-- that parking makes no mapping where a destination was, and a killed
-- aiotk leaves only what the next restore recognises); each ring is moved
-- into its slot, still marked as aiotk's (t:park), so that what was there
-- goes back and the program can reach none of them; then the thread
-- starts (t:destroy_later). Where none can be made, they are destroyed
-- here, the process stopped; so is a ring that cannot be moved, before
-- the placeholder under it goes. Returns the thread, if one was made, and
-- what could not be put back (each step that failed: what stays in the
-- process, where, and why); every other step is still taken.
function Undo:rollback(t)
	local failed = {}
	local function undone(what, ok, err)
		if not ok then failed[#failed + 1] = what .. ": " .. tostring(err) end
	end
	local lens = {}
	for i = #self, 1, -1 do
		if self[i].kind == "ring" then lens[#lens + 1] = self[i].len end
	end
	local area = #lens > 0 and t:undo_area(lens) or nil
	local parked, k = {}, 0
	for i = #self, 1, -1 do
		local u = self[i]
		if u.kind == "ring" then
			k = k + 1
			if area and t:park(u.addr, u.len, area.slots[k]) then
				parked[#parked + 1] = area.slots[k]
			else
				undone(string.format("ring 0x%x it made, not destroyed", u.addr), t:io_destroy(u.addr))
				if area then
					undone(string.format("parking slot 0x%x (%d bytes), not unmapped", area.slots[k], u.len),
						t:unmap(area.slots[k], u.len))
				end
			end
		-- A placeholder partly used: its rings are moved away (above, in
		-- reverse order) before what is left of it goes.
		elseif u.kind == "claim" and u.left > 0 then
			undone(string.format("placeholder 0x%x-0x%x, not unmapped", u.addr, u.addr + u.len), t:unmap(u.addr, u.len))
		elseif u.kind == "parked" then
			undone(string.format("ring 0x%x moved aside to 0x%x (--replace), not moved back", u.addr, u.at),
				t:unpark(u.at, u.len, u.addr))
		elseif u.kind == "refs" then
			undone(string.format("%d rewritten id(s) and pointer(s), not put back", #u.refs),
				t:rewrite_refs(u.refs, true))
		elseif u.kind == "marked" then
			undone("rings marked as aiotk's for --replace, not unmarked", relocate.mark_replaced(t, u.entries, true))
		elseif u.kind == "journal" then
			undone("the relocation journal at the process's journal page, not removed", t:reloc_journal_remove())
		end
	end
	if not area then return nil, failed end
	local tid = t:destroy_later()
	if tid then return tid, failed end
	for _, ctx in ipairs(parked) do undone(string.format("ring 0x%x it made, parked there, not destroyed", ctx),
		t:io_destroy(ctx)) end
	undone(string.format("undo area 0x%x, not unmapped", area.at), t:unmap(area.at, area.head))
	return nil, failed
end
M.Undo = Undo

-- A failure e (code c) whose undo left what failed lists: the code
-- "rollback", the message naming each, in process pid.
function M.undo_failed(e, c, failed, pid)
	if #failed == 0 then return e, c end
	return string.format("%s; undoing it failed, process %d keeps: %s", tostring(e), pid, table.concat(failed, "; ")),
		"rollback"
end

-- A ring --replace took the place of, destroyed once every ring is
-- restored. One that cannot be stays, marked as aiotk's (the next restore
-- destroys it): logged, and listed in out.not_destroyed.
local function destroy_replaced(t, addr, policy, out)
	local ok, err = t:io_destroy(addr)
	if ok then return end
	out.not_destroyed = out.not_destroyed or {}
	out.not_destroyed[#out.not_destroyed + 1] = { addr = addr, error = err }
	policy.log(string.format("ring 0x%x, replaced, could not be destroyed: %s; it stays in process %d, marked as " ..
		"aiotk's: the next restore destroys it", addr, tostring(err), t.pid))
end

-- A SIGINT, SIGTERM or SIGHUP caught meanwhile, as a failure (the caller
-- undoes everything).
local function interrupted()
	local sig = core.interrupted()
	if sig then return nil, "interrupted by " .. sig .. "; everything done was undone", "interrupted" end
	return true
end
M.interrupted = interrupted

-- The kernel's side of the rebuilt rings, where it can be seen (one
-- reading for all): each private tail must be the saved tail (the next
-- completion lands at the saved slot) and, when the dump recorded it, its
-- n the saved n.
local function kernel_check(t, steps, policy)
	local kv = kernel.read(t.pid)
	for i, s in ipairs(steps) do
		local ring = s.ring
		local k = kv and kv[ring.addr]
		if k and k.kernel_tail ~= ring.tail then
			return nil, string.format("ring %d of %d (0x%x): the kernel's tail is %d after the rebuild, " ..
				"the saved tail %d", i, #steps, ring.addr, k.kernel_tail, ring.tail), "stuck"
		end
		if k and ring.n > 0 and k.n ~= ring.n then
			policy.log(string.format("ring 0x%x: rebuilt with io_setup(%d), not the recorded %d " ..
				"(this host makes that length from another n)", ring.addr, k.n, ring.n))
		end
	end
	return true
end

-- A placeholder over the destinations of steps `members` (indexes), which
-- lie side by side from addr on: held until each of its rings is made.
function Undo:held(members, addr, len)
	local c = { kind = "claim", addr = addr, len = len, left = #members }
	for _, i in ipairs(members) do self.claims[i] = c end
	self[#self + 1] = c
end

-- Ring i made, as context ctx of len bytes, on its placeholder.
function Undo:made_ring(i, ctx, len)
	self.claims[i].left = self.claims[i].left - 1
	self[#self + 1] = { kind = "ring", addr = ctx, len = len }
end

-- out.phases: where the time went while the process was stopped, phase
-- by phase ({phase=, ns=}; aiotk bench prints it), out.before the same
-- before the stop; out.restorer: the
-- restorer's own run, by its phases (t:restore_all's).
local function lap(out, name)
	local now, p = core.now_ns(), out.phases
	p[#p + 1] = { phase = name, ns = now - p.since }
	p.since = now
end

local function claim(t, nsteps, undo, members, addr, len)
	local ok, re, rc = t:reserve(addr, len)
	if not ok then return nil, string.format("ring %d of %d: %s", members[1], nsteps, re), rc end
	undo:held(members, addr, len)
	return true
end

-- Every destination claimed with a placeholder, so that no new ring,
-- parking spot or scratch mapping can land on one: free ones first (those
-- that touch, as rings a program made one after another do, under one
-- placeholder), then each occupant parked and its range claimed at once.
-- With nothing to park the claims are left to the rebuild (the restorer
-- takes them first thing in its run): the runs still to claim.
local function claim_destinations(t, steps, occ, undo)
	local runs = M.joined_ranges(ranges_of(steps), occ)
	if next(occ) == nil then return runs end
	for _, run in ipairs(runs) do
		local ok, ce, cc = claim(t, #steps, undo, run.members, run.addr, run.len)
		if not ok then return nil, ce, cc end
	end
	for i, s in ipairs(steps) do
		local o = occ[i]
		if o then
			local at, pe, pc = t:park(o.addr, o.len)
			if not at then return nil, pe, pc end
			undo[#undo + 1] = { kind = "parked", addr = o.addr, len = o.len, at = at }
			local ok, ce, cc = claim(t, #steps, undo, { i }, s.ring.addr, s.len)
			if not ok then return nil, ce, cc end
		end
	end
	return {}
end

local function jobs_of(steps, opts)
	local jobs = {}
	for i, s in ipairs(steps) do
		local replay = { nudge = s.nudge }
		for k, v in pairs(opts.replay or {}) do replay[k] = v end
		-- A larger ring's n is the plan's host's; where this host makes
		-- that length from another n, that one is tried first (each wrong
		-- guess costs an io_destroy, about 35 ms)
		local n = s.grow_to and core.min_n(s.grow_to, opts.model) or s.n
		jobs[i] = { ring = s.ring, n = n, grow_to = s.grow_to, replay = replay, placeholder = true,
			model = opts.model }
	end
	return jobs
end

-- All rings in one call: those the restorer can rebuild by itself go into
-- the process in one run (core/aio/rebuild/restorer.c), after it takes
-- the pending claims. Each claim held and ring made goes into undo.
local function rebuild_rings(t, steps, opts, pending, undo, out)
	local results, re, rc, rerrno, made = t:restore_all(jobs_of(steps, opts), pending)
	out.restorer = (results or made).phases
	for _, run in ipairs(pending) do
		if run.made then undo:held(run.members, run.addr, run.len)
		elseif not results then
			return nil, string.format("ring %d of %d: %s", run.members[1], #steps, re), rc
		end
	end
	for i, res in ipairs(results or made) do undo:made_ring(i, res.ctx, steps[i].len) end
	if not results then
		local i = #made + 1
		return nil, string.format("ring %d of %d (0x%x): %s", i, #steps, steps[i].ring.addr,
			seccomp_hint(t.pid, re, rerrno)), rc
	end
	return results
end

-- The rebuilt rings finished: the kernel's side checked first (a captured
-- request that completes at once would move the tail being checked), then
-- captured requests submitted again, each ring reported.
local function finish_rings(t, steps, results, opts, policy, out)
	local ok, ke, kc = kernel_check(t, steps, policy)
	if not ok then return nil, ke, kc end
	lap(out, "check")
	for i, s in ipairs(steps) do
		local res = results[i]
		if s.ring.ncaptured > 0 then
			local rok, rse, rsc = t:resubmit(res.ctx, s.ring)
			if not rok then return nil, string.format("ring %d of %d: %s", i, #steps, rse), rsc end
			res.resubmitted = s.ring.ncaptured
		end
		res.grown = s.grow_to ~= nil and not s.relocate
		if s.relocate then
			res.relocated_from, res.refs = s.moved_from, s.refs
			policy.log(string.format("ring 0x%x relocated to 0x%x (%d bytes), %d reference(s) rewritten", s.moved_from,
				s.ring.addr, s.len, #s.refs))
		end
		out[#out + 1] = res
		if s.grow_to and not s.relocate then
			policy.log(string.format("ring 0x%x grew in place from %d to %d bytes", s.ring.addr,
				s.ring.ring_len, s.grow_to))
		end
		if opts.on_ring then opts.on_ring(i, s.ring, res, t) end
	end
	return true
end

-- The changes, in order: occupants parked and destinations claimed, each
-- ring rebuilt onto its placeholder, then finished; each recorded in undo
-- before the next one starts, with a look for an interrupting signal
-- between them.
local function rebuild(t, maps, steps, opts, policy, undo, out)
	local occ, e, c = occupants(maps, steps, opts.replace)
	if not occ then return nil, e, c end
	local entries, ee, ec = relocate.journal_entries(t, steps)
	if entries == nil then return nil, ee, ec end
	if entries then
		local jok, je, jc = t:reloc_journal(entries)
		if not jok then return nil, je, jc end
		undo[#undo + 1] = { kind = "journal" }
	end
	local pending, ce, cc = claim_destinations(t, steps, occ, undo)
	if not pending then return nil, ce, cc end
	lap(out, "claims")
	local ok, ie, ic = interrupted()
	if not ok then return nil, ie, ic end
	local results, re, rc = rebuild_rings(t, steps, opts, pending, undo, out)
	if not results then return nil, re, rc end
	lap(out, "rebuild")
	if opts.refs and #opts.refs > 0 then
		local wok, we, wc = t:rewrite_refs(opts.refs)
		if not wok then return nil, "rewriting the relocated rings' ids: " .. we, wc end
		undo[#undo + 1] = { kind = "refs", refs = opts.refs }
		lap(out, "rewrite")
	end
	ok, ie, ic = interrupted()
	if not ok then return nil, ie, ic end
	local fok, fe, fc = finish_rings(t, steps, results, opts, policy, out)
	if not fok then return nil, fe, fc end
	lap(out, "finish")
	ok, ie, ic = interrupted()
	if not ok or not entries then return ok, ie, ic end
	-- The commit: from here on the relocation stands (relocate.recover
	-- undoes it while the journal exists); nothing after it is undone. The
	-- workspace goes first, so that the commit is the last change but the
	-- destruction of the rings the restore replaces (each recognised by a
	-- later restore if aiotk is killed before it).
	undo[#undo + 1] = { kind = "marked", entries = entries } -- (unmarking an unmarked one changes nothing)
	local mok, me, mc = relocate.mark_replaced(t, entries)
	if not mok then return nil, me, mc end
	local rok, rle, rlc = t:release()
	if not rok then return nil, rle, rlc end
	return t:reloc_journal_remove()
end

-- The relocated rings placed and their references found (into
-- ropts.refs), before anything changes; the whole layout is read only
-- when the plan relocates.
local function relocate_steps(t, steps, opts, policy, ropts)
	local any = false
	for _, s in ipairs(steps) do any = any or s.relocate end
	if not any then return true end
	local maps, me, mc = t:mappings()
	if not maps then return nil, me, mc end
	local ok, e, c = relocate.place(maps, steps, opts.replace, mapping_in)
	if not ok then return nil, e, c end
	local refs, re, rc = relocate.find(t, steps, policy)
	if not refs then return nil, re, rc end
	ropts.refs = refs
	return true
end

-- What a failed restore left to a thread of the process (Undo:rollback):
-- waited for once the process runs, so that the caller finds the old
-- fs.aio-nr and no ring of aiotk's; the time it took goes in report.
local function wait_undone(pid, tid, report)
	if not tid then return end
	local t0 = core.now_ns()
	process.wait_undo_threads(pid)
	report.undone_ns = core.now_ns() - t0
end

local restore_planned

-- Restore rings into process pid, as the plan (made here from the policy
-- unless given) says: all or nothing. opts.replace moves AIO rings that
-- occupy saved addresses aside, and destroys them once every ring is
-- rebuilt; opts.on_ring(i, ring, result, t) is called after each ring.
-- A failure returns once the rings it made are destroyed (by a thread of
-- the process, while it runs), unless opts.wait_undo is false.
-- opts.report, a table, gets stopped_ns and stopped_at_ns whatever the
-- outcome, and after a failure undo_tid (the thread, if one was made)
-- and undone_ns (how long the caller waited for it).
function M.restore_process(pid, rings, opts)
	opts = opts or {}
	local t0 = core.now_ns()
	local policy = process.policy(opts)
	local plans = require "aiotk.plan"
	local plan = opts.plan or plans.make(rings, assert(core.host()), policy, core.maps(pid))
	local steps, serr, scode = plans.follow(plan, rings)
	if not steps then return nil, serr, scode end
	local ok, raised, bcode = apply_budget(plan, policy)
	if not ok then return nil, raised, bcode end
	local res = { n = 0 }
	local function pack(...) res = { n = select("#", ...), ... } end
	pack(pcall(restore_planned, pid, opts, policy, plan, steps, t0))
	-- its raise of fs.aio-max-nr is kept for the rings made, put back otherwise
	if raised then core.end_aio_max_nr_raise(res[1] and res[2] ~= nil) end
	if not res[1] then error(res[2], 0) end
	return unpack(res, 2, res.n)
end

-- restore_process once the plan is made and its budget applied.
function restore_planned(pid, opts, policy, plan, steps, t0)
	local t1 = core.now_ns()
	kernel.prepare(pid, policy) -- opened (and its iterator made) before the process is stopped
	local out, report = {}, opts.report or {}
	local t2 = core.now_ns()
	-- This host's model for every ring, read before the process stops.
	local ropts = setmetatable({ model = assert(core.host()) }, { __index = opts })
	local target, exit_said
	local called, rok, err, code = pcall(process.with_process, pid, function(t)
		target = t
		out.phases = { since = t.stopped_at_ns }
		lap(out, "stop")
		local rec, re, rc = relocate.recover(t, policy)
		if not rec then return nil, re, rc end
		local maps, de, dc = remove_leftovers(t, steps, policy)
		if not maps then return nil, de, dc end
		local placed, pe, pc = relocate_steps(t, steps, opts, policy, ropts)
		if not placed then return nil, pe, pc end
		lap(out, "look")
		local undo = setmetatable({ claims = {} }, Undo)
		-- A hook or callback that raises is a failure like any other: the
		-- undo runs, then the error goes on.
		local ran, done, e, c = pcall(rebuild, t, maps, steps, ropts, policy, undo, out)
		if not ran or not done then
			local failed
			report.undo_tid, failed = undo:rollback(t)
			report.undo_failed = failed
			if not ran then error((M.undo_failed(done, nil, failed, pid)), 0) end
			e, c = M.undo_failed(e, c, failed, pid)
			out = {}
			exit_said = t.dead
			if t.dead then return nil, EXITED .. e, c end
			return nil, e, c
		end
		for _, u in ipairs(undo) do
			if u.kind == "parked" then destroy_replaced(t, u.at, policy, out) end
		end
		for _, st in ipairs(steps) do
			if st.old_ring then destroy_replaced(t, st.old_ring.addr, policy, out) end
		end
		out.target = t
		return true
	end, { cpu_latency = policy.cpu_latency })
	if target then
		report.stopped_ns, report.stopped_at_ns = target.stopped_ns, target.stopped_at_ns
	end
	if opts.wait_undo ~= false then wait_undone(pid, report.undo_tid, report) end
	if not called then error(rok, 0) end
	if not rok then
		-- Killed after its last system call, it shows only at detach.
		if target and target.dead and not exit_said then err = EXITED .. err end
		return nil, err, code
	end
	out.stopped_ns = out.target.stopped_ns
	out.stopped_at_ns = out.target.stopped_at_ns
	local p = out.phases
	p[#p + 1] = { phase = "detach", ns = out.stopped_at_ns + out.stopped_ns - p.since }
	p.since = nil
	-- before the stop: the plan (policy, budget), the kernel view made
	-- ready, and attach up to the first thread's stop (the guardian's
	-- fork, the gadgets read from the process's code)
	out.before = { { phase = "plan", ns = t1 - t0 }, { phase = "view", ns = t2 - t1 },
		{ phase = "attach", ns = out.stopped_at_ns - t2 } }
	out.plan = plan
	return out
end
return M
