-- Comparing a live process's rings with an image, from the ring side
-- (address, nr, head, tail, every unreaped event) and from the kernel side
-- (io_setup's n, the kernel's tail, the captured requests in flight again).
-- Each difference is one table { ring = "0x...", what = field, image =
-- saved value, live = value now }, so a caller can list or count them.
local core = require "aiotk.core"
local kernel = require "aiotk.kernel"
local process = require "aiotk.process"

local M = {}

local function hex(v) return string.format("0x%x", v) end

local function differ(out, ring, what, image, live)
	out[#out + 1] = { ring = ring, what = what, image = image, live = live }
end
M.differ = differ -- the one shape of a difference (uring_verify.lua's too)

local function same_event(a, b)
	return a.data == b.data and a.obj == b.obj and a.res == b.res and a.res2 == b.res2
end

local function event_text(e)
	return string.format("data %s obj %s res %d res2 %d", e.data, e.obj, e.res, e.res2)
end

-- The saved ring r against the live snapshot l.
local function ring_side(out, name, r, l)
	for _, f in ipairs { "ring_len", "nr", "head", "tail" } do
		if r[f] ~= l[f] then differ(out, name, f, r[f], l[f]) end
	end
	if #r ~= #l then
		differ(out, name, "events", #r, #l)
		return
	end
	for i = 1, #r do
		local a, b = r:event(i), l:event(i)
		if not same_event(a, b) then
			differ(out, name, string.format("event %d (slot %d)", i, (r.head + i - 1) % r.nr),
				event_text(a), event_text(b))
			return
		end
	end
end

-- The saved ring r against the kernel's context k: the kernel's tail must
-- be the saved tail (the next completion lands in the saved slot), n the
-- recorded n, and each captured request in flight again with its data.
local function kernel_side(out, name, r, k)
	if r.n ~= 0 and r.n ~= k.n then differ(out, name, "n", r.n, k.n) end
	if k.kernel_tail ~= r.tail then differ(out, name, "kernel_tail", r.tail, k.kernel_tail) end
	local finishing = (k.in_flight or 0) - (k.cancellable or 0)
	if finishing > 0 then differ(out, name, "requests in flight that finish on their own", 0, finishing) end
	local pending = {}
	for _, q in ipairs(k.pending) do pending[tonumber(q.obj)] = q end
	for _, c in ipairs(r:captured()) do
		local q = pending[tonumber(c.obj)]
		if not q then
			differ(out, name, "captured request " .. c.obj, "in flight", "not in flight")
		elseif q.data ~= c.data then
			differ(out, name, "captured request " .. c.obj .. " data", c.data, q.data)
		end
		pending[tonumber(c.obj)] = nil
	end
	local left = {}
	for obj in pairs(pending) do left[#left + 1] = obj end
	table.sort(left)
	for _, obj in ipairs(left) do
		differ(out, name, "request in flight " .. hex(obj), "not in the image", "in flight")
	end
end

-- img_rings: the image's rings; live: { [addr] = snapshot } of the
-- process; kv: the kernel view by address, or nil (kernel side unchecked).
-- Returns the list of differences.
function M.compare(img_rings, live, kv)
	local out, seen = {}, {}
	for _, r in ipairs(img_rings) do
		local name = hex(r.addr)
		seen[r.addr] = true
		local l = live[r.addr]
		if not l then
			differ(out, name, "ring", "present", "no AIO ring at this address")
		else
			ring_side(out, name, r, l)
			local k = kv and kv[r.addr]
			if kv and not k then
				differ(out, name, "kernel context", "present", "the kernel has no context here")
			elseif k then
				kernel_side(out, name, r, k)
			end
		end
	end
	local extra = {}
	for addr in pairs(live) do
		if not seen[addr] then extra[#extra + 1] = addr end
	end
	table.sort(extra)
	for _, addr in ipairs(extra) do differ(out, hex(addr), "ring", "not in the image", "present") end
	return out
end

-- Compare process pid's rings with image img (aiotk.verify): read with the
-- process stopped, ring side and kernel side from one consistent reading.
-- Returns the differences and { kernel_view, kernel_view_error,
-- stopped_ns }, or nil, message, code.
function M.verify_process(pid, img)
	local fit, ferr, fcode = core.check_process(pid)
	if not fit then return nil, ferr, fcode end
	kernel.prepare(pid)
	local live, kv, why, stopped, urings
	local has_urings = img.nurings > 0 or (process.uring_map_count(pid) or 0) > 0
	local ok, err, code = process.with_process(pid, function(t)
		stopped = t
		if has_urings then
			local uerr, ucode
			urings, uerr, ucode = kernel.urings_stopped(t)
			if not urings then return nil, "its io_uring instances: " .. uerr, ucode end
		end
		for _ = 1, 8 do
			local maps, e, c = t:rings()
			if not maps then return nil, e, c end
			live = {}
			for _, m in ipairs(maps) do
				local ring, e2, c2 = t:snapshot(m.addr, false, m.ring_len)
				if not ring then return nil, e2, c2 end
				live[m.addr] = ring
			end
			kv, why = kernel.read(pid)
			local list = {}
			for _, r in pairs(live) do list[#list + 1] = r end
			if not kv or process.tails_agree(list, kv) then return true end
		end
		return nil, "ring tails kept moving while the process was stopped", "in_flight"
	end)
	if not ok then return nil, err, code end
	local diffs = M.compare(img:rings(), live, kv)
	if urings then
		require("aiotk.uring_verify").compare(diffs, img:urings(),
			function(i, j) return img:uring_memory(i, j) end, urings:list(),
			function(i, j) return urings:memory(i, j) end)
	end
	return diffs, { kernel_view = kv ~= nil, kernel_view_error = not kv and why or nil,
		stopped_ns = stopped.stopped_ns }
end

return M
