-- aiotk ring-report: how full each AIO ring of a process is, and what is in flight
-- A user's own command, as an example: copy it into ~/.config/aiotk/scripts
-- (or a directory on $AIOTK_PATH) and run `aiotk ring-report -p PID`. It
-- reads the process without stopping it (aiotk.view), so it is safe to run
-- against a busy database; the first comment line is what `aiotk --help`
-- lists, and the return value is the exit code.
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk ring-report", "Per AIO ring of a process: unreaped events, how " ..
	"full the ring is against what this host lets be outstanding, requests in flight.")
parser:option("-p --pid", "the process"):convert(cmd.pid):count(1)
parser:option("--warn", "exit 3 when a ring is fuller than this percentage", "80"):convert(tonumber)
cmd.json_flag(parser)
local args = parser:parse({ ... })

local view, err = aiotk.view(args.pid)
if not view then return cmd.fail("ring-report", err) end
local rows, worst = aiotk.array(), 0
for i, r in ipairs(view.rings) do
	local unreaped = (r.tail - r.head) % r.nr
	local capacity = r.n and aiotk.geometry(r.n).capacity or r.nr - 1
	local full = 100 * (unreaped + (r.in_flight or 0)) / capacity
	worst = math.max(worst, full)
	rows[i] = { addr = r.addr, unreaped = unreaped, in_flight = r.in_flight or aiotk.null,
		capacity = capacity, percent_full = math.floor(full + 0.5) }
end
if args.json then
	print(aiotk.json { pid = args.pid, kernel_view = view.kernel_view, rings = rows })
else
	for _, r in ipairs(rows) do
		print(string.format("%s  %6d unreaped  %6s in flight  %3d%% of %d", r.addr, r.unreaped,
			r.in_flight == aiotk.null and "?" or tostring(r.in_flight), r.percent_full, r.capacity))
	end
	if not view.kernel_view then print("(no kernel view: " .. view.kernel_view_error .. ")") end
end
return worst > args.warn and 3 or 0
