-- CRIU dumps: what their rings are, whether CRIU's and aiotk's restores
-- would work on a host, conversion to aiotk images, and the nr_req fixup.
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local plans = require "aiotk.plan"
local core = aiotk.core

local M = {}

function M.read(dir) return core.criu_read(dir) end

-- Rows for show --criu: the same keys as aiotk's images, plus pid, nr_req.
function M.table(procs)
	local rings = aiotk.array()
	for _, p in ipairs(procs) do
		for _, c in ipairs(p.rings) do
			local t = aiotk.ring_table(c.ring)
			t.pid = p.pid
			t.nr_req = c.nr_req
			rings[#rings + 1] = t
		end
	end
	return { rings = rings }
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
			out[addr] = string.format("fails: its io_setup calls need %d of fs.aio-max-nr, %d free", sum, b.free)
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

local function read_file(path)
	local f, err = io.open(path, "rb")
	if not f then return nil, err end
	local s = f:read("*a")
	f:close()
	return s
end


-- The n io_setup gets for ring c on host: the n recorded at dump when it
-- makes the same ring there (the process's aio-nr share as before), else
-- the smallest n that does.
local function n_for(c, model, recorded)
	local g = recorded and core.geometry(recorded, model)
	if g and g.ring_len == c.ring.ring_len then return recorded end
	return core.min_n(c.ring.ring_len, model)
end

-- New mm file contents for every process: nr_req = n_for each ring;
-- recorded(pid, addr) gives the n recorded at dump, if any.
local function patched_mm(procs, host, recorded)
	local model = hostmodel.model(host)
	local out, changes = {}, {}
	for _, p in ipairs(procs) do
		local bytes, err = read_file(p.mm_path)
		if not bytes then return nil, err end
		for _, c in ipairs(p.rings) do
			local n, why = n_for(c, model, recorded and recorded(p.pid, c.ring.addr))
			if not n then
				return nil, string.format("%s: ring 0x%x cannot be rebuilt on %s: %s", p.mm_path,
					c.ring.addr, host.name, why), "impossible"
			end
			local perr
			bytes, perr = core.criu_patch(bytes, c.nr_req_off, c.nr_req_len, n)
			if not bytes then return nil, p.mm_path .. ": " .. perr end
			changes[#changes + 1] = { pid = p.pid, addr = c.ring.addr, from = c.nr_req, to = n }
		end
		out[p.mm_path:match("[^/]+$")] = bytes
	end
	return out, changes
end

-- Rewrite nr_req in dir (keeping mm-PID.img.orig unless no_backup) or
-- into a new directory out (dir untouched). Written atomically. An existing
-- .orig is kept as it is: it holds the dump as CRIU wrote it, so fixing
-- again (for another host) starts from the same facts and can be undone.
function M.fixup(dir, procs, host, out, no_backup, recorded)
	local mm, changes, code = patched_mm(procs, host, recorded)
	if not mm then return nil, changes, code end
	if out then
		if io.open(out) then return nil, out .. " exists; choose a new output directory" end
		local tmp = out .. ".tmp" .. tostring(os.time())
		local names, lerr = core.listdir(dir)
		if not names then return nil, lerr end
		local made, merr = core.mkdir(tmp)
		if not made then return nil, merr end
		for _, name in ipairs(names) do
			local bytes = mm[name] or assert(read_file(dir .. "/" .. name))
			local ok, err = core.write_atomic(tmp .. "/" .. name, bytes)
			if not ok then core.remove_tree(tmp) return nil, err end
		end
		local ok, err = os.rename(tmp, out)
		if not ok then core.remove_tree(tmp) return nil, err end
		return changes
	end
	for name, bytes in pairs(mm) do
		local path = dir .. "/" .. name
		if not no_backup and not read_file(path .. ".orig") then
			local ok, err = core.write_atomic(path .. ".orig", assert(read_file(path)))
			if not ok then return nil, err end
		end
		local ok, err = core.write_atomic(path, bytes)
		if not ok then return nil, err end
	end
	return changes
end

return M
