-- Every policy decision point: for real where this host can produce the
-- situation, through the geometry model or a simulated kernel where it
-- cannot (those tests say "simulated" or "model").
local aiotk = require "aiotk"
local policy = require "aiotk.policy"
local plans = require "aiotk.plan"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local EXAMPLES = "scripts/examples"
local FIX = os.getenv("AIOTK_CRIU_FIXTURES") or "../shared/fixtures/criu"

local function dump(w, dir, extra)
	local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. (extra or ""))
	assert.are.equal(0, code, err)
	return out
end

describe("policy", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("a user policy file changes one decision and keeps the shipped rest", function()
		local p = policy.load(EXAMPLES .. "/big-rings-only.lua")
		assert.are_not.equal(policy.filter, p.filter)
		for _, hook in ipairs { "impossible", "budget", "in_flight", "overfull", "order", "log" } do
			assert.are.equal(policy[hook], p[hook], hook)
		end
		-- a file that is no policy is refused by name, saying what a policy is
		helper.write(dir .. "/not-policy.lua", "return 'show'")
		local ok, err = pcall(policy.load, dir .. "/not-policy.lua")
		assert.is_false(ok)
		assert.are.equal("policy " .. dir .. "/not-policy.lua must return a table of hooks", err)
		local w = helper.workload("--ring 1:15:10:0 --ring 4096:100:50:0")
		dump(w, dir)
		local code, out = run("check -D " .. dir .. " --json --policy " .. EXAMPLES .. "/big-rings-only.lua")
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.are.equal(1, #doc.rings)
		assert.are.equal(266240, doc.rings[1].ring_len)
		-- the same file as policy.lua in a user script directory
		os.execute(string.format("mkdir -p %s/user && cp %s/big-rings-only.lua %s/user/policy.lua", dir, EXAMPLES, dir))
		code, out = run("check -D " .. dir .. " --json", "AIOTK_PATH=" .. dir .. "/user")
		assert.are.equal(1, #json.decode(out).rings)
	end)

	it("dumps only the rings the filter keeps, with or without a request in flight", function()
		helper.write(dir .. "/big.lua", [[
			return { filter = function(ring, ctx)
				assert(ctx.phase == "dump" and ctx.pid > 0)
				return ring.nr > 1000
			end }
		]])
		for _, extra in ipairs { "", " --pending" } do
			local w = helper.workload("--ring 1:15:10:0 --ring 4096:100:50:0" .. extra)
			local img = dir .. "/img" .. #extra
			dump(w, img, " --policy " .. dir .. "/big.lua")
			local rings = assert(aiotk.read_image(img)):rings()
			assert.are.equal(1, #rings, extra)
			assert.are.same({ 8319, 50 }, { rings[1].nr, #rings[1] })
			assert.are.equal("VERIFY OK 2 rings", w:verify())
		end
	end)

	it("grows a ring in place in a real workload, forced by a policy file", function()
		helper.write(dir .. "/grow16.lua", [[
			-- plan as if this host had 16 CPUs: a one-page ring is then impossible
			return { model = { cpus = 16 }, impossible = function() return "grow" end }
		]])
		local w = helper.workload("--gap --ring 1:15:10:0 --allow-grow")
		dump(w, dir .. "/img")
		local code, out = run("check -D " .. dir .. "/img --policy " .. dir .. "/grow16.lua")
		assert.are.equal(3, code)
		assert.matches("grow in place by 4096 bytes to 8192", out)
		assert.are.equal("DESTROYED", w:destroy())
		local err
		code, out, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/grow16.lua")
		assert.are.equal(0, code, err)
		assert.matches("1 grown in place", out)
		assert.matches("grew in place from 4096 to 8192", err)
		local t = assert(aiotk.attach(w.pid))
		local r = assert(t:snapshot(w.addrs[1]))
		t:detach()
		assert.are.same({ 255, 8192, 10, 15 }, { r.nr, r.ring_len, r.head, r.tail })
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("fails on the aio-max-nr budget by default, raises it by exactly what is missing when told, and only for a restore that succeeds", function()
		if not helper.is_root() then
			pending("needs root to lower fs.aio-max-nr: skipped")
			return
		end
		local w = helper.workload("--ring 128:333:333:100 --ring 1:15:10:0")
		dump(w, dir)
		local _, max = aiotk.aio_nr()
		local ok, err = pcall(function()
			-- its rings still there: the restore raises the limit, then
			-- finds them in the way, and puts the limit back
			local live = aiotk.aio_nr()
			assert(aiotk.set_aio_max_nr(live + 10))
			local code, _, e = run("restore -p " .. w.pid .. " -D " .. dir .. " --policy " .. EXAMPLES .. "/raise-budget.lua")
			assert.are.equal(1, code, e)
			assert.matches("raised fs.aio%-max%-nr", e)
			assert.matches("is mapped there", e)
			assert.are.equal(live + 10, select(2, aiotk.aio_nr()))
		end)
		aiotk.set_aio_max_nr(max)
		assert(ok, err)
		w:destroy()
		local nr = aiotk.aio_nr()
		assert(aiotk.set_aio_max_nr(nr + 10))
		ok, err = pcall(function()
			local code, _, e = run("restore -p " .. w.pid .. " -D " .. dir)
			assert.are.equal(1, code)
			-- the n each ring was made with (128 and 1), recorded at dump
			assert.matches("129 of fs.aio%-max%-nr needed", e)
			assert.matches("119 short", e)
			assert.are.equal(0, w:ring_count())
			code, _, e = run("restore -p " .. w.pid .. " -D " .. dir .. " --policy " .. EXAMPLES .. "/raise-budget.lua")
			assert.are.equal(0, code, e)
			assert.matches("raised fs.aio%-max%-nr from " .. (nr + 10) .. " to " .. (nr + 129), e)
			assert.are.equal(nr + 129, select(2, aiotk.aio_nr()))
		end)
		aiotk.set_aio_max_nr(max)
		assert(ok, err)
		assert.are.equal(max, select(2, aiotk.aio_nr()))
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("a restore inside with_aio_headroom leaves that raise alone: it is put back when the function ends", function()
		local w = helper.workload("--ring 1:15:10:0")
		dump(w, dir)
		w:destroy()
		local _, max = aiotk.aio_nr()
		-- whatever the code under test does, the machine's limit is put back
		finally(function() if select(2, aiotk.aio_nr()) ~= max then aiotk.set_aio_max_nr(max) end end)
		helper.write(dir .. "/inside.lua", string.format([[
			local rings = assert(aiotk.read_image(%q)):rings()
			assert(aiotk.with_aio_headroom(%d, function()
				return assert(aiotk.restore_process(%d, rings))
			end))
			print("RESTORED", select(2, aiotk.aio_nr()))
		]], dir, max + 10, w.pid))
		local code, out, err = run(dir .. "/inside.lua")
		assert.are.equal(0, code, err)
		assert.are.equal(max, tonumber(out:match("RESTORED%s+(%d+)")), out)
		assert.are.equal(max, select(2, aiotk.aio_nr()))
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	-- A POLL on an empty pipe is in flight; with `complete`, a writer
	-- completes it once the process is stopped for the dump (it waits for
	-- the tracing stop, at most 5 s, so the dump's start-up time does not
	-- matter).
	local function in_flight(choice, complete)
		helper.write(dir .. "/p.lua", string.format(
			"return { settle_ms = 600, in_flight = function() return %q end }", choice))
		local w = helper.workload("--ring 1:15:10:0 --pending")
		if complete then
			os.execute(string.format("(i=0; while [ $i -lt 500 ] && ! grep -q 'tracing stop' /proc/%d/status; " ..
				"do i=$((i+1)); sleep 0.01; done; sleep 0.05; printf x > /proc/%d/fd/%d) &",
				w.pid, w.pid, w.pending_fd))
		end
		return w, run("dump -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/p.lua")
	end

	it("waits for requests in flight to settle (default)", function()
		local _, code, out, err = in_flight("wait", true)
		assert.are.equal(0, code, err)
		assert.matches("ring 0x%x+: 1 request%(s%) in flight %(0 that finish on their own, such as disk " ..
			"reads and writes; 1 cancellable, such as POLL%); waited [%d.]+ ms for them to settle", err)
		local r = assert(aiotk.read_image(dir .. "/img")):rings()[1]
		assert.are.equal(6, #r)
		assert.are.equal("0xa007000000000000", r:event(6).data)
		assert.is_nil(out:find("warning"))
	end)

	it("fails, or records a warning, on requests in flight when told", function()
		local _, code, _, err = in_flight("fail")
		assert.are.equal(1, code)
		assert.matches("in flight", err)
		helper.reap_workloads()
		local _, code2, out = in_flight("record")
		assert.are.equal(0, code2)
		assert.matches("warning: ring 0x%x+: 1 request%(s%) in flight .* not in this image", out)
		local doc = json.decode((select(2, run("show --json " .. dir .. "/img"))))
		assert.matches("in flight", doc.warnings)
		assert.are.equal(5, #doc.rings[1].events)
	end)

	it("nudges an overfull ring in by default and refuses it with the strict policy", function()
		local w = helper.workload("--ring 1:120:0:0")
		dump(w, dir .. "/img")
		w:destroy()
		local events = {}
		for i = 1, 126 do events[i] = { data = string.format("0x%x", i), obj = "0x1", res = i, res2 = 0 } end
		local img = assert(aiotk.image())
		img:add(assert(aiotk.ring { addr = w.addrs[1], nr = 127, head = 3, tail = 2, events = events }))
		assert(img:write(dir .. "/full"))
		local code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/full --policy " .. EXAMPLES .. "/strict.lua")
		assert.are.equal(1, code)
		assert.matches("126 events, more than the 120 this host lets be outstanding", err)
		assert.are.equal(0, w:ring_count())
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/full")
		assert.are.equal(0, code, err)
		local t = assert(aiotk.attach(w.pid))
		local r = assert(t:snapshot(w.addrs[1]))
		t:detach()
		assert.are.same({ 3, 2, 126 }, { r.head, r.tail, #r })
	end)

	it("model: plans for hosts this machine cannot be (1 to 4096 CPUs, 64 KiB pages, legacy)", function()
		local ten = {}
		for i = 1, 10 do ten[i] = { data = "0x1", obj = "0x1", res = 1, res2 = 0 } end
		local rings = {
			assert(aiotk.ring { addr = 0x7f0000000000, nr = 127, head = 0, tail = 0 }),
			assert(aiotk.ring { addr = 0x7f0000100000, nr = 8319, head = 10, tail = 20, events = ten }),
		}
		local function actions(host, p)
			local plan = plans.make(rings, host, p or policy.load())
			local out = {}
			for i, s in ipairs(plan.steps) do out[i] = s.action end
			return out, plans.verdict(plan)
		end
		local base = { page_size = 4096, formula = "current", aio_max_nr = 65536, aio_nr = 0 }
		local function host(t) for k, v in pairs(base) do t[k] = t[k] or v end return t end
		assert.are.same({ { "exact", "exact" }, 0 }, { actions(host { cpus = 1 }) })
		assert.are.same({ { "fail", "exact" }, 4 }, { actions(host { cpus = 16 }) })
		assert.are.same({ { "fail", "fail" }, 4 }, { actions(host { cpus = 4096 }) })
		assert.are.same({ { "grow", "grow" }, 3 },
			{ actions(host { cpus = 4096 }, policy.load(EXAMPLES .. "/grow.lua")) })
		assert.are.same({ { "fail", "fail" }, 4 }, { actions(host { cpus = 2, page_size = 65536 }) })
		local skip = policy.load()
		skip.impossible = function() return "skip" end
		assert.are.same({ { "skip", "exact" }, 3 }, { actions(host { cpus = 16 }, skip) })
		assert.are.same({ { "exact", "exact" }, 0 }, { actions(host { cpus = 64, formula = "legacy" }) })
		assert.are.same({ { "exact", "exact" }, 4 }, { actions(host { cpus = 1, aio_max_nr = 100 }) })
		local code, out = run("check -D /nonexistent --cpus 16")
		assert.are.equal(1, code)
	end)

	it("simulated kernel: convergence against another formula searches and leaves one context", function()
		local sim = assert(aiotk.simulate { cpus = 2, formula = "legacy" })
		local res = assert(sim:converge(8192, { cpus = 2, formula = "current" }))
		assert.are.same({ 126, 255 }, { res.n, res.nr })
		assert.is_true(res.calls > 1)
		assert.are.equal(1, sim.simulated_contexts)
		-- a model that calls one page impossible is checked against the kernel
		local one = assert(sim:converge(4096, { cpus = 64, formula = "current" }))
		assert.are.same({ 1, 127 }, { one.n, one.nr })
		assert.are.equal(2, sim.simulated_contexts)
		local big = assert(aiotk.simulate { cpus = 16 })
		local bad, berr, bcode = big:converge(4096)
		assert.is_nil(bad)
		assert.are.equal("impossible", bcode)
		assert.are.equal(0, big.simulated_contexts)
	end)

	it("check agrees with restore for the CRIU fixtures and a dumped workload", function()
		local cases = {}
		for _, name in ipairs { "nr1", "wrap64", "wrap128", "multi" } do
			local img = dir .. "/" .. name
			assert.are.equal(0, (run("import --criu " .. FIX .. "/" .. name .. " -D " .. img)))
			cases[#cases + 1] = img
		end
		local w0 = helper.workload("--ring 1:15:10:0 --ring 128:333:333:100 --ring 4096:6000:5000:0")
		dump(w0, dir .. "/own")
		w0:finish()
		cases[#cases + 1] = dir .. "/own"
		-- planning as for 16 CPUs makes the one-page rings impossible
		helper.write(dir .. "/as16.lua", "return { model = { cpus = 16 } }")
		local verdicts = {}
		for _, img in ipairs(cases) do
			for _, p in ipairs { "", " --policy " .. EXAMPLES .. "/strict.lua", " --policy " .. dir .. "/as16.lua" } do
				local check = run("check -D " .. img .. p)
				verdicts[check] = true
				local w = helper.workload("")
				local code, _, err = run("restore -p " .. w.pid .. " -D " .. img .. p)
				assert.are.equal(check == 4, code ~= 0, img .. p .. ": check " .. check .. ", restore " .. err)
				if code == 0 then
					local want = #assert(aiotk.read_image(img)):rings()
					assert.are.equal(want, w:ring_count(), img)
				end
				w:finish()
			end
		end
		assert.is_true(verdicts[0] and verdicts[4], "both verdicts were exercised")
	end)

	it("a hook answering outside its list, or a key of the wrong type, is an error naming it", function()
		helper.write(dir .. "/typo.lua", [[return { budget = function() return "rasie" end }]])
		local p = policy.load(dir .. "/typo.lua")
		local ok, err = pcall(p.budget, {}, {})
		assert.is_false(ok)
		assert.matches("typo.lua: hook budget answered 'rasie'; it must answer one of: fail, raise", err, 1, true)
		for hook, allowed in pairs(policy.ANSWERS) do
			helper.write(dir .. "/nil.lua", "return { " .. hook .. " = function() end }")
			local ok2, err2 = pcall(policy.load(dir .. "/nil.lua")[hook])
			assert.is_false(ok2, hook)
			assert.matches("hook " .. hook .. " answered nil; it must answer one of: " ..
				table.concat(allowed, ", "), err2, 1, true)
		end
		helper.write(dir .. "/type.lua", [[return { in_flight_wait_ms = "500" }]])
		local lok, lerr = pcall(policy.load, dir .. "/type.lua")
		assert.is_false(lok)
		assert.matches("in_flight_wait_ms must be a number, not a string", lerr, 1, true)
		-- through the command: exit 1 with the message, the process untouched
		local w = helper.workload("--ring 1:3:0:0")
		dump(w, dir .. "/img")
		w:destroy()
		helper.write(dir .. "/grow.lua", [[return { model = { cpus = 16 }, impossible = function() return "expand" end }]])
		local code, _, cerr = run("restore -p " .. w.pid .. " -D " .. dir .. "/img --policy " .. dir .. "/grow.lua")
		assert.are.equal(1, code)
		assert.matches("hook impossible answered 'expand'", cerr, 1, true)
		assert.are.equal(0, w:ring_count())
	end)

	it("strict in-process restore: replay with nudge = false refuses an overfull ring, leaves nothing", function()
		local lab = aiotk.lab
		local ctx = assert(lab.setup(1))
		local events = {}
		for i = 1, 126 do events[i] = { data = string.format("0x%x", i), obj = "0x10", res = i, res2 = 0 } end
		local ring = assert(aiotk.ring { addr = ctx, nr = 127, head = 50, tail = 49, events = events })
		lab.destroy(ctx)
		local before = assert(aiotk.aio_nr())
		local res, err, code = aiotk.restore(ring, { replay = { nudge = false } })
		assert.is_nil(res)
		assert.are.equal("stuck", code)
		assert.matches("nudging is off", err, 1, true)
		assert.are.equal(before, (assert(aiotk.aio_nr())))
		assert.is_false(aiotk.mapping_at(ring.addr, ring.ring_len))
	end)
end)
