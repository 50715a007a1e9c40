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

local function policy_of(opts)
	return opts.policy or require("aiotk.policy").load(nil, M.search_dirs)
end

-- Tails that moved since `rings` were read: requests completing while the
-- process is stopped.
local function moved(t, rings)
	local out = {}
	for _, r in ipairs(rings) do
		local now = t:header(r.addr)
		if not now or now.tail ~= r.tail then out[#out + 1] = { ring = r, now = now } end
	end
	return out
end

local function read_rings(t, policy, opts)
	local maps, e, c = t:rings()
	if not maps then return nil, e, c end
	local rings = {}
	for _, m in ipairs(maps) do
		local ring, e2, c2 = t:snapshot(m.addr, opts.area)
		if not ring then return nil, e2, c2 end
		if policy.filter(ring, { phase = "dump", pid = t.pid }) then rings[#rings + 1] = ring end
	end
	return rings
end

-- Requests in flight show as tails moving while the process is stopped;
-- the policy waits for them, fails, or records a warning.
local function settle(t, rings, policy, opts)
	core.sleep_ms(policy.settle_ms)
	local m = moved(t, rings)
	if #m == 0 then return rings, "" end
	local what = string.format("ring 0x%x: tail moved from %d to %d while the process was stopped",
		m[1].ring.addr, m[1].ring.tail, m[1].now and m[1].now.tail or -1)
	local choice = policy.in_flight(m[1].ring, { pid = t.pid, moved = m })
	if choice == "fail" then
		return nil, what .. "; requests were in flight (policy: fail)", "stuck"
	elseif choice == "record" then
		policy.log(what .. "; recorded in the image")
		return rings, what .. "; requests were in flight, this image holds the first reading"
	end
	local deadline = core.now_ns() + policy.in_flight_wait_ms * 1e6
	repeat
		rings = assert(read_rings(t, policy, opts))
		core.sleep_ms(math.max(policy.settle_ms, 1))
		if #moved(t, rings) == 0 then
			policy.log(what .. "; waited for it to settle")
			return rings, ""
		end
	until core.now_ns() > deadline
	return nil, what .. string.format("; still moving after %d ms", policy.in_flight_wait_ms), "stuck"
end

-- Dump the rings of process pid the policy keeps, to dir. The process is
-- stopped only while its rings are read.
function M.dump_process(pid, dir, opts)
	opts = opts or {}
	local policy = policy_of(opts)
	local img = assert(core.image())
	local stopped
	local ok, err, code = M.with_process(pid, function(t)
		local rings, e, c = read_rings(t, policy, opts)
		if not rings then return nil, e, c end
		local warnings
		rings, warnings, c = settle(t, rings, policy, opts)
		if not rings then return nil, warnings, c end
		for _, r in ipairs(rings) do img:add(r) end
		img.warnings = warnings
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
local function occupant(t, addr, len)
	local m = t:mapping_at(addr, len)
	return m or nil
end

local function describe(m)
	return string.format("0x%x-0x%x %s %s", m.start, m.finish, m.perms,
		m.path ~= "" and m.path or "(anonymous)")
end

-- Every destination is checked before anything is changed.
local function check_destinations(t, steps, replace)
	local doomed = {}
	for i, s in ipairs(steps) do
		local len = s.grow_to or s.ring.ring_len
		local m = occupant(t, s.ring.addr, len)
		if m then
			local is_ring = m.path:match("^/%[aio%]") ~= nil
			if not (replace and is_ring) then
				return nil, string.format(
					"ring %d of %d (0x%x, %d bytes): %s is mapped there%s",
					i, #steps, s.ring.addr, len, describe(m),
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

-- The plan's steps joined with the rings they are about (by address).
local function steps_for(plan, rings)
	local by_addr = {}
	for _, r in ipairs(rings) do by_addr[r.addr] = r end
	local steps = {}
	for _, s in ipairs(plan.steps) do
		local ring = by_addr[s.addr]
		if not ring then return nil, string.format("the plan names ring 0x%x, which the image lacks", s.addr) end
		if s.action == "fail" then
			return nil, string.format("ring 0x%x: %s", s.addr, s.reason or "impossible"), "impossible"
		end
		if s.action ~= "skip" then steps[#steps + 1] = { ring = ring, grow_to = s.grow_to } end
	end
	return steps
end

local function apply_budget(plan, policy)
	local b = plan.budget
	if b.action == "fail" then
		return nil, string.format("restoring needs %d of fs.aio-max-nr: aio-nr is %d of %d, %d short; " ..
			"raise it (sysctl fs.aio-max-nr=%d) or let the policy raise it", b.needed, b.aio_nr,
			b.aio_max_nr, b.raise_by, b.aio_max_nr + b.raise_by), "budget"
	elseif b.action == "raise" then
		local ok, err, code = core.set_aio_max_nr(b.aio_max_nr + b.raise_by)
		if not ok then return nil, err, code end
		policy.log(string.format("raised fs.aio-max-nr from %d to %d (by the %d missing)",
			b.aio_max_nr, b.aio_max_nr + b.raise_by, b.raise_by))
	end
	return true
end

-- Restore rings into process pid, as the plan (made here from the policy
-- unless given) says: all or nothing. opts.replace destroys AIO rings
-- occupying saved addresses; opts.on_ring(i, ring, result, t) is called
-- after each ring.
function M.restore_process(pid, rings, opts)
	opts = opts or {}
	local policy = policy_of(opts)
	local plan = opts.plan or require("aiotk.plan").make(rings, assert(core.host()), policy)
	local steps, serr, scode = steps_for(plan, rings)
	if not steps then return nil, serr, scode end
	local ok, berr, bcode = apply_budget(plan, policy)
	if not ok then return nil, berr, bcode end
	local out = {}
	local rok, err, code = M.with_process(pid, function(t)
		local doomed, e, c = check_destinations(t, steps, opts.replace)
		if not doomed then return nil, e, c end
		for _, addr in ipairs(doomed) do
			local d, de, dc = t:io_destroy(addr)
			if not d then return nil, de, dc end
		end
		for i, s in ipairs(steps) do
			local res, re, rc = t:restore(s.ring, { grow_to = s.grow_to, replay = opts.replay })
			if not res then
				for j = #out, 1, -1 do t:io_destroy(out[j].ctx) end
				out = {}
				if t.dead then
					return nil, string.format("the process exited during restore (ring %d of %d: %s)",
						i, #steps, re), rc
				end
				return nil, string.format("ring %d of %d (0x%x): %s", i, #steps, s.ring.addr,
					seccomp_hint(pid, re)), rc
			end
			res.grown = s.grow_to ~= nil
			out[#out + 1] = res
			if s.grow_to then
				policy.log(string.format("ring 0x%x grew in place from %d to %d bytes", s.ring.addr,
					s.ring.ring_len, s.grow_to))
			end
			if opts.on_ring then opts.on_ring(i, s.ring, res, t) end
		end
		out.target = t
		return true
	end)
	if not rok then return nil, err, code end
	out.stopped_ns = out.target.stopped_ns
	out.plan = plan
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
