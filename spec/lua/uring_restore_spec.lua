-- io_uring instances restored into a live process (aiotk restore -p),
-- against the liburing workload's --lose mode
-- (spec/workload/uring_workload.c): its instance e is dumped, then lost
-- (io_uring_queue_exit, liburing's struct kept), then restored; the
-- workload then uses it as it would have: same fd and addresses, the
-- unreaped CQEs reaped in order, the prepared SQEs submitted and
-- completed, the POLL in flight completed by a write, queue_exit.
local core = require "aiotk.core"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local uh = require "uring_helper"
local BIN, read_until, start, stop = uh.BIN, uh.read_until, uh.start, uh.stop

-- The io_uring mappings of process pid.
local function process_urings(pid)
	return require("aiotk.process").uring_map_count(pid)
end

local function fact(w, k) return w.facts[k] and w.facts[k][1] end

-- The workload dumped, its instance lost, restored; then used. edit(dir)
-- changes the image first; restored(dir) looks at the process before it
-- is used.
local function lose_and_restore(w, dir, extra, edit, restored)
	local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir)
	assert.are.equal(0, code, err)
	assert.truthy(out:find("1 io_uring instance", 1, true), out)
	if edit then edit(dir) end
	core.kill(w.pid, "USR1")
	read_until(w, "LOST")
	local rcode, rout, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. " --json" .. (extra or ""))
	assert.are.equal(0, rcode, rerr)
	local doc = json.decode(rout)
	if restored then restored(dir) end
	core.kill(w.pid, "USR2")
	read_until(w, "CHECKED")
	return doc.urings[1]
end

-- restored(dir) for lose_and_restore: `aiotk verify` finds the process
-- as the image says.
local function verified(w)
	return function(d)
		local vcode, vout, verr = run("verify -p " .. w.pid .. " -D " .. d)
		assert.are.equal(0, vcode, vout .. verr)
	end
end

