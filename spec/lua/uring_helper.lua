-- The liburing workload's --lose mode (spec/workload/uring_workload.c),
-- driven as the io_uring restore specs drive it: started, its facts read
-- line by line, killed.
local core = require "aiotk.core"
local helper = require "helper"

local M = {}

M.BIN = (helper.bin:match("^(.*)/[^/]*$") or ".") .. "/uring_workload"

-- Lines "name v [v2]" read into w.facts up to the line `upto`; the
-- workload's own verdict on a restored instance ("VERIFY ...") into
-- w.verdict.
function M.read_until(w, upto)
	for line in w.pipe:lines() do
		if line == upto then return true end
		if line:find("^VERIFY ") then w.verdict = line end
		local name, v, v2 = line:match("^(%S+) (%-?%d+) ?(%-?%d*)$")
		if name then w.facts[name] = { tonumber(v), tonumber(v2), raw = v } end
	end
	error("the workload ended before " .. upto)
end

-- The workload with --lose and args, once READY; wrap: a command it runs
-- under (its program and arguments, exec'ing the workload).
function M.start(args, wrap)
	local p = assert(io.popen((wrap and wrap .. " " or "") .. M.BIN .. " --lose " .. args, "r"))
	local w = { pipe = p, facts = {} }
	M.read_until(w, "READY")
	w.pid = assert(w.facts.pid, "the workload did not start")[1]
	return w
end

function M.stop(w)
	core.kill(w.pid, "KILL")
	w.pipe:close()
end

return M
