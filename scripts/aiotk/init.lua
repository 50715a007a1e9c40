-- The aiotk Lua library, the front module: the core's primitives, this
-- process's dump and restore, temporary aio-max-nr; with the process
-- workflows (aiotk.dump, aiotk.restore, aiotk.verify: where dump and
-- restore policy is carried out) and the tables for JSON and display
-- (aiotk.render) merged in.
--
-- Error convention: anything that can fail at run time returns
-- nil, message, code (code: "budget", "occupied", "image", "stuck", ...).
local core = require "aiotk.core"

local M = { core = core, version = core.version, lab = core.lab }

for _, name in ipairs {
	"host", "geometry", "min_n", "snapshot", "converge", "replay",
	"write_events", "remap", "restore", "io_setup", "io_destroy", "aio_nr",
	"set_aio_max_nr", "mapping_at", "rings", "now_ns", "ring", "image",
	"read_image", "decode_image", "attach", "self", "simulate", "maps",
} do
	M[name] = core[name]
end

M.view = require("aiotk.kernel").view

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

-- Run fn with fs.aio-max-nr at least `needed` above aio-nr; the old value
-- is put back whatever fn does, and by aiotk's guardian if aiotk is
-- killed meanwhile. Returns fn's results (or rethrows).
function M.with_aio_headroom(needed, fn)
	local nr, max = assert(core.aio_nr())
	if nr + needed <= max then return fn() end
	local ok, err, code = core.raise_aio_max_nr(max, nr + needed)
	if not ok then return nil, err, code end
	local results = { n = 0 }
	local function pack(...) results = { n = select("#", ...), ... } end
	pack(pcall(fn))
	core.end_aio_max_nr_raise()
	if not results[1] then error(results[2], 0) end
	return unpack(results, 2, results.n)
end

-- The process workflows (each module their home) and the tables for
-- JSON and display (aiotk.render), loaded when first used: a command
-- pays only for the modules it runs (a restore does not load the dump,
-- the verify or the renderer: 0.4 ms of its start). The metatable's
-- __lazy() lists those names (the REPL completes them).
local WORKFLOWS = {}
for part, names in pairs {
	["aiotk.process"] = { "with_process" },
	["aiotk.dump"] = { "dump_process", "dump_frozen" },
	["aiotk.restore"] = { "restore_process", "joined_ranges" },
	["aiotk.verify"] = { "verify_process" },
} do
	for _, name in ipairs(names) do WORKFLOWS[name] = part end
end
setmetatable(M, {
	__lazy = function()
		local names = {}
		for k in pairs(WORKFLOWS) do names[k] = true end
		for k in pairs(require "aiotk.render") do names[k] = true end
		return names
	end,
	__index = function(t, k)
		local v = require(WORKFLOWS[k] or "aiotk.render")[k]
		if v ~= nil then rawset(t, k, v) end
		return v
	end,
})

return M
