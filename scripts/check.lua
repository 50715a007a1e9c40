-- aiotk check: will these rings restore on that host? (touches nothing)
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local plans = require "aiotk.plan"
local criu = require "aiotk.criu"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk check",
	"For every ring of an aiotk image (-D) or a CRIU dump (--criu), say whether and how it " ..
	"restores on a host (this one unless told): exactly with which io_setup n, grown in " ..
	"place by how many bytes, or why not, as the policy decides. For CRIU dumps also " ..
	"whether CRIU's own restore would, and CRIU's restore with aiotk's plugin (aiotk_criu.so: " ..
	"nr_req set to the n recorded at dump or the smallest n, rings grown in the images where " ..
	"the policy says so and the dump leaves room); for io_uring instances: exact or rebased counters " ..
	"(the policy's uring_counters), or refused and why. With -p, for a restore into that running process: " ..
	"its layout says which rings can grow and which saved ranges are taken, and the copies of each " ..
	"relocated ring's id it holds are counted (the process is stopped for that, nothing is written). " ..
	"Exit 0: every ring restores exactly; 3: restorable under the policy (grow, relocate, skip, " ..
	"raise aio-max-nr, rebase); 4: a restore would fail.")
parser:mutex(parser:option("-D --dir", "aiotk image directory"),
	parser:option("--criu", "CRIU dump directory"))
parser:option("-p --pid", "the running process a restore of -D would go into"):convert(cmd.pid)
hostmodel.options(parser)
cmd.policy_option(parser)
parser:flag("--json", "machine-readable output")
local args = parser:parse({ ... })
if not args.dir and not args.criu then parser:error("give -D DIR or --criu DIR") end
if args.pid and not args.dir then parser:error("-p goes with -D (a restore into a running process)") end

local host, herr = hostmodel.from_args(args)
if not host then return cmd.fail("check", herr) end
local policy, perr = cmd.load_policy(args)
if not policy then return cmd.fail("check", perr, 2) end

-- What to plan: one process for an aiotk image, each process of a CRIU dump
-- (with CRIU's own verdicts beside aiotk's).
local units, uring_rows = {}, {}
if args.dir then
	local img, err = aiotk.read_image(args.dir)
	if not img then return cmd.fail("check", err) end
	units[1] = { pid = img.pid ~= 0 and img.pid or nil, rings = img:rings() }
	uring_rows = require("aiotk.uring_restore").verdicts(img, policy)
else
	local log, line = criu.uring_failure(args.criu)
	if log then
		return cmd.fail("check", string.format("the CRIU dump in %s failed on an io_uring mapping (%s: %s): " ..
			"CRIU cannot dump a process with an io_uring instance; docs/CRIU-URING.md says what it would " ..
			"need; `aiotk dump -p PID` saves the instances and `aiotk restore -p` rebuilds them", args.criu,
			log, line:match("Unknown shit.*$")), 4)
	end
	local procs, err = criu.read(args.criu)
	if not procs then return cmd.fail("check", err) end
	local recorded, rerr = criu.recorded(args.criu)
	if not recorded then return cmd.fail("check", rerr) end
	for _, p in ipairs(procs) do
		local rings, nr_req = {}, {}
		for _, c in ipairs(p.rings) do
			rings[#rings + 1] = c.ring
			nr_req[c.ring.addr] = c.nr_req
		end
		local with, with_budget = criu.plugin_verdicts(p, host, policy, recorded)
		units[#units + 1] = { pid = p.pid, rings = rings, layout = criu.layout(p), nr_req = nr_req,
			criu = criu.criu_verdicts(p, host),
			plugin = with, plugin_budget = with_budget }
	end
end

-- A plan for a CRIU dump's process (with its layout in the dump), an
-- image, or an image and process pid (-p: made with its layout, the
-- copies of each relocated ring's id counted).
local function plan_for(u)
	if not args.pid then return plans.make(u.rings, host, policy, u.layout) end
	local layout, lerr = aiotk.maps(args.pid)
	if not layout then return nil, lerr end
	local plan = plans.make(u.rings, host, policy, layout)
	local found, scanned, skipped = require("aiotk.relocate").count(args.pid, plan)
	if not found then return nil, scanned end
	plans.note_references(plan, found, scanned, policy, skipped)
	return plan
end

local verdict, rows, budgets = 0, aiotk.array(), aiotk.array()
for _, u in ipairs(units) do
	local plan, perr2 = plan_for(u)
	if not plan then return cmd.fail("check", "process " .. args.pid .. ": " .. perr2) end
	verdict = math.max(verdict, plans.verdict(plan))
	plan.budget.pid = u.pid
	budgets[#budgets + 1] = plan.budget
	for _, st in ipairs(plan.steps) do
		rows[#rows + 1] = { pid = u.pid, addr = string.format("0x%x", st.addr), ring_len = st.ring_len,
			events = st.events, action = st.action, exact = st.action == "exact", n = st.n,
			grow_to = st.grow_to, grow_bytes = st.grow_bytes, relocate_len = st.relocate_len,
			references = st.refs, pointers = st.pointers, reason = st.reason, aiotk = plans.describe(st),
			nr_req = u.nr_req and u.nr_req[st.addr], criu = u.criu and u.criu[st.addr],
			criu_with_plugin = u.plugin and u.plugin[st.addr] }
	end
end

-- io_uring instances: how a restore -p would make each (this kernel's).
for _, u in ipairs(uring_rows) do
	-- as plan.verdict rates rings: 4 cannot be restored, 3 not as saved
	verdict = math.max(verdict, u.action == "refused" and 4 or u.action == "rebase" and 3 or 0)
end
if args.json then
	print(aiotk.json { host = host, rings = rows, budget = budgets, urings = aiotk.array(uring_rows),
		exit = verdict })
	return verdict
end
print("for " .. hostmodel.describe(host))
for _, r in ipairs(rows) do
	print(string.format("ring %s (%d bytes, %d events%s): aiotk %s", r.addr, r.ring_len, r.events,
		r.pid and (", pid " .. r.pid) or "", r.aiotk))
	if r.criu then print(string.format("    CRIU (nr_req %d): %s", r.nr_req, r.criu)) end
	if r.criu_with_plugin then print("    CRIU with aiotk's plugin: " .. r.criu_with_plugin) end
end
for _, u in ipairs(uring_rows) do
	print(string.format("io_uring fd %d (%d/%d entries): aiotk %s", u.fd, u.sq_entries, u.cq_entries,
		u.action == "refused" and ("refused: " .. u.why) or string.format("%s (at most %d NOPs, %d POLL(s), %d TIMEOUT(s) and " ..
		"%d ACCEPT/RECV(s) armed again)", u.action == "exact" and "exact counters" or "rebased counters", u.nops,
		u.polls, u.timeouts, u.socks)))
end
for _, b in ipairs(budgets) do
	print(string.format("budget%s: %s%s", b.pid and (" (pid " .. b.pid .. ")") or "",
		require("aiotk.plan").budget_need(b), b.action == "raise" and string.format(" (the policy raises it by %d)", b.raise_by) or
		b.action == "fail" and " (not enough: a restore would fail)" or ""))
end
return verdict
