-- Shared by the specs: where the build is, running the aiotk binary.
local core = require "aiotk.core"
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

-- Run a given aiotk binary as user nobody (uid 65534).
function M.run_as_nobody(bin, args)
	local saved = M.bin
	M.bin = bin
	local code, out, err = M.run(args, "HOME=/tmp setpriv --reuid=65534 --regid=65534 --clear-groups")
	M.bin = saved
	return code, out, err
end

-- Start the aiotk binary in the background (env: "NAME=value ..." for
-- it); returns its pid and the files its stdout and stderr go to. Its
-- parent is a shell that exits at once, so the process is not this one's
-- to reap.
function M.spawn(args, env)
	local out, err = os.tmpname(), os.tmpname()
	local p = io.popen(string.format("%s%s %s >%s 2>%s & echo $!", env and env .. " " or "", M.bin,
		args, out, err))
	local pid = tonumber(p:read("*l"))
	p:close()
	return pid, out, err
end

function M.slurp(path)
	local f = io.open(path)
	if not f then return "" end
	-- nil when the read fails: a /proc file whose process went between
	-- the open and the read (aiotk polled while it is being killed)
	local s = f:read("*a")
	f:close()
	return s or ""
end

-- A /proc/PID/status field, nil once the process is gone.
function M.status(pid, field)
	local s = M.slurp("/proc/" .. pid .. "/status")
	return s:match(field .. ":%s*([^\n]*)")
end

