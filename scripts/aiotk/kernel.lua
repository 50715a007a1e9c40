-- The kernel's view of a process's AIO contexts (core/aio/kview/kview.c, a BPF
-- iterator): io_setup's n, the kernel's private tail, requests in flight.
-- The BPF programs are opened once per aiotk process, before any process
-- is stopped: from their pin (about 1 ms), or loaded (about 0.25 s) and
-- pinned for the next command (core/kview/viewer.c; the policy's
-- kview_pin says where, or that they are not kept).
local core = require "aiotk.core"

local M = {}

-- The loaded viewer, or why there is none (kept, so it is said once).
M.viewer, M.why = nil, nil

-- What a command says, in one line, when it has no kernel view.
M.WITHOUT = "io_setup's n, the kernel's tail and requests in flight that never " ..
	"complete cannot be known"

-- Where the programs are kept between commands, and whether bpffs may be
-- mounted there: $AIOTK_KVIEW_PIN (a directory, or "off") over the
-- policy's kview_pin and kview_pin_mount (policy.lua). nil: not kept.
function M.pin_opts(policy)
	local env = os.getenv("AIOTK_KVIEW_PIN")
	if not policy then
		local ok, p = pcall(require("aiotk.policy").current)
		policy = ok and p or require("aiotk.policy")
	end
	local dir = policy.kview_pin
	if env and env ~= "" then dir = env ~= "off" and env end
	if not dir then return nil end
	return { pin = dir, mount = policy.kview_pin_mount }
end

-- The viewer (policy: the command's, else the layers in force decide
-- where its programs are kept).
function M.open(policy)
	if not M.viewer and not M.why then
		local v, err = core.kviewer(M.pin_opts(policy))
		M.viewer, M.why = v, err
	end
	return M.viewer, M.why
end

-- The viewer opened, its iterator for process pid made and read once,
-- before pid is stopped: the reads made while it is stopped then cost
-- less (the first read of a command took 30-60 us here, the next 14).
function M.prepare(pid, policy)
	local v = M.open(policy)
	if v and v:prepare(pid) then v:read(pid) end
	return v
end

-- { [addr] = context } of process pid, or nil, why, code.
function M.read(pid)
	local v, why = M.open()
	if not v then return nil, why, "unsupported" end
	local list, err, code = v:read(pid)
	if not list then return nil, err, code end
	return M.by_addr(list)
end

-- { [addr] = context } of a list of contexts.
function M.by_addr(list)
	local by = {}
	for _, c in ipairs(list) do by[c.addr] = c end
	return by
end

-- The kernel view of stopped target t and the rings it names, read in
-- one C call (core/aio/kview/reading.c): reading:settled() says whether nothing
-- was in flight and every ring's tail was the kernel's; reading:take()
-- gives the contexts and rings. nil without a kernel view or when the
-- read failed (a read ring by ring then says why).
function M.read_stopped(t, area)
	local v = M.open()
	return v and v:read_stopped(t, area) or nil
end

-- The io_uring instances of stopped target t with their ring memory (a
-- set kept in C: set:list(), img:add_urings(set)), or nil, why, code.
-- An instance the process holds only through its mappings (its fd
-- closed) is not in the view (the iterator walks files): named, since an
-- image without it would lose it.
function M.urings_stopped(t)
	local v, why = M.open()
	if not v then return nil, why, "unsupported" end
	local set, err, code = v:uring_stopped(t)
	if not set then return nil, err, code end
	if set:orphan_maps() > 0 then
		return nil, string.format("%d io_uring mapping(s) belong to no instance open at an fd (its fd " ..
			"closed, or a ring being torn down); aiotk sees an instance through its fd, so nothing was " ..
			"written", set:orphan_maps()), "unsupported"
	end
	return set
end

-- Requests in flight on context c that finish on their own (disk reads
-- and writes) and those that may never (cancellable: POLL).
function M.split(c)
	local cancellable = c.cancellable or 0
	return math.max((c.in_flight or 0) - cancellable, 0), cancellable
end

