-- aiotk verify: compare a running process's rings with an image
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk verify",
	"Compare the AIO rings of a running process with an image, from the ring side (address, " ..
	"ring length, nr, head, tail, every unreaped event) and from the kernel side (io_setup's n, " ..
	"the kernel's tail, the captured requests in flight again, no other request in flight). " ..
	"The process is stopped only while it is read. Exit 0: all match; 1: differences, each " ..
	"listed; 2: usage. io_uring instances are compared by fd: ring side (the counters in ring " ..
	"memory, unreaped CQEs, the sq_array, every SQE slot) and kernel side (flags, entries, the " ..
	"kernel's sq head and cq tail, mappings, registered files and buffers, eventfd, SQPOLL, owner " ..
	"thread, requests in flight); they need the kernel view.")
parser:option("-p --pid", "the running process"):convert(cmd.pid):count(1)
parser:option("-D --dir", "image directory (holds rings.img)"):count(1)
parser:flag("--json", "machine-readable output; 64-bit values are \"0x...\" strings")
local args = parser:parse({ ... })
aiotk.core.catch_interrupts()

local img, ierr = aiotk.read_image(args.dir)
if not img then return cmd.fail("verify", ierr, 2) end
local diffs, facts = aiotk.verify_process(args.pid, img)
if not diffs then return cmd.fail("verify", facts) end

if args.json then
	print(aiotk.json {
		pid = args.pid, dir = args.dir, match = #diffs == 0, rings = img.nrings, urings = img.nurings,
		kernel_view = facts.kernel_view, kernel_view_error = facts.kernel_view_error,
		stopped_ns = facts.stopped_ns, differences = aiotk.array(diffs),
	})
	return #diffs == 0 and 0 or 1
end
if not facts.kernel_view then
	print("no kernel view (" .. facts.kernel_view_error .. "): kernel side not compared; " ..
		require("aiotk.kernel").WITHOUT)
end
for _, d in ipairs(diffs) do
	print(string.format("ring %s: %s: image %s, live %s", d.ring, d.what, tostring(d.image), tostring(d.live)))
end
print(string.format("process %d %s image %s (%d ring(s)%s%s); stopped %.3f ms", args.pid,
	#diffs == 0 and "matches" or "differs from", args.dir, img.nrings,
	img.nurings > 0 and string.format(", %d io_uring instance(s)", img.nurings) or "",
	#diffs == 0 and "" or string.format(", %d difference(s)", #diffs), facts.stopped_ns / 1e6))
return #diffs == 0 and 0 or 1
