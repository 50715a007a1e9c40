-- Comparing a live process's io_uring instances with an image (aiotk
-- verify), matched by fd. Ring side: the counters in ring memory, every
-- unreaped CQE, the sq_array, every SQE slot (prepared SQEs not yet
-- submitted live there only). Kernel side: geometry and flags, the
-- kernel's own counters, mappings, registered files and buffers, eventfd,
-- SQPOLL and owner thread, requests and timeouts in flight, registered
-- ring fds per thread, provided-buffer groups (the kernel's head, the
-- tail). Differences have
-- aiotk.verify's shape: { ring = "io_uring fd N", what, image, live }.
-- Left out: sq_flags (the kernel sets and clears IORING_SQ_NEED_WAKEUP and
-- IORING_SQ_TASKRUN there on its own) and the SQPOLL thread's tid (a
-- rebuilt instance has a new poller).
local uring = require "aiotk.uring"

local M = {}

local function hex(v) return string.format("0x%x", v) end

local differ = require("aiotk.verify").differ

-- Little-endian unsigned integers of n bytes at byte off (0-based) of s;
-- nil past its end. u64 as "0x..." (not exact in a double).
local function uint(s, off, n)
	if not s or off + n > #s then return nil end
	local v = 0
	for i = n, 1, -1 do v = v * 256 + s:byte(off + i) end
	return v
end

local function u64hex(s, off)
	local hi, lo = uint(s, off + 4, 4), uint(s, off, 4)
	if not hi then return nil end
	return hi == 0 and hex(lo) or string.format("0x%x%08x", hi, lo)
end

local function signed(v) return v >= 2 ^ 31 and v - 2 ^ 32 or v end

local SQE128, CQE32 = 2 ^ 10, 2 ^ 11

local function has(flags, b) return math.floor(flags / b) % 2 == 1 end

-- The bytes of instance u's mapping of kind kind (i: its index in a list
-- whose memory mem(i, j) gives), or nil.
local function bytes(u, i, mem, kind)
	for j, m in ipairs(u.maps) do
		if uring.map_kind(m.offset) == kind then return mem(i, j) end
	end
end

local function cqe_text(s, off)
	return string.format("user_data %s res %d flags 0x%x", u64hex(s, off), signed(uint(s, off + 8, 4)),
		uint(s, off + 12, 4))
end