-- What the workload saw after the restore: its instance where it was,
-- everything it had left there, then working.
local function check_used(w)
	for _, k in ipairs { "fd", "sq_ring", "cq_ring", "sqes", "cqes", "sq_array", "sq_entries",
		"cq_entries", "flags" } do
		assert.are.equal(fact(w, "e." .. k), fact(w, "after." .. k), k)
	end
	assert.are.same({ 1, fact(w, "e.cloexec") }, { fact(w, "after.fd_is_uring"), fact(w, "after.cloexec") })
	-- unreaped CQEs: the same, in order
	local n = 0
	while fact(w, "e.cqe" .. n) do
		assert.are.same(w.facts["e.cqe" .. n], { w.facts["reaped" .. n][1], w.facts["reaped" .. n][2],
			raw = w.facts["reaped" .. n].raw }, "cqe " .. n)
		n = n + 1
	end
	assert.are.equal(3, n)
	assert.is_nil(w.facts["reaped" .. n])
	-- the prepared SQEs submitted (and liburing's own count of them right)
	assert.are.equal(2, fact(w, "submitted"))
	local done = {}
	for i = 0, 2 do done[w.facts["completed" .. i].raw] = w.facts["completed" .. i][2] end
	assert.are.same({ [w.facts["e.prepared0"].raw] = 0, [w.facts["e.prepared1"].raw] = 0,
		[w.facts["e.poll_data"].raw] = 1 }, done)
	assert.are.equal(1, fact(w, "exit"))
	assert.are.equal("VERIFY OK", w.verdict) -- the workload's own verdict, the same
end

describe("io_uring restore", function()
	local w, dir
	helper.scratch_each(function(d) dir = d end)
	after_each(function()
		if w then stop(w) end
		w = nil
	end)

	it("gives a lost instance back with its counters near 0 exactly, its POLL re-armed", function()
		w = start(0)
		local r = lose_and_restore(w, dir .. "/img")
		assert.are.same({ "exact", 0, 0, 1 }, { r.counters, r.sq_shift, r.cq_shift, r.polls })
		check_used(w)
		for _, k in ipairs { "sq_head", "sq_tail", "cq_head", "cq_tail" } do
			assert.are.equal(fact(w, "e." .. k), fact(w, "after." .. k), k)
		end
	end)

	it("gives two lost instances back in one restore, each as it was (one commit for both)", function()
		w = start("1000003 --second")
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		assert.truthy(out:find("2 io_uring instance", 1, true), out)
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		local rcode, rout, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --json")
		assert.are.equal(0, rcode, rerr)
		local doc = json.decode(rout)
		assert.are.same({ fact(w, "e.fd"), fact(w, "e2.fd") }, { doc.urings[1].fd, doc.urings[2].fd })
		-- committed: none of aiotk's journals left in the process
		assert.is_nil(helper.slurp("/proc/" .. w.pid .. "/maps"):find(string.format("\n%x%%-", core.URING_JOURNAL_AT)))
		core.kill(w.pid, "USR2")
		read_until(w, "CHECKED")
		check_used(w)
		assert.are.equal(1, fact(w, "e2_used"))
	end)

	it("rebases counters near 1e6, liburing's copies moved by the same offset", function()
		w = start(1000003)
		local r = lose_and_restore(w, dir .. "/img")
		assert.are.same({ "rebase", 1 }, { r.counters, r.liburing_structs })
		assert.is_true(r.sq_shift > 999000 and r.sq_shift % 8 == 0, tostring(r.sq_shift))
		assert.is_true(r.cq_shift > 999000 and r.cq_shift % 16 == 0, tostring(r.cq_shift))
		check_used(w)
		-- the same counters less the offsets; liburing's prepared SQEs as many
		assert.are.equal(fact(w, "e.sq_head") - r.sq_shift, fact(w, "after.sq_head"))
		assert.are.equal(fact(w, "e.cq_tail") - r.cq_shift, fact(w, "after.cq_tail"))
		assert.are.equal(fact(w, "e.cq_tail") - fact(w, "e.cq_head"),
			fact(w, "after.cq_tail") - fact(w, "after.cq_head"))
		assert.are.equal(fact(w, "e.sqe_tail") - r.sq_shift, fact(w, "after.sqe_tail"))
	end)

	it("rebases counters near 2^32 (an image and liburing moved on alike), across the wrap", function()
		-- 9 NOPs first: sq head 15, liburing's sqe_tail 17; moved on by
		-- 2^32 - 16, the sq head is 2^32 - 1 and sqe_tail has wrapped to 1
		local K = 2 ^ 32 - 16
		w = start("9 --shift " .. K)
		local r = lose_and_restore(w, dir .. "/img", nil, function(d)
			local img = assert(require("aiotk").read_image(d))
			assert(core.uring_image_shift(img, 1, K))
			assert(img:write(d))
		end)
		local saved_head = (fact(w, "e.sq_head") + K) % 2 ^ 32
		assert.are.same({ 2 ^ 32 - 1, 1 }, { saved_head, (fact(w, "e.sqe_tail") + K) % 2 ^ 32 })
		assert.are.same({ "rebase", 1 }, { r.counters, r.liburing_structs })
		check_used(w)
		assert.are.equal(saved_head - r.sq_shift, fact(w, "after.sq_head"))
		-- liburing's sqe_tail (wrapped) moved down with the ring
		assert.are.equal((fact(w, "e.sqe_tail") + K - r.sq_shift) % 2 ^ 32, fact(w, "after.sqe_tail"))
		assert.are.equal(fact(w, "e.cq_tail") - fact(w, "e.cq_head"),
			fact(w, "after.cq_tail") - fact(w, "after.cq_head"))
	end)

	it("registers files and buffers again: fixed-file I/O from a fixed buffer works after", function()
		w = start("1000003 --registered")
		local r = lose_and_restore(w, dir .. "/img")
		assert.are.equal("rebase", r.counters)
		check_used(w)
		assert.are.equal(8192, fact(w, "fixed_io"))
	end)

	it("rebuilds a SINGLE_ISSUER|DEFER_TASKRUN instance (fio's) enabled by its owner thread, not the main one", function()
		-- e made and used by a second thread: the only one the kernel lets
		-- submit to it. Rebased near 1e6, with registered files and buffers.
		w = start("1000003 --registered --flags 0x3000")
		local owner = fact(w, "owner")
		assert.are_not.equal(w.pid, owner)
		local r = lose_and_restore(w, dir .. "/img")
		assert.are.same({ "rebase", 1 }, { r.counters, r.liburing_structs })
		-- the owner thread reaped, submitted, waited and did fixed I/O
		check_used(w)
		assert.are.equal(12288, fact(w, "after.flags"))
		assert.are.equal(8192, fact(w, "fixed_io"))
	end)

	it("gives the kernel a SINGLE_ISSUER instance enabled, owned by its saved thread (verify matches)", function()
		w = start("0 --flags 0x3000")
		lose_and_restore(w, dir .. "/img", nil, nil, function(d)
			verified(w)(d) -- the kernel's flags (R_DISABLED gone) and owner thread as saved
			assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/again")))
			local _, text = run("show -D " .. dir .. "/again")
			assert.truthy(text:find("flags 0x3000 (SINGLE_ISSUER|DEFER_TASKRUN)", 1, true), text)
			assert.truthy(text:find("owner thread " .. fact(w, "owner"), 1, true), text)
		end)
		check_used(w)
	end)

	it("registers the eventfd again at the fd it was: completions after the restore signal it, the replay's NOPs do not", function()
		w = start("1000003 --eventfd sync")
		local r = lose_and_restore(w, dir .. "/img")
		assert.are.equal("rebase", r.counters) -- 8 NOPs replayed, none of which signalled
		check_used(w)
		assert.are.same({ 0, true }, { fact(w, "eventfd_before"), fact(w, "eventfd_after") >= 1 })
	end)

	it("registers an async eventfd as async (verify matches: same fd, same kind)", function()
		w = start("0 --eventfd async")
		lose_and_restore(w, dir .. "/img", nil, function(d)
			local _, text = run("show -D " .. d)
			assert.truthy(text:find("eventfd registered (async): fd " .. fact(w, "e.eventfd"), 1, true), text)
		end, verified(w))
		check_used(w)
	end)

	-- The registered ring fd in its thread at its offset: liburing, which
	-- kept the offset, submits through it after (a slot left empty would
	-- fail its io_uring_enter with EBADF, and the workload's verdict).
	local function ringfd_back(args)
		w = start(args)
		local tid, offset = fact(w, "e.ringfd"), w.facts["e.ringfd"][2]
		assert.are.equal(tonumber(fact(w, "owner") or w.pid), tid)
		lose_and_restore(w, dir .. "/img", nil, nil, function(d)
			if args:match("^0 ") then verified(w)(d) end -- the thread's slot as saved (exact counters)
			assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/again")))
			local _, text = run("show -D " .. dir .. "/again")
			assert.truthy(text:find("registered ring fd: thread " .. tid .. " index " .. offset, 1, true), text)
		end)
		check_used(w)
		assert.are.same({ offset, 1 }, w.facts["after.ringfd"] and
			{ w.facts["after.ringfd"][1], w.facts["after.ringfd"][2] })
	end

	it("registers a ring fd again in its thread at its offset: liburing submits through it after", function()
		ringfd_back("0 --ring-fd")
	end)

	it("registers a SINGLE_ISSUER instance's ring fd again in its owner thread, rebased", function()
		ringfd_back("1000003 --ring-fd --flags 0x3000")
	end)

	-- The buffer ring registered again at the program's memory, its head
	-- (3: buffers 0-2 used before the dump) moved back: the next read
	-- selecting a buffer of the group gets buffer 3 (with the head at 0
	-- it would get buffer 0 again, which the program may still hold).
	local function bufring_back(args, verify)
		w = start(args)
		local inc = args:find("--buf-ring-inc", 1, true) ~= nil
		local head = inc and 0 or 3
		assert.are.equal(head, fact(w, "e.buf_head"))
		local addr = string.format("0x%016x", fact(w, "e.buf_ring"))
		local where = args:find("--buf-ring-mmap", 1, true) and "the kernel's memory (mmapped)"
			or ("the program's memory at " .. addr)
		lose_and_restore(w, dir .. "/img", nil, function(d)
			local _, text = run("show -D " .. d)
			assert.truthy(text:find(string.format("buffer ring group 7: 8 entries, head %d tail 8 (%d available)%s, ",
				head, 8 - head, inc and ", incremental" or "") .. where, 1, true), text)
			local ccode, ctext = run("check -D " .. d) -- rebuildable (0: exact, 3: rebased), not refused
			assert.are.equal(verify and 0 or 3, ccode, ctext)
			assert.truthy(ctext:find("io_uring fd " .. fact(w, "e.fd") .. " (8/16 entries): aiotk ", 1, true), ctext)
			assert.falsy(ctext:find("refused", 1, true), ctext)
		end, function(d)
			if verify then verified(w)(d) end -- the group's head, tail and address as saved
		end)
		check_used(w)
		assert.are.same({ inc and 0 or 3, 16 }, { fact(w, "buf_bid"), w.facts["buf_bid"][2] })
	end

	it("registers a buffer ring again at the program's memory, its head set back (exact)", function()
		bufring_back("0 --buf-ring", true)
	end)

	it("registers a buffer ring again with its head, rebased (the head's reads counted in the cq tail)", function()
		bufring_back("1000003 --buf-ring")
	end)

	it("registers an incremental buffer ring (IOU_PBUF_RING_INC) again as one: a partly used buffer goes on", function()
		-- 48 of buffer 0's 64 bytes used at the dump (head 0): after, the
		-- next read takes its last 16, then buffer 1 is used partly twice
		-- (the workload checks; a ring registered without INC would give 2)
		bufring_back("0 --buf-ring-inc", true)
	end)

	it("rebuilds a buffer ring in the kernel's memory (IOU_PBUF_RING_MMAP) at its mapping, bytes and head back", function()
		bufring_back("0 --buf-ring-mmap", true)
	end)

	it("rebuilds a buffer ring in the kernel's memory, rebased", function()
		bufring_back("1000003 --buf-ring-mmap")
	end)

	it("rebuilds a SINGLE_ISSUER instance's buffer ring and ring fd in its owner thread", function()
		bufring_back("1000003 --buf-ring --ring-fd --flags 0x3000")
		assert.are.same({ w.facts["e.ringfd"][2], 1 }, { fact(w, "after.ringfd"), w.facts["after.ringfd"][2] })
	end)

	it("puts MADV_DONTFORK back on the mappings that had it", function()
		w = start("0 --dontfork")
		local function dontfork_maps()
			local n, cur = 0, nil
			for line in helper.slurp("/proc/" .. w.pid .. "/smaps"):gmatch("[^\n]+") do
				if line:match("^%x+%-%x+ ") then cur = line:find("anon_inode:[io_uring]", 1, true)
				elseif cur and line:match("^VmFlags:.* dc") then n = n + 1 end
			end
			return n
		end
		assert.are.equal(2, dontfork_maps())
		lose_and_restore(w, dir .. "/img", nil, nil, function(d)
			assert.are.equal(2, dontfork_maps()) -- the rebuilt instance's (a new inode)
			verified(w)(d)
		end)
		check_used(w)
	end)

	-- The workload (args) dumped and its instance lost; then aiotk -e runs
	-- the REPL's API on it: the image read, the POLL's SQE made, the
	-- process attached as t; then `steps` (r: the rebuild's result), t
	-- detached, `print`ed. Returns aiotk's stdout.
	local function by_hand(args, steps, print_what)
		w = start(args)
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		local lua = table.concat({
			"local aiotk = require 'aiotk'",
			"local img = assert(aiotk.read_image('" .. dir .. "/img'))",
			"local sqe = assert(require('aiotk.uring').rebuild(img:urings()[1].reqs[1]))",
			"local t = assert(aiotk.core.attach(" .. w.pid .. "))",
			"local r, err = aiotk.core.uring_rebuild(t, img, 1, { exact = true, polls = { sqe } })",
			steps, "t:detach()", "print(" .. print_what .. ")" }, "; ")
		local code, out, err = run("-e \"" .. lua .. "\"")
		assert.are.equal(0, code, err)
		return out
	end

	it("the REPL's API rebuilds an instance by hand (attach, core.uring_rebuild, detach)", function()
		-- and a slot past the journal's last is refused by name, before any change
		local out = by_hand(0, "assert(r, err); local r2, e2, c2 = aiotk.core.uring_rebuild(t, img, 1, " ..
			"{ exact = true, slot = aiotk.core.URING_JOURNAL_SLOTS })", "r.fd, r.nops, r2, e2, c2")
		assert.are.equal(fact(w, "e.fd") .. "\t5", out:match("^(%S+\t%S+)"))
		assert.are.equal(string.format("nil\tjournal slot %d: there are %d\tinvalid", core.URING_JOURNAL_SLOTS,
			core.URING_JOURNAL_SLOTS), out:match("^%S+\t%S+\t([^\n]*)"))
		core.kill(w.pid, "USR2")
		read_until(w, "CHECKED")
		check_used(w)
	end)

	it("the REPL's API takes a rebuilt instance away again with its ring fd and buffer ring (core.uring_unbuild)", function()
		-- unbuilt, nothing of it is left: no mapping, no fd, and the thread's
		-- ring fd slot free again (the next restore registers it there)
		local out = by_hand("0 --ring-fd --buf-ring-mmap", "assert(aiotk.core.uring_unbuild(t, img, 1, assert(r, err)))",
			"'unbuilt', r.fd")
		assert.are.equal("unbuilt\t" .. fact(w, "e.fd"), out:match("^(%S+\t%S+)"))
		assert.are.equal(0, process_urings(w.pid))
		assert.is_nil(core.readlink("/proc/" .. w.pid .. "/fd/" .. fact(w, "e.fd")))
		local rcode, _, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, rcode, rerr)
		core.kill(w.pid, "USR2")
		read_until(w, "CHECKED")
		check_used(w)
		assert.are.same({ w.facts["e.ringfd"][2], 1, 3 }, { fact(w, "after.ringfd"), w.facts["after.ringfd"][2],
			fact(w, "buf_bid") })
	end)

	it("check says per instance: rebase, or refused and why", function()
		w = start(1000003)
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/lose")))
		local code, out = run("check -D " .. dir .. "/lose --json")
		assert.are.equal(3, code)
		local doc = json.decode(out)
		assert.are.same({ fact(w, "e.fd"), "rebase", 1 }, { doc.urings[1].fd, doc.urings[1].action,
			doc.urings[1].polls })
		-- the view workload's three: an eventfd, SINGLE_ISSUER|DEFER_TASKRUN, SQPOLL
		local p = assert(io.popen("exec " .. BIN, "r"))
		local v = { pipe = p, facts = {} }
		read_until(v, "READY")
		local dcode, _, derr = run("dump -p " .. v.facts.pid[1] .. " -D " .. dir .. "/view")
		core.kill(v.facts.pid[1], "KILL")
		p:close()
		assert.are.equal(0, dcode, derr)
		local ccode, text = run("check -D " .. dir .. "/view")
		assert.are.equal(4, ccode)
		-- a (an eventfd, registered files, a POLL) is rebuilt now
		assert.truthy(text:find("io_uring fd %d+ %(8/16 entries%): aiotk exact counters"), text)
		-- b (SINGLE_ISSUER|DEFER_TASKRUN|CQSIZE, registered file and buffer)
		assert.truthy(text:find("io_uring fd %d+ %(16/64 entries%): aiotk exact counters"), text)
		assert.truthy(text:find("refused: io_uring fd %d+: SQPOLL %(its kernel poller thread%) is not rebuilt"), text)
	end)

	it("refuses by name, changing nothing, when the saved fd is taken", function()
		w = start(0)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		-- not lost: the instance's fd and mappings are still there
		local before = helper.slurp("/proc/" .. w.pid .. "/maps")
		local rcode, _, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are_not.equal(0, rcode)
		assert.truthy(rerr:find("io_uring fd " .. fact(w, "e.fd"), 1, true), rerr)
		assert.are.equal(before, helper.slurp("/proc/" .. w.pid .. "/maps"))
		-- and the workload's instance still works
		core.kill(w.pid, "USR2")
		read_until(w, "CHECKED")
		assert.are.equal(2, fact(w, "submitted"))
		assert.are.equal(1, fact(w, "exit"))
	end)

	-- The process as aiotk found it: its mappings and its fds.
	local function state(pid)
		local fds = core.listdir("/proc/" .. pid .. "/fd")
		table.sort(fds)
		return { maps = helper.slurp("/proc/" .. pid .. "/maps"), fds = table.concat(fds, " ") }
	end

	-- The workload started with args, dumped and its instance lost; a
	-- restore that must fail: its message, and the process as it was.
	local function failed_restore(args)
		w = start(args)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		local before = state(w.pid)
		local rcode, _, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are_not.equal(0, rcode)
		assert.are.same(before, state(w.pid))
		assert.are.equal(0, process_urings(w.pid))
		return rerr
	end

	it("refuses more instances than it has journal slots by name, in check and restore, changing nothing", function()
		-- the view workload's three and URING_JOURNAL_SLOTS plain ones
		local p = assert(io.popen("exec " .. BIN .. " --plain " .. core.URING_JOURNAL_SLOTS, "r"))
		local v = { pipe = p, facts = {} }
		read_until(v, "READY")
		local pid = v.facts.pid[1]
		finally(function() core.kill(pid, "KILL") p:close() end)
		local code, dout, err = run("dump -p " .. pid .. " -D " .. dir .. "/many")
		assert.are.equal(0, code, err)
		local n = core.URING_JOURNAL_SLOTS + 3
		local why = string.format("%d io_uring instances, more than the %d one restore journals", n,
			core.URING_JOURNAL_SLOTS)
		-- the dump says so once, not once an instance
		local _, said = dout:gsub("cannot be restored: " .. why:gsub("%p", "%%%0"), "")
		assert.are.equal(1, said, dout)
		local ccode, out = run("check -D " .. dir .. "/many --json")
		assert.are.equal(4, ccode)
		local doc = json.decode(out)
		assert.are.equal(n, #doc.urings)
		for _, u in ipairs(doc.urings) do
			assert.are.equal("refused", u.action)
			assert.truthy(u.why:find(why, 1, true), u.why)
		end
		local before = state(pid)
		local rcode, _, rerr = run("restore -p " .. pid .. " -D " .. dir .. "/many")
		assert.are_not.equal(0, rcode)
		assert.truthy(rerr:find(why, 1, true) and rerr:find("nothing was changed", 1, true), rerr)
		assert.are.same(before, state(pid))
	end)

	-- A registered file's fd replaced after the restore's first look and
	-- before its stop, by construction: the policy's uring_counters hook
	-- (asked between the two) has the workload put /dev/zero at that fd.
	it("refuses by name, changing nothing, when a registered file's fd is replaced just before the stop", function()
		w = start("0 --registered")
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		local file = assert(require("aiotk").read_image(dir .. "/img"):urings()[1].files[1])
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		helper.write(dir .. "/moving.lua", string.format([[
return { uring_counters = function()
	local core = require "aiotk.core"
	core.kill(%d, "HUP")
	for _ = 1, 10000 do
		if core.readlink("/proc/%d/fd/%d") == "/dev/zero" then return "exact" end
		core.sleep_ms(1)
	end
	error("the workload did not move its file")
end }]], w.pid, w.pid, file.fd))
		local before = state(w.pid)
		local rcode, _, rerr = run("restore --policy " .. dir .. "/moving.lua -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are_not.equal(0, rcode)
		assert.truthy(rerr:find(string.format("registered file slot %d was fd %d (%s), which now names /dev/zero; " ..
			"nothing was changed", file.slot, file.fd, file.path), 1, true), rerr)
		read_until(w, "MOVED")
		local after = state(w.pid)
		assert.are.same(before.fds, after.fds) -- the same fds (one now /dev/zero, by the workload)
		assert.are.equal(before.maps, after.maps)
		assert.are.equal(0, process_urings(w.pid))
	end)

	it("refuses a rebase by name while a thread runs its own code, changing nothing", function()
		local err = failed_restore("1000003 --spin")
		assert.truthy(err:find("ran their own code (not a system call)", 1, true), err)
	end)

	it("refuses a rebase by name when no liburing struct points at the instance, changing nothing", function()
		local err = failed_restore("1000003 --forget")
		assert.truthy(err:find("no liburing struct io_uring pointing at the instance was found", 1, true), err)
	end)

	-- An instance a restore cannot rebuild: dump says so, check refuses
	-- it, restore refuses it, each naming why; nothing changed.
	local function refused_by_name(args, why)
		w = start(args)
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		assert.truthy(out:find("cannot be restored: io_uring fd " .. fact(w, "e.fd") .. ": " .. why, 1, true), out)
		local ccode, text = run("check -D " .. dir .. "/img")
		assert.are.equal(4, ccode)
		assert.truthy(text:find("refused: io_uring fd " .. fact(w, "e.fd") .. ": " .. why, 1, true), text)
		stop(w)
		w = nil
		local rerr = failed_restore(args)
		assert.truthy(rerr:find(why, 1, true), rerr)
	end

	-- --timeout's four TIMEOUTs (uring_workload.c, e_timeouts) restored:
	-- as the kernel has them after the restore, against the image; then
	-- used by the workload (the count one ends after its 3 completions
	-- left, the relative one brought forward expires, the others removed).
	local function timeouts_rebuilt(args, exact)
		w = start(args)
		local saved, live = {}, {}
		local r = lose_and_restore(w, dir .. "/img", nil, nil, function(d)
			if exact then verified(w)(d) end -- (verify compares counters as saved)
			for _, t in ipairs(assert(require("aiotk").read_image(d)):urings()[1].timeouts) do
				saved[t.user_data] = t
			end
			local code, out, err = run("show -p " .. w.pid .. " --json")
			assert.are.equal(0, code, err)
			for _, t in ipairs(json.decode(out).urings[1].timeouts) do live[t.user_data] = t end
		end)
		assert.are.same({ 1, 4 }, { r.polls, r.timeouts })
		local function key(name) return string.format("0x%016x", fact(w, "e.tmo_" .. name)) end
		local rel, count, multi, abs = key("rel"), key("count"), key("multi"), key("abs")
		for _, k in ipairs { rel, count, multi, abs } do
			assert.are.same({ "TIMEOUT", saved[k].flags }, { live[k].op, live[k].flags }, k)
		end
		-- relative: given what remained at the dump, running down from there
		assert.are.equal(saved[rel].remaining_ns, live[rel].ts_ns)
		assert.is_true(live[rel].remaining_ns > 0 and live[rel].remaining_ns <= saved[rel].remaining_ns)
		-- the count left, counted from the rebuilt instance's own tail
		assert.are.same({ 3, 3 }, { live[count].count_left, live[count].off })
		-- multishot: its period and repeats left; ABS: the same expiry
		assert.are.same({ 600e9, 5, true }, { live[multi].ts_ns, live[multi].repeats, live[multi].multishot })
		assert.are.same({ "ABS", "BOOTTIME" }, live[abs].flag_names)
		assert.are.equal(saved[abs].expires_ns, live[abs].expires_ns)
		check_used(w)
		assert.are.same({ fact(w, "e.tmo_count"), 0 }, { w.facts.completed3[1], w.facts.completed3[2] })
		assert.are.same({ 0, 0, 0 }, { fact(w, "tmo_op0"), fact(w, "tmo_op1"), fact(w, "tmo_op2") })
		assert.are.equal(-62, fact(w, "tmo." .. fact(w, "e.tmo_rel")))   -- -ETIME
		assert.are.equal(-125, fact(w, "tmo." .. fact(w, "e.tmo_multi"))) -- -ECANCELED
		assert.are.equal(-125, fact(w, "tmo." .. fact(w, "e.tmo_abs")))
		return r
	end

	-- --accept --recv (uring_workload.c, e_sockets) restored, then used.
	local function sockets_rebuilt(args, exact)
		w = start(args)
		local r = lose_and_restore(w, dir .. "/img", nil, nil, exact and verified(w) or nil)
		assert.are.same({ exact and "exact" or "rebase", 1, 3 }, { r.counters, r.polls, r.socks })
		check_used(w)
		-- each connection a new fd, IORING_CQE_F_MORE: the multishot ACCEPT still armed
		local a0, a1 = w.facts.accept0, w.facts.accept1
		assert.is_true(a0[1] >= 0 and a1[1] >= 0 and a0[1] ~= a1[1], a0.raw .. " " .. a1.raw)
		assert.are.same({ 1, 1 }, { a0[2], a1[2] })
		-- the single ACCEPT: ended, the peer's address where the program asked for it
		assert.are.same({ 0, 1 }, { w.facts.accept_single[1], w.facts.accept_single[2] })
		assert.are.same({ 5, 1 }, { w.facts.recv[1], w.facts.recv[2] }) -- 5 bytes, "hello", in its buffer
	end

	it("arms ACCEPTs (multishot, single with its address pointers) and a RECV again (exact counters)", function()
		sockets_rebuilt("0 --accept --recv", true)
	end)

	it("arms ACCEPTs and a RECV again with rebased counters", function()
		sockets_rebuilt("1000003 --accept --recv", false)
	end)

	-- --recv-bufs (uring_workload.c, recv_bufs_armed): a multishot RECV
	-- that received once (buffer 3) and a buffer-select RECV of up to 32
	-- bytes, both from group 7, in flight at the dump, the group's head 4.
	-- Restored, then used: each RECV's CQEs with its user_data, the
	-- buffers from the head on (4, 5, 6: the head set back before they
	-- were submitted), the bytes sent in them, the multishot still armed
	-- after each (IORING_CQE_F_MORE), the single one ended, its 32 kept;
	-- the kernel's head 7 after.
	local function recv_bufs_rebuilt(args)
		w = start(args)
		assert.are.same({ 5, 3, 1, 1 }, { fact(w, "e.recv_early"), w.facts["e.recv_early"][2],
			fact(w, "e.recv_early.more"), w.facts["e.recv_early.more"][2] })
		local r = lose_and_restore(w, dir .. "/img", nil, function(d)
			local _, text = run("show -D " .. d)
			for _, line in ipairs {
				string.format("in flight RECV user_data 0x%016x fd %d events 0x8000207b (multishot, provided " ..
					"buffers group 7 len 0 msg_flags 0x0)\n", fact(w, "e.recv_ms_data"), 0),
				string.format("in flight RECV user_data 0x%016x fd %d events 0xc000207b (provided buffers " ..
					"group 7 len 32 msg_flags 0x0)\n", fact(w, "e.recv_bs_data"), fact(w, "e.recv_bs_fd")),
				"buffer ring group 7: 8 entries, head 4 tail 8" } do
				assert.truthy(text:find(line, 1, true), text)
			end
			local ccode, ctext = run("check -D " .. d)
			assert.are.equal(3, ccode, ctext) -- rebased: the multishot's CQE has no SQE of its own
			assert.truthy(ctext:find("1 POLL(s), 0 TIMEOUT(s) and 2 ACCEPT/RECV(s) armed again", 1, true), ctext)
		end, function(d)
			-- as saved: each RECV's socket, group, length, flags (the
			-- counters, rebased, differ)
			local _, vout = run("verify -p " .. w.pid .. " -D " .. d)
			assert.truthy(vout:find("sq_head: image", 1, true), vout)
			assert.falsy(vout:find("request in flight", 1, true), vout)
			assert.falsy(vout:find("buffer", 1, true), vout)
		end)
		assert.are.same({ "rebase", 1, 2 }, { r.counters, r.polls, r.socks })
		check_used(w)
		for name, want in pairs { recv_ms0 = { 6, 4, 1 }, recv_bs = { 32, 5, 0 }, recv_ms1 = { 6, 6, 1 } } do
			assert.are.same({ want[1], want[2], want[3], 1 }, { fact(w, name), w.facts[name][2],
				fact(w, name .. ".more"), w.facts[name .. ".more"][2] }, name)
		end
		assert.are.equal(7, fact(w, "recv_head"))
	end

	it("arms a multishot RECV that posted and a buffer-select RECV again on their buffer ring, its head set back", function()
		recv_bufs_rebuilt("0 --buf-ring --recv-bufs")
	end)

	it("arms RECVs from a buffer ring in the kernel's memory again, rebased near 1e6", function()
		recv_bufs_rebuilt("1000003 --buf-ring-mmap --recv-bufs")
	end)

	it("refuses RECVs from a legacy provided-buffers group by name, the group and why", function()
		w = start("0 --provide-buffers --recv-bufs")
		local why = "RECV from provided buffers (%s, group 7): provided-buffer group 7: legacy provided " ..
			"buffers (IORING_OP_PROVIDE_BUFFERS) are not rebuilt"
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(1, code, err) -- the shipped policy: what cannot come back fails the dump
		for _, kind in ipairs { "multishot", "buffer select" } do
			assert.truthy(err:find(why:format(kind), 1, true), err)
		end
		assert.is_nil(core.listdir(dir .. "/img")) -- nothing written
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		local rcode, rout, rerr = run("dump -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. policy)
		assert.are.equal(0, rcode, rerr)
		assert.truthy(rout:find(why:format("multishot"), 1, true), rout)
		local ccode, text = run("check -D " .. dir .. "/img")
		assert.are.equal(4, ccode)
		assert.truthy(text:find("refused: io_uring fd " .. fact(w, "e.fd") .. ": provided-buffer group 7: legacy " ..
			"provided buffers (IORING_OP_PROVIDE_BUFFERS) are not rebuilt", 1, true), text)
		local _, stext = run("show -D " .. dir .. "/img")
		assert.truthy(stext:find("(cannot be rebuilt: " .. why:format("buffer select"), 1, true), stext)
	end)

	it("names the ACCEPTs and RECVs it does not submit again", function()
		local uring = require "aiotk.uring"
		local function why(opcode, args, flags)
			local a = { addr = "0x0", addr2 = "0x0", len = 64, op_flags = 0, ioprio = 0, file_slot = 0,
				buf_group = 0, done_io = 0 }
			for k, v in pairs(args) do a[k] = v end
			local sqe, reason = uring.rebuild { opcode = opcode, user_data = "0x1", fd = 3, poll_events = 0,
				flags = flags or "0x0", args = a }
			assert.is_nil(sqe)
			return reason
		end
		-- a RECV from provided buffers: by its group in instance u
		local function group_why(args, u, flags)
			local a = { addr = "0x0", addr2 = "0x0", len = 64, op_flags = 0, ioprio = 2, file_slot = 0,
				buf_group = 7, done_io = 0, mshot_len = 0 }
			for k, v in pairs(args) do a[k] = v end
			local sqe, reason = uring.rebuild({ opcode = 27, user_data = "0x1", fd = 0, file_fd = 9,
				poll_events = 0, flags = flags or "0x20", args = a }, u)
			return sqe, reason
		end
		local ring = { nbuffer_groups = 1, buffer_groups = { { bgid = 7, ring = true } } }
		local sqe = group_why({}, ring)
		assert.are.same({ 9, true, 7, 2, 0 }, { sqe.fd, sqe.buffer_select, sqe.buf_group, sqe.ioprio, sqe.len })
		assert.are.equal("RECV from provided buffers (multishot, group 7): provided-buffer group 7: its buffer ring " ..
			"was not found", select(2, group_why({}, { nbuffer_groups = 1, buffer_groups = { { bgid = 7,
				unrebuilt = "its buffer ring was not found" } } })))
		assert.are.equal("RECV from provided buffers (buffer select, group 3): no provided-buffer group of " ..
			"that number is registered", select(2, group_why({ ioprio = 0, buf_group = 3 }, ring)))
		assert.are.equal("RECV from provided buffers (multishot, group 3): its group is not rebuilt: the " ..
			"instance's provided-buffer groups were not all read", select(2, group_why({ buf_group = 3 },
				{ nbuffer_groups = 2, buffer_groups = ring.buffer_groups })))
		assert.are.equal("RECV from provided buffers (multishot, group 7): its instance's buffer groups were " ..
			"not given", select(2, group_why({})))
		assert.are.equal("RECV from provided buffers (multishot, group 7): its flags 0x10 (IORING_RECVSEND_BUNDLE: " ..
			"0x10) are not rebuilt", select(2, group_why({ ioprio = 18 }, ring)))
		assert.are.equal("RECV from provided buffers (multishot, group 7) with a total length (its length left " ..
			"is not read): not rebuilt", select(2, group_why({ ioprio = 2 + 4096 }, ring)))
		assert.are.equal("multishot RECV: its socket has no fd in the process",
			select(2, uring.rebuild({ opcode = 27, user_data = "0x1", fd = 0, file_fd = -1, poll_events = 0,
				flags = "0x20", args = { addr = "0x0", addr2 = "0x0", len = 0, op_flags = 0, ioprio = 2,
					file_slot = 0, buf_group = 7, done_io = 0, mshot_len = 0 } }, ring)))
		assert.are.equal("multishot ACCEPT on a registered file: its slot is not in the kernel's record once it " ..
			"posted", why(13, { ioprio = 1 }, "0x1"))
		assert.are.equal("RECV with 3 byte(s) received already", why(27, { done_io = 3 }))
		assert.are.equal("ACCEPT into a fixed file slot (a direct descriptor): not rebuilt", why(13, { file_slot = 2 }))
		assert.are.equal("ACCEPT linked to other requests", why(13, {}, "0x4"))
		local sqe, reason = uring.rebuild { opcode = 9, user_data = "0x1", fd = 3, poll_events = 0, flags = "0x0" }
		assert.is_nil(sqe)
		assert.are.equal("SENDMSG waiting on its file: only POLL_ADD, ACCEPT and RECV are rebuilt", reason)
	end)

	it("arms TIMEOUTs again with their user_data, time left, count left, flags (exact counters)", function()
		assert.are.equal("exact", timeouts_rebuilt("0 --timeout", true).counters)
	end)

	it("arms a count TIMEOUT again against the rebased counters: it ends after the completions it had left", function()
		assert.are.equal("rebase", timeouts_rebuilt("1000003 --timeout").counters)
	end)

	it("refuses registered personalities by name", function()
		refused_by_name("0 --personality", "personalities are registered (IORING_REGISTER_PERSONALITY)")
	end)

	it("refuses registered restrictions by name", function()
		refused_by_name("0 --restricted", "restrictions are registered (IORING_REGISTER_RESTRICTIONS)")
	end)

	it("refuses legacy provided buffers by name", function()
		refused_by_name("0 --provide-buffers", "provided-buffer group 7: legacy provided buffers " ..
			"(IORING_OP_PROVIDE_BUFFERS) are not rebuilt")
	end)

	it("refuses a buffer ring whose memory was moved after it was touched by name (its address not found)", function()
		refused_by_name("0 --buf-ring-moved", "provided-buffer group 7: its buffer ring was not found in " ..
			"the program's memory")
	end)

	it("refuses other setup flags by name", function()
		refused_by_name("0 --flags 0x800", "setup flag(s) CQE32 are not rebuilt")
	end)

	it("check --criu says a CRIU dump failed on an io_uring mapping, and where to read why", function()
		local criu = require "criu_helper"
		if not criu.need(pending) then return end
		w = start("0")
		local d = dir .. "/criu"
		core.mkdir(d)
		-- CRIU's own dump of the process (left running): its maps parser
		-- stops at the io_uring mapping
		local ok = criu.criu("dump -t " .. w.pid .. " -D " .. d .. " --shell-job --leave-running")
		assert.is_false(ok)
		local code, _, err = run("check --criu " .. d)
		assert.are.equal(4, code)
		assert.truthy(err:find("failed on an io_uring mapping (criu.log: Unknown shit 600 " ..
			"(anon_inode:[io_uring]))", 1, true), err)
		assert.truthy(err:find("docs/CRIU-URING.md", 1, true), err)
	end)

	it("undoes everything, armed TIMEOUTs too, when the last request fails (the RECV's fd gone)", function()
		local err = failed_restore("0 --timeout --recv --bad-recv")
		assert.truthy(err:find(string.format("RECV user_data 0x%x on fd %d submitted again: Bad file descriptor",
			fact(w, "e.recv_data"), fact(w, "e.recv_fd")), 1, true), err)
	end)

	-- An undo that cannot finish, by construction: the workload runs
	-- under a seccomp filter refusing munmap at the journal's address
	-- (deny_munmap), so the rebuild's commit fails, and so does its
	-- rollback's last step.
	it("names what its undo could not take away (the journal); the rest undone, the process runs on", function()
		local deny = (helper.bin:match("^(.*)/[^/]*$") or ".") .. "/deny_munmap " ..
			string.format("0x%x", core.URING_JOURNAL_AT)
		w = start("0", deny)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		core.kill(w.pid, "USR1")
		read_until(w, "LOST")
		local before = state(w.pid)
		local journal = string.format("\n%x%%-%%x+ rw%%-p 00000000 00:00 0 *\n", core.URING_JOURNAL_AT)
		local at = string.format("0x%x", core.URING_JOURNAL_AT)
		-- the commit refused, then the rollback's last step: named, the rest undone
		local expect = { "munmap of aiotk's io_uring journal at " .. at .. ": Operation not permitted; undoing it " ..
			"failed, process " .. w.pid .. " keeps: io_uring instance 1 of the image, rebuilt, not taken away: 1 " ..
			"step(s) of taking a rebuilt io_uring instance away failed and what they name stays in process " ..
			w.pid .. " (its io_uring journal at " .. at .. " too: the next restore tries again to take it away), the first: " ..
			"aiotk's io_uring journal, not unmapped, at " .. at,
			-- the next restore finds it, and cannot take it away either: it stops there
			"munmap of the io_uring journal an interrupted aiotk left at " .. at .. ": Operation not permitted" }
		for _, msg in ipairs(expect) do
			local rcode, _, rerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
			assert.are_not.equal(0, rcode)
			assert.truthy(rerr:find(msg, 1, true), rerr)
			local after = state(w.pid)
			assert.are.equal(before.fds, after.fds)
			assert.are.equal("\n" .. before.maps, (("\n" .. after.maps):gsub(journal, "\n")))
			assert.are.equal(0, process_urings(w.pid))
			assert.is_nil(helper.status(w.pid, "State"):match("^[tT]"), "left stopped")
		end
	end)

	it("undoes everything when a late step fails (the POLL's fd gone)", function()
		local err = failed_restore("0 --bad-poll")
		assert.truthy(err:find("POLL_ADD user_data 0x" .. bit.tohex(loadstring("return " ..
			w.facts["e.poll_data"].raw .. "ULL")()), 1, true), err)
	end)
end)
