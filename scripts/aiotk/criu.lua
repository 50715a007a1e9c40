-- CRIU dumps: what their rings are, whether CRIU's and aiotk's restores
-- would work on a host, conversion to aiotk images, and the nr_req fixup.
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local plans = require "aiotk.plan"
local relocate = require "aiotk.criu_relocate"
local core = aiotk.core

local M = {}

-- mm_only: each ring only its addr and ring_len, its pages not read.
function M.read(dir, mm_only) return core.criu_read(dir, mm_only) end

-- Why a CRIU dump in dir failed, when it was an io_uring mapping: CRIU's
-- maps parser stops at one ("Unknown shit 600 (anon_inode:[io_uring])")
-- in whichever log (-o) the dump wrote there. The log's name and line;
-- nil otherwise.
function M.uring_failure(dir)
	for _, name in ipairs(core.listdir(dir) or {}) do
		local f = name:match("%.log$") and io.open(dir .. "/" .. name)
		for line in f and f:lines() or function() end do
			if line:find("Unknown shit", 1, true) and line:find("anon_inode:[io_uring]", 1, true) then
				f:close()
				return name, line
			end
		end
		if f then f:close() end
	end
end

-- show --criu --json: the dump directory, and per process (pid, its mm
-- image) its rings with the same keys as aiotk's images, plus nr_req.
function M.table(procs, dir)
	local out = { source = dir, processes = aiotk.array() }
	for i, p in ipairs(procs) do
		local rings = aiotk.array()
		for j, c in ipairs(p.rings) do
			local t = aiotk.ring_table(c.ring)
			t.nr_req = c.nr_req
			rings[j] = t
		end
		out.processes[i] = { pid = p.pid, mm = p.mm_path, rings = rings }
	end
	return out
end

-- CRIU's own restore on host, per ring of one process: io_setup(nr_req)
-- must make the same ring length, and the process's io_setup calls must
-- fit the aio-max-nr budget together. Returns { [addr] = verdict }.
function M.criu_verdicts(proc, host)
	local model = hostmodel.model(host)
	local out, sum = {}, 0
	for _, c in ipairs(proc.rings) do
		local r = c.ring
		local g = core.geometry(c.nr_req, model)
		sum = sum + c.nr_req
		if not g then
			out[r.addr] = "impossible: io_setup(" .. c.nr_req .. ") is refused"
		elseif g.ring_len ~= r.ring_len then
			out[r.addr] = string.format("fails: io_setup(%d) makes %d bytes, not %d (\"wrong aio\")",
				c.nr_req, g.ring_len, r.ring_len)
		end
	end
	local b = plans.budget(sum, host)
	for _, c in ipairs(proc.rings) do
		local addr = c.ring.addr
		if not out[addr] and b.short > 0 then
			out[addr] = "fails: its io_setup calls: " .. plans.budget_need(b)
		end
		out[addr] = out[addr] or "ok"
	end
	return out
end

