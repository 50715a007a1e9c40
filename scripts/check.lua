-- aiotk check: will these rings restore on that host? (touches nothing)
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local plans = require "aiotk.plan"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk check",
	"For every ring of an aiotk image (-D) or a CRIU dump (--criu), say whether and how it " ..
	"restores on a host (this one unless told): exactly with which io_setup n, grown in " ..
	"place by how many bytes, or why not, as the policy decides. For CRIU dumps also " ..
	"whether CRIU's own restore would. Exit 0: every ring restores exactly; 3: restorable " ..
	"under the policy (grow, skip, raise aio-max-nr), or CRIU dump over budget; 4: impossible.")
parser:mutex(parser:option("-D --dir", "aiotk image directory"),
	parser:option("--criu", "CRIU dump directory"))
hostmodel.options(parser)
cmd.policy_option(parser)
parser:flag("--json", "machine-readable output")
local args = parser:parse({ ... })
if not args.dir and not args.criu then parser:error("give -D DIR or --criu DIR") end

local host, herr = hostmodel.from_args(args)
if not host then return cmd.fail("check", herr) end

if args.dir then
	local policy, perr = cmd.load_policy(args)
	local img, err = aiotk.read_image(args.dir)
	if not policy or not img then
		return cmd.fail("check", perr or err, policy and 1 or 2)
	end
	local plan = plans.make(img:rings(), host, policy)
	local verdict = plans.verdict(plan)
	if args.json then
		local out = aiotk.array()
		for i, st in ipairs(plan.steps) do
			out[i] = { addr = string.format("0x%x", st.addr), ring_len = st.ring_len, action = st.action,
				n = st.n, grow_to = st.grow_to, grow_bytes = st.grow_bytes, reason = st.reason,
				text = plans.describe(st) }
		end
		print(aiotk.json { host = host, rings = out, budget = plan.budget, exit = verdict })
		return verdict
	end
	print("for " .. hostmodel.describe(host))
	for _, st in ipairs(plan.steps) do
		print(string.format("ring 0x%x (%d bytes, %d events): %s", st.addr, st.ring_len, st.events,
			plans.describe(st)))
	end
	local b = plan.budget
	print(string.format("budget: needs %d of fs.aio-max-nr, %d free%s", b.needed, b.free,
		b.action == "raise" and string.format(" (the policy raises it by %d)", b.raise_by) or
		b.action == "fail" and " (not enough)" or ""))
	return verdict
end

-- An aiotk image is a CRIU-like list of processes with no nr_req.
local function procs_of_image(dir)
	local img, err = aiotk.read_image(dir)
	if not img then return nil, err end
	local rings = {}
	for _, r in ipairs(img:rings()) do rings[#rings + 1] = { ring = r, nr_req = r.n ~= 0 and r.n or nil } end
	return { { pid = img.pid, rings = rings } }
end

local criu = require "aiotk.criu"
local procs, err
if args.criu then procs, err = criu.read(args.criu) else procs, err = procs_of_image(args.dir) end
if not procs then return cmd.fail("check", err) end
for _, p in ipairs(procs) do
	for _, c in ipairs(p.rings) do c.nr_req = c.nr_req or assert(aiotk.min_n(c.ring.ring_len)) end
end
local rows = criu.check(procs, host)

local worst = 0
for _, row in ipairs(rows) do
	local code = row.aiotk:match("^exact") and 0 or row.aiotk:match("^impossible") and 4 or 3
	worst = math.max(worst, code)
	row.exact = code == 0
end

if args.json then
	local out = aiotk.array()
	for i, row in ipairs(rows) do
		out[i] = { pid = row.pid, addr = string.format("0x%x", row.addr), ring_len = row.ring_len,
			n = row.n, aiotk = row.aiotk, exact = row.exact, criu = args.criu and row.criu or nil,
			nr_req = args.criu and row.nr_req or nil }
	end
	print(aiotk.json { host = host, rings = out })
	return worst
end

print("for " .. hostmodel.describe(host))
for _, row in ipairs(rows) do
	print(string.format("ring 0x%x (%d bytes%s): aiotk %s", row.addr, row.ring_len,
		row.pid and row.pid ~= 0 and (", pid " .. row.pid) or "", row.aiotk))
	if args.criu then print(string.format("    CRIU (nr_req %d): %s", row.nr_req, row.criu)) end
end
return worst
