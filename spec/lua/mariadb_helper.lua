-- MariaDB (Debian's mariadbd, InnoDB on Linux native AIO) and a sysbench
-- write load for the CRIU specs: one data directory made once per run,
-- copied for each case; the server and the load run in their own network,
-- IPC and time namespaces (a loopback TCP port CRIU dumps with
-- --tcp-established; the time namespace keeps their monotonic clock going
-- on from the dump, so the load's --time counts only running time), in a
-- session of their own. Never a system instance: every file is under the
-- case's directory.
local helper = require "helper"
local core = require "aiotk.core"

local M = {}
local sh = helper.sh

M.TABLES, M.ROWS = 2, 2000
local CLIENT = "--no-defaults -uroot -h127.0.0.1 --connect-timeout=5"

-- What every server gets: small buffer pool, O_DIRECT, one libaio ring
-- (io_setup(2048) for 4 read and 4 write I/O threads), a small redo log
-- in a directory of its own (kept on the fast disk).
local function server_cmd(data, redo, run, extra)
	return table.concat({ "mariadbd --no-defaults --user=root",
		"--datadir=" .. data, "--innodb-log-group-home-dir=" .. redo,
		"--socket=" .. run .. "/sock", "--pid-file=" .. run .. "/mariadbd.pid",
		"--log-error=" .. run .. "/error.log", "--tmpdir=" .. run, "--bind-address=127.0.0.1 --port=3306",
		"--innodb-linux-aio=aio --innodb-use-native-aio=1 --innodb-flush-method=O_DIRECT",
		"--innodb-buffer-pool-size=16M --innodb-log-file-size=16M",
		"--skip-log-bin --skip-name-resolve --performance-schema=off", extra or "" }, " ")
end

-- Shell lines (in the tree's network namespace) that bring loopback up,
-- start the server in the background ($S its pid) and wait (at most 30 s)
-- until it answers.
local function start_server(data, redo, run, extra)
	return string.format([[
ip link set lo up || exit 3
%s </dev/null >/dev/null 2>&1 &
S=$!
i=0
until mariadb-admin %s ping >/dev/null 2>&1; do
	i=$((i+1)); [ $i -gt 300 ] && { kill -9 $S; exit 4; }; sleep 0.1
done]], server_cmd(data, redo, run, extra), CLIENT)
end

function M.need(pending)
	for _, p in ipairs { { "mariadbd", "mariadb-server" }, { "mariadb-install-db", "mariadb-server" },
		{ "mariadb", "mariadb-client" }, { "sysbench" }, { "ip", "iproute2" }, { "unshare", "util-linux" } } do
		if not helper.need_program(pending, p[1], p[2]) then return false end
	end
	return true
end

-- The script each tree runs (bash, inside its namespaces): the server, the
-- load, then (once the spec says go, after the throttle is lifted) CHECK
-- TABLE and a clean shutdown. Every step leaves a file the spec waits on.
local RUN = [[
R=$1; SECS=$2
# nothing of the spec's but the three standard descriptors: a file the
# spec's runner keeps writing would fail CRIU's size check at restore
for fd in $(ls /proc/$$/fd); do [ $fd -gt 2 ] && eval "exec $fd>&-"; done
exec >$R/tree.out 2>&1
%s
echo $S > $R/server
: > $R/up
sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root \
	--mysql-db=sbtest --tables=%d --table-size=%d --threads=2 --time=$SECS --report-interval=1 \
	run > $R/sysbench.out 2>&1
echo $? > $R/sysbench.rc
i=0
until [ -e $R/go ]; do i=$((i+1)); [ $i -gt 600 ] && break; sleep 0.1; done
mariadb %s -N -e 'CHECK TABLE %s' > $R/check.out 2>&1
echo $? > $R/check.rc
mariadb-admin %s shutdown > $R/shutdown.out 2>&1
wait $S
echo $? > $R/server.rc
]]

local function tables()
	local t = {}
	for i = 1, M.TABLES do t[i] = "sbtest.sbtest" .. i end
	return table.concat(t, ", ")
end

-- The data directory every case starts from, in base/{data,redo}: made by
-- mariadb-install-db, the sbtest tables prepared by sysbench, shut down
-- cleanly. Bounded by timeout(1); the server runs in a network namespace
-- of its own, so it can never meet a system instance.
function M.make_base(base)
	local data, redo = base .. "/data", base .. "/redo"
	assert(core.mkdir(base) and core.mkdir(redo))
	local ok, out = sh(string.format("timeout 60 mariadb-install-db --no-defaults --user=root " ..
		"--datadir=%s --innodb-log-group-home-dir=%s --innodb-log-file-size=16M " ..
		"--auth-root-authentication-method=normal --skip-test-db --skip-name-resolve", data, redo))
	if not ok then return nil, "mariadb-install-db: " .. out:sub(-1500) end
	helper.write(base .. "/prepare.sh", string.format([[
%s
mariadb %s -e 'CREATE DATABASE sbtest' &&
sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root \
	--mysql-db=sbtest --tables=%d --table-size=%d prepare
rc=$?
mariadb-admin %s shutdown
wait $S
exit $rc
]], start_server(data, redo, base), CLIENT, M.TABLES, M.ROWS, CLIENT))
	ok, out = sh("timeout -s KILL 60 unshare --net --ipc --pid --fork --kill-child setsid sh " .. base .. "/prepare.sh")
	if not ok then return nil, "sysbench prepare: " .. out:sub(-1500) .. helper.slurp(base .. "/error.log"):sub(-1500) end
	return true
end

-- A case: the base copied to data_parent/data (the data directory) and
-- run/redo (the redo log), run the directory of its files.
function M.new_case(base, run, data_parent)
	assert(core.mkdir(run))
	local c = { run = run, data = data_parent .. "/data", redo = run .. "/redo" }
	local ok, out = sh(string.format("cp -a %s/data %s && cp -a %s/redo %s", base, data_parent, base, run))
	assert(ok, "copying the data directory: " .. out)
	return c
end

function M.exists(path)
	local f = io.open(path)
	if f then f:close() end
	return f ~= nil
end

-- Starts the case's tree: sh running RUN in new network, IPC and time
-- namespaces and a session of its own; with procs (a cgroup's
-- cgroup.procs) in that cgroup. Returns once the server answers;
-- c.unshare, c.root (the tree's root, the one CRIU dumps) and c.server
-- are set.
function M.start(c, secs, extra, procs)
	helper.write(c.run .. "/run.sh", string.format(RUN, start_server(c.data, c.redo, c.run, extra),
		M.TABLES, M.ROWS, CLIENT, tables(), CLIENT))
	local ok, o = sh(string.format("sh -c '%sexec unshare --net --ipc --time --fork setsid bash %s/run.sh %s %d' " ..
		"</dev/null >%s/unshare.out 2>&1 & echo $!", procs and ("echo $$ > " .. procs .. "; ") or "",
		c.run, c.run, secs, c.run))
	assert(ok, o)
	c.unshare = tonumber(o:match("%d+"))
	assert(helper.wait_until(function()
		c.root = c.root or tonumber(helper.slurp("/proc/" .. c.unshare .. "/task/" .. c.unshare .. "/children"):match("%d+"))
		return M.exists(c.run .. "/up") or helper.ended(c.unshare)
	end, 40000), "the server did not start: " .. helper.slurp(c.run .. "/error.log"):sub(-2000))
	assert(not helper.ended(c.unshare), "the tree ended: " .. helper.slurp(c.run .. "/unshare.out") ..
		helper.slurp(c.run .. "/tree.out") ..
		helper.slurp(c.run .. "/error.log"):sub(-2000))
	c.server = tonumber(helper.slurp(c.run .. "/server"):match("%d+"))
	return c
end

-- Waits until the load has reported n seconds of progress.
function M.load_running(c, n, ms)
	return helper.wait_until(function()
		return helper.slurp(c.run .. "/sysbench.out"):find("%[ " .. n .. "s %]") ~= nil
	end, ms or 20000)
end

-- Limits the disk's (helper.throttled_disk) reads or writes ("read",
-- "write") to iops a second; 0 lifts the limit (bios it held go on at once).
function M.throttle(disk, dir, iops)
	local mm = helper.slurp("/sys/block/" .. disk.dev:match("loop%d+") .. "/dev"):match("(%d+:%d+)")
	local f = assert(io.open(disk.cgroup .. "/blkio.throttle." .. dir .. "_iops_device", "w"))
	assert(f:write(mm .. " " .. iops .. "\n"))
	assert(f:close())
end

-- Every live process under pid (children first), from /proc.
function M.tree(pid, out)
	out = out or {}
	for _, t in ipairs(core.listdir("/proc/" .. pid .. "/task") or {}) do
		for child in helper.slurp("/proc/" .. pid .. "/task/" .. t .. "/children"):gmatch("%d+") do
			M.tree(tonumber(child), out)
		end
	end
	out[#out + 1] = pid
	return out
end

-- Reaps every exited child of this process (orphans of a killed tree
-- come here: criu_helper made this process a subreaper), so that their
-- PIDs come free for a restore.
function M.reap_orphans()
	local me = tostring(core.getpid())
	for _, e in ipairs(core.listdir("/proc") or {}) do
		if e:match("^%d+$") and helper.status(e, "PPid") == me and helper.ended(e) then
			core.reap(tonumber(e))
		end
	end
end

-- Kills the tree under pid (and pid) and waits (at most 10 s) until every
-- process of it is gone, reaping what comes to this process: a server
-- with writes in flight takes a while to exit, and one left a zombie when
-- this process ends would go to PID 1, which never reaps it.
function M.kill_tree(pid)
	if not pid then return end
	local all = M.tree(pid)
	for _, p in ipairs(all) do core.kill(p, "KILL") end
	helper.wait_until(function()
		M.reap_orphans()
		for _, p in ipairs(all) do
			if helper.status(p, "Pid") then return false end
		end
		return true
	end, 10000)
end

-- The outcome of a case once its tree ended (or was given up on): the
-- load's exit code and output, CHECK TABLE's, the server's exit code, and
-- the InnoDB errors of its log.
function M.outcome(c)
	local r = {
		sysbench_rc = tonumber(helper.slurp(c.run .. "/sysbench.rc"):match("%d+")),
		sysbench = helper.slurp(c.run .. "/sysbench.out"),
		check_rc = tonumber(helper.slurp(c.run .. "/check.rc"):match("%d+")),
		check = helper.slurp(c.run .. "/check.out"),
		server_rc = tonumber(helper.slurp(c.run .. "/server.rc"):match("%d+")),
		log = helper.slurp(c.run .. "/error.log"),
	}
	local errors = {}
	for line in r.log:gmatch("[^\n]+") do
		if line:find("%[ERROR%] InnoDB") then errors[#errors + 1] = line end
	end
	r.innodb_errors = errors
	local ok = 0
	for _ in r.check:gmatch("\tcheck\tstatus\tOK") do ok = ok + 1 end
	r.tables_ok = ok
	return r
end

return M
