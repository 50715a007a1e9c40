-- aiotk show: print the rings saved in an image directory
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk show", "Print the rings saved in an aiotk image directory, " ..
	"or (-p) the rings of a running process as it and the kernel see them, without stopping it.")
parser:argument("dir", "image directory (holds rings.img), or a CRIU dump with --criu"):args "?"
parser:option("-p --pid", "a running process: its rings and the kernel's view of each " ..
	"(io_setup's n, the kernel's tail, requests in flight); needs BPF (root)"):convert(cmd.pid)
parser:flag("--criu", "DIR is a CRIU dump directory: show its AIO rings")
parser:flag("--json", "machine-readable output; 64-bit values are \"0x...\" strings")
parser:option("--events", "events to list per ring in the table (0: none)", "4"):convert(tonumber)
local args = parser:parse({ ... })

local function ring_rows(rings)
	print(string.format("%-6s %-18s %9s %7s %7s %7s %7s %s", "pid", "addr", "ring_len", "nr", "head", "tail", "events", "n"))
	for _, x in ipairs(rings) do
		local r = x.ring
		print(string.format("%-6s 0x%-16x %9d %7d %7d %7d %7d %s%s", x.pid or "-", r.addr, r.ring_len, r.nr,
			r.head, r.tail, #r, x.n and tostring(x.n) or "-", r.wrapped and "  wrapped" or ""))
		local shown = math.min(#r, args.events)
		for i = 1, shown do
			local e = r:event(i)
			print(string.format("    slot %-7d data %s obj %s res %d res2 %d",
				(r.head + i - 1) % r.nr, e.data, e.obj, e.res, e.res2))
		end
		if #r > shown and shown > 0 then print(string.format("    ... %d more", #r - shown)) end
	end
end

if (args.pid == nil) == (args.dir == nil) then
	io.stderr:write("aiotk show: give an image directory or -p PID (one of them)\n")
	return 2
end

-- The live view of process pid: rings from /proc/PID/maps and their
-- headers, joined with the kernel's view of each context.
local function live(pid)
	local rings, err = aiotk.core.live_rings(pid)
	if not rings then return nil, err end
	local kernel = require "aiotk.kernel"
	local kv, why = kernel.read(pid)
	local out = { pid = pid, kernel_view = kv ~= nil, kernel_view_error = not kv and why or nil,
		rings = aiotk.array() }
	for i, r in ipairs(rings) do
		local k = kv and kv[r.addr]
		local row = { addr = aiotk.hex(r.addr), ring_len = r.ring_len, nr = r.nr, head = r.head,
			tail = r.tail }
		if k then
			row.n, row.kernel_tail, row.in_flight = k.n, k.kernel_tail, k.in_flight
			row.cancellable = k.cancellable
			row.pending = aiotk.array()
			for j, q in ipairs(k.pending) do
				row.pending[j] = { obj = q.obj, data = q.data, opcode = q.opcode, fd = q.fd,
					events = q.events, kind = q.kind }
			end
		end
		out.rings[i] = row
	end
	return out
end

if args.pid then
	local v, err = live(args.pid)
	if not v then return cmd.fail("show", err) end
	if args.json then
		print(aiotk.json(v))
		return 0
	end
	print(string.format("process %d: %d AIO ring(s)%s", v.pid, #v.rings,
		v.kernel_view and "" or ("; no kernel view (" .. v.kernel_view_error .. "): " ..
		require("aiotk.kernel").WITHOUT)))
	print(string.format("%-18s %7s %7s %7s %7s %11s %9s", "addr", "nr", "head", "tail", "n",
		"kernel_tail", "in_flight"))
	for _, r in ipairs(v.rings) do
		print(string.format("%-18s %7s %7s %7s %7s %11s %9s", r.addr, r.nr or "?", r.head or "?",
			r.tail or "?", r.n or "-", r.kernel_tail or "-", r.in_flight or "-"))
		for _, q in ipairs(r.pending or {}) do
			print(string.format("    pending %s obj %s data %s fd %s events 0x%x", q.kind, q.obj, q.data,
				q.fd or "?", q.events))
		end
	end
	return 0
end

if args.criu then
	local criu = require "aiotk.criu"
	local procs, cerr = criu.read(args.dir)
	if not procs then
		return cmd.fail("show", cerr)
	end
	if args.json then
		print(aiotk.json(criu.table(procs)))
		return 0
	end
	local rows = {}
	for _, p in ipairs(procs) do
		for _, c in ipairs(p.rings) do
			rows[#rows + 1] = { pid = p.pid, ring = c.ring, n = "nr_req " .. c.nr_req }
		end
	end
	print(string.format("CRIU dump %s: %d process(es), %d AIO ring(s)", args.dir, #procs, #rows))
	ring_rows(rows)
	return 0
end

local img, err = aiotk.read_image(args.dir)
if not img then return cmd.fail("show", err) end

if args.json then
	print(aiotk.json(aiotk.image_table(img)))
	return 0
end

print(string.format("image %s: format %d, %d ring(s), dumped on %s (%d CPUs, %d-byte pages, %s formula, aio-max-nr %d)%s",
	args.dir, img.format, img.nrings, img.release, img.cpus, img.page_size,
	img.formula, img.aio_max_nr,
	img.pid ~= 0 and string.format(", pid %d stopped %.3f ms", img.pid, img.stopped_ns / 1e6) or ""))
local rows = {}
for _, r in ipairs(img:rings()) do
	rows[#rows + 1] = { pid = img.pid ~= 0 and img.pid or nil, ring = r, n = r.n ~= 0 and r.n or nil }
end
ring_rows(rows)
return 0
