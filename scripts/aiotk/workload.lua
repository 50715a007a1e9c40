-- Driving aio_workload, the libaio program built with aiotk (the demo, the
-- benchmarks and the specs use it): start it, signal it, read its verdict.
local core = require "aiotk.core"
local M = {}

-- A word for sh: single-quoted, any quote inside kept.
local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Where the workload binary is: $AIOTK_WORKLOAD, next to the aiotk binary
-- (build directory), or the installed libexec directory.
function M.binary()
	local env = os.getenv("AIOTK_WORKLOAD")
	if env and env ~= "" then return env end
	local dir = AIOTK_EXE_DIR or "."
	for _, p in ipairs { dir .. "/aio_workload", dir .. "/../libexec/aiotk/aio_workload" } do
		local f = io.open(p)
		if f then f:close() return p end
	end
	return nil, "aio_workload not found next to aiotk nor in libexec/aiotk (set AIOTK_WORKLOAD)"
end

local Workload = {}
Workload.__index = Workload

-- start(args[, norandom]): norandom runs it without address randomisation,
-- so two runs share one layout.
function M.start(args, norandom)
	local bin, err = M.binary()
	if not bin then return nil, err end
	local prefix = norandom and "setarch $(uname -m) -R " or ""
	-- args is a list of options (words split on spaces), bin a path
	local p = io.popen(prefix .. quote(bin) .. " " .. args .. " 2>&1", "r")
	local line = p and p:read("*l") or ""
	local pid, rest = line:match("^READY (%d+)(.*)$")
	if not pid then
		if p then p:close() end
		return nil, "workload did not start: " .. line
	end
	local addrs = {}
	for a in rest:gmatch("0x%x+") do addrs[#addrs + 1] = tonumber(a) end
	return setmetatable({ pid = tonumber(pid), pipe = p, addrs = addrs,
		pending_fd = tonumber(rest:match("pending%-fd=(%d+)")) }, Workload)
end

function Workload:signal(sig) return core.kill(self.pid, sig) end
function Workload:line() return self.pipe:read("*l") end

-- Destroy its contexts; returns "DESTROYED".
function Workload:destroy()
	self:signal("USR1")
	return self:line()
end

-- Verify itself from the inside; returns its verdict line, and it exits.
function Workload:verify()
	self:signal("USR2")
	local l = self:line()
	self:finish()
	return l
end

function Workload:finish()
	self:signal("KILL")
	if not self.closed then self.pipe:close() end
	self.closed = true
end

-- The longest freeze its --freeze-probe thread saw overlapping the
-- CLOCK_MONOTONIC window [from, to] (core.now_ns), in ns; 0 if none. The
-- probe writes a freeze once it wakes after it: waited for, 0.2 s at most.
function Workload:freeze_ns(file, from, to)
	for _ = 1, 40 do
		core.sleep_ms(5)
		local f = io.open(file)
		local longest = 0
		for a, b in (f and f:read("*a") or ""):gmatch("(%d+) (%d+)") do
			a, b = tonumber(a), tonumber(b)
			if a < to and b > from and b - a > longest then longest = b - a end
		end
		if f then f:close() end
		if longest > 0 then return longest end
	end
	return 0
end

function Workload:status(field)
	local f = io.open("/proc/" .. self.pid .. "/status")
	if not f then return nil end
	local s = f:read("*a")
	f:close()
	return s:match(field .. ":%s*([^\n]*)")
end

function Workload:state() return (self:status("State") or ""):sub(1, 1) end

function Workload:ring_count()
	local f = io.open("/proc/" .. self.pid .. "/maps")
	if not f then return 0 end
	local n = 0
	for l in f:lines() do if l:find("/%[aio%]") then n = n + 1 end end
	f:close()
	return n
end

return M
