-- aiotk's CRIU plugin where the restore sees other PIDs than the dump:
-- a container under runc and under Podman (runc as its runtime), and a
-- process that is PID 1 of its own PID namespace restored by plain `criu
-- restore` into a fresh one. Each time a libaio workload with an
-- io_setup(256) ring holding unreaped events and a POLL in flight is
-- checkpointed and restored, and then: the plugin filed its image under
-- the task's number in its namespace (1, not the host's PID), the restore
-- made the ring with io_setup(256) again (the n recorded at dump, as the
-- kernel view shows it, not the smallest n of that ring size, 255), the
-- POLL was submitted again and is delivered, and the workload verifies
-- itself. Under runc and Podman the plugin is enabled only through CRIU's
-- configuration file for runc (/etc/criu/runc.conf: libdir), as a user
-- sets it up. Nothing machine-wide is left behind on any path: /etc/criu
-- is put back as it was, runc's and Podman's state, storage and runtime
-- directories live in the test's directory, and what they write outside
-- it anyway (the containers' and conmon's cgroups, the blob info cache of
-- Podman's import, the kernel view's pin and bpffs on /sys/fs/bpf) is
-- removed when this run made it.
local helper = require "helper"
local core = require "aiotk.core"
local json = require "dkjson"

local C = require "criu_helper"
local sh = helper.sh

local N = 256
local ARGS = "--tolerate-stop-eintr --ring " .. N .. ":300:100:0 --pending"
-- every runc, Podman and CRIU command ends within this
local TIMEOUT = "timeout 60 "
local ID = "aiotk-spec-" .. core.getpid()

local function exists(p)
	local f = io.open(p)
	if f then f:close() return true end
	return core.listdir(p) ~= nil
end

