-- Stopping a process, and what its dump and restore share: the process
-- is stopped only while fn runs and let go whatever fn does; the policy
-- in force; the rings its maps show; whether ring tails read while it is
-- stopped agree with the kernel's.
--
-- Error convention: nil, message, code (code: "budget", "occupied",
-- "image", "stuck", "interrupted", ...).
local core = require "aiotk.core"

local M = {}

-- Run fn(target) with process pid stopped; it is let go whatever fn does.
function M.with_process(pid, fn, opts)
	local t, err, code = core.attach(pid, opts)
	if not t then return nil, err, code end
	local results = { n = 0 }
	local function pack(...) results = { n = select("#", ...), ... } end
	pack(pcall(fn, t))
	local ok, derr, dcode = t:detach()
	if not results[1] then error(results[2], 0) end
	if not ok and results[2] then return nil, derr, dcode end
	return unpack(results, 2, results.n)
end

-- The policy a workflow follows: the caller's, else the layers in force.
function M.policy(opts)
	return opts.policy or require("aiotk.policy").current()
end

-- The AIO rings in /proc/PID/maps, read without stopping the process.
function M.ring_count(pid)
	local f = io.open("/proc/" .. pid .. "/maps")
	if not f then return nil end
	local n = 0
	for l in f:lines() do if l:find(" /%[aio%]") then n = n + 1 end end
	f:close()
	return n
end

function M.tails_agree(rings, kv)
	for _, r in ipairs(rings) do
		local k = kv[r.addr]
		if k and k.kernel_tail ~= r.tail then return false end
	end
	return true
end

return M
