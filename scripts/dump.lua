-- aiotk dump: save the AIO rings of a running process to an image
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk dump",
	"Stop every thread of a process (ptrace, no signal), read its AIO rings, let it go, " ..
	"write the image. The image records how long the process was stopped. Policy hooks: " ..
	"filter (which rings), in_flight (requests in flight, from the kernel view: capture, " ..
	"wait, fail or record).")
parser:option("-p --pid", "process to dump"):convert(cmd.pid):count(1)
parser:option("-D --dir", "image directory to write"):count(1)
parser:flag("--area", "also save every slot of each ring, not only the live events")
parser:flag("--json", "machine-readable report: per ring what was saved and, from when the " ..
	"process was stopped, unreaped events and requests in flight")
cmd.policy_option(parser)
local args = parser:parse({ ... })
aiotk.core.catch_interrupts()

local policy, perr = cmd.load_policy(args)
if not policy then return cmd.fail("dump", perr, 2) end
local img, report = aiotk.dump_process(args.pid, args.dir, { area = args.area, policy = policy })
if not img then return cmd.fail("dump", report) end
if args.json then
	local out = aiotk.image_table(img)
	out.dir, out.waited_ms = args.dir, report.waited_ms
	out.uring_stops, out.uring_waited_ms, out.urings_at_first_stop = report.uring_stops,
		report.uring_waited_ms, report.uring_first
	for i, r in ipairs(img:rings()) do
		local at = report[r.addr] or {}
		out.rings[i].events, out.rings[i].nevents = nil, #r
		out.rings[i].unreaped_at_stop, out.rings[i].in_flight_at_stop = at.unreaped, at.in_flight
	end
	print(aiotk.json(out))
	return 0
end
print(string.format("dumped %d ring(s)%s of process %d to %s; stopped %.3f ms%s",
	img.nrings, img.nurings > 0 and string.format(" and %d io_uring instance(s)", img.nurings) or "",
	args.pid, args.dir, img.stopped_ns / 1e6,
	img.warnings ~= "" and ("; warning: " .. img.warnings) or ""))
-- Said now rather than at the restore: instances no restore can rebuild
-- (each reason once: one about them all, as too many, is every one's).
local said = {}
for _, v in ipairs(require("aiotk.uring_restore").verdicts(img, policy)) do
	if v.action == "refused" and not said[v.why] then
		said[v.why] = true
		print("cannot be restored: " .. v.why)
	end
end
return 0
