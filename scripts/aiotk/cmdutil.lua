-- Small pieces the shipped commands share: the --policy option, plan files.
local aiotk = require "aiotk"

local M = {}

-- "aiotk NAME: msg" on stderr; returns the exit code (default 1).
function M.fail(name, msg, code)
	require("aiotk.log").error("aiotk " .. name .. ": ", tostring(msg))
	return code or 1
end

-- A PID option's converter: a plain positive decimal within pid_max;
-- anything else is a usage error (exit 2), never a guess.
function M.pid(s)
	local f = io.open("/proc/sys/kernel/pid_max")
	local max = f and tonumber(f:read("*l")) or 4194304
	if f then f:close() end
	if type(s) ~= "string" or not s:match("^[1-9]%d*$") or tonumber(s) >= max then
		return nil, string.format("'%s' is not a process ID (a decimal from 1 to %d)", tostring(s), max - 1)
	end
	return tonumber(s)
end

function M.json_flag(parser)
	parser:flag("--json", "machine-readable output; 64-bit values are \"0x...\" strings")
end

function M.policy_option(parser)
	parser:option("--policy", "a policy file overriding some hooks of the shipped policy " ..
		"(see scripts/examples/)")
end

-- The layered policy, or nil and the error.
function M.load_policy(args)
	local ok, p = pcall(require("aiotk.policy").current, args.policy)
	if not ok then return nil, p end
	return p
end

M.PLAN_FILE = "plan.json"

-- Plans hold addresses as "0x..." strings: JSON numbers would round them.
function M.write_plan(dir, plan)
	local out = { host = plan.host, model = plan.model, budget = plan.budget, steps = aiotk.array() }
	for i, s in ipairs(plan.steps) do
		local c = {}
		for k, v in pairs(s) do c[k] = v end
		c.addr = string.format("0x%x", s.addr)
		out.steps[i] = c
	end
	return aiotk.core.write_atomic(dir .. "/" .. M.PLAN_FILE, aiotk.json(out) .. "\n")
end

-- The plan next to the image, if there is one.
function M.read_plan(dir)
	local f = io.open(dir .. "/" .. M.PLAN_FILE)
	if not f then return nil end
	local doc, _, err = require("dkjson").decode(f:read("*a"))
	f:close()
	if type(doc) ~= "table" or type(doc.steps) ~= "table" then
		return nil, dir .. "/" .. M.PLAN_FILE .. ": not a plan (" .. tostring(err) .. ")"
	end
	for _, s in ipairs(doc.steps) do s.addr = tonumber(s.addr) end
	return doc
end

return M
