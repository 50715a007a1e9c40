-- aiotk migrate: write the restore plan for another host next to an image
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local hostmodel = require "aiotk.hostmodel"
local plans = require "aiotk.plan"
local argparse = require "argparse"

local parser = argparse("aiotk migrate",
	"Decide, with the policy, how every ring of an image will restore on the target host " ..
	"(exact with which n, grow in place, skip, or fail) and write DIR/plan.json; " ..
	"`aiotk restore` on that host follows it. Exit codes as aiotk check.")
parser:option("-D --dir", "image directory"):count(1)
hostmodel.options(parser)
cmd.policy_option(parser)
cmd.json_flag(parser)
local args = parser:parse({ ... })

local policy, perr = cmd.load_policy(args)
if not policy then return cmd.fail("migrate", perr, 2) end
local host, herr = hostmodel.from_args(args)
local img, err = aiotk.read_image(args.dir)
if not host or not img then return cmd.fail("migrate", herr or err) end
local plan = plans.make(img:rings(), host, policy)
local ok, werr = cmd.write_plan(args.dir, plan)
if not ok then return cmd.fail("migrate", werr) end
if args.json then
	local steps = aiotk.array()
	for i, s in ipairs(plan.steps) do
		local c = {}
		for k, v in pairs(s) do c[k] = v end
		c.addr, c.describe = aiotk.hex(s.addr), plans.describe(s)
		steps[i] = c
	end
	print(aiotk.json { plan = args.dir .. "/" .. cmd.PLAN_FILE, host = host, budget = plan.budget,
		steps = steps, exit = plans.verdict(plan) })
	return plans.verdict(plan)
end
print("plan for " .. hostmodel.describe(host) .. " written to " .. args.dir .. "/" .. cmd.PLAN_FILE)
for _, s in ipairs(plan.steps) do print(string.format("  ring 0x%x: %s", s.addr, plans.describe(s))) end
return plans.verdict(plan)