-- What the policy's in_flight hook is told of ring r's requests in
-- flight, from its context c (policy.lua documents the fields): the one
-- shape for a dump and for CRIU's action script.
function M.in_flight_fact(r, c)
	local finishing, cancellable = M.split(c)
	return { ring = r, addr = r.addr, count = c.in_flight or 0, finishing = finishing,
		cancellable = cancellable, pending = c.pending }
end

-- The live view as `aiotk show -p` prints it (and the REPL shows it).
local View = {}

function View.__tostring(v)
	local render = require "aiotk.render"
	local function known(x) return x ~= nil and x ~= render.null and x or "-" end
	local out = { string.format("process %d: %d AIO ring(s)%s\n", v.pid, #v.rings,
		v.kernel_view and "" or ("; no kernel view (" .. v.kernel_view_error .. "): " .. M.WITHOUT)),
		string.format("%-18s %7s %7s %7s %7s %11s %9s\n", "addr", "nr", "head", "tail", "n",
			"kernel_tail", "in_flight") }
	for _, r in ipairs(v.rings) do
		out[#out + 1] = string.format("%-18s %7s %7s %7s %7s %11s %9s\n", r.addr, r.nr or "?",
			r.head or "?", r.tail or "?", known(r.n), known(r.kernel_tail), known(r.in_flight))
		for _, q in ipairs(r.pending or {}) do
			out[#out + 1] = string.format("    pending %s obj %s data %s fd %s events 0x%x\n", q.kind,
				q.obj, q.data, q.fd or "?", q.events)
		end
	end
	if v.urings ~= render.null then
		out[#out + 1] = string.format("%d io_uring instance(s)\n", #v.urings)
		for _, u in ipairs(v.urings) do out[#out + 1] = require("aiotk.uring").text(u) end
	end
	return table.concat(out)
end

-- The io_uring instances of process pid as the live view lists them
-- (aiotk.uring.row), or nil, why, code.
function M.urings(pid)
	local v, why = M.open()
	if not v then return nil, why, "unsupported" end
	local list, err, code = v:uring(pid)
	if not list then return nil, err, code end
	local uring, render = require "aiotk.uring", require "aiotk.render"
	local rows = render.array()
	for i, u in ipairs(list) do rows[i] = uring.row(u) end
	return rows
end

-- The live view of process pid (or of a target's process), as `aiotk show
-- -p` prints it: rings from /proc/PID/maps and their headers, read without
-- stopping it, joined with the kernel's view of each context, and its
-- io_uring instances (urings, from the kernel view). 64-bit values are
-- "0x..." strings.
function M.view(pid)
	if type(pid) ~= "number" then pid = pid.pid end
	local render = require "aiotk.render"
	local rings, err, code = core.live_rings(pid)
	if not rings then return nil, err, code end
	local kv, why = M.read(pid)
	local out = { pid = pid, kernel_view = kv ~= nil, kernel_view_error = not kv and why or nil,
		rings = render.array() }
	for i, r in ipairs(rings) do
		local k = kv and kv[r.addr]
		local row = { addr = string.format("0x%x", r.addr), ring_len = r.ring_len, nr = r.nr,
			head = r.head, tail = r.tail }
		if not k then
			-- unknown without the kernel view: null in JSON, "-" in the table
			row.n, row.kernel_tail, row.in_flight = render.null, render.null, render.null
		else
			row.n, row.kernel_tail, row.in_flight = k.n, k.kernel_tail, k.in_flight
			row.cancellable = k.cancellable
			row.pending = render.array()
			for j, q in ipairs(k.pending) do
				row.pending[j] = { obj = q.obj, data = q.data, opcode = q.opcode, fd = q.fd,
					events = q.events, kind = q.kind }
			end
		end
		out.rings[i] = row
	end
	out.urings = render.null -- unknown without the kernel view
	if kv then
		local urings, uerr, ucode = M.urings(pid)
		if not urings then return nil, uerr, ucode end
		out.urings = urings
	end
	return setmetatable(out, View)
end

return M