-- Children of this process (it is their subreaper: the shells holding a
-- container's stdout, conmon, unshare, the tasks CRIU restored) are
-- collected as they end, for up to 5 s, so none is left to PID 1, which
-- reaps nothing.
local function reap_children()
	local me = tostring(core.getpid())
	helper.wait_until(function()
		local live = false
		for _, name in ipairs(core.listdir("/proc") or {}) do
			local pid = tonumber(name)
			if pid and helper.status(pid, "PPid") == me then
				if helper.ended(pid) then core.reap(pid) else live = true end
			end
		end
		if live then core.sleep_ms(20) end
		return not live
	end, 5000)
end

-- /etc/criu/runc.conf with `content` (runc passes that file to CRIU on
-- checkpoint and restore); returns the function that puts /etc/criu back
-- as it was, to call on every path.
local function runc_conf(content)
	local conf = "/etc/criu/runc.conf"
	local had_dir = core.listdir("/etc/criu") ~= nil
	local f = io.open(conf, "rb")
	local old = f and f:read("*a")
	if f then f:close() end
	if not had_dir then assert(core.mkdir("/etc/criu")) end
	local function put_back()
		if old then helper.write(conf, old) else os.remove(conf) end
		if not had_dir then os.remove("/etc/criu") end
	end
	local ok, err = pcall(helper.write, conf, content)
	if not ok then put_back() error(err) end
	return put_back
end

-- A cgroup directory and the groups below it, deepest first (a group
-- goes once its processes are gone: an exiting one leaves a moment later).
local function remove_cgroup(p)
	for _, name in ipairs(core.listdir(p) or {}) do
		if core.listdir(p .. "/" .. name) then remove_cgroup(p .. "/" .. name) end
	end
	helper.wait_until(function() return os.remove(p) end, 5000)
end

-- Paths outside the test's directory that runc, Podman or CRIU would
-- make, parents first: the ones this run made are removed, the others
-- left. Returns the function that does it, which lists what still differs.
local function made_here(paths)
	local before = {}
	for _, p in ipairs(paths) do before[p] = exists(p) end
	return function()
		for i = #paths, 1, -1 do
			local p = paths[i]
			if not before[p] and exists(p) then
				if p:match("^/sys/fs/cgroup/") then
					remove_cgroup(p)
				else
					helper.rmdir(p)
					os.remove(p)
				end
			end
		end
		local left = {}
		for _, p in ipairs(paths) do
			if exists(p) ~= before[p] then left[#left + 1] = p end
		end
		return left
	end
end

-- The cgroup a container's runtime makes for cgroups path /name under
-- each controller (cgroup v1 and v2 side by side here), and more paths.
local function cgroups(name, more)
	local list = more or {}
	for _, c in ipairs(core.listdir("/sys/fs/cgroup") or {}) do
		list[#list + 1] = "/sys/fs/cgroup/" .. c .. "/" .. name
	end
	return list
end

-- Every mount below dir, unmounted (a container's /dev/shm under Podman's
-- storage, should a failure leave one), so dir can be removed.
local function unmount_below(dir)
	for line in helper.slurp("/proc/self/mountinfo"):gmatch("[^\n]+") do
		local at = line:match("^%d+ %d+ %S+ %S+ (%S+)")
		if at and at:sub(1, #dir + 1) == dir .. "/" then sh("umount -l " .. at) end
	end
end

-- A container's root: the workload at /aio_workload and the shared
-- libraries it loads at the paths ldd names (/dev, /proc and the rest come
-- from the runtime).
local function make_rootfs(root)
	local bin = assert(require("aiotk.workload").binary())
	local ok, out = sh("ldd " .. bin)
	assert(ok, out)
	local files = { [bin] = "/aio_workload" }
	for path in out:gmatch("(/%S+) %(0x") do files[path] = path end
	for from, to in pairs(files) do
		local dst = root .. to
		local cok, cout = sh(string.format("mkdir -p %s && cp -L %s %s", dst:gsub("/[^/]+$", ""), from, dst))
		assert(cok, cout)
	end
end

-- The process's PIDs in each PID namespace it is in, outermost first.
local function ns_pids(pid) return ((helper.status(pid, "NSpid") or ""):gsub("%s+", " ")) end

-- What each case proves once restored. c: dumped (the host's PID at dump),
-- pid (the host's PID now), dump_log, restore_log, output() (what the
-- workload printed).
local function assert_restored(c)
	assert.are_not.equal(c.dumped, c.pid)
	assert.are.equal(c.pid .. " 1", ns_pids(c.pid), "PID 1 of a PID namespace of its own")
	-- the dump filed under 1, the task's number in its namespace
	assert.matches("aiotk: process " .. c.dumped .. ": 1 AIO ring%(s%) recorded in [^\n]*/aiotk%-rings%.img as task 1, " ..
		"1 request%(s%) in flight captured", c.dump_log)
	-- the restore found it: io_setup(256), not the smallest n of that ring size (255)
	assert.matches("aiotk: pid 1 ring 0x%x+: nr_req %d+ %-> " .. N .. " %(recorded at dump%)", c.restore_log)
	assert.matches("aiotk: process " .. c.pid .. ": 1 captured request%(s%) in flight again", c.restore_log)
	-- the kernel's own n for the ring, and the POLL in flight in it
	local code, out, err = helper.run("show -p " .. c.pid .. " --json")
	assert.are.equal(0, code, err)
	local doc = json.decode(out)
	assert.is_true(doc.kernel_view)
	local r = doc.rings[1]
	assert.are.same({ 1, N, 1, 300, 100 }, { #doc.rings, r.n, r.in_flight, r.kernel_tail, r.head })
	-- the workload checks header, events, the next completion and that
	-- the POLL completes with its iocb and data
	core.kill(c.pid, "USR2")
	helper.wait_until(function() return c.output():match("VERIFY [^\n]*\n") end, 10000)
	assert.are.equal("VERIFY OK 1 rings", c.output():match("(VERIFY [^\n]*)"), c.output())
end

local function wait_ready(output)
	assert(helper.wait_until(function() return output():match("READY 1 ") end, 15000),
		"the workload did not start: " .. output())
end

-- The first child of process pid.
local function child_of(pid)
	return tonumber(helper.slurp("/proc/" .. pid .. "/task/" .. pid .. "/children"):match("%d+"))
end

-- runc and Podman start CRIU without this run's environment, so the
-- plugin there does what a user's would: it pins the kernel view under
-- /sys/fs/bpf (AIOTK_KVIEW_PIN=off does not reach it), mounting bpffs if
-- none is. What this run made of that is removed at its end.
local BPFFS = "/sys/fs/bpf"
local function bpffs_state()
	local _, fs = sh("stat -f -c %T " .. BPFFS)
	local mounted = fs:match("bpf") ~= nil
	return { mounted = mounted,
		pinned = mounted and exists(BPFFS .. "/" .. core.kview_pin_name()) }
end
local function bpffs_restore(before)
	local now = bpffs_state()
	if now.pinned and not before.pinned then
		helper.run("kview --unpin --dir " .. BPFFS)
	end
	if now.mounted and not before.mounted then
		local left = {}
		for _, e in ipairs(core.listdir(BPFFS) or {}) do
			if not e:match("%.debug$") then left[#left + 1] = e end
		end
		if #left == 0 then sh("umount " .. BPFFS) end
	end
end

describe("aiotk's CRIU plugin across PID namespaces", function()
	local dir, bpffs_before
	setup(function() bpffs_before = bpffs_state() end)
	teardown(function() bpffs_restore(bpffs_before) end)
	before_each(function() dir = helper.tmpdir() end)
	after_each(function()
		reap_children()
		unmount_below(dir)
		helper.rmdir(dir)
	end)

	local function ready(...)
		if not C.need(pending) then return false end
		if not helper.is_root() then pending("needs root (runc, Podman, CRIU)") return false end
		for _, program in ipairs { ... } do
			if not helper.need_program(pending, program) then return false end
		end
		return true
	end

	it("runc: checkpoint and restore with the plugin named in /etc/criu/runc.conf; exact n, POLL delivered", function()
		if not ready("runc") then return end
		local bundle, state, img = dir .. "/bundle", dir .. "/state", dir .. "/img"
		make_rootfs(bundle .. "/rootfs")
		local ok, o = sh("runc spec --bundle " .. bundle)
		assert(ok, o)
		local config = json.decode(helper.slurp(bundle .. "/config.json"))
		config.process.terminal = false
		-- `runc spec` makes the root read-only, where CRIU 4.2's restore
		-- (mount engine v2) fails: "Can't create a temporary directory:
		-- Read-only file system"
		config.root.readonly = false
		-- one cgroup of its own under each controller's root, removed below
		config.linux.cgroupsPath = "/" .. ID
		config.process.args = { "/aio_workload" }
		for word in ARGS:gmatch("%S+") do table.insert(config.process.args, word) end
		helper.write(bundle .. "/config.json", json.encode(config, { indent = true }))
		local runc = "runc --root " .. state .. " --criu " .. C.CRIU .. " "
		local put_back = runc_conf("libdir " .. C.PLUGIN_DIR .. "\n")
		local left = made_here(cgroups(ID))
		-- Started as from a shell: stdin an empty pipe, stdout and stderr a
		-- pipe into a file, which runc hands to the container (-d) and to
		-- the restored one; CRIU carries pipes, a host file it could not.
		local function detached(cmd, out, log)
			local rc = out .. ".rc"
			local sok, so = sh(string.format("(: | { %s%s; echo $? >%s; } 2>&1 | cat >%s) " ..
				">/dev/null 2>&1 </dev/null & :", TIMEOUT, cmd, rc, out))
			assert(sok, so)
			assert(helper.wait_until(function() return helper.slurp(rc):match("%d+\n") end, 65000), cmd)
			assert(helper.slurp(rc) == "0\n", cmd .. ": " .. helper.slurp(out) .. (log and helper.slurp(log):sub(-3000) or ""))
			return function() return helper.slurp(out) end
		end
		local function host_pid()
			local sok, so = sh(runc .. "state " .. ID)
			assert(sok, so)
			return json.decode(so).pid
		end
		finally(function()
			sh(runc .. "delete -f " .. ID)
			put_back()
			assert.are.same({}, left(), "left behind")
		end)
		local output = detached(runc .. "run -d --bundle " .. bundle .. " " .. ID, dir .. "/run.out")
		wait_ready(output)
		local dumped = host_pid()
		ok, o = sh(TIMEOUT .. runc .. "checkpoint --image-path " .. img .. " " .. ID)
		local dump_log = helper.slurp(img .. "/dump.log")
		assert(ok, o .. dump_log:sub(-3000))
		assert(C.gone(dumped), "the checkpointed container's process is still there")
		output = detached(runc .. "restore -d --image-path " .. img .. " --bundle " .. bundle .. " " .. ID,
			dir .. "/restore.out", img .. "/restore.log")
		assert_restored { dumped = dumped, pid = host_pid(), dump_log = dump_log,
			restore_log = helper.slurp(img .. "/restore.log"), output = output }
	end)

	it("criu dump of PID 1 of a PID namespace, criu restore into a fresh one under a new host PID; exact n, POLL delivered", function()
		if not ready("unshare") then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		local bin = assert(require("aiotk.workload").binary())
		-- the workload is PID 1 of the new namespace and leads its own
		-- session there (CRIU dumps no session led from outside); unshare
		-- stays outside as its parent
		local ok, o = sh(string.format("unshare --pid --fork setsid sh -c 'exec %s %s >%s 2>&1 </dev/null' " ..
			">/dev/null 2>&1 </dev/null & echo $!", bin, ARGS, out))
		assert(ok, o)
		local output = function() return helper.slurp(out) end
		wait_ready(output)
		local dumped = child_of(tonumber(o:match("%d+")))
		assert(dumped, "no child of unshare")
		ok, o = C.criu("dump -t " .. dumped .. " -D " .. img, true, TIMEOUT)
		local dump_log = helper.slurp(img .. "/criu.log")
		assert(ok, o .. dump_log:sub(-3000))
		assert(C.gone(dumped), "the dumped process is still there")
		ok, o = C.criu("restore -d -D " .. img, true, TIMEOUT)
		local restore_log = helper.slurp(img .. "/criu.log")
		assert(ok, o .. restore_log:sub(-3000))
		-- restored as a child of this process (its subreaper)
		local exe = select(2, sh("realpath " .. bin)):match("[^\n]+")
		local pid
		for _, name in ipairs(core.listdir("/proc")) do
			local p = tonumber(name)
			if p and helper.status(p, "PPid") == tostring(core.getpid()) and
				core.readlink("/proc/" .. p .. "/exe") == exe then pid = p end
		end
		finally(function() if pid and not helper.ended(pid) then core.kill(pid, "KILL") end end)
		assert(pid, "no restored workload")
		assert_restored { dumped = dumped, pid = pid, dump_log = dump_log, restore_log = restore_log,
			output = output }
	end)

	it("Podman: an image from a directory, checkpoint --export, the archive moved, restore --import; exact n, POLL delivered", function()
		if not ready("podman", "runc") then return end
		-- criu for Podman and the runc it runs: found on PATH
		local bin = dir .. "/bin"
		assert(core.mkdir(bin))
		local ok, o = sh("ln -s " .. C.CRIU .. " " .. bin .. "/criu")
		assert(ok, o)
		-- storage (vfs: plain directories), state, runc's state and
		-- libpod's in the test's directory; cgroupfs without systemd here;
		-- no events journal
		local podman = string.format("PATH=%s:$PATH %spodman --root %s/storage --runroot %s/run --tmpdir %s/tmp " ..
			"--storage-driver vfs --cgroup-manager cgroupfs --events-backend none --runtime runc " ..
			"--runtime-flag root=%s/runc ", bin, TIMEOUT, dir, dir, dir, dir)
		local function inspect(field)
			local iok, io_ = sh(podman .. "container inspect --format '{{." .. field .. "}}' " .. ID)
			assert(iok, io_)
			return io_:match("[^\n]+")
		end
		local tag = "localhost/" .. ID .. ":latest"
		make_rootfs(dir .. "/rootfs")
		local put_back = runc_conf("libdir " .. C.PLUGIN_DIR .. "\n")
		-- what Podman writes outside --root and the others anyway: the
		-- blob info cache of the import, the conmon and container cgroups
		local left = made_here(cgroups(ID, { "/run/runc", "/run/containers", "/run/libpod",
			"/var/lib/containers", "/var/lib/containers/cache",
			"/var/lib/containers/cache/blob-info-cache-v1.boltdb" }))
		finally(function()
			sh(podman .. "rm -f " .. ID)
			sh(podman .. "rmi -f " .. tag)
			put_back()
			assert.are.same({}, left(), "left behind")
		end)
		ok, o = sh("tar -C " .. dir .. "/rootfs -cf " .. dir .. "/rootfs.tar . && " .. podman .. "import " ..
			dir .. "/rootfs.tar " .. tag)
		assert(ok, o)
		-- Podman's default limits (nofile 1048576, nproc 4194304) are above
		-- this machine's hard limits, which only CAP_SYS_RESOURCE may raise
		ok, o = sh(podman .. "run -d --name " .. ID .. " --network none --ulimit nofile=20000:20000 " ..
			"--ulimit nproc=4096:4096 --cgroup-parent /" .. ID .. " " .. tag .. " /aio_workload " .. ARGS)
		assert(ok, o)
		-- what the workload prints, from Podman's log of the container
		local log = inspect("HostConfig.LogConfig.Path")
		wait_ready(function() return helper.slurp(log) end)
		local dumped = tonumber(inspect("State.Pid"))
		local archive = dir .. "/here/" .. ID .. ".tar.zst"
		assert(core.mkdir(dir .. "/here"))
		ok, o = sh(podman .. "container checkpoint --keep --export " .. archive .. " " .. ID)
		local dump_log = helper.slurp(inspect("StaticDir") .. "/dump.log")
		assert(ok, o .. dump_log:sub(-3000))
		assert(C.gone(dumped), "the checkpointed container's process is still there")
		-- aiotk's image of the task travels inside the archive (Podman
		-- compresses it with zstd by default)
		ok, o = sh("tar --zstd -tf " .. archive)
		assert(ok, o)
		assert.matches("checkpoint/aiotk%-rings%.img", o)
		-- taken to another host: the container is not there, the archive
		-- arrives as a copy elsewhere
		ok, o = sh(podman .. "rm " .. ID .. " && mkdir " .. dir .. "/there && cp " .. archive .. " " .. dir ..
			"/there/ && rm " .. archive)
		assert(ok, o)
		ok, o = sh(podman .. "container restore --keep --import " .. dir .. "/there/" .. ID .. ".tar.zst")
		local restore_log = helper.slurp(inspect("StaticDir") .. "/restore.log")
		assert(ok, o .. restore_log:sub(-3000))
		log = inspect("HostConfig.LogConfig.Path")
		assert_restored { dumped = dumped, pid = tonumber(inspect("State.Pid")), dump_log = dump_log,
			restore_log = restore_log, output = function() return helper.slurp(log) end }
	end)
end)
