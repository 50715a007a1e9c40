-- Shared by the specs: where the build is, running the aiotk binary.
local M = {}

M.bin = os.getenv("AIOTK_BIN") or "build/aiotk"

-- Run the aiotk binary; returns exit code, stdout, stderr.
function M.run(args, env)
	local out, err = os.tmpname(), os.tmpname()
	local cmd = string.format("%s %s %s >%s 2>%s", env or "", M.bin, args, out, err)
	local ok, _, code = os.execute(cmd)
	-- LuaJIT's os.execute returns the raw wait status.
	if type(ok) == "number" then code = ok >= 256 and math.floor(ok / 256) or ok end
	local function slurp(p)
		local f = io.open(p)
		local s = f:read("*a")
		f:close()
		os.remove(p)
		return s
	end
	return code, slurp(out), slurp(err)
end

function M.tmpdir()
	local p = os.tmpname()
	os.remove(p)
	assert(os.execute("mkdir -p " .. p) == 0)
	return p
end

function M.write(path, content)
	local f = assert(io.open(path, "wb"))
	f:write(content)
	f:close()
end

function M.rmdir(p) os.execute("rm -rf " .. p) end

function M.is_root()
	local p = io.popen("id -u")
	local id = p:read("*l")
	p:close()
	return id == "0"
end

M.workload_bin = os.getenv("AIOTK_WORKLOAD") or "build/aio_workload"

-- A running aio_workload (spec/workload/aio_workload.c). `norandom` runs
-- it without address randomisation, so two runs share one layout.
local Workload = {}
Workload.__index = Workload

function M.workload(args, norandom)
	local prefix = norandom and "setarch $(uname -m) -R " or ""
	local p = assert(io.popen(prefix .. M.workload_bin .. " " .. args .. " 2>&1", "r"))
	local line = p:read("*l") or ""
	local pid, rest = line:match("^READY (%d+)(.*)$")
	assert(pid, "workload did not start: " .. line)
	local addrs = {}
	for a in rest:gmatch("0x%x+") do addrs[#addrs + 1] = tonumber(a) end
	local w = setmetatable({ pid = tonumber(pid), pipe = p, addrs = addrs }, Workload)
	M.started[#M.started + 1] = w
	return w
end

-- Every workload a spec started: killed and reaped by M.reap_workloads()
-- (after_each), so a failed spec leaves no process or AIO context behind.
M.started = {}

function M.reap_workloads()
	for _, w in ipairs(M.started) do
		if not w.closed then w:finish() end
	end
	M.started = {}
end

function Workload:signal(sig) os.execute("kill -" .. sig .. " " .. self.pid .. " 2>/dev/null") end
function Workload:line() return self.pipe:read("*l") end

function Workload:destroy()
	self:signal("USR1")
	return self:line()
end

-- Ask it to verify itself; returns its verdict line.
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
	local n = 0
	for l in f:lines() do if l:find("/%[aio%]") then n = n + 1 end end
	f:close()
	return n
end

return M
