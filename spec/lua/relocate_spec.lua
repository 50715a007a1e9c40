-- Relocation (issue 23): a ring this host cannot rebuild at its address
-- with its size is made at a free address and every copy of its old id in
-- the process rewritten. Real libaio workloads: rings made one after the
-- other (adjacent, so none can grow), ids in heap, stack, static data and
-- TLS, a thread blocked in io_getevents, libaio's user-space
-- io_getevents; the workload verifies itself after each restore. The
-- host with more CPUs is this one planned as 16 CPUs (the policy's model):
-- a one-page ring is then impossible, and the larger ring works here too.
local aiotk = require "aiotk"
local core = aiotk.core
local policy = require "aiotk.policy"
local plans = require "aiotk.plan"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local EXAMPLE = "scripts/examples/grow-or-relocate.lua"
local FIX = os.getenv("AIOTK_CRIU_FIXTURES") or "../shared/fixtures/criu"
local KEEP = " --keep heap,stack,static,tls --allow-grow"

-- A policy file: the example policy (or answer) as on a host of 16 CPUs.
local function policy16(dir, answer)
	local path = dir .. "/p16-" .. (answer or "example") .. ".lua"
	helper.write(path, answer and string.format([[
		return { model = { cpus = 16 }, impossible = function() return %q end }]], answer) or
		string.format([[
		local p = dofile(%q)
		p.model = { cpus = 16 }
		return p]], EXAMPLE))
	return path
end

local function dump(w, dir)
	local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir)
	assert.are.equal(0, code, err)
	return assert(aiotk.read_image(dir)):rings()
end

