-- aiotk show: print the rings saved in an image directory
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk show", "Print the rings saved in an aiotk image directory, " ..
	"or (-p) the rings of a running process as it and the kernel see them, without stopping it.")
parser:argument("dir", "image directory (holds rings.img), a CRIU dump directory (mm-PID.img, " ..
	"recognised by itself), one mm-PID.img of it, or its aiotk-rings.img (what aiotk's CRIU plugin " ..
	"recorded of each task)"):args "?"
parser:option("-D --dir", "the same as the DIR argument"):target "dir_opt"
parser:option("-p --pid", "a running process: its rings and the kernel's view of each " ..
	"(io_setup's n, the kernel's tail, requests in flight), and its io_uring instances; needs BPF " ..
	"(root)"):convert(cmd.pid)
parser:flag("--criu", "DIR is a CRIU dump directory: show its AIO rings")
parser:option("--task", "with an aiotk-rings.img: only this task's image (its number in its own PID " ..
	"namespace, as CRIU's images name it)"):convert(cmd.pid)
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

if args.dir and args.dir_opt then
	io.stderr:write("aiotk show: give the directory once (DIR or -D DIR)\n")
	return 2
end
args.dir = args.dir or args.dir_opt
if (args.pid == nil) == (args.dir == nil) then
	io.stderr:write("aiotk show: give an image directory or -p PID (one of them)\n")
	return 2
end

if args.pid then
	local v, err = aiotk.view(args.pid)
	if not v then return cmd.fail("show", err) end
	if args.json then
		print(aiotk.json(v))
		return 0
	end
	io.write(tostring(v))
	return 0
end

-- A CRIU dump needs no --criu: a directory with mm-PID.img files and no
-- rings.img, or one mm-PID.img (that process only).
local only_pid
do
	local d, pid = args.dir:match("^(.-)/?mm%-(%d+)%.img$")
	if pid then
		args.dir, only_pid, args.criu = d ~= "" and d or ".", tonumber(pid), true
	elseif not args.criu then
		-- by name only: opening rings.img could block (a FIFO)
		local names, mm = aiotk.core.listdir(args.dir) or {}, false
		for _, name in ipairs(names) do
			if name == "rings.img" then mm = false break end
			if name:match("^mm%-%d+%.img$") then mm = true end
		end
		args.criu = mm
	end
end

if args.criu then
	local criu = require "aiotk.criu"
	local procs, cerr = criu.read(args.dir)
	if not procs then
		return cmd.fail("show", cerr)
	end
	if only_pid then
		local kept = {}
		for _, p in ipairs(procs) do if p.pid == only_pid then kept[1] = p end end
		procs = kept
	end
	if args.json then
		print(aiotk.json(criu.table(procs, args.dir)))
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

local function show_image(img, name)
	print(string.format("image %s: format %d, %d ring(s), dumped on %s (%d CPUs, %d-byte pages, %s formula, aio-max-nr %d)%s",
		name, img.format, img.nrings, img.release, img.cpus, img.page_size,
		img.formula, img.aio_max_nr,
		img.pid ~= 0 and string.format(", pid %d stopped %.3f ms", img.pid, img.stopped_ns / 1e6) or ""))
	local rows = {}
	for _, r in ipairs(img:rings()) do
		rows[#rows + 1] = { pid = img.pid ~= 0 and img.pid or nil, ring = r, n = r.n ~= 0 and r.n or nil }
	end
	ring_rows(rows)
	if img.nurings > 0 then
		local uring = require "aiotk.uring"
		print(string.format("%d io_uring instance(s)", img.nurings))
		for _, u in ipairs(img:urings()) do io.write(uring.text(uring.row(u))) end
	end
end

-- A CRIU dump's aiotk-rings.img: each task's image, by its number.
local function show_pack()
	local imgs, err = aiotk.core.read_pack(args.dir)
	if not imgs then return cmd.fail("show", err) end
	local tasks, all = {}, {}
	for task in pairs(imgs) do
		all[#all + 1] = task
		if not args.task or task == args.task then tasks[#tasks + 1] = task end
	end
	table.sort(tasks)
	table.sort(all)
	if args.task and #tasks == 0 then
		return cmd.fail("show", string.format("%s holds no image of task %d (its tasks: %s)", args.dir,
			args.task, #all > 0 and table.concat(all, ", ") or "none"))
	end
	if args.json then
		local out = {}
		for i, t in ipairs(tasks) do out[i] = { task = t, image = aiotk.image_table(imgs[t]) } end
		print(aiotk.json(args.task and out[1].image or out))
		return 0
	end
	for _, t in ipairs(tasks) do show_image(imgs[t], string.format("%s, task %d", args.dir, t)) end
	return 0
end

if args.dir:match("[^/]*$") == require("aiotk.criu").PACK then return show_pack() end
if args.task then
	io.stderr:write("aiotk show: --task picks a task of a CRIU dump's " .. require("aiotk.criu").PACK .. "\n")
	return 2
end

local img, err = aiotk.read_image(args.dir)
if not img then return cmd.fail("show", err) end

if args.json then
	print(aiotk.json(aiotk.image_table(img)))
	return 0
end
show_image(img, args.dir)
return 0
