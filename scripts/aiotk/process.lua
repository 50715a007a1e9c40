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

-- Process pid's NSpid: its number in each PID namespace from the
-- outermost (this one's) in, as /proc/PID/status says; nil once gone.
local function ns_pids(pid)
	local f = io.open("/proc/" .. pid .. "/status")
	if not f then return nil end
	local s = f:read("*a")
	f:close()
	local list = {}
	for n in (s:match("\nNSpid:([^\n]*)") or tostring(pid)):gmatch("%d+") do list[#list + 1] = tonumber(n) end
	return list
end

-- Process pid (as this process sees it) as its own PID namespace numbers
-- it: what CRIU files its images under (mm-PID.img) and restores it as.
-- The same number outside containers; nil once gone.
function M.ns_pid(pid)
	local list = ns_pids(pid)
	return list and list[#list]
end

local function pid_ns(pid) return core.readlink("/proc/" .. pid .. "/ns/pid") end

-- The process this process sees as the one numbered vpid in the PID
-- namespace of process `root` (CRIU's root task: the dump's tree lives
-- there); vpid itself when root is in this namespace.
function M.host_pid(vpid, root)
	local mine = ns_pids(root)
	if not mine or #mine == 1 then return vpid end
	local ns = pid_ns(root)
	for _, name in ipairs(core.listdir("/proc") or {}) do
		local pid = tonumber(name)
		local list = pid and ns_pids(pid)
		if list and #list == #mine and list[#list] == vpid and pid_ns(pid) == ns then return pid end
	end
end

-- The policy a workflow follows: the caller's, else the layers in force.
function M.policy(opts)
	return opts.policy or require("aiotk.policy").current()
end

-- The mappings in /proc/PID/maps whose name matches pattern, read without
-- stopping the process.
local function count_maps(pid, pattern)
	local f = io.open("/proc/" .. pid .. "/maps")
	if not f then return nil end
	local n = 0
	for l in f:lines() do if l:find(pattern) then n = n + 1 end end
	f:close()
	return n
end

-- The AIO rings.
function M.ring_count(pid) return count_maps(pid, " /%[aio%]") end
-- The io_uring mappings (two or three per instance).
function M.uring_map_count(pid) return count_maps(pid, "anon_inode:%[io_uring%]") end

function M.tails_agree(rings, kv)
	for _, r in ipairs(rings) do
		local k = kv[r.addr]
		if k and k.kernel_tail ~= r.tail then return false end
	end
	return true
end

return M