-- `--ring 1:C:R:0` for ring i of n: states that differ, none wrapped.
local function ring_args(n)
	local a = {}
	for i = 1, n do a[#a + 1] = string.format("--ring 1:%d:%d:0", 3 + i, i - 1) end
	return table.concat(a, " ")
end

-- The restore's --json, and each restored ring read back from the
-- process at its new address: saved head, tail and events, at least the
-- saved nr.
local function restore_checked(w, dir, pol, saved, extra)
	local code, out, err = run("restore -p " .. w.pid .. " -D " .. dir .. " --json --policy " .. pol .. (extra or ""))
	assert.are.equal(0, code, err)
	local doc = json.decode(out)
	local by_old = {}
	for _, r in ipairs(saved) do by_old[r.addr] = r end
	local t = assert(aiotk.attach(w.pid))
	local ok, e = pcall(function()
		for _, r in ipairs(doc.rings) do
			local old = by_old[tonumber(r.relocated_from or r.addr)]
			local now = assert(t:snapshot(tonumber(r.addr)))
			assert.are.same({ old.head, old.tail, #old }, { now.head, now.tail, #now })
			assert.is_true(now.nr >= old.nr)
			for k = 1, #old do assert.are.same(old:event(k), now:event(k)) end
		end
	end)
	t:detach()
	assert(ok, e)
	return doc, err
end

local function relocated(doc)
	local n, refs = 0, 0
	for _, r in ipairs(doc.rings) do
		if r.relocated_from then
			n = n + 1
			refs = refs + #r.references
		end
	end
	return n, refs
end

describe("relocation", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("is a policy answer, planned for unwrapped rings only, and never the default", function()
		local w = helper.workload("--ring 1:5:3:0 --ring 32:100:100:30")
		local rings = dump(w, dir)
		local host = assert(core.host())
		local p = policy.load(policy16(dir, "relocate"))
		local plan = plans.make(rings, host, p)
		local by = {}
		for _, s in ipairs(plan.steps) do by[s.addr] = s end
		local small, wrapped = by[rings[1].addr], by[rings[2].addr]
		if rings[1].wrapped then small, wrapped = wrapped, small end
		assert.are.equal("relocate", small.action)
		assert.are.equal(8192, small.relocate_len)
		assert.matches("relocate as a 8192%-byte ring", plans.describe(small))
		assert.are.equal("fail", wrapped.action)
		assert.matches("impossible for a wrapped ring", wrapped.reason)
		-- the shipped policy fails what it cannot make exactly
		local d = plans.make(rings, host, policy.load(policy16(dir, "fail")))
		for _, s in ipairs(d.steps) do assert.are.equal("fail", s.action) end
		assert.are.equal("fail", policy.impossible())
		assert.is_false(policy.relocate_unreferenced)
		-- checked like every other setting: its type at load
		helper.write(dir .. "/bad.lua", [[return { relocate_unreferenced = "yes" }]])
		local ok, err = pcall(policy.load, dir .. "/bad.lua")
		assert.is_false(ok)
		assert.are.equal("policy " .. dir .. "/bad.lua: relocate_unreferenced must be a boolean, not a string", err)
	end)

	for _, n in ipairs { 2, 8 } do
		it(n .. " rings made one after the other are relocated, ids in heap, stack, static data and TLS rewritten", function()
			local w = helper.workload("--dense" .. KEEP .. " " .. ring_args(n))
			local saved = dump(w, dir .. "/img")
			local pol = policy16(dir)
			-- from the image alone every ring with a ring right above it relocates
			local code, out = run("check -D " .. dir .. "/img --policy " .. pol)
			assert.are.equal(3, code, out)
			local _, planned = out:gsub("relocate as a 8192%-byte ring", "")
			assert.is_true(planned >= n - 1, out)
			-- with the process: its layout, and the copies of each id it holds
			local jcode, jout = run("check -D " .. dir .. "/img -p " .. w.pid .. " --json --policy " .. pol)
			assert.are.equal(3, jcode, jout)
			local rows, counted = json.decode(jout).rings, 0
			for _, r in ipairs(rows) do
				assert.are_not.equal("fail", r.action)
				if r.action == "relocate" then
					counted = counted + 1
					assert.is_true(r.references >= 6, jout)
					assert.are.equal(8192, r.relocate_len)
					assert.matches("%d+ copies of its id found in the process", r.aiotk)
				end
			end
			assert.is_true(counted >= n - 1)
			assert.are.equal("DESTROYED", w:destroy())
			local doc = restore_checked(w, dir .. "/img", pol, saved)
			local moved, refs = relocated(doc)
			assert.is_true(moved >= n - 1)
			-- every copy kept: ctxs, the expect record, heap, stack, static, TLS
			assert.is_true(refs >= 6 * moved, refs)
			assert.are.equal("VERIFY OK " .. n .. " rings (" .. moved .. " relocated)", w:verify())
		end)
	end

	it("lists every rewritten location in its report, a word that only equals an id among them", function()
		-- --decoy: one more copy of each id, in a word the program never
		-- uses as one (a counter that happens to hold the same value): a
		-- false match cannot be told from a copy, and is rewritten too
		local w = helper.workload("--decoy --dense" .. KEEP .. " " .. ring_args(2))
		dump(w, dir .. "/img")
		w:destroy()
		local code, out, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. policy16(dir, "relocate"))
		assert.are.equal(0, code, err)
		assert.matches("restored 2 ring%(s%) into process %d+ %(2 relocated%)", out)
		for _, where in ipairs { "%[heap%]%+0x%x+ at 0x%x+ %(id%)", "%[stack%]%+0x%x+ at 0x%x+ %(id%)",
			"aio_workload%+0x%x+ at 0x%x+ %(id%)" } do
			assert.matches(where, out)
		end
		local total = 0
		for k in out:gmatch("relocated to 0x%x+: (%d+) reference%(s%) rewritten") do total = total + tonumber(k) end
		local _, lines = out:gsub("\n    ", "")
		assert.are.equal(total, lines)
		assert.matches("relocated to 0x%x+ %(8192 bytes%)", err)
		w:signal("USR2")
		assert.are.same({ "DECOY 2 of 2 rewritten", "VERIFY OK 2 rings (2 relocated)" }, { w:line(), w:line() })
		w:finish()
	end)

	it("relocates rings a thread waits on in io_getevents; the live old rings go (--replace), no thread sees an error", function()
		local w = helper.workload("--threads --blocked 1" .. KEEP .. " --ring 1:5:3:0 --ring 1:4:4:0")
		local saved = dump(w, dir .. "/img")
		local doc = restore_checked(w, dir .. "/img", policy16(dir, "relocate"), saved, " --replace")
		assert.are.equal(2, (relocated(doc)))
		-- the waiter's register (rdi: the id it gave io_getevents)
		local regs = 0
		for _, r in ipairs(doc.rings) do
			for _, ref in ipairs(r.references) do
				if ref.tid and ref.tid ~= w.pid then regs = regs + 1 end
			end
		end
		assert.is_true(regs >= 1)
		assert.are.equal(2, w:ring_count())
		assert.are.equal("VERIFY OK 2 rings (2 relocated)", w:verify())
	end)

	it("relocates a ring whose saved range something else holds, at its own size, when the policy says so", function()
		local w = helper.workload("--occupy-after-destroy" .. KEEP .. " --ring 1:5:3:0 --ring 1:6:2:0")
		local saved = dump(w, dir .. "/img")
		assert.are.equal("DESTROYED", w:destroy())
		-- the shipped policy: refused, as always, nothing changed
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(1, code)
		assert.matches("is mapped there; nothing was changed", err)
		assert.are.equal(0, w:ring_count())
		local doc = restore_checked(w, dir .. "/img", EXAMPLE, saved)
		for _, r in ipairs(doc.rings) do assert.is_not_nil(r.relocated_from) end
		assert.are.equal("VERIFY OK 2 rings (2 relocated)", w:verify())
	end)

	it("refuses a ring whose id the process keeps nowhere aiotk sees, unless the policy says otherwise", function()
		-- a ring made by injection: the program never saw its id
		local w = helper.workload("--ring 1:5:3:0")
		local t = assert(aiotk.attach(w.pid))
		local ctx = assert(t:io_setup(1))
		t:detach()
		local rings = dump(w, dir .. "/img")
		assert.are.equal(2, #rings)
		t = assert(aiotk.attach(w.pid))
		assert(t:io_destroy(ctx))
		t:detach()
		helper.write(dir .. "/only.lua", string.format([[
			return { model = { cpus = 16 }, filter = function(r) return r.addr == %d end,
				impossible = function() return "relocate" end }]], ctx))
		-- check -p predicts it
		local ccode, cout = run("check -D " .. dir .. "/img -p " .. w.pid .. " --json --policy " .. dir .. "/only.lua")
		assert.are.equal(4, ccode, cout)
		local row = json.decode(cout).rings[1]
		assert.are.same({ "fail", 0 }, { row.action, row.references })
		assert.matches("no copy of it was found", row.reason)
		local aio_nr = aiotk.aio_nr()
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/only.lua")
		assert.are.equal(1, code)
		assert.matches(string.format("relocating ring 0x%x means rewriting its id, and no copy of it was found", ctx), err)
		assert.matches("relocate_unreferenced", err)
		assert.matches("nothing was changed", err)
		assert.are.equal(1, w:ring_count())
		assert.are.equal(aio_nr, aiotk.aio_nr())
		helper.write(dir .. "/anyway.lua", string.format([[
			local p = dofile(%q)
			p.relocate_unreferenced = true
			return p]], dir .. "/only.lua"))
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/anyway.lua")
		assert.are.equal(0, code, err)
		assert.are.equal(2, w:ring_count())
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("undoes everything on a failure after the ids were rewritten: ids back, rings gone, a second restore works", function()
		local w = helper.workload("--dense" .. KEEP .. " " .. ring_args(3))
		local rings = dump(w, dir .. "/img")
		w:destroy()
		local aio_nr = aiotk.aio_nr()
		local p = policy.load(policy16(dir, "relocate"))
		local called, ok, err = pcall(aiotk.restore_process, w.pid, rings, { policy = p,
			on_ring = function(i) if i == 2 then error("stop here") end end })
		assert.is_falsy(called and ok)
		assert.matches("stop here", called and err or ok)
		assert.are.equal(0, w:ring_count())
		assert.are.equal(aio_nr, aiotk.aio_nr())
		-- the old ids are where they were: found again, all of them
		local res = assert(aiotk.restore_process(w.pid, rings, { policy = p }))
		local refs = 0
		for _, r in ipairs(res) do refs = refs + #r.refs end
		assert.is_true(refs >= 18, refs)
		assert.are.equal("VERIFY OK 3 rings (3 relocated)", w:verify())
	end)

	it("counts references for check -p in a bounded read, and says how much it read", function()
		local w = helper.workload("--dense" .. KEEP .. " " .. ring_args(2))
		local rings = dump(w, dir .. "/img")
		local p = policy.load(policy16(dir))
		local plan = plans.make(rings, assert(core.host()), p, aiotk.maps(w.pid))
		local relocate = require "aiotk.relocate"
		local _, scanned, skipped = relocate.count(w.pid, plan)
		assert.are.equal(0, skipped)
		local max = relocate.COUNT_MAX_BYTES
		relocate.COUNT_MAX_BYTES = 4096
		local found, scanned2, skipped2 = relocate.count(w.pid, plan)
		relocate.COUNT_MAX_BYTES = max
		-- it stops at the first 1 MiB window past the bound
		assert.is_true(skipped2 > 0 and scanned2 < scanned and scanned2 <= 4096 + 1048576,
			scanned .. " " .. scanned2 .. " " .. skipped2)
		plans.note_references(plan, found, scanned2, p, skipped2)
		local relocated = 0
		for _, st in ipairs(plan.steps) do
			if st.action == "relocate" then
				relocated = relocated + 1
				assert.matches(string.format("in the first %d bytes of its memory read %%(check's bound; %d more " ..
					"bytes not read here, which the restore reads%%)", scanned2, skipped2), plans.describe(st))
			end
		end
		-- none refused for want of a copy in what was not read
		assert.are.equal(2, relocated)
		assert.matches("^VERIFY OK 2 rings", w:verify())
	end)

	it("reports an undo that fails (code rollback), naming what stays and where; every other step is taken", function()
		local w = helper.workload(KEEP .. " --ring 1:4:0:0")
		local ring = w.addrs[1]
		local t = assert(aiotk.attach(w.pid))
		local restore = require "aiotk.restore"
		-- by construction: an id to put back that its word no longer holds, a ring
		-- to move back from a slot that holds nothing, between them a journal to remove
		local undo = setmetatable({ claims = {},
			{ kind = "refs", refs = { { addr = ring, old = ring, value = 0x1234 } } },
			{ kind = "journal" },
			{ kind = "parked", addr = ring, len = 4096, at = 0x3a1070000000 } }, restore.Undo)
		local tid, failed = undo:rollback(t)
		t:detach()
		assert.is_nil(tid)
		assert.are.equal(2, #failed)
		assert.matches(string.format("^ring 0x%x moved aside to 0x3a1070000000 %%(%%-%%-replace%%), not moved back: .", ring),
			failed[1])
		assert.matches(string.format("^1 rewritten id%%(s%%) and pointer%%(s%%), not put back: word 0x%x .* " ..
			"holds 0x%%x+, not the 0x1234 found there", ring), failed[2])
		local e, c = restore.undo_failed("it failed", "system", failed, w.pid)
		assert.are.equal("rollback", c)
		assert.are.equal(string.format("it failed; undoing it failed, process %d keeps: %s; %s", w.pid, failed[1],
			failed[2]), e)
		assert.are.same({ "it failed", "system" }, { restore.undo_failed("it failed", "system", {}, w.pid) })
		-- nothing was changed by the steps that failed
		assert.matches("^VERIFY OK 1 rings", w:verify())
	end)

	it("is carried out in a CRIU dump too (criu-fixup), and undone byte for byte", function()
		local d = dir .. "/nr1"
		assert(helper.sh("cp -r " .. FIX .. "/nr1 " .. d))
		local orig = {}
		for _, name in ipairs(core.listdir(d)) do orig[name] = helper.slurp(d .. "/" .. name) end
		helper.write(dir .. "/rel.lua", [[return { impossible = function() return "relocate" end }]])
		-- the dump's VMAs tell the example policy there is no room to grow
		-- (a mapping follows the ring), so it relocates rather than grows
		local code, out = run("check --criu " .. d .. " --cpus 16 --json --policy " .. EXAMPLE)
		assert.are.equal(3, code)
		local row = json.decode(out).rings[1]
		assert.are.equal("relocate", row.action)
		assert.matches("relocated as 8192 bytes in the images", row.criu_with_plugin)
		local err
		code, out, err = run("criu-fixup " .. d .. " --cpus 16 --policy " .. dir .. "/rel.lua")
		assert.are.equal(0, code, err)
		assert.matches("ring 0x7fa85395a000: relocated to 0x%x+ %(8192 bytes, nr_req 62 %-> 1%): %d+ reference", out)
		assert.matches("pages%-1%.img%+0x%x+: 0x%x+ in the dump's mapping", out)
		code, _, err = run("criu-fixup --undo " .. d)
		assert.are.equal(0, code, err)
		for name, bytes in pairs(orig) do assert(helper.slurp(d .. "/" .. name) == bytes, name) end
	end)
end)
