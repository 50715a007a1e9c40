-- aiotk restore: rebuild saved AIO rings or io_uring instances inside a running process
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk restore",
	"Rebuild the rings of an image inside a running process, at their saved addresses, " ..
	"with saved size, head, tail and events. The process makes the system calls itself " ..
	"(ptrace injection); any failure undoes everything and the process carries on. " ..
	"Follows DIR/plan.json (aiotk migrate) when present, else plans with the policy: " ..
	"filter, impossible (fail, grow, relocate, skip), budget (fail, raise), overfull, order, log. " ..
	"A relocated ring is rebuilt at a free address and every copy of its old id in the " ..
	"process's writable private memory and its threads' registers rewritten; each one is listed.")
parser:option("-p --pid", "process to restore into"):convert(cmd.pid):count(1)
parser:option("-D --dir", "image directory"):count(1)
parser:flag("--replace", "an AIO ring already at a saved address is moved aside, and destroyed " ..
	"once every ring is rebuilt (put back if the restore fails); also finishes a restore " ..
	"an interrupted aiotk left halfway")
parser:flag("--no-plan", "ignore DIR/plan.json and plan for this host now")
cmd.policy_option(parser)
cmd.json_flag(parser)
local args = parser:parse({ ... })
local parsed_ns = aiotk.core.now_ns()
aiotk.core.catch_interrupts()

local function fail(msg, code)
	return cmd.fail("restore", msg, code or 1)
end

local policy, perr = cmd.load_policy(args)
if not policy then return fail(perr, 2) end
local img, err = aiotk.read_image(args.dir)
if not img then return fail(err) end
local read_ns = aiotk.core.now_ns()
local plan, plerr = nil, nil
if not args.no_plan then plan, plerr = cmd.read_plan(args.dir) end
if plerr then return fail(plerr) end
if plan then
	plan, plerr = require("aiotk.plan").for_host(plan, assert(aiotk.host()), policy,
		args.dir .. "/" .. cmd.PLAN_FILE)
	if not plan then return fail(plerr) end
end
if img.nurings > 0 then
	if img.nrings > 0 then
		return fail(string.format("%s holds %d AIO ring(s) and %d io_uring instance(s): restoring both " ..
			"kinds in one stop is not done yet; nothing was changed", args.dir, img.nrings, img.nurings))
	end
	local ures, uerr = require("aiotk.uring_restore").restore_process(args.pid, img, { policy = policy })
	if not ures then return fail("process " .. args.pid .. ": " .. uerr) end
	if args.json then
		local list = aiotk.array()
		for i, r in ipairs(ures) do
			list[i] = { fd = r.fd, counters = r.exact and "exact" or "rebase", sq_shift = r.sq_shift,
				cq_shift = r.cq_shift, nops = r.nops, liburing_structs = #r.copies, polls = r.polls,
				timeouts = r.timeouts, socks = r.socks }
		end
		print(aiotk.json { pid = args.pid, dir = args.dir, stopped_ns = ures.stopped_ns, urings = list })
		return 0
	end
	print(string.format("restored %d io_uring instance(s) into process %d; stopped %.3f ms", #ures,
		args.pid, ures.stopped_ns / 1e6))
	return 0
end
local res, rerr = aiotk.restore_process(args.pid, img:take_rings(),
	{ replace = args.replace, policy = policy, plan = plan })
if not res then return fail("process " .. args.pid .. ": " .. rerr) end
local grown, relocated = 0, 0
for _, r in ipairs(res) do
	if r.grown then grown = grown + 1 end
	if r.relocated_from then relocated = relocated + 1 end
end
local describe_ref = require("aiotk.relocate").describe_ref
-- A rewritten reference as --json gives it.
local function ref_json(r)
	return { kind = r.kind, map = r.map, offset = r.offset, addr = r.addr and aiotk.hex(r.addr), tid = r.tid,
		reg = r.reg, old = aiotk.hex(r.old), value = aiotk.hex(r.value), where = describe_ref(r) }
end
if args.json then
	local rings = aiotk.array()
	for i, r in ipairs(res) do
		rings[i] = { addr = aiotk.hex(r.ctx), n = r.converge.n, nr = r.converge.nr,
			io_setup_calls = r.converge.calls, grown = r.grown, resubmitted = r.resubmitted or 0 }
		if r.relocated_from then
			local refs = aiotk.array()
			for k, ref in ipairs(r.refs) do refs[k] = ref_json(ref) end
			rings[i].relocated_from, rings[i].references = aiotk.hex(r.relocated_from), refs
		end
	end
	-- where the command's time went, for aiotk bench: its Lua from
	-- started_ns (CLOCK_MONOTONIC) to the arguments parsed, the image read,
	-- then restore_process's phases before and during the stop
	local phases = aiotk.array { { phase = "modules", ns = parsed_ns - aiotk.started_ns },
		{ phase = "image", ns = read_ns - parsed_ns } }
	for _, list in ipairs { res.before, res.phases } do
		for _, p in ipairs(list) do phases[#phases + 1] = p end
	end
	print(aiotk.json { pid = args.pid, dir = args.dir, stopped_ns = res.stopped_ns, rings = rings,
		started_ns = aiotk.started_ns, phases = phases, printed_ns = aiotk.core.now_ns() })
	return 0
end
print(string.format("restored %d ring(s) into process %d%s%s; stopped %.3f ms", #res, args.pid,
	grown > 0 and string.format(" (%d grown in place)", grown) or "",
	relocated > 0 and string.format(" (%d relocated)", relocated) or "", res.stopped_ns / 1e6))
for _, r in ipairs(res) do
	if r.relocated_from then
		print(string.format("ring 0x%x relocated to 0x%x: %d reference(s) rewritten", r.relocated_from, r.ctx, #r.refs))
		for _, ref in ipairs(r.refs) do print("    " .. describe_ref(ref)) end
	end
end
return 0
