-- Relocation in a CRIU dump (the impossible hook's "relocate" for
-- criu-fixup, the action script and the plugin): where each relocated
-- ring goes among the dump's VMAs, and the new pagemap, pages and core
-- images (every copy of the old id, and pointers into the old ring,
-- rewritten in the private pages and the threads' registers). Nothing is
-- written here: criu.lua replaces the files, atomically, keeping .orig.
local aiotk = require "aiotk"
local relocate = require "aiotk.relocate"
local core = aiotk.core

local M = {}

function M.read_file(path)
	local f, err = io.open(path, "rb")
	if not f then return nil, err end
	local s = f:read("*a")
	f:close()
	return s
end

local read_file = M.read_file

local function name_of(path) return path:match("[^/]+$") end

-- The moves of process p's relocated rings: a free range among the dump's
-- VMAs (and the moves chosen before), as near below the saved address as
-- the layout allows, the length this host makes.
local function destinations(p, steps, mm)
	local busy
	local moves, by_addr = {}, {}
	for _, c in ipairs(p.rings) do
		local s = steps[c.ring.addr]
		if s and s.action == "relocate" then
			if not busy then
				busy = {}
				for _, v in ipairs(assert(core.criu_vmas(mm, p.mm_path))) do busy[#busy + 1] = { v.start, v.finish } end
			end
			local to = relocate.free_range(busy, s.relocate_len, c.ring.addr)
			if not to then
				return nil, string.format("%s: ring 0x%x: no free range of %d bytes in the dump's layout " ..
					"to relocate it to; nothing was changed", p.mm_path, c.ring.addr, s.relocate_len), "occupied"
			end
			busy[#busy + 1] = { to, to + s.relocate_len }
			local mv = { from = c.ring.addr, len = c.ring.ring_len, to = to, new_len = s.relocate_len,
				nr = core.nr_for_len(s.relocate_len), refs = {}, ids = 0 }
			moves[#moves + 1] = mv
			by_addr[mv.from] = mv
		end
	end
	return moves, by_addr
end

-- The pages file with each grown ring's header nr set (its offset in the
-- file as CRIU wrote it): a replaced pages file carries them.
local function with_grown_headers(pages, p, steps)
	for _, c in ipairs(p.rings) do
		local s = steps[c.ring.addr]
		if s and s.action == "grow" then
			local at = c.header_off + 4 -- aio_ring.nr, after id
			local nr = core.nr_for_len(s.grow_to)
			local b = string.char(nr % 256, math.floor(nr / 256) % 256, math.floor(nr / 65536) % 256,
				math.floor(nr / 16777216) % 256)
			pages = pages:sub(1, at) .. b .. pages:sub(at + 5)
		end
	end
	return pages
end

local function note(moves, refs, where)
	for _, r in ipairs(refs) do
		local mv = moves[r.move]
		r.file = where(r)
		mv.refs[#mv.refs + 1] = r
		if r.kind == "id" then mv.ids = mv.ids + 1 end
	end
end

-- Why a dump whose pages are partly in its parent (CRIU's
-- --prev-images-dir, after a pre-dump; its `parent` link) is refused:
-- copies of an id there cannot be rewritten, and the parent, which other
-- dumps may share, is not rewritten.
local function from_parent(why, dir)
	local link = core.readlink(dir .. "/parent")
	local parent = not link and dir .. "/parent" or link:sub(1, 1) == "/" and link or dir .. "/" .. link
	return string.format("%s %s; relocation needs a dump without --prev-images-dir (a full dump): the " ..
		"parent may be shared by other dumps, so it is not rewritten; nothing was changed", why, parent)
end

-- Process p's relocated rings carried out on its dump images: the new
-- pagemap, pages and core-TID images put in out (name -> bytes); mm is
-- its mm image as dumped. Returns { by_addr = {[old] = move} } (each move:
-- from, len, to, new_len, nr, refs, ids), or nil, why, code when a ring
-- has nowhere to go or no copy of its id (unless relocate_unreferenced).
function M.in_dump(p, steps, mm, policy, out)
	local moves, by_addr, code = destinations(p, steps, mm)
	if not moves then return nil, by_addr, code end
	if #moves == 0 then return { by_addr = {} } end
	local dir = p.mm_path:match("^(.*)/[^/]+$") or "."
	local pm_path = dir .. "/pagemap-" .. p.pid .. ".img"
	local pages_path = p.rings[1].pages_path
	local pm, perr = read_file(pm_path)
	local pages = pm and read_file(pages_path)
	if not pages then return nil, perr or ("cannot read " .. pages_path) end
	pages = with_grown_headers(pages, p, steps)
	local page = assert(core.host()).page_size
	local npm, npages, refs = core.criu_relocate_pages(pm, pages, pm_path, mm, moves, page)
	if not npm and refs == "unsupported" then return nil, from_parent(npages, dir), refs end
	if not npm then return nil, npages, refs end
	note(moves, refs, function() return name_of(pages_path) end)
	local scanned = refs.scanned
	local pstree = read_file(dir .. "/pstree.img")
	local tids, terr = pstree and core.criu_threads(pstree, dir .. "/pstree.img", p.pid)
	if not tids then return nil, terr or ("cannot read " .. dir .. "/pstree.img") end
	for _, tid in ipairs(tids) do
		local name = "core-" .. tid .. ".img"
		local bytes, cerr = read_file(dir .. "/" .. name)
		if not bytes then return nil, cerr end
		local nb, rrefs = core.criu_relocate_regs(bytes, dir .. "/" .. name, moves)
		if not nb then return nil, rrefs end
		for _, r in ipairs(rrefs) do r.tid = tid end
		note(moves, rrefs, function() return name end)
		if #rrefs > 0 then out[name] = nb end
	end
	for _, mv in ipairs(moves) do
		if mv.ids == 0 and not policy.relocate_unreferenced then
			return nil, string.format("%s: %s; nothing was changed", p.mm_path,
				require("aiotk.plan").unreferenced(mv.from, scanned)), "impossible"
		end
	end
	out[name_of(pm_path)] = npm
	out[name_of(pages_path)] = npages
	return { by_addr = by_addr }
end

-- How a rewritten location of a dump is named in reports: the file and
-- offset (with the address and its mapping), or the thread and register.
function M.describe(r)
	if r.kind == "restart" then
		return string.format("%s: thread %d register ip 0x%x -> 0x%x (its io_getevents, which the dump's " ..
			"stop ended with EINTR, restarted on the new ring)", r.file, r.tid, r.old, r.value)
	end
	local what = r.kind == "id" and "id" or string.format("pointer 0x%x", r.old)
	if r.reg then return string.format("%s: thread %d register %s (%s)", r.file, r.tid, r.reg, what) end
	return string.format("%s+0x%x: 0x%x in the dump's mapping 0x%x-0x%x (%s)", r.file, r.file_off, r.addr,
		r.map_start, r.map_finish, what)
end

return M