-- The CPU latency every request on /dev/cpu_dma_latency adds up to, in
-- us (the kernel's default when none holds it: 2000000000); nil when it
-- cannot be read (not root).
function M.cpu_latency()
	local f = io.open("/dev/cpu_dma_latency", "rb")
	local b = f and f:read(4)
	if f then f:close() end
	if not b or #b < 4 then return nil end
	local v = b:byte(1) + b:byte(2) * 256 + b:byte(3) * 65536 + b:byte(4) * 16777216
	return v >= 2 ^ 31 and v - 2 ^ 32 or v
end

-- Whether process pid holds a request on /dev/cpu_dma_latency (an open
-- descriptor of it). What the device reads is every holder's on the
-- machine at once, others' included: a check of aiotk's own hold looks
-- at aiotk's processes, not at that.
function M.holds_latency(pid)
	for _, fd in ipairs(core.listdir("/proc/" .. pid .. "/fd") or {}) do
		if core.readlink("/proc/" .. pid .. "/fd/" .. fd) == "/dev/cpu_dma_latency" then return true end
	end
	return false
end

local function descends(pid, root)
	for _ = 1, 64 do
		if pid == root then return true end
		pid = tonumber(M.status(pid, "PPid") or "0")
		if not pid or pid <= 1 then return false end
	end
	return false
end

-- The processes of root's tree (root included; orphans this subreaper
-- collects, a killed aiotk's guardian among them) that hold a request.
function M.latency_holders(root)
	local out = {}
	for _, name in ipairs(core.listdir("/proc") or {}) do
		local pid = tonumber(name)
		if pid and descends(pid, root) and M.holds_latency(pid) then out[#out + 1] = pid end
	end
	return out
end

-- Gone or a zombie: the process runs no more.
function M.ended(pid)
	local st = M.status(pid, "State")
	return st == nil or st:sub(1, 1) == "Z" or st:sub(1, 1) == "X"
end

-- Poll cond() every 0.2 ms until true or timeout_ms passed; returns whether.
function M.wait_until(cond, timeout_ms)
	local deadline = core.now_ns() + timeout_ms * 1e6
	while not cond() do
		if core.now_ns() > deadline then return false end
		core.sleep_ms(0.2)
	end
	return true
end

-- Every directory tmpdir made goes when the spec's Lua state closes
-- (busted closes it at exit; LuaJIT runs a userdata's __gc then), with
-- whatever is left in it: a spec that failed half-way, or one that
-- forgot, leaves nothing in /tmp.
local made = {}
M._tmpdirs_sentinel = newproxy(true)
getmetatable(M._tmpdirs_sentinel).__gc = function()
	for _, d in ipairs(made) do core.remove_tree(d) end
end

function M.tmpdir()
	local p = os.tmpname()
	os.remove(p)
	assert(core.mkdir(p))
	made[#made + 1] = p
	return p
end

function M.write(path, content)
	local f = assert(io.open(path, "wb"))
	f:write(content)
	f:close()
end

function M.rmdir(p) core.remove_tree(p) end

function M.is_root()
	local p = io.popen("id -u")
	local id = p:read("*l")
	p:close()
	return id == "0"
end

local workload = require "aiotk.workload"

-- A running aio_workload (see scripts/aiotk/workload.lua), remembered so
-- that reap_workloads() (after_each) kills it even when a spec fails.
M.started = {}

function M.workload(args, norandom)
	local w = assert(workload.start(args, norandom))
	M.started[#M.started + 1] = w
	return w
end

function M.reap_workloads()
	for _, w in ipairs(M.started) do w:finish() end
	M.started = {}
end

-- The set-up most specs share: a fresh directory for each test, handed to
-- set(dir), and removed after it with every workload the test started.
function M.scratch_each(set)
	local d
	-- busted's hooks live in the calling spec's environment.
	local env = getfenv(2)
	env.before_each(function() d = M.tmpdir() set(d) end)
	env.after_each(function()
		M.reap_workloads()
		M.rmdir(d)
	end)
end

-- Run a shell command; returns whether it exited 0, and its output
-- (stdout and stderr). LuaJIT's popen close does not give the status.
function M.sh(cmd)
	local p = io.popen("{ " .. cmd .. "; } 2>&1; echo \"[exit $?]\"")
	local out = p:read("*a")
	p:close()
	local code = tonumber(out:match("%[exit (%d+)%]\n?$"))
	return code == 0, (out:gsub("%[exit %d+%]\n?$", ""))
end
local sh = M.sh

-- For busted: true when program is installed, else marks the test
-- pending, saying which package brings it.
function M.need_program(pending, program, package)
	if sh("command -v " .. program) then return true end
	pending(program .. " is not installed (apt-get install " .. (package or program) .. ")")
	return false
end

-- A block device whose reads this test can hold in flight: a loop device
-- over a file of `blocks` 4096-byte blocks (block i filled with byte i+1)
-- and a blkio (cgroup v1) group limiting its reads (and with writes_too
-- its writes) to `iops` a second; with_fs, an ext4 on it mounted at d.mnt.
-- Processes join with `--join d.procs` (or by writing their pid there).
-- d:teardown() unmounts and removes the group, the loop device and the
-- file; call it on every path (busted's finally).
local disks = 0

function M.throttled_disk(blocks, iops, writes_too, with_fs)
	disks = disks + 1
	local d = { file = os.tmpname(), cgroup = string.format("/sys/fs/cgroup/blkio/aiotk-spec-%d-%d",
		core.getpid(), disks) }
	function d:teardown()
		if self.mnt then
			-- its processes were killed; the last one may take a moment to let go.
			-- One that does not (a process the test did not know of) must not
			-- leave the mount for good: detached now, gone with its last user.
			if not M.wait_until(function() return sh("umount " .. self.mnt) end, 5000) then
				sh("umount -l " .. self.mnt)
			end
			os.remove(self.mnt)
		end
		-- (a busy device goes when it is let go: losetup -d sets autoclear)
		if self.dev then sh("losetup -d " .. self.dev) end
		if self.made then
			-- its processes were killed; an exiting one leaves it a moment later
			M.wait_until(function() return os.remove(self.cgroup) end, 5000)
		end
		os.remove(self.file)
	end
	local f = assert(io.open(d.file, "wb"))
	for i = 0, blocks - 1 do f:write(string.rep(string.char((i + 1) % 256), 4096)) end
	f:close()
	local ok, out = sh("losetup -f --show " .. d.file)
	if not ok then d:teardown() error("losetup: " .. out) end
	d.dev = out:match("(/dev/loop%d+)")
	if with_fs then
		-- CRIU restores files by path, not an open block device: a file
		-- system on the throttled device, mounted for the test
		local mnt = M.tmpdir()
		local fok, fout = sh("mkfs.ext4 -q " .. d.dev .. " && mount " .. d.dev .. " " .. mnt)
		if not fok then os.remove(mnt) d:teardown() error("mkfs/mount: " .. fout) end
		d.mnt = mnt
	end
	local mm = M.slurp("/sys/block/" .. d.dev:match("loop%d+") .. "/dev"):match("(%d+:%d+)")
	d.made = core.mkdir(d.cgroup)
	if not d.made then d:teardown() error("cannot make " .. d.cgroup .. " (blkio cgroup v1 needed)") end
	d.procs = d.cgroup .. "/cgroup.procs"
	for _, dir in ipairs(writes_too and { "read", "write" } or { "read" }) do
		local lf = io.open(d.cgroup .. "/blkio.throttle." .. dir .. "_iops_device", "w")
		local written = lf and lf:write(mm .. " " .. iops .. "\n") and lf:close()
		if not written then d:teardown() error("cannot throttle " .. d.dev .. " in " .. d.cgroup) end
	end
	return d
end

return M