-- Each unreaped CQE of saved instance r (slots cq_head .. cq_tail) against
-- the live ring's same slot.
local function cqes(out, name, r, a, b)
	if r.cqes_off == 0 then return end -- an image from before it was recorded
	local size = has(r.flags, CQE32) and 32 or 16
	local n = (r.cq_tail - r.cq_head) % 2 ^ 32
	for k = 0, math.min(n, r.cq_entries) - 1 do
		local slot = (r.cq_head + k) % r.cq_entries
		local off = r.cqes_off + slot * size
		local x, y = a and a:sub(off + 1, off + size), b and b:sub(off + 1, off + size)
		if x ~= y then
			differ(out, name, string.format("unreaped cqe %d (slot %d)", k, slot),
				x and #x == size and cqe_text(a, off) or "missing", y and #y == size and cqe_text(b, off) or "missing")
		end
	end
end

local function sq_array(out, name, r, a, b)
	if r.sq_array_off == 0 then return end
	for slot = 0, r.sq_entries - 1 do
		local x, y = uint(a, r.sq_array_off + slot * 4, 4), uint(b, r.sq_array_off + slot * 4, 4)
		if x ~= y then differ(out, name, string.format("sq_array[%d]", slot), x or "missing", y or "missing") end
	end
end

local function sqe_text(s, off)
	return string.format("opcode %s fd %d user_data %s", uring.op_name(s:byte(off + 1)),
		signed(uint(s, off + 4, 4)), u64hex(s, off + 32))
end

-- Every SQE slot, byte for byte: the prepared SQEs past the tail are the
-- application's alone, and a rebuild writes all of them back.
local function sqes(out, name, r, a, b)
	local size = has(r.flags, SQE128) and 128 or 64
	for slot = 0, r.sq_entries - 1 do
		local off = slot * size
		local x, y = a and a:sub(off + 1, off + size), b and b:sub(off + 1, off + size)
		if x ~= y then
			differ(out, name, string.format("sqe slot %d", slot), x and #x == size and sqe_text(a, off) or "missing",
				y and #y == size and sqe_text(b, off) or "missing")
		end
	end
end

local RING_COUNTERS = { "sq_head", "sq_tail", "cq_head", "cq_tail", "sq_dropped", "cq_overflow", "cq_flags" }
local KERNEL_SCALARS = { "flags", "sq_entries", "cq_entries", "cached_sq_head", "cached_cq_tail",
	"nr_files", "nr_bufs", "in_flight", "cqes_off", "sq_array_off", "timeouts_in_flight", "nbuffer_groups",
	"completions_waiting", "unlisted" }

-- The ring side: what the application sees in ring memory.
local function ring_side(out, name, r, ri, imem, l, li, lmem)
	for _, k in ipairs(RING_COUNTERS) do
		if r[k] ~= l[k] then differ(out, name, k, r[k], l[k]) end
	end
	local cq = bytes(r, ri, imem, "cq_ring") and "cq_ring" or "sq_ring"
	cqes(out, name, r, bytes(r, ri, imem, cq), bytes(l, li, lmem, cq))
	sq_array(out, name, r, bytes(r, ri, imem, "sq_ring"), bytes(l, li, lmem, "sq_ring"))
	sqes(out, name, r, bytes(r, ri, imem, "sqes"), bytes(l, li, lmem, "sqes"))
end

-- Two lists keyed by key(x), each entry compared by fields; a key on one
-- side only is named as such.
local function keyed(out, name, what, a, b, key, fields)
	local bk = {}
	for _, x in ipairs(b) do bk[key(x)] = x end
	for _, x in ipairs(a) do
		local k, y = key(x), bk[key(x)]
		if not y then
			differ(out, name, what .. " " .. k, "present", "absent")
		else
			for _, f in ipairs(fields) do
				if x[f] ~= y[f] then differ(out, name, what .. " " .. k .. " " .. f, x[f], y[f]) end
			end
		end
		bk[k] = nil
	end
	local rest = {}
	for k in pairs(bk) do rest[#rest + 1] = k end
	table.sort(rest, function(p, q) return tostring(p) < tostring(q) end)
	for _, k in ipairs(rest) do differ(out, name, what .. " " .. k, "absent", "present") end
end

local function map_key(m) return uring.map_kind(m.offset) .. " " .. hex(m.offset) end

-- u's timeouts as compared: what a rebuild keeps: the count and repeats
-- left (not the count given, which a rebuilt one is given anew), an ABS
-- one's expiry, a multishot one's period (not a relative one's expiry or
-- what remains, which runs down).
local function timeouts(u)
	local out = {}
	for i, t in ipairs(u.timeouts) do
		local sqe = uring.rebuild_timeout(t, u)
		local kept = has(t.flags, 1) and t.expires_ns or has(t.flags, 64) and t.ts_ns or "-"
		out[i] = { user_data = t.user_data, opcode = t.opcode, clockid = t.clockid, flags = t.flags,
			count_left = sqe and sqe.count or "-", repeats = t.repeats, time_kept = kept }
	end
	return out
end

-- u's requests in flight as compared: an ACCEPT's or RECV's arguments as
-- one text (its pointers, length, flags; not what the kernel adds in
-- its own bits of a RECV's flags); a multishot's socket by the process's
-- fd for it, a multishot RECV's length per receive (its SQE fd is
-- overwritten once it posts, a RECV's len is the last buffer's: uring.lua).
local function reqs(u)
	local out = {}
	for i, q in ipairs(u.reqs) do
		local a, multishot = q.args, uring.multishot(q)
		local fd = multishot and not has(tonumber(q.flags) or 0, 1) and q.file_fd or q.fd
		out[i] = { user_data = q.user_data, opcode = q.opcode, fd = fd, poll_events = q.poll_events,
			args = a and string.format("addr %s addr2 %s len %d flags 0x%x ioprio 0x%x slot %d group %d",
				a.addr, a.addr2, multishot and q.opcode == 27 and a.mshot_len or a.len, a.op_flags, a.ioprio % 2048, a.file_slot, a.buf_group) or "-" }
	end
	return out
end

-- The kernel side: what the kernel keeps of the instance.
local function kernel_side(out, name, r, l)
	for _, k in ipairs(KERNEL_SCALARS) do
		if r[k] ~= l[k] then differ(out, name, k, r[k], l[k]) end
	end
	if (r.have.issuer and l.have.issuer) and r.submitter_tid ~= l.submitter_tid then
		differ(out, name, "owner thread", r.submitter_tid, l.submitter_tid)
	end
	local function sqpoll(u) return u.sq_thread_pid and string.format("cpu %d idle %d", u.sq_cpu, u.sq_thread_idle) or "none" end
	if sqpoll(r) ~= sqpoll(l) then differ(out, name, "sqpoll", sqpoll(r), sqpoll(l)) end
	local function evfd(u) return u.eventfd and (u.eventfd.async and "async" or "registered") or "none" end
	if evfd(r) ~= evfd(l) then differ(out, name, "eventfd", evfd(r), evfd(l)) end
	-- which fd: where both sides know it (older images do not say)
	local rfd, lfd = r.eventfd and r.eventfd.fd, l.eventfd and l.eventfd.fd
	if rfd and lfd and rfd ~= lfd then differ(out, name, "eventfd fd", rfd, lfd) end
	for _, k in ipairs { "personalities", "restricted" } do
		if (r[k] or false) ~= (l[k] or false) then differ(out, name, k, r[k] or false, l[k] or false) end
	end
	local function maps(u)
		local m = {}
		for i, x in ipairs(u.maps) do
			m[i] = { offset = x.offset, kind = x.kind, start = x.start, ["end"] = x["end"], dontfork = x.dontfork or false }
		end
		return m
	end
	keyed(out, name, "mapping", maps(r), maps(l), map_key, { "start", "end", "dontfork" })
	keyed(out, name, "file slot", r.files, l.files, function(f) return f.slot end, { "fd", "path" })
	keyed(out, name, "buffer slot", r.bufs, l.bufs, function(b) return b.slot end, { "addr", "len" })
	keyed(out, name, "request in flight", reqs(r), reqs(l), function(q) return q.user_data end,
		{ "opcode", "fd", "poll_events", "args" })
	keyed(out, name, "timeout", timeouts(r), timeouts(l), function(t) return t.user_data end,
		{ "opcode", "clockid", "flags", "count_left", "repeats", "time_kept" })
	keyed(out, name, "registered ring fd", r.ring_fds, l.ring_fds,
		function(f) return string.format("thread %d index %d", f.tid, f.index) end, {})
	keyed(out, name, "buffer group", r.buffer_groups, l.buffer_groups, function(b) return b.bgid end,
		{ "ring", "entries", "nbufs", "head", "tail", "addr", "incremental", "user_memory" })
end

local function by_fd(list)
	local out = {}
	for i, u in ipairs(list) do out[u.fd] = i end
	return out
end

-- img_list/img_mem: the image's instances (img:urings()) and memory
-- (function(i, j) giving mapping j's bytes); live_list/live_mem the same
-- for the process. Adds the differences to out.
function M.compare(out, img_list, img_mem, live_list, live_mem)
	local live = by_fd(live_list)
	for ri, r in ipairs(img_list) do
		local name = "io_uring fd " .. r.fd
		local li = live[r.fd]
		if not li then
			differ(out, name, "instance", "present", "no io_uring at this fd")
		else
			kernel_side(out, name, r, live_list[li])
			ring_side(out, name, r, ri, img_mem, live_list[li], li, live_mem)
		end
		live[r.fd] = nil
	end
	local extra = {}
	for fd in pairs(live) do extra[#extra + 1] = fd end
	table.sort(extra)
	for _, fd in ipairs(extra) do differ(out, "io_uring fd " .. fd, "instance", "not in the image", "present") end
	return out
end

return M
