-- io_uring instances as aiotk shows, saves and checks them: the kernel's
-- names for opcodes and setup flags, which requests in flight a restore
-- can submit again, and an instance as a plain table for JSON and display
-- (64-bit values and addresses as "0x..." strings).
local render = require "aiotk.render"

local M = {}

local function hex(v) return string.format("0x%x", v) end

-- IORING_OP_* by number (include/uapi/linux/io_uring.h, Linux 6.18).
M.OPCODES = { [0] = "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD",
	"POLL_REMOVE", "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT",
	"ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE",
	"STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL",
	"SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT",
	"MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR", "GETXATTR",
	"SOCKET", "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID", "FUTEX_WAIT",
	"FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN", "RECV_ZC",
	"EPOLL_WAIT", "READV_FIXED", "WRITEV_FIXED", "PIPE" }

-- IORING_SETUP_* bits, lowest first.
M.SETUP = { "IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ", "R_DISABLED",
	"SUBMIT_ALL", "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128", "CQE32", "SINGLE_ISSUER",
	"DEFER_TASKRUN", "NO_MMAP", "REGISTERED_FD_ONLY", "NO_SQARRAY", "HYBRID_IOPOLL", "CQE_MIXED" }

function M.op_name(opcode) return M.OPCODES[opcode] or ("OP_" .. opcode) end

