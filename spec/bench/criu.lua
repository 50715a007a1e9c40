-- CRIU's own clocks, plain and with aiotk's plugin, in one run: frozen_time
-- (how long `criu dump` keeps the tasks frozen) and restore_time, read from
-- CRIU's stats-dump and stats-restore images with crit, medians of
-- alternating pairs, for a process with two io_setup(256) rings and for a
-- tree of 20 processes with a ring each; with how long the tasks were
-- held for the dump itself and the plugin's own clocks, from CRIU's log
-- (its time per task and at fini). Needs CRIU 4.x (criu_helper.lua
-- finds it) and root.
--   build/aiotk spec/bench/criu.lua [--reps N] [--json]
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/../lua/?.lua;" .. package.path
local argparse = require "argparse"
local json = require "dkjson"
local helper = require "helper"
local C = require "criu_helper"
local core = aiotk.core

local parser = argparse("criu.lua", "frozen_time and restore_time of real CRIU, plain and with aiotk's plugin")
parser:option("--reps", "pairs per case (medians are reported)", "7"):convert(tonumber)
parser:flag("--json", "machine-readable output")
local args = parser:parse({ ... })
assert(C.CRIU, C.WHY)
-- the plugin built beside the aiotk running this script
if AIOTK_EXE_DIR then C.PLUGIN_DIR = AIOTK_EXE_DIR .. "/criu" end
local CRIT = C.CRIU:gsub("/sbin/criu$", "/bin/crit")
local WORKLOAD = assert(require("aiotk.workload").binary())

