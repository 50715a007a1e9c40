-- The aiotk Lua library: the core's primitives plus the compositions the
-- shipped commands and users' scripts share (dump, restore with rollback,
-- temporary aio-max-nr, tables for JSON and display).
--
-- Error convention: anything that can fail at run time returns
-- nil, message, code (code: "budget", "occupied", "image", "stuck", ...).
local core = require "aiotk.core"

local M = { core = core, version = core.version, lab = core.lab }

for _, name in ipairs {
	"host", "geometry", "min_n", "snapshot", "converge", "replay",
	"write_events", "remap", "restore", "io_setup", "io_destroy", "aio_nr",
	"set_aio_max_nr", "mapping_at", "rings", "now_ns", "ring", "image",
	"read_image", "decode_image", "attach", "self", "simulate",
} do
	M[name] = core[name]
end

function M.hex(v) return string.format("0x%x", v) end

-- Snapshot rings of this process into a new image (all rings when `addrs`
-- is nil) and, with `dir`, write it. Returns the image.
function M.dump(addrs, dir, opts)
	opts = opts or {}
	if not addrs then
		addrs = {}
		for _, m in ipairs(assert(core.rings())) do addrs[#addrs + 1] = m.addr end
	end
	local img = assert(core.image())
	for _, addr in ipairs(addrs) do
		local ring, err, code = core.snapshot(addr, opts.area)
		if not ring then return nil, err, code end
		img:add(ring)
	end
	if dir then
		local ok, err, code = img:write(dir)
		if not ok then return nil, err, code end
	end
	return img
end

-- Restore every ring of `img` (or of the rings list) in this process. All or
-- nothing: a failure destroys the rings already restored.
function M.restore_all(rings, opts)
	opts = opts or {}
	local done = {}
	for i, ring in ipairs(rings) do
		local res, err, code = core.restore(ring, opts)
		if not res then
			for j = #done, 1, -1 do core.io_destroy(done[j].ctx) end
			return nil, string.format("ring %d of %d: %s", i, #rings, err), code
		end
		done[#done + 1] = res
	end
	return done
end

-- Run fn(target) with process pid stopped; it is let go whatever fn does.
function M.with_process(pid, fn)
	local t, err, code = core.attach(pid)
	if not t then return nil, err, code end
	local results = { n = 0 }
	local function pack(...) results = { n = select("#", ...), ... } end
	pack(pcall(fn, t))
	local ok, derr, dcode = t:detach()
	if not results[1] then error(results[2], 0) end
	if not ok and results[2] then return nil, derr, dcode end
	return unpack(results, 2, results.n)
end

-- Dump every ring of process pid (or those `filter(ring)` keeps) to dir.
-- The process is stopped only while its rings are read.
function M.dump_process(pid, dir, opts)
	opts = opts or {}
	local img = assert(core.image())
	local stopped
	local ok, err, code = M.with_process(pid, function(t)
		local maps, e, c = t:rings()
		if not maps then return nil, e, c end
		for _, m in ipairs(maps) do
			local ring, e2, c2 = t:snapshot(m.addr, opts.area)
			if not ring then return nil, e2, c2 end
			if not opts.filter or opts.filter(ring) then img:add(ring) end
		end
		stopped = t
		return true
	end)
	if not ok then return nil, err, code end
	img.pid = pid
	img.stopped_ns = stopped.stopped_ns
	if dir then
		local w, werr, wcode = img:write(dir)
		if not w then return nil, werr, wcode end
	end
	return img
end

-- What occupies ring's range in target: nil when free.
local function occupant(t, ring)
	local m = t:mapping_at(ring.addr, ring.ring_len)
	return m or nil
end

local function describe(m)
	return string.format("0x%x-0x%x %s %s", m.start, m.finish, m.perms,
		m.path ~= "" and m.path or "(anonymous)")
end

-- Every destination is checked before anything is changed.
local function check_destinations(t, rings, replace)
	local doomed = {}
	for i, ring in ipairs(rings) do
		local m = occupant(t, ring)
		if m then
			local is_ring = m.path:match("^/%[aio%]") ~= nil
			if not (replace and is_ring) then
				return nil, string.format(
					"ring %d of %d (0x%x, %d bytes): %s is mapped there%s",
					i, #rings, ring.addr, ring.ring_len, describe(m),
					is_ring and "; --replace destroys an AIO ring there first" or
					"; nothing was changed"), "occupied"
			end
			doomed[#doomed + 1] = m.start
		end
	end
	return doomed
end

-- A refused injected call in a process under a seccomp filter: say so.
local function seccomp_hint(pid, err)
	local f = io.open("/proc/" .. pid .. "/status")
	local status = f and f:read("*a") or ""
	if f then f:close() end
	if status:match("Seccomp:%s*2") and (err:match("not permitted") or err:match("not implemented")) then
		return err .. string.format("; process %d runs under a seccomp filter (Seccomp: 2 in " ..
			"/proc/%d/status) that refuses a system call aiotk injects; nothing was changed", pid, pid)
	end
	return err
end

-- Restore rings into process pid: all or nothing. opts.replace destroys
-- AIO rings occupying saved addresses; opts.on_ring(i, ring, result, t) is
-- called after each ring (a hook for logging or tests).
function M.restore_process(pid, rings, opts)
	opts = opts or {}
	local out = {}
	local ok, err, code = M.with_process(pid, function(t)
		local doomed, e, c = check_destinations(t, rings, opts.replace)
		if not doomed then return nil, e, c end
		for _, addr in ipairs(doomed) do
			local d, de, dc = t:io_destroy(addr)
			if not d then return nil, de, dc end
		end
		for i, ring in ipairs(rings) do
			local res, re, rc = t:restore(ring, opts)
			if not res then
				for j = #out, 1, -1 do t:io_destroy(out[j].ctx) end
				out = {}
				if t.dead then
					return nil, string.format("the process exited during restore (ring %d of %d: %s)",
						i, #rings, re), rc
				end
				return nil, string.format("ring %d of %d (0x%x): %s", i, #rings, ring.addr,
					seccomp_hint(pid, re)), rc
			end
			out[#out + 1] = res
			if opts.on_ring then opts.on_ring(i, ring, res, t) end
		end
		out.target = t
		return true
	end)
	if not ok then return nil, err, code end
	out.stopped_ns = out.target.stopped_ns
	return out
end

-- Run fn with fs.aio-max-nr at least `needed` above aio-nr; the old value
-- is put back whatever fn does. Returns fn's results (or rethrows).
function M.with_aio_headroom(needed, fn)
	local nr, max = assert(core.aio_nr())
	if nr + needed <= max then return fn() end
	local ok, err, code = core.set_aio_max_nr(nr + needed)
	if not ok then return nil, err, code end
	local results = { n = 0 }
	local function pack(...) results = { n = select("#", ...), ... } end
	pack(pcall(fn))
	core.set_aio_max_nr(max)
	if not results[1] then error(results[2], 0) end
	return unpack(results, 2, results.n)
end

function M.event_table(ev)
	return { data = ev.data, obj = ev.obj, res = ev.res, res2 = ev.res2 }
end

-- A plain table for JSON: 64-bit values as "0x..." strings.
function M.ring_table(r)
	local t = {
		addr = string.format("0x%x", r.addr), ring_len = r.ring_len,
		nr = r.nr, head = r.head, tail = r.tail, n = r.n,
		wrapped = r.wrapped, events = M.array(r:events()),
	}
	return t
end

function M.image_table(img)
	local t = {
		format = img.format,
		host = {
			cpus = img.cpus, page_size = img.page_size, release = img.release,
			formula = img.formula, aio_max_nr = img.aio_max_nr,
		},
		time_ns = img.time_ns,
		pid = img.pid ~= 0 and img.pid or nil,
		warnings = img.warnings ~= "" and img.warnings or nil,
		stopped_ns = img.stopped_ns ~= 0 and img.stopped_ns or nil,
		rings = M.array(),
	}
	for i, r in ipairs(img:rings()) do t.rings[i] = M.ring_table(r) end
	return t
end

local ARRAY = { __jsontype = "array" }

-- Mark a list so that it encodes as [] even when empty.
function M.array(t) return setmetatable(t or {}, ARRAY) end

function M.json(value)
	return require("dkjson").encode(value, { indent = false })
end

return M