-- One aiotk image per process: OUT itself for one, OUT/PID for several.
function M.import(procs, out)
	local written = {}
	for _, p in ipairs(procs) do
		local img = assert(core.image())
		img.pid = p.pid
		for _, c in ipairs(p.rings) do
			img:add(c.ring)
		end
		local dir = #procs == 1 and out or (out .. "/" .. p.pid)
		if #procs > 1 then
			local ok, err = core.mkdir(out)
			if not ok then return nil, err end
		end
		local ok, err, code = img:write(dir)
		if not ok then return nil, err, code end
		written[#written + 1] = { pid = p.pid, dir = dir, rings = #p.rings }
	end
	return written
end

local read_file = relocate.read_file

local function exists(path)
	local f = io.open(path, "rb")
	if f then f:close() end
	return f ~= nil
end

-- Process p's layout in the dump (its VMAs, as plan.make takes a running
-- process's maps: room to grow, or not), or nil when it cannot be read.
function M.layout(p, mm)
	mm = mm or p.mm or read_file(p.mm_path)
	return mm and core.criu_vmas(mm, p.mm_path) or nil
end

-- The plan for one process's rings on host (aiotk.plan, the same
-- decisions as an aiotk restore): the n recorded at dump where it makes
-- the same ring there, else the smallest n that does; a ring this host
-- cannot make that small grows when the policy's impossible hook says so
-- (told whether the dump's VMAs leave it room). Returns the steps by ring
-- address and the budget. mm: its mm image's bytes, when read already.
local function proc_plan(p, host, policy, recorded, mm)
	local rings = {}
	for _, c in ipairs(p.rings) do
		local n = recorded and recorded(p.pid, c.ring.addr)
		if n then c.ring:note_kernel { n = n } end
		rings[#rings + 1] = c.ring
	end
	-- decoded only for a ring that needs room (0.4-0.8 ms for 20
	-- processes inside CRIU's freeze, where every ring is exact)
	local plan = plans.make(rings, host, policy, function() return M.layout(p, mm) end)
	local by = {}
	for _, s in ipairs(plan.steps) do by[s.addr] = s end
	return by, plan.budget
end

-- Why CRIU cannot restore ring c under step s, or nil. CRIU restores
-- every ring, so a ring the policy leaves out or skips cannot be.
local function refusal(s)
	if not s then return "the policy's filter leaves it out (CRIU restores every ring of a process)" end
	if s.action == "skip" then return "the policy's impossible hook skips it (CRIU restores every ring)" end
	if s.action == "fail" then return s.reason end
end

local function refused(p, c, host, why)
	return string.format("%s: ring 0x%x cannot be restored by CRIU on %s: %s", p.mm_path, c.ring.addr,
		host.name, why)
end

-- What a grown ring's saved header needs: nr for its new length, at
-- header_off of the pages file `pages` (a name inside the dump), and the
-- nr it holds now. The pages file is only ever patched in place there;
-- the journal keeps the nr CRIU wrote, for undo().
local function header_change(c, new_len)
	return { pages = c.pages_path:match("[^/]+$"), header_off = c.header_off, addr = c.ring.addr,
		n = core.nr_for_len(new_len), was = c.ring.nr }
end

-- What an exact ring's nr_req needs when its mm image is patched in
-- place (no other change to that image): n in the varint's own bytes at
-- nr_req_off of the mm file `mm`, and the nr_req CRIU wrote there.
local function nr_req_change(name, c, n)
	return { mm = name, nr_req_off = c.nr_req_off, nr_req_len = c.nr_req_len, addr = c.ring.addr,
		n = n, was = c.nr_req }
end

-- Each in-place patch p set to p[field] ("n" or "was"): ring headers in
-- pages files, nr_req varints in mm files (NAME .. suffix when given).
local function apply_patches(dir, patches, field, w, suffix)
	for _, p in ipairs(patches) do
		local ok, err
		if p.pages then
			ok, err = core.criu_set_header_nr(dir .. "/" .. p.pages .. (suffix or ""), p.header_off,
				tonumber(p.addr), p[field])
		else
			ok, err = core.criu_patch_file(dir .. "/" .. p.mm .. (suffix or ""), p.nr_req_off, p.nr_req_len,
				p[field], w)
		end
		if not ok then return nil, err end
	end
	return true
end

-- What an in-place fixup patches in place, as CRIU wrote it
-- (DIR/aiotk-fixup-journal.json: saved ring headers { pages, header_off,
-- addr, was } and nr_req varints { mm, nr_req_off, nr_req_len, addr, was
-- }), written before the first patch: with the NAME.orig copies of the
-- images replaced whole it is all undo() needs, whichever step a fixup
-- stopped at. Its offsets are those of the files as CRIU wrote them (a
-- patch keeps every length). Entries of an earlier fixup are kept: they
-- hold CRIU's values.
M.JOURNAL = "aiotk-fixup-journal.json"
-- its name before it journalled nr_req too (ring headers only)
local HEADERS_ONLY = "aiotk-fixup-headers.json"

local function read_journal(dir)
	local list = {}
	for _, name in ipairs({ HEADERS_ONLY, M.JOURNAL }) do
		local bytes = read_file(dir .. "/" .. name)
		local entries = bytes and require("dkjson").decode(bytes)
		if bytes and type(entries) ~= "table" then
			return nil, dir .. "/" .. name .. ": not a fixup journal aiotk wrote; " ..
				"the dump's patched bytes cannot be put back from it"
		end
		for _, e in ipairs(entries or {}) do list[#list + 1] = e end
	end
	return list
end

local function patch_key(p)
	return p.pages and (p.pages .. "@" .. p.header_off) or (p.mm .. "@" .. p.nr_req_off)
end

local function journal(dir, patches, w)
	if #patches == 0 then return true end
	local list, err = read_journal(dir)
	if not list then return nil, err end
	local have = {}
	for _, p in ipairs(list) do have[patch_key(p)] = true end
	for _, p in ipairs(patches) do
		if not have[patch_key(p)] then
			-- the address as text: JSON numbers keep 14 digits here
			list[#list + 1] = { pages = p.pages, header_off = p.header_off, mm = p.mm,
				nr_req_off = p.nr_req_off, nr_req_len = p.nr_req_len, addr = string.format("0x%x", p.addr),
				was = p.was }
		end
	end
	return core.write_atomic(dir .. "/" .. M.JOURNAL, aiotk.json(aiotk.array(list)),
		{ sync = w.sync, spare = w.journal_spare })
end

-- New mm file contents for every process, following each ring's plan
-- step; recorded(pid, addr) gives the n recorded at dump, if any. Also,
-- per mm file whose only change is nr_req (every ring exact), those
-- changes as in-place patches.
local function patched_mm(procs, host, recorded, policy)
	policy = policy or require("aiotk.policy").current()
	local out, changes, headers, inplace = {}, {}, {}, {}
	for _, p in ipairs(procs) do
		local bytes, err = p.mm, nil
		if not bytes then bytes, err = read_file(p.mm_path) end
		if not bytes then return nil, err end
		local steps = proc_plan(p, host, policy, recorded, bytes)
		for _, c in ipairs(p.rings) do
			local s = steps[c.ring.addr]
			local why = refusal(s)
			if why then return nil, refused(p, c, host, why), "impossible" end
			if not c.pages_path and s.action ~= "exact" then
				return nil, string.format("%s: ring 0x%x %ss, which needs its pages (read with mm_only)",
					p.mm_path, c.ring.addr, s.action), "needs_pages"
			end
		end
		local grown = {}
		-- grow and relocate first: they re-encode the entry, so nr_req offsets move
		local moved, rerr, rcode = relocate.in_dump(p, steps, bytes, policy, out)
		if not moved then return nil, rerr, rcode end
		for _, c in ipairs(p.rings) do
			local s = steps[c.ring.addr]
			local mv = moved.by_addr[c.ring.addr]
			if mv then
				-- the n the host restoring it makes that length from (a
				-- policy's model only decides what is impossible): none
				-- when its model makes rings smaller than that host can
				local n, merr = core.min_n(mv.new_len, hostmodel.model(host))
				if not n then
					return nil, string.format("%s: ring 0x%x: relocated as %d bytes (the length the policy's " ..
						"model makes), which CRIU cannot restore on %s: %s; nothing was changed", p.mm_path,
						c.ring.addr, mv.new_len, host.name, merr), "impossible"
				end
				bytes, merr = core.criu_relocate_mm(bytes, p.mm_path, mv, mv.new_len, n)
				if not bytes then return nil, merr, "occupied" end
				changes[#changes + 1] = { pid = p.pid, addr = c.ring.addr, from = c.nr_req, to = n,
					relocated_to = mv.to, grown_from = c.ring.ring_len, grown_to = mv.new_len,
					references = mv.refs }
			elseif s.action == "grow" then
				local gerr
				bytes, gerr = core.criu_grow(bytes, p.mm_path, c.ring.addr, s.grow_to, s.n)
				if not bytes then return nil, gerr, "occupied" end
				grown[#grown + 1] = header_change(c, s.grow_to)
				changes[#changes + 1] = { pid = p.pid, addr = c.ring.addr, from = c.nr_req, to = s.n,
					grown_from = c.ring.ring_len, grown_to = s.grow_to }
			end
		end
		-- a pages file the relocation replaces has the grown headers in
		-- its new bytes; only the others are patched in place
		for _, h in ipairs(grown) do
			if not out[h.pages] then headers[#headers + 1] = h end
		end
		local name = p.mm_path:match("[^/]+$")
		local moved_any = next(moved.by_addr) ~= nil or #grown > 0
		local again = moved_any and assert(core.criu_decode_mm(bytes, p.mm_path))
		local at_addr, patches = {}, {}
		for _, a in ipairs(again or p.rings) do at_addr[a.addr or a.ring.addr] = a end
		for _, c in ipairs(p.rings) do
			local s = steps[c.ring.addr]
			if s.action == "exact" then
				local at = at_addr[c.ring.addr]
				local perr2
				bytes, perr2 = core.criu_patch(bytes, at.nr_req_off, at.nr_req_len, s.n)
				if not bytes then return nil, p.mm_path .. ": " .. perr2 end
				patches[#patches + 1] = nr_req_change(name, c, s.n)
				changes[#changes + 1] = { pid = p.pid, addr = c.ring.addr, from = c.nr_req, to = s.n }
			end
		end
		-- only what changes is written (a process without rings is not)
		if #p.rings > 0 then out[name] = bytes end
		if #p.rings > 0 and not moved_any then inplace[name] = patches end
	end
	return out, changes, headers, inplace
end

-- What aiotk's CRIU plugin recorded at dump: each task's image (its rings'
-- n, kernel tails, requests captured in flight), by the task's number in
-- its own PID namespace, all in DIR/aiotk-rings.img (one file: created
-- before CRIU's freeze, each task appended inside it). Dumps made before
-- it have a directory a task, DIR/aiotk-PID, read as well.
M.PACK = "aiotk-rings.img"
M.PREFIX = "aiotk-"

-- { [task] = image } of dir; nil, message, code when the file is damaged.
function M.plugin_images(dir)
	local out, err, code = core.read_pack(dir .. "/" .. M.PACK)
	if not out and code ~= "empty" then return nil, err, code end
	out = out or {}
	for _, name in ipairs(core.listdir(dir) or {}) do
		local pid = name:sub(1, #M.PREFIX) == M.PREFIX and tonumber(name:sub(#M.PREFIX + 1):match("^%d+$"))
		local img = pid and not out[pid] and aiotk.read_image(dir .. "/" .. name)
		if img then out[pid] = img end
	end
	return out
end

function M.ring_of(img, addr)
	for _, r in ipairs(img and img:rings() or {}) do
		if r.addr == addr then return r end
	end
end

-- recorded(pid, addr): the n recorded at dump; nil, message, code when
-- the images are damaged.
function M.recorded(dir)
	local imgs, err, code = M.plugin_images(dir)
	if not imgs then return nil, err, code end
	return function(pid, addr)
		local r = M.ring_of(imgs[pid], addr)
		return r and r.n ~= 0 and r.n or nil
	end
end

-- What CRIU's restore with aiotk's plugin does on host, per ring of one
-- process: { [addr] = verdict }, and the budget its io_setup calls need.
function M.plugin_verdicts(p, host, policy, recorded)
	local steps, budget = proc_plan(p, host, policy, recorded)
	local bytes -- the mm image, read only if a ring would grow
	local out = {}
	for _, c in ipairs(p.rings) do
		local s = steps[c.ring.addr]
		local why = refusal(s)
		if not why and s.action == "grow" then
			bytes = bytes or assert(read_file(p.mm_path))
			local ok, gerr = core.criu_grow(bytes, p.mm_path, c.ring.addr, s.grow_to, s.n)
			why = not ok and gerr:gsub("^[^:]*: ", "") or nil
		end
		if not why and budget.action == "fail" then
			why = "its io_setup calls: " .. plans.budget_need(budget)
		end
		out[c.ring.addr] = why and ("fails: " .. why) or string.format("ok: io_setup(%d)%s%s", s.n,
			recorded and recorded(p.pid, c.ring.addr) == s.n and " (recorded at dump)" or "",
			s.action == "grow" and string.format(", grown to %d bytes in the images", s.grow_to) or
			s.action == "relocate" and string.format(", relocated as %d bytes in the images (every copy " ..
				"of its id rewritten)", s.relocate_len) or "")
	end
	return out, budget
end

-- The fixed dump written whole into a new directory out (dir untouched).
local function fixup_copy(dir, out, mm, headers, w)
	if io.open(out) then return nil, out .. " exists; choose a new output directory" end
	local tmp = out .. ".tmp" .. tostring(os.time())
	local names, lerr = core.listdir(dir)
	if not names then return nil, lerr end
	local made, merr = core.mkdir(tmp)
	if not made then return nil, merr end
	for _, name in ipairs(names) do
		if name ~= core.CRIU_STAMP then
			local bytes = mm[name] or assert(read_file(dir .. "/" .. name))
			local ok, err = core.write_atomic(tmp .. "/" .. name, bytes, w)
			if not ok then core.remove_tree(tmp) return nil, err end
		end
	end
	local hok, herr = apply_patches(tmp, headers, "n")
	if not hok then core.remove_tree(tmp) return nil, herr end
	local ok, err = os.rename(tmp, out)
	if not ok then core.remove_tree(tmp) return nil, err end
	return true
end

-- The dump fixed in place: what undo() needs (the .orig copies, the
-- journal) is written before anything it puts back changes, and the
-- plugin's stamp goes first, so a fixup stopped at any step can be undone
-- and no stamp speaks for a dump that changed. An mm image whose only
-- change is nr_req, and which no earlier fixup replaced, is patched in
-- place, journalled (a few bytes, not a file rewritten: the plugin does
-- this inside CRIU's freeze); the others are replaced whole, their .orig
-- a second name for the file CRIU wrote (no copy, one link per image).
local function fixup_in_place(dir, mm, headers, inplace, no_backup, w)
	os.remove(dir .. "/" .. core.CRIU_STAMP)
	local patches, whole = {}, {}
	for _, h in ipairs(headers) do patches[#patches + 1] = h end
	for name, bytes in pairs(mm) do
		local path = dir .. "/" .. name
		if inplace[name] and not no_backup and not exists(path .. ".orig") then
			for _, p in ipairs(inplace[name]) do patches[#patches + 1] = p end
		else
			whole[name] = bytes
			if not no_backup and not exists(path .. ".orig") then
				local ok, err = core.link(path, path .. ".orig")
				if not ok then return nil, err end
			end
		end
	end
	if not no_backup then
		local jok, jerr = journal(dir, patches, w)
		if not jok then return nil, jerr end
	end
	local pok, perr = apply_patches(dir, patches, "n", w)
	if not pok then return nil, perr end
	for name, bytes in pairs(whole) do
		local ok, err = core.write_atomic(dir .. "/" .. name, bytes, w)
		if not ok then return nil, err end
	end
	return true
end

-- Rewrite nr_req (and grow rings) for host: in dir, keeping
-- mm-PID.img.orig unless opts.no_backup, or into a new directory opts.out
-- (dir untouched). Written atomically, synced unless opts.sync == false
-- (inside CRIU, beside its own images, which nobody syncs). An existing
-- .orig is kept as it is: it holds the dump as CRIU wrote it, so fixing
-- again (for another host) starts from the same facts and can be undone.
-- opts.recorded(pid, addr): the n recorded at dump; opts.policy;
-- opts.journal_spare: core.spare(DIR/JOURNAL), made earlier. procs
-- read with mm_only do for rings whose nr_req alone changes; a ring
-- that grows or moves fails it, nothing changed, code "needs_pages".
function M.fixup(dir, procs, host, opts)
	opts = opts or {}
	local mm, changes, headers, inplace = patched_mm(procs, host, opts.recorded, opts.policy)
	if not mm then return nil, changes, headers end
	local w = { sync = opts.sync, journal_spare = opts.journal_spare }
	local ok, err
	if opts.out then ok, err = fixup_copy(dir, opts.out, mm, headers, w)
	else ok, err = fixup_in_place(dir, mm, headers, inplace, opts.no_backup, w) end
	if not ok then return nil, err end
	return changes
end

-- Put back what fixup changed in dir: every image from its NAME.orig
-- (mm images; pagemap, pages and core images a relocation replaced),
-- then the saved ring headers patched in place from the header journal
-- (their offsets are those of the files as CRIU wrote them, which the
-- .orig copies are), then the journal goes (so an undo stopped on the way
-- can be run again). A NAME.orig made after an earlier fixup patched NAME
-- in place (a relocation after a grow in place) holds those patches: it
-- gets the journal's values first, so that, the journal gone, every
-- .orig left is the file CRIU wrote. Reads nothing else of the dump, which may be half
-- fixed; an image that is its .orig already is not written. Returns the
-- names of the images put back (none when nothing was changed). opts.sync
-- as for fixup.
function M.undo(dir, opts)
	local names, lerr = core.listdir(dir)
	if not names then return nil, lerr end
	local headers, jerr = read_journal(dir)
	if not headers then return nil, jerr end
	os.remove(dir .. "/" .. core.CRIU_STAMP)
	local w = { sync = opts and opts.sync }
	local in_origs = {}
	for _, p in ipairs(headers) do
		if exists(dir .. "/" .. (p.pages or p.mm) .. ".orig") then in_origs[#in_origs + 1] = p end
	end
	local ook, oerr = apply_patches(dir, in_origs, "was", w, ".orig")
	if not ook then return nil, oerr end
	local put_back = {}
	table.sort(names)
	for _, name in ipairs(names) do
		local img = name:match("^(.+%.img)%.orig$")
		local orig = img and assert(read_file(dir .. "/" .. name))
		if orig and orig ~= read_file(dir .. "/" .. img) then
			local ok, werr = core.write_atomic(dir .. "/" .. img, orig, { sync = opts and opts.sync })
			if not ok then return nil, werr end
			put_back[#put_back + 1] = img
		end
	end
	local hok, herr = apply_patches(dir, headers, "was", w)
	if not hok then return nil, herr end
	local seen = {}
	for _, img in ipairs(put_back) do seen[img] = true end
	for _, p in ipairs(headers) do
		if p.mm and not seen[p.mm] then put_back[#put_back + 1], seen[p.mm] = p.mm, true end
	end
	os.remove(dir .. "/" .. M.JOURNAL)
	os.remove(dir .. "/" .. HEADERS_ONLY)
	return put_back
end

return M