-- The names (list: by bit, lowest first) of the bits set in flags.
local function bit_names(list, flags)
	local out = render.array()
	for i, name in ipairs(list) do
		if math.floor(flags / 2 ^ (i - 1)) % 2 == 1 then out[#out + 1] = name end
	end
	return out
end

function M.flag_names(flags) return bit_names(M.SETUP, flags) end

-- What a mapping of the instance's file is, by its mmap offset.
function M.map_kind(offset)
	if offset == 0 then return "sq_ring" end
	if offset == 0x8000000 then return "cq_ring" end
	if offset == 0x10000000 then return "sqes" end
	if offset >= 0x80000000 then return "buf_ring", math.floor((offset - 0x80000000) / 65536) end
	return "other"
end

-- How the kernel keeps a POLL_ADD (io_uring/poll.c, io_poll_parse_events):
-- the user's mask, EPOLLONESHOT unless multishot, EPOLLET unless level,
-- and the bits it always adds (IO_POLL_UNMASK: ERR, HUP, NVAL, RDHUP).
local EPOLLONESHOT, EPOLLET = 0x40000000, 0x80000000

local function bit(v, b) return math.floor(v / b) % 2 == 1 end

-- A request's IOSQE_* flags, the low bits of the kernel's REQ_F_*.
local function sqe_flags(q)
	local f = tonumber(q.flags) or 0
	return { fixed_file = bit(f, 1), linked = bit(f, 4) or bit(f, 8), buffer_select = bit(f, 32) }
end

local ACCEPT, RECV = 13, 27
-- IORING_ACCEPT_* (MULTISHOT, DONTWAIT, POLL_FIRST). A RECV's sr->flags:
-- the user's IORING_RECVSEND_POLL_FIRST, IORING_RECV_MULTISHOT,
-- IORING_RECVSEND_BUNDLE (bits 0-10), then the kernel's own (bits 11-15),
-- among them IORING_RECV_MSHOT_LIM: a multishot with a total length.
local ACCEPT_KEPT, RECV_POLL_FIRST, RECV_MULTISHOT, RECV_USER, RECV_MSHOT_LIM = 7, 1, 2, 2048, 4096

-- Why a RECV from provided-buffer group bgid of instance u is not
-- submitted again, or nil: its group must be rebuilt with u (a buffer
-- ring, its head set back before the RECV is submitted).
local function group_unrebuilt(u, bgid)
	if not u then return "its instance's buffer groups were not given" end
	for _, b in ipairs(u.buffer_groups or {}) do
		if b.bgid == bgid then return b.unrebuilt and string.format("provided-buffer group %d: %s", bgid, b.unrebuilt) end
	end
	return (u.nbuffer_groups or 0) > #(u.buffer_groups or {}) and
		"its group is not rebuilt: the instance's provided-buffer groups were not all read" or
		"no provided-buffer group of that number is registered"
end

-- A RECV from provided buffers (buffer select, single or multishot):
-- sqe with its group, or nil and why not. Its len is the last buffer's
-- once it tried (docs/KERNEL-FACTS.md): a multishot is submitted again
-- with its length per receive (mshot_len), a single one with that len.
local function buffer_select(a, sqe, u)
	local multishot = bit(a.ioprio, RECV_MULTISHOT)
	local what = string.format("RECV from provided buffers (%s, group %d)",
		multishot and "multishot" or "buffer select", a.buf_group)
	local other = a.ioprio % RECV_USER - a.ioprio % 4
	if other ~= 0 then
		return nil, string.format("%s: its flags 0x%x (IORING_RECVSEND_BUNDLE: 0x10) are not rebuilt", what, other)
	end
	if bit(a.ioprio, RECV_MSHOT_LIM) then
		return nil, what .. " with a total length (its length left is not read): not rebuilt"
	end
	local why = group_unrebuilt(u, a.buf_group)
	if why then return nil, what .. ": " .. why end
	if multishot and not a.mshot_len then
		return nil, what .. ": saved without its length per receive (an image older than aiotk's reading of it)"
	end
	sqe.ioprio = a.ioprio % 2 * RECV_POLL_FIRST + (multishot and RECV_MULTISHOT or 0)
	sqe.len = multishot and a.mshot_len or a.len
	sqe.buffer_select, sqe.buf_group = true, a.buf_group
	return sqe
end

-- Whether q, an ACCEPT or RECV with its args, is a multishot one.
function M.multishot(q)
	local a = q.args
	return a ~= nil and (q.opcode == ACCEPT and bit(a.ioprio, 1) or q.opcode == RECV and bit(a.ioprio, RECV_MULTISHOT))
end

-- A multishot request that posted CQEs is still in the cancel table,
-- armed, but its SQE fd there is overwritten (docs/KERNEL-FACTS.md): it
-- is submitted again with the fd the process has for its socket (sqe.fd
-- set), or why not.
local function multishot_fd(q, sqe)
	if sqe.fixed_file then
		return " on a registered file: its slot is not in the kernel's record once it posted"
	end
	if (q.file_fd or -1) < 0 then return ": its socket has no fd in the process" end
	sqe.fd = q.file_fd
end

-- An ACCEPT or RECV waiting on its socket (q, with the args the view read
-- of its command data; u, its instance) as the SQE's facts, or nil and
-- why not. ACCEPT: single or multishot, into the program's addr and
-- addr_len, not into a fixed file slot. RECV: single, into the program's
-- own buffer, nothing received yet; or from provided buffers as
-- buffer_select says.
local function rebuild_socket(q, f, u)
	local name, a = M.op_name(q.opcode), q.args
	if not a then
		return nil, name .. " waiting on its file: its arguments were not read (an image of an older aiotk, " ..
			"or one beyond the view's budget of ACCEPT and RECV arguments per instance)"
	end
	if f.linked then return nil, name .. " linked to other requests" end
	local sqe = { opcode = q.opcode, user_data = q.user_data, fd = q.fd, fixed_file = f.fixed_file,
		addr = a.addr, addr2 = a.addr2, len = a.len, op_flags = a.op_flags }
	if M.multishot(q) then
		local why = multishot_fd(q, sqe)
		if why then return nil, "multishot " .. name .. why end
	end
	if q.opcode == ACCEPT then
		if a.file_slot ~= 0 then return nil, "ACCEPT into a fixed file slot (a direct descriptor): not rebuilt" end
		sqe.ioprio = a.ioprio % (ACCEPT_KEPT + 1)
		return sqe
	end
	if a.done_io > 0 then return nil, string.format("RECV with %d byte(s) received already", a.done_io) end
	if f.buffer_select or a.ioprio % RECV_USER >= RECV_MULTISHOT then return buffer_select(a, sqe, u) end
	sqe.ioprio = a.ioprio % 2 * RECV_POLL_FIRST
	return sqe
end

-- Whether a restore can submit request q (a viewer:uring reqs entry of
-- instance u) again, and what for: the SQE's facts, or nil and why not:
-- a POLL_ADD on its own (everything it needs is in the kernel's record
-- of it), an ACCEPT or RECV waiting on its socket as rebuild_socket says
-- (a RECV from provided buffers needs u, whose groups it names); anything
-- else waiting on a poll is refused by name.
function M.rebuild(q, u)
	local f = sqe_flags(q)
	if q.opcode == ACCEPT or q.opcode == RECV then return rebuild_socket(q, f, u) end
	if q.opcode ~= 6 then
		return nil, M.op_name(q.opcode) .. " waiting on its file: only POLL_ADD, ACCEPT and RECV are rebuilt"
	end
	if f.linked then return nil, "POLL_ADD linked to other requests" end
	local ev, events = q.poll_events, q.poll_events
	for _, b in ipairs { EPOLLET, EPOLLONESHOT, 0x2000, 0x20, 0x10, 0x08 } do
		if bit(events, b) then events = events - b end
	end
	return { opcode = q.opcode, user_data = q.user_data, fd = q.fd, fixed_file = f.fixed_file,
		events = events, multishot = not bit(ev, EPOLLONESHOT), level = not bit(ev, EPOLLET) }
end

-- IORING_TIMEOUT_* bits as the kernel keeps them (io_timeout_data.flags).
M.TIMEOUT_FLAGS = { "ABS", "UPDATE", "BOOTTIME", "REALTIME", "LINK_UPDATE", "ETIME_SUCCESS", "MULTISHOT" }

local function timeout_flag_names(flags) return bit_names(M.TIMEOUT_FLAGS, flags) end

-- The IORING_TIMEOUT_* bits a TIMEOUT is submitted again with: its clock,
-- ABS, ETIME_SUCCESS and MULTISHOT (UPDATE and LINK_UPDATE are
-- TIMEOUT_REMOVE's).
local function timeout_flags_kept(flags)
	local out = 0
	for _, b in ipairs { 1, 4, 8, 32, 64 } do
		if bit(flags, b) then out = out + b end
	end
	return out
end

-- Whether a restore can submit timeout t (a viewer:uring timeouts entry of
-- instance u) again, and what for: a TIMEOUT on its own, its SQE's facts
-- (ts_ns, flags, off), or nil and why (a LINK_TIMEOUT belongs to the
-- request it is linked to). Its time: an ABS one keeps its absolute
-- expiry (the moment the program named); a relative one restarts with
-- what remained at the dump (the time the process spent dumped is not
-- its to count, as CRIU restores timers); a multishot one (relative
-- only) keeps its period, the next expiry a whole period after the
-- restore. Its count: what was left (target_seq against the kernel's CQ
-- tail less the timeouts fired, as io_uring/timeout.c counts), counted
-- again from the rebuilt instance's own tail, whatever its rebase; a
-- multishot's count is its repeats left (0: unbounded).
function M.rebuild_timeout(t, u)
	if t.opcode ~= 11 then return nil, M.op_name(t.opcode) .. ": it belongs to the request it is linked to" end
	if t.clockid < 0 then return nil, "TIMEOUT without a timer the kernel view could read" end
	local multishot, abs = bit(t.flags, 64), bit(t.flags, 1)
	if multishot and not (t.ts_ns and t.ts_ns >= 0) then
		return nil, "multishot TIMEOUT saved without its period (an image older than aiotk's reading of it)"
	end
	local count = not multishot and t.off > 0 and
		math.max((t.target_seq - (u.cached_cq_tail - u.cq_timeouts)) % 2 ^ 32, 1) or 0
	local ts = abs and t.expires_ns or multishot and t.ts_ns or math.max(t.remaining_ns, 0)
	return { opcode = t.opcode, user_data = t.user_data, ts_ns = ts, flags = timeout_flags_kept(t.flags),
		off = multishot and t.repeats or count, remaining_ns = math.max(t.remaining_ns, 0),
		clockid = t.clockid, count = count, multishot = multishot, repeats = t.repeats }
end

-- An instance (viewer:uring) as a plain table for JSON and display.
function M.row(u)
	local row = { fd = u.fd, ino = u.ino, flags = u.flags, flag_names = M.flag_names(u.flags),
		have = u.have, submitter_tid = u.submitter_tid, nr_files = u.nr_files, nr_bufs = u.nr_bufs,
		in_flight = u.in_flight, eventfd = u.eventfd, personalities = u.personalities,
		restricted = u.restricted, files = render.array(), bufs = render.array(),
		reqs = render.array(), maps = render.array(), buf_rings = render.array() }
	for _, k in ipairs { "sq_entries", "cq_entries", "sq_head", "sq_tail", "cq_head", "cq_tail",
		"cached_sq_head", "cached_cq_tail", "sq_dropped", "cq_overflow", "sq_flags", "cq_flags", "cqes_off",
		"sq_array_off", "cq_timeouts", "completions_waiting", "unlisted" } do
		row[k] = u[k]
	end
	if u.sq_thread_pid then
		row.sqpoll = { tid = u.sq_thread_pid, cpu = u.sq_cpu, idle_jiffies = u.sq_thread_idle }
	end
	for i, f in ipairs(u.files) do row.files[i] = { slot = f.slot, fd = f.fd, path = f.path } end
	for i, b in ipairs(u.bufs) do row.bufs[i] = { slot = b.slot, addr = hex(b.addr), len = b.len } end
	for i, q in ipairs(u.reqs) do
		local sqe, why = M.rebuild(q, u)
		row.reqs[i] = { opcode = q.opcode, op = M.op_name(q.opcode), user_data = q.user_data,
			fd = q.fd, file_fd = q.file_fd, poll_events = q.poll_events, flags = q.flags,
			args = q.args, multishot = M.multishot(q) or nil,
			rebuildable = sqe ~= nil, why = why }
	end
	row.timeouts_in_flight, row.timeouts = u.timeouts_in_flight, render.array()
	for i, t in ipairs(u.timeouts) do
		local sqe, why = M.rebuild_timeout(t, u)
		row.timeouts[i] = { opcode = t.opcode, op = M.op_name(t.opcode), user_data = t.user_data,
			clockid = t.clockid, remaining_ns = t.remaining_ns, flags = t.flags,
			flag_names = timeout_flag_names(t.flags), off = t.off, target_seq = t.target_seq,
			count_left = sqe and sqe.count, repeats = t.repeats, multishot = bit(t.flags, 64),
			ts_ns = t.ts_ns, expires_ns = t.expires_ns, rebuildable = sqe ~= nil, why = why }
	end
	row.ring_fds = render.array()
	for i, r in ipairs(u.ring_fds) do row.ring_fds[i] = { tid = r.tid, index = r.index } end
	row.nbuffer_groups, row.buffer_groups = u.nbuffer_groups, render.array()
	for i, b in ipairs(u.buffer_groups) do
		row.buffer_groups[i] = { bgid = b.bgid, ring = b.ring, entries = b.entries, nbufs = b.nbufs,
			head = b.head, tail = b.tail, incremental = b.incremental, user_memory = b.user_memory,
			addr = b.addr }
	end
	for i, m in ipairs(u.maps) do
		local kind, bgid = M.map_kind(m.offset)
		row.maps[i] = { start = hex(m.start), ["end"] = hex(m["end"]), offset = hex(m.offset), kind = kind,
			saved = m.saved, dontfork = m.dontfork }
		if bgid then row.buf_rings[#row.buf_rings + 1] = { bgid = bgid, addr = hex(m.start) } end
	end
	return row
end

-- An instance row as `aiotk show -p` prints it.
function M.text(r)
	local out = { string.format("fd %d: flags 0x%x (%s), sq %d entries head %d tail %d (kernel head %d), " ..
		"cq %d entries head %d tail %d (kernel tail %d), dropped %d, overflow %d\n", r.fd, r.flags,
		table.concat(r.flag_names, "|"), r.sq_entries, r.sq_head, r.sq_tail, r.cached_sq_head,
		r.cq_entries, r.cq_head, r.cq_tail, r.cached_cq_tail, r.sq_dropped, r.cq_overflow) }
	local function add(fmt, ...) out[#out + 1] = "    " .. string.format(fmt, ...) .. "\n" end
	if r.submitter_tid and r.submitter_tid ~= 0 then add("owner thread %d", r.submitter_tid) end
	if r.completions_waiting > 0 then
		add("%d completion(s) waiting for a thread to run its task work (not in the CQ ring yet)",
			r.completions_waiting)
	end
	if r.unlisted > 0 then
		add("%d request(s) in flight on no list the kernel view reads (disk reads and writes in the " ..
			"block layer or io-wq, requests linked behind another)", r.unlisted)
	end
	if r.sqpoll then add("sqpoll thread %d cpu %d idle %d jiffies", r.sqpoll.tid, r.sqpoll.cpu, r.sqpoll.idle_jiffies) end
	if r.eventfd then
		add("eventfd registered%s%s", r.eventfd.async and " (async)" or "",
			r.eventfd.fd and (": fd " .. r.eventfd.fd) or ": no fd of the process")
	end
	if r.personalities then add("personalities registered") end
	if r.restricted then add("restrictions registered") end
	for _, f in ipairs(r.files) do add("file slot %d: fd %d %s", f.slot, f.fd, f.path or "") end
	for _, b in ipairs(r.bufs) do add("buffer slot %d: %s len %d", b.slot, b.addr, b.len) end
	for _, b in ipairs(r.buf_rings) do add("buffer ring group %d at %s", b.bgid, b.addr) end
	for _, q in ipairs(r.reqs) do
		local a = q.args
		add("in flight %s user_data %s fd %d events 0x%x%s%s", q.op, q.user_data, q.fd, q.poll_events,
			a and (q.opcode == ACCEPT and string.format(" (%saddr %s addr_len %s flags 0x%x)",
				q.multishot and "multishot, " or "", a.addr, a.addr2, a.op_flags) or
				sqe_flags(q).buffer_select and string.format(" (%sprovided buffers group %d len %d msg_flags 0x%x)",
					q.multishot and "multishot, " or "", a.buf_group, q.multishot and a.mshot_len or a.len,
					a.op_flags) or
				string.format(" (buf %s len %d msg_flags 0x%x)", a.addr, a.len, a.op_flags)) or "",
			q.rebuildable and "" or (" (cannot be rebuilt: " .. q.why .. ")"))
	end
	if r.in_flight > #r.reqs then add("... %d more in flight", r.in_flight - #r.reqs) end
	for _, t in ipairs(r.timeouts) do
		add("in flight %s user_data %s: %.3f s left (clock %d)%s%s%s", t.op, t.user_data, t.remaining_ns / 1e9,
			t.clockid, #t.flag_names > 0 and (" " .. table.concat(t.flag_names, "|")) or "",
			t.multishot and string.format(", %d repeat(s) left (0: unbounded)", t.repeats) or
			t.off > 0 and string.format(", or after %d more completion(s)", t.count_left or t.off) or "",
			t.rebuildable and "" or (" (cannot be rebuilt: " .. t.why .. ")"))
	end
	if r.timeouts_in_flight > #r.timeouts then add("... %d more timeouts", r.timeouts_in_flight - #r.timeouts) end
	for _, f in ipairs(r.ring_fds) do add("registered ring fd: thread %d index %d", f.tid, f.index) end
	for _, b in ipairs(r.buffer_groups) do
		if b.ring then
			add("buffer ring group %d: %d entries, head %d tail %d (%d available)%s%s", b.bgid, b.entries, b.head,
				b.tail, (b.tail - b.head) % 65536, b.incremental and ", incremental" or "",
				b.user_memory and (", the program's memory at " .. (b.addr or "an address not found"))
				or ", the kernel's memory (mmapped)")
		else
			add("provided buffers group %d: %d buffer(s)", b.bgid, b.nbufs)
		end
	end
	for _, m in ipairs(r.maps) do
		add("map %s-%s offset %s %s%s%s", m.start, m["end"], m.offset, m.kind,
			m.dontfork and " MADV_DONTFORK" or "", m.saved and string.format(" (%d bytes saved)", m.saved) or "")
	end
	return table.concat(out)
end

return M
