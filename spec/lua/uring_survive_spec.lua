-- aiotk killed at every step of an io_uring restore (aiotk restore -p of
-- the liburing workload's lost instance, spec/workload/uring_workload.c
-- --lose): by construction, core.die_after(n) for each n, so that aiotk
-- SIGKILLs itself just before its n-th change to the process, until the
-- restore gets through. After each kill: the workload runs, untraced and
-- not stopped; the next aiotk restore -p removes what the killed one left
-- and gives the instance back (the process's mappings and fds then those
-- it had before, plus the instance's); the workload checks it from the
-- inside (VERIFY OK: unreaped CQEs, prepared SQEs, the POLL, queue_exit).
local core = require "aiotk.core"
local helper = require "helper"
local uh = require "uring_helper"
local run = helper.run

-- Whether maps (a /proc/PID/maps text) hold a journal of a killed
-- io_uring restore: a mapping starting at one of the journal slots
-- (AIOTK_URING_JOURNAL_AT and the slots after it, core/aiotk.h).
local function journal_in(maps)
	for k = 0, core.URING_JOURNAL_SLOTS - 1 do
		local at = core.URING_JOURNAL_AT + k * core.URING_JOURNAL_STRIDE
		if ("\n" .. maps):find(string.format("\n%x%%-", at)) then return true end
	end
	return false
end

core.subreaper() -- a killed aiotk's guardian comes here
-- Every STRIDE-th kill point (AIOTK_SWEEP_STRIDE, as spec_survive's
-- sweeps): the sanitizer pass of CI takes every 4th.
local STRIDE = tonumber(os.getenv("AIOTK_SWEEP_STRIDE") or "1") or 1

-- The command that dies: an io_uring restore with core.die_after(n).
local DYING = [[
-- aiotk dying-uring-restore: an io_uring restore, aiotk killed before its n-th change to the process (uring_survive_spec)
local aiotk, core = require "aiotk", require "aiotk.core"
local pid, dir, n = ...
local img = assert(aiotk.read_image(dir))
core.die_after(tonumber(n))
local res, err = require("aiotk.uring_restore").restore_process(tonumber(pid), img)
print(res and "restored" or "failed: " .. tostring(err))
]]

-- The process as the test compares it: its mappings (io_uring's apart)
-- and its fds.
local function state(pid)
	local maps, urings = {}, {}
	for l in helper.slurp("/proc/" .. pid .. "/maps"):gmatch("[^\n]+") do
		if l:find("anon_inode:%[io_uring%]") then
			urings[#urings + 1] = l:match("^(%x+%-%x+)")
		else
			maps[#maps + 1] = l
		end
	end
	local fds = core.listdir("/proc/" .. pid .. "/fd")
	table.sort(fds)
	return { maps = table.concat(maps, "\n"), urings = table.concat(urings, " "),
		fds = table.concat(fds, " ") }
end

local function unharmed(pid, ctx)
	assert(helper.wait_until(function() return tonumber(helper.status(pid, "TracerPid") or "0") == 0 end, 2000),
		ctx .. ": still traced")
	local st = helper.status(pid, "State") or ""
	assert(not st:find("^[tTZX]") and st ~= "", ctx .. ": state " .. st)
end

-- What the next aiotk does first: what a killed one left taken away
-- (core.uring_leftovers), nothing else; how many journals it removed.
local function leftovers(pid)
	local lua = "local t = assert(aiotk.core.attach(" .. pid .. ")); " ..
		"print(assert(aiotk.core.uring_leftovers(t))); t:detach()"
	local code, out, err = run("-e \"" .. lua .. "\"")
	assert(code == 0, "leftovers: " .. err)
	return tonumber(out:match("%d+"))
end

-- One workload, dumped, its instance(s) lost; aiotk killed before change
-- n of a restore; what it left taken away, which leaves every instance
-- of the image back (the kill came after the commit) or none; then, if
-- none, the next restore; and the workload's verdict. Returns whether
-- the dying restore got through (n past its last change), and whether it
-- left a journal for the next one.
local function kill_at(n, args, dir, cmds)
	local w = uh.start(args)
	local ok, through, left = pcall(function()
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
		assert(code == 0, err)
		local saved = state(w.pid)
		core.kill(w.pid, "USR1")
		uh.read_until(w, "LOST")
		local before = state(w.pid)
		local ctx = "aiotk killed before change " .. n .. " (" .. args .. ")"
		local dcode, out, derr = run("dying-uring-restore " .. w.pid .. " " .. dir .. " " .. n,
			"AIOTK_PATH=" .. cmds)
		unharmed(w.pid, ctx)
		local done, journal = out:find("^restored") ~= nil, false
		if not done then
			assert(dcode == 137 or dcode == 9, ctx .. ": exit " .. tostring(dcode) .. " " .. out .. derr)
			journal = journal_in(state(w.pid).maps)
			local removed = leftovers(w.pid)
			assert(journal == (removed > 0), ctx .. ": journal left " .. tostring(journal) .. ", removed " ..
				removed)
			local urings = state(w.pid).urings
			assert(urings == "" or urings == saved.urings, ctx .. ": some of the instances back, not all: " ..
				urings .. ", saved " .. saved.urings)
			if urings == "" then
				local rcode, _, rerr = run("restore -p " .. w.pid .. " -D " .. dir)
				assert(rcode == 0, ctx .. ": the next restore: " .. rerr)
			end
		end
		-- nothing of aiotk's: the mappings and fds as before, and the
		-- instance's at their saved addresses and fd
		local after = state(w.pid)
		assert(after.maps == before.maps, ctx .. ": mappings left:\n" .. after.maps .. "\nwere:\n" .. before.maps)
		assert(after.fds == saved.fds, ctx .. ": fds " .. after.fds .. ", were " .. saved.fds)
		assert(after.urings == saved.urings, ctx .. ": io_uring mappings " .. after.urings .. ", were " ..
			saved.urings)
		core.kill(w.pid, "USR2")
		uh.read_until(w, "CHECKED")
		assert(w.verdict == "VERIFY OK", ctx .. ": " .. tostring(w.verdict))
		return done, journal
	end)
	uh.stop(w)
	if not ok then error(through, 0) end
	return through, left
end

describe("io_uring restore survival", function()
	local dir, cmds
	helper.scratch_each(function(d) dir = d end)
	before_each(function()
		cmds = helper.tmpdir()
		helper.write(cmds .. "/dying-uring-restore.lua", DYING)
	end)
	after_each(function() helper.rmdir(cmds) end)

	-- The journal's address is found by its shape: something else there
	-- (a PROT_NONE shared mapping, as a program could make) is not aiotk's
	-- to remove, and the restore, with no room for its journal, refuses.
	it("something of the program's at the journal's address: refused by name, nothing changed", function()
		local w = uh.start("0")
		local ok, e = pcall(function()
			assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
			core.kill(w.pid, "USR1")
			uh.read_until(w, "LOST")
			local function at_journal(method)
				local lua = "local t = assert(aiotk.core.attach(" .. w.pid .. ")); assert(t:" .. method ..
					"(0x3a1080000000, 8192)); t:detach()"
				local code, _, err = run("-e \"" .. lua .. "\"")
				assert.are.equal(0, code, err)
			end
			at_journal("reserve")
			local before = state(w.pid)
			local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
			assert.are_not.equal(0, code)
			assert.truthy(err:find("no room for aiotk's io_uring journal at 0x3a1080000000", 1, true), err)
			assert.are.same(before, state(w.pid))
			at_journal("unmap")
			code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
			assert.are.equal(0, code, err)
			core.kill(w.pid, "USR2")
			uh.read_until(w, "CHECKED")
			assert.are.equal("VERIFY OK", w.verdict)
		end)
		uh.stop(w)
		if not ok then error(e, 0) end
	end)

	for _, case in ipairs {
		{ "exact counters, registered files and buffers", "0 --registered" },
		{ "rebased counters, liburing's copies moved", "1000003 --registered" },
		{ "a registered ring fd, a buffer ring's head moved back", "0 --ring-fd --buf-ring" },
		{ "a buffer ring in the kernel's memory, rebased", "1000003 --buf-ring-mmap" },
		{ "TIMEOUTs, ACCEPTs and a RECV in flight", "0 --timeout --accept --recv" },
		{ "a multishot RECV that posted and a buffer-select RECV on a buffer ring", "0 --buf-ring --recv-bufs" },
		{ "SINGLE_ISSUER|DEFER_TASKRUN owned by a second thread: its ring fd, buffer ring and registered files made there",
			"1000003 --flags 0x3000 --ring-fd --buf-ring --registered" },
		{ "two instances in one restore, one commit: a kill between them leaves both or neither",
			"1000003 --registered --second" },
	} do
		it("aiotk killed before each change of a restore (" .. case[1] .. "): the next aiotk gives the instances back, all or none", function()
			local n, tried, journals, done = 0, 0, 0, false
			repeat
				n = n + (n == 0 and 1 or STRIDE)
				assert(n < 400, "the restore never got through")
				local left
				done, left = kill_at(n, case[2], dir .. "/img" .. n, cmds)
				if not done then tried = tried + 1 end
				if left then journals = journals + 1 end
			until done
			-- each step of the rebuild has its kill point, most of them with
			-- the journal in the process for the next restore to act on
			local said = string.format("%d kill points (every %s), %d with a journal left", tried,
				STRIDE == 1 and "one" or STRIDE .. "th", journals)
			print(case[1] .. ": " .. said)
			assert(n > 30 and journals > tried / 2, said)
		end)
	end
end)
