-- The kernel's view of AIO contexts (BPF) against real contexts: the
-- in-flight count derived from the kernel's slot accounting, the n given to
-- io_setup, the kernel's tail, and a POLL in flight carried across a dump
-- and a restore.
local aiotk = require "aiotk"
local kernel = require "aiotk.kernel"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run
local lab = aiotk.lab

local function view(ctx)
	local kv = assert(kernel.read(aiotk.core.getpid()))
	return assert(kv[ctx], "the kernel view lists the context")
end

describe("kernel view", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("counts requests in flight exactly: 0, 1, k, as many as this host allows, after completion and reaping", function()
		local ctx = assert(lab.setup(1))
		local g = assert(aiotk.geometry(1, aiotk.host()))
		local c = view(ctx)
		assert.are.same({ 1, g.nr, 0, 0, 0 }, { c.n, c.nr, c.kernel_tail, c.in_flight, c.cancellable })
		local one = assert(lab.poll(ctx, 1))
		c = view(ctx)
		assert.are.same({ 1, 1, 1 }, { c.in_flight, c.cancellable, #c.pending })
		assert.are.same({ "poll", "0x9011000000000000", 5 }, { c.pending[1].kind, c.pending[1].data, c.pending[1].opcode })
		local more = assert(lab.poll(ctx, 36))
		assert.are.equal(37, view(ctx).in_flight)
		local rest = assert(lab.poll(ctx, g.capacity - 37))
		c = view(ctx)
		assert.are.same({ g.capacity, g.capacity }, { c.in_flight, c.cancellable })
		local over, _, code = lab.poll(ctx, 1)
		assert.is_nil(over)
		assert.are.equal("budget", code, "the kernel refuses past capacity: the count is the real limit")
		-- completions leave the in-flight count; their slots come back only when reaped
		assert(one:fire())
		assert(more:fire())
		assert(rest:fire())
		assert(helper.wait_until(function() return view(ctx).in_flight == 0 end, 2000))
		c = view(ctx)
		assert.are.same({ g.capacity, 0 }, { c.kernel_tail, c.cancellable })
		assert.are.equal(g.capacity, #lab.reap(ctx, g.nr))
		assert.are.equal(1, lab.complete(ctx, 1))
		c = view(ctx)
		assert.are.same({ 0, g.capacity + 1 }, { c.in_flight, c.kernel_tail })
		one:close() more:close() rest:close()
		lab.destroy(ctx)
	end)

	it("records io_setup's n: rings made with io_setup(64) and io_setup(100) keep their n and their aio-nr share", function()
		local w = helper.workload("--ring 64:3:1:0 --ring 100:5:0:0")
		local code, out, err = run("show -p " .. w.pid .. " --json")
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		assert.is_true(doc.kernel_view)
		local ns = {}
		for _, r in ipairs(doc.rings) do ns[#ns + 1] = r.n end
		table.sort(ns)
		assert.are.same({ 64, 100 }, ns)
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		local before = assert(aiotk.aio_nr())
		w:destroy()
		assert(helper.wait_until(function() return aiotk.aio_nr() == before - 164 end, 2000))
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		assert.are.equal(before, (aiotk.aio_nr()))
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("carries a POLL in flight across dump and restore: captured, resubmitted, completes with its iocb and data", function()
		local w = helper.workload("--ring 1:15:10:0 --pending")
		local code, out = run("show -p " .. w.pid .. " --json")
		assert.are.equal(0, code)
		local live = json.decode(out).rings[1]
		assert.are.same({ 1, 1 }, { live.in_flight, #live.pending })
		local p = live.pending[1]
		assert.are.same({ 5, "0xa007000000000000" }, { p.opcode, p.data })
		local err
		code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		local saved = json.decode((select(2, run("show --json " .. dir .. "/img")))).rings[1]
		assert.are.same({ { obj = p.obj, data = p.data, opcode = 5, fd = p.fd, buf = "0x0000000000000001" } },
			saved.captured)
		assert.are.same({ 15, 1 }, { saved.kernel_tail, saved.n })
		w:destroy()
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		local again = json.decode((select(2, run("show -p " .. w.pid .. " --json")))).rings[1]
		assert.are.same({ 1, p.obj, p.data }, { again.in_flight, again.pending[1].obj, again.pending[1].data })
		-- the workload writes its pipe and checks the completion's obj and data
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("reads a quiet stopped process in one call: its rings in address order, with the kernel's n and tail, as ring-by-ring reads see them", function()
		local w = helper.workload("--ring 64:3:1:0 --ring 100:5:0:0 --ring 1:15:10:0")
		kernel.prepare(w.pid)
		local t = assert(aiotk.core.attach(w.pid))
		local reading = assert(kernel.read_stopped(t))
		assert.is_true(reading:settled(), "nothing is in flight: the reading is settled")
		local kv = assert(kernel.read(w.pid))
		local one_by_one = {}
		for i, m in ipairs(assert(t:rings())) do one_by_one[i] = assert(t:snapshot(m.addr)) end
		assert(t:detach())
		-- taken once the process runs again: the rings were read while it was stopped
		local contexts, rings = reading:take()
		assert.are.equal(3, #rings)
		assert.are.equal(3, #contexts)
		for i, r in ipairs(rings) do
			local want, k = one_by_one[i], kv[one_by_one[i].addr]
			assert.are.same({ want.addr, want.nr, want.head, want.tail, want:events() },
				{ r.addr, r.nr, r.head, r.tail, r:events() })
			assert.are.same({ k.n, k.kernel_tail, 0 }, { r.n, r.kernel_tail, contexts[i].in_flight })
			assert.is_true(i == 1 or rings[i - 1].addr < r.addr)
		end
		assert.are.same({ 64, 100, 1 }, (function()
			local by = {}
			for _, r in ipairs(rings) do by[#by + 1] = r end
			table.sort(by, function(a, b) return a.tail < b.tail end)
			return { by[1].n, by[2].n, by[3].n }
		end)())
		local none, left = reading:take()
		assert.are.same({ {}, {} }, { none, left })
		local ok = pcall(kernel.read_stopped, t)
		assert.is_false(ok, "a detached target is refused")
	end)

	it("leaves a reading with a request in flight to the policy: not settled, and the dump still captures it", function()
		local w = helper.workload("--ring 1:15:10:0 --pending")
		kernel.prepare(w.pid)
		local t = assert(aiotk.core.attach(w.pid))
		assert.is_false(assert(kernel.read_stopped(t)):settled())
		assert(t:detach())
		local img = assert(aiotk.dump_process(w.pid, dir .. "/img"))
		assert.are.equal(1, img:rings()[1].ncaptured)
	end)

	it("fails a dump that would lose requests when the policy says fail, naming ring, count and kind", function()
		helper.write(dir .. "/p.lua", [[return { in_flight = function() return "fail" end }]])
		local w = helper.workload("--ring 1:15:10:0 --pending")
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/p.lua")
		assert.are.equal(1, code)
		assert.matches("ring 0x%x+: 1 request%(s%) in flight %(0 that finish on their own.-1 cancellable", err)
		assert.is_nil(io.open(dir .. "/img/rings.img"))
	end)

	it("without CAP_BPF says so in one line and still shows the rings", function()
		local w = helper.workload("--ring 1:3:0:0")
		local code, out = run("show -p " .. w.pid .. " --json", "setpriv --bounding-set=-bpf,-perfmon,-sys_admin")
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.is_false(doc.kernel_view)
		assert.matches("CAP_BPF", doc.kernel_view_error)
		assert.are.same({ 1, 3 }, { #doc.rings, doc.rings[1].tail })
		assert.is_nil(doc.rings[1].n)
		-- a dump says in one line what it cannot know, and falls back to tails
		local dcode, _, derr = run("dump -p " .. w.pid .. " -D " .. dir .. "/img",
			"setpriv --bounding-set=-bpf,-perfmon,-sys_admin")
		assert.are.equal(0, dcode, derr)
		local _, nlines = derr:gsub("no kernel view", "")
		assert.are.equal(1, nlines, derr)
		assert.matches("CAP_BPF.*io_setup's n, the kernel's tail and requests in flight", derr)
		local saved = json.decode((select(2, run("show --json " .. dir .. "/img")))).rings[1]
		assert.are.same({ 3, 3 }, { saved.tail, #saved.events })
		assert.is_nil(saved.kernel_tail)
	end)
end)