local function median(t)
	local s = {}
	for i, v in ipairs(t) do s[i] = v end
	table.sort(s)
	return s[math.ceil(#s / 2)]
end

-- The median of a[i] / b[i] and of a[i] - b[i]: each pair ran back to
-- back, on the same machine state, which the sides' medians alone do not
-- keep (kill's RCU wait wanders by 15 ms from dump to dump here).
local function median_ratio(a, b)
	local r = {}
	for i = 1, #a do r[i] = a[i] / b[i] end
	return median(r)
end
local function median_diff(a, b)
	local d = {}
	for i = 1, #a do d[i] = a[i] - b[i] end
	return median(d)
end

-- A stats image's entry, through crit.
local function stats(img, which)
	local ok, out = helper.sh(string.format("%s decode -i %s/stats-%s", CRIT, img, which))
	assert(ok, "crit: " .. out)
	return json.decode(out).entries[1][which]
end

-- The tree to dump, in its own session, its output in dir: one workload
-- with two rings, or a shell with `procs` workloads of one ring each.
-- Returns the root's pid and a function telling whether all are ready.
local function start(dir, procs)
	local ring = "--tolerate-stop-eintr --ring 256:100:50:0"
	local cmd = procs == 1 and string.format("exec %s %s --ring 256:60:20:0 >%s/w.1", WORKLOAD, ring, dir)
		or string.format("for i in $(seq %d); do %s %s >%s/w.$i & done; wait", procs, WORKLOAD, ring, dir)
	local ok, out = helper.sh(string.format("setsid sh -c '%s' </dev/null >/dev/null 2>&1 & echo $!", cmd))
	assert(ok, out)
	local pid = tonumber(out:match("%d+"))
	assert(helper.wait_until(function()
		for i = 1, procs do
			if not helper.slurp(dir .. "/w." .. i):match("^READY") then return false end
		end
		return true
	end, 20000), "the workloads did not start")
	return pid
end

-- The session of root pid (the tree) gone: its processes reaped (they
-- end up children of this subreaper), so that every PID of the tree,
-- also as a session id, is free for CRIU's restore.
local function gone_tree(pid)
	return helper.wait_until(function()
		core.reap(-1)
		return not helper.sh("pgrep -s " .. pid .. " >/dev/null")
	end, 10000)
end

local function kill_tree(pid)
	helper.sh("pkill -KILL -s " .. pid)
	assert(gone_tree(pid), "the restored tree is still there")
end

-- The plugin's own clocks in a dump's log: its CHECKPOINT_DEVICES time
-- per task with rings (mean) and its fini's fit and stamp, in ms; both
-- inside CRIU's freeze.
local function plugin_clocks(log)
	local sum, n = 0, 0
	for ms in log:gmatch("aiotk: process %d+: [^\n]-; ([%d.]+) ms in all") do
		sum, n = sum + tonumber(ms), n + 1
	end
	local fini = tonumber(log:match("stamped in ([%d.]+) ms"))
	return n > 0 and sum / n or nil, fini
end

-- From CRIU's log: how long the tasks were held frozen for the dump
-- itself, from the end of their seizing ("Collected PID in") to their
-- release ("Unfreezing tasks"), in us. frozen_time goes on until they are
-- killed (a dump's default end), which for tasks with AIO rings waits for
-- RCU grace periods (io_destroy at exit): 25-50 ms here, the same work
-- plain and with the plugin, and most of frozen_time's spread.
local function held_us(log)
	local from = tonumber(log:match("\n%((%d+%.%d+)%) Collected %d+ in"))
	local to = tonumber(log:match("\n%((%d+%.%d+)%) Unfreezing tasks"))
	return from and to and (to - from) * 1e6 or nil
end

-- One dump and restore of a fresh tree: { frozen_us, held_us, restore_us }
-- and, with the plugin, its clocks (task_ms, fini_ms).
local function run(procs, plugin)
	local dir = helper.tmpdir()
	local img = dir .. "/img"
	assert(core.mkdir(img))
	local pid = start(dir, procs)
	local ok, out = C.criu("dump -t " .. pid .. " -D " .. img, plugin)
	assert(ok, "criu dump: " .. out .. helper.slurp(img .. "/criu.log"):sub(-2000))
	assert(gone_tree(pid), "the dumped tree is still there")
	local log = helper.slurp(img .. "/criu.log")
	local task_ms, fini_ms = plugin_clocks(log)
	local held = assert(held_us(log), "no freeze in criu.log")
	ok, out = C.criu("restore -d -D " .. img, plugin)
	assert(ok, "criu restore: " .. out .. helper.slurp(img .. "/criu.log"):sub(-2000))
	local r = { frozen_us = stats(img, "dump").frozen_time, restore_us = stats(img, "restore").restore_time,
		held_us = held, task_ms = task_ms, fini_ms = fini_ms }
	kill_tree(pid)
	helper.rmdir(dir)
	return r
end

local cases = { { name = "1 process, 2 x io_setup(256)", procs = 1 },
	{ name = "20 processes, 1 x io_setup(256) each", procs = 20 } }
local report = {}
for _, c in ipairs(cases) do
	local plain, with = { frozen = {}, held = {}, restore = {} },
		{ frozen = {}, held = {}, restore = {}, task = {}, fini = {} }
	for i = 1, args.reps do
		-- either side first in turn: the second of a pair runs on a
		-- machine the first has just warmed
		for _, plugin in ipairs(i % 2 == 1 and { false, true } or { true, false }) do
			local r = run(c.procs, plugin)
			local side = plugin and with or plain
			side.frozen[#side.frozen + 1] = r.frozen_us
			side.held[#side.held + 1] = r.held_us
			side.restore[#side.restore + 1] = r.restore_us
			if plugin then
				with.task[#with.task + 1] = assert(r.task_ms, "no plugin clocks in criu.log")
				with.fini[#with.fini + 1] = assert(r.fini_ms, "no plugin clocks in criu.log")
			end
		end
	end
	local row = { case = c.name, pairs = args.reps,
		frozen_plain_us = median(plain.frozen), frozen_plugin_us = median(with.frozen),
		restore_plain_us = median(plain.restore), restore_plugin_us = median(with.restore) }
	row.frozen_ratio = row.frozen_plugin_us / row.frozen_plain_us
	row.frozen_pair_ratio = median_ratio(with.frozen, plain.frozen)
	row.held_plain_us, row.held_plugin_us = median(plain.held), median(with.held)
	row.held_ratio = row.held_plugin_us / row.held_plain_us
	row.restore_ratio = row.restore_plugin_us / row.restore_plain_us
	row.restore_pair_ratio = median_ratio(with.restore, plain.restore)
	row.held_added_us = median_diff(with.held, plain.held)
	row.plugin_task_ms, row.plugin_fini_ms = median(with.task), median(with.fini)
	row.frozen_plain_all, row.frozen_plugin_all = plain.frozen, with.frozen
	row.held_plain_all, row.held_plugin_all = plain.held, with.held
	row.restore_plain_all, row.restore_plugin_all = plain.restore, with.restore
	report[#report + 1] = row
end
if args.json then
	print(json.encode(report, { indent = true }))
	return 0
end
print(string.format("%-40s %30s %30s", "real CRIU, medians of alternating pairs",
	"frozen_time plain/plugin (pairs)", "restore_time plain/plugin (pairs)"))
for _, r in ipairs(report) do
	print(string.format("%-40s %7.1f/%6.1f ms %5.2fx (%4.2fx) %7.1f/%6.1f ms %5.2fx (%4.2fx)",
		r.case .. " (" .. r.pairs .. ")", r.frozen_plain_us / 1e3, r.frozen_plugin_us / 1e3, r.frozen_ratio,
		r.frozen_pair_ratio, r.restore_plain_us / 1e3, r.restore_plugin_us / 1e3, r.restore_ratio,
		r.restore_pair_ratio))
end
print("(pairs): the median of each pair's ratio")
print("held frozen for the dump itself (CRIU's log: seized to released; frozen_time adds killing the tasks):")
for _, r in ipairs(report) do
	print(string.format("  %-38s %7.1f/%6.1f ms %5.2fx, the plugin adds %.2f ms (median of the pairs)", r.case,
		r.held_plain_us / 1e3, r.held_plugin_us / 1e3, r.held_ratio, r.held_added_us / 1e3))
end
print("the plugin inside the freeze (its clocks in CRIU's log, medians):")
for _, r in ipairs(report) do
	print(string.format("  %-38s %.2f ms a task at CHECKPOINT_DEVICES, %.2f ms at fini (fit and stamp)",
		r.case, r.plugin_task_ms, r.plugin_fini_ms))
end
return 0
