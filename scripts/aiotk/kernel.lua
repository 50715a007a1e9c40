-- The kernel's view of a process's AIO contexts (core/kview.c, a BPF
-- iterator): io_setup's n, the kernel's private tail, requests in flight.
-- The BPF program is loaded once per aiotk process (about 0.1 s of
-- verification), before any process is stopped.
local core = require "aiotk.core"

local M = {}

-- The loaded viewer, or why there is none (kept, so it is said once).
M.viewer, M.why = nil, nil

-- What a command says, in one line, when it has no kernel view.
M.WITHOUT = "io_setup's n, the kernel's tail and requests in flight that never " ..
	"complete cannot be known"

function M.open()
	if not M.viewer and not M.why then
		local v, err = core.kviewer()
		M.viewer, M.why = v, err
	end
	return M.viewer, M.why
end

-- { [addr] = context } of process pid, or nil, why, code.
function M.read(pid)
	local v, why = M.open()
	if not v then return nil, why, "unsupported" end
	local list, err, code = v:read(pid)
	if not list then return nil, err, code end
	local by = {}
	for _, c in ipairs(list) do by[c.addr] = c end
	return by
end

-- Requests in flight on context c that finish on their own (disk reads
-- and writes) and those that may never (cancellable: POLL).
function M.split(c)
	local cancellable = c.cancellable or 0
	return math.max((c.in_flight or 0) - cancellable, 0), cancellable
end

return M
