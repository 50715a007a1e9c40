-- Relocation (the impossible hook's "relocate"): a ring rebuilt at a
-- free address of the process, and every copy of its old id rewritten.
-- Where it goes, which copies there are, and how a copy is named in
-- reports; restore.lua carries it out within a restore (after every ring
-- is rebuilt, undone with the rest), check -p counts the copies.
local process = require "aiotk.process"

local M = {}

-- The lowest address a relocated ring is put at (below it: what
-- vm.mmap_min_addr and programs' fixed low mappings use).
local LOWEST = 0x10000000

-- Whether [at, at + len) meets none of busy ({lo, hi} each).
local function clear(busy, at, len)
	for _, b in ipairs(busy) do
		if b[1] < at + len and at < b[2] then return false end
	end
	return true
end

-- A free range of len bytes for a relocated ring, as near below its saved
-- address as the layout allows (where mmap, top-down, would have put it):
-- a free gap's top is `below` or the start of a busy range, so the
-- highest of those that leaves len bytes clear is the answer.
function M.free_range(busy, len, below)
	local tops = { below }
	for _, b in ipairs(busy) do
		if b[1] < below then tops[#tops + 1] = b[1] end
	end
	table.sort(tops, function(x, y) return x > y end)
	for _, top in ipairs(tops) do
		local at = top - len
		if at < LOWEST then return nil end
		if clear(busy, at, len) then return at end
	end
end

-- Where each ring the plan relocates goes (mapping_in(maps, addr, len):
-- the first mapping over a range): a free range chosen now, the
-- process stopped; the step then names the ring as if saved there (same
-- head, tail, events), grown to the length this host makes. Its saved
-- range may hold anything: nothing is built there. An AIO ring exactly
-- there (the process's own, still live) is destroyed once all are
-- restored with --replace, and refused without.
function M.place(maps, steps, replace, mapping_in)
	local busy = {}
	for _, m in ipairs(maps) do busy[#busy + 1] = { m.start, m.finish } end
	for _, s in ipairs(steps) do
		busy[#busy + 1] = { s.ring.addr, s.ring.addr + (s.relocate and s.ring.ring_len or s.len) }
	end
	for i, s in ipairs(steps) do
		if s.relocate then
			local old = s.ring
			local m = mapping_in(maps, old.addr, old.ring_len)
			if m and m.ring and not replace then
				return nil, string.format("ring %d of %d (0x%x): the AIO ring %s is still there; --replace " ..
					"relocates the saved one and destroys it once all are restored; nothing was changed",
					i, #steps, old.addr, m.desc), "occupied"
			end
			s.old_ring = m and m.ring and { addr = m.start, len = m.finish - m.start } or nil
			local dest = M.free_range(busy, s.len, old.addr)
			if not dest then
				return nil, string.format("ring %d of %d (0x%x): no free range of %d bytes to relocate it to; " ..
					"nothing was changed", i, #steps, old.addr, s.len), "occupied"
			end
			busy[#busy + 1] = { dest, dest + s.len }
			s.moved_from, s.saved = old.addr, old
			s.ring = old:at(dest)
			s.grow_to = s.len > old.ring_len and s.len or nil
		end
	end
	return true
end

-- Every copy of each relocated ring's old id in the process (its memory
-- and registers), found before anything changes: a ring whose id is
-- found nowhere is refused unless the policy relocates it anyway.
function M.find(t, steps, policy)
	local moves, of = {}, {}
	for i, s in ipairs(steps) do
		if s.relocate then
			moves[#moves + 1] = { from = s.moved_from, len = s.saved.ring_len, to = s.ring.addr }
			of[#moves] = i
			s.refs = {}
		end
	end
	if #moves == 0 then return {} end
	local refs, e, c = t:find_refs(moves)
	if not refs then return nil, e, c end
	for _, r in ipairs(refs) do
		local s = steps[of[r.move]]
		s.refs[#s.refs + 1] = r
		if r.kind == "id" then s.ids = (s.ids or 0) + 1 end
	end
	for _, i in ipairs(of) do
		local s = steps[i]
		if not s.ids and not policy.relocate_unreferenced then
			return nil, string.format("ring %d of %d: %s; nothing was changed", i, #steps,
				require("aiotk.plan").unreferenced(s.moved_from, refs.scanned)), "impossible"
		end
	end
	return refs
end

-- The relocation journal's entries for the rings steps relocate (none:
-- nil): each old id and length, new id and length, and the program's own
-- ring at the old address that --replace destroys (live_at, with its
-- compat_features: it is marked as aiotk's just before the commit, so
-- that a restore killed after the commit still has it destroyed by the
-- next one). Made in the process before anything else changes, removed as
-- the restore's commit, so that a later restore finds what a killed one
-- was doing (M.recover).
function M.journal_entries(t, steps)
	local entries = {}
	for _, s in ipairs(steps) do
		if s.relocate then
			local e = { from = s.moved_from, len = s.saved.ring_len, to = s.ring.addr, to_len = s.len }
			if s.old_ring then
				local h, he, hc = t:header(s.old_ring.addr)
				if not h then return nil, he, hc end
				e.live_at, e.live_compat = s.old_ring.addr, h.compat_features
			end
			entries[#entries + 1] = e
		end
	end
	return #entries > 0 and entries or false
end

-- The program's own rings a relocation replaces, marked as aiotk's: the
-- last change before the commit (restore.lua destroys them after it);
-- with unmark, the mark taken off again (a rollback).
function M.mark_replaced(t, entries, unmark)
	for _, e in ipairs(entries) do
		if e.live_at then
			local ok, me, mc
			if unmark then ok, me, mc = t:ring_unmark(e.live_at, e.live_compat)
			else ok, me, mc = t:ring_mark(e.live_at) end
			if not ok then return nil, me, mc end
		end
	end
	return true
end

-- A relocating restore an aiotk was killed in (its journal still in the
-- process) undone, the process stopped: every copy of each new id (and
-- pointer into the new ring) put back to the old one, then whatever was
-- made at the new addresses (rings, placeholders) destroyed, then the
-- journal removed. Each step finds what is left of its work, so a kill
-- during this too is undone by the next restore. Returns how many rings
-- and references were put back (0, 0: no journal).
function M.recover(t, policy)
	local entries, e, c = t:reloc_journal_read()
	if entries == nil then
		if e then return nil, e, c end
		return 0, 0
	end
	local back = {}
	for i, j in ipairs(entries) do back[i] = { from = j.to, len = j.len, to = j.from } end
	local nrefs = 0
	if #back > 0 then
		local refs, re, rc = t:find_refs(back)
		if not refs then return nil, re, rc end
		if #refs > 0 then
			local ok, we, wc = t:rewrite_refs(refs)
			if not ok then return nil, "putting back the ids an interrupted relocation rewrote: " .. we, wc end
		end
		nrefs = #refs
	end
	for _, j in ipairs(entries) do
		local h = j.live_at and t:header(j.live_at)
		if h and h.building then
			local ok, ue, uc = M.mark_replaced(t, { j }, true)
			if not ok then return nil, ue, uc end
		end
	end
	local ranges = {}
	for i, j in ipairs(entries) do ranges[i] = { addr = j.to, len = j.to_len } end
	local maps, me, mc = t:mappings(ranges)
	if not maps then return nil, me, mc end
	for _, m in ipairs(maps) do
		for _, j in ipairs(entries) do
			if m.start < j.to + j.to_len and j.to < m.finish then
				local ok, de, dc
				if m.ring and m.start == j.to then ok, de, dc = t:io_destroy(m.start)
				elseif m.placeholder then ok, de, dc = t:unmap(m.start, m.finish - m.start)
				else ok = true end
				if not ok then return nil, de, dc end
				break
			end
		end
	end
	local ok, je, jc = t:reloc_journal_remove()
	if not ok then return nil, je, jc end
	if #entries == 0 then
		policy.log("removed the relocation journal an interrupted aiotk had begun to write (nothing else was changed)")
	else
		policy.log(string.format("undid the relocation of %d ring(s) an interrupted aiotk had begun: " ..
			"%d reference(s) put back to their old ids", #entries, nrefs))
	end
	return #entries, nrefs
end

-- How much memory check -p reads to count references, at most (about:
-- it stops at the first 1 MiB window past it): the process stays stopped
-- while it reads, for a preview. A restore reads it all.
M.COUNT_MAX_BYTES = 256 * 1024 * 1024

-- The references process pid holds to each ring plan relocates, counted
-- in one short stop (nothing written): {[old addr] = {ids=, pointers=}},
-- the bytes read, and the bytes left unread past COUNT_MAX_BYTES (aiotk
-- check -p).
function M.count(pid, plan)
	local moves, found = {}, {}
	for _, s in ipairs(plan.steps) do
		if s.action == "relocate" then
			moves[#moves + 1] = { from = s.addr, len = s.ring_len, to = s.addr }
			found[s.addr] = { ids = 0, pointers = 0 }
		end
	end
	if #moves == 0 then return found, 0, 0 end
	local refs, e, c = process.with_process(pid, function(t) return t:find_refs(moves, M.COUNT_MAX_BYTES) end)
	if not refs then return nil, e, c end
	for _, r in ipairs(refs) do
		local f = found[moves[r.move].from]
		if r.kind == "id" then f.ids = f.ids + 1 else f.pointers = f.pointers + 1 end
	end
	return found, refs.scanned, refs.skipped
end

-- How a rewritten reference is named in reports: its mapping and offset,
-- or its thread and register.
function M.describe_ref(r)
	local what = r.kind == "id" and "id" or string.format("pointer 0x%x", r.old)
	if r.tid then return string.format("thread %d register %s (%s)", r.tid, r.reg, what) end
	return string.format("%s+0x%x at 0x%x (%s)", r.map ~= "" and r.map or "anonymous", r.offset, r.addr, what)
end

return M
