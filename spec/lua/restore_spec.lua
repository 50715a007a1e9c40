-- Restore through the Lua API: rings rebuilt exactly, all-or-nothing, the
-- aio-max-nr budget.
local aiotk = require "aiotk"
local states = require "aiotk.states"
local helper = require "helper"
local lab = aiotk.lab

local function restore_and_check(spec)
	local ctx = assert(states.make(spec))
	local saved = assert(aiotk.snapshot(ctx))
	lab.destroy(ctx)
	local res = assert(aiotk.restore(saved))
	assert.are.equal(saved.addr, res.ctx)
	assert.are.equal(1, res.converge.calls)
	local now = assert(aiotk.snapshot(saved.addr))
	assert.are.same({ saved.nr, saved.head, saved.tail }, { now.nr, now.head, now.tail })
	local got = lab.reap(saved.addr, saved.nr)
	assert.are.same(saved:events(), got)
	assert.are.equal(1, lab.complete(saved.addr, 1, { data = "0xfeed" }))
	local after = assert(aiotk.snapshot(saved.addr))
	assert.are.equal(saved.tail, after.head)
	assert.are.equal("0x000000000000feed", after:event(1).data)
	lab.destroy(saved.addr)
	return saved
end

describe("restore", function()
	for _, spec in ipairs(states.demo) do
		it("rebuilds the " .. spec.name .. " ring exactly", function()
			restore_and_check(setmetatable({ index = 1 }, { __index = spec }))
		end)
	end

	it("rebuilds a ring fuller than this host makes (126 of 127)", function()
		local ctx = assert(lab.setup(1))
		local events = {}
		for i = 1, 126 do events[i] = { data = string.format("0x%x", i), obj = "0x10", res = i, res2 = 0 } end
		local ring = assert(aiotk.ring { addr = ctx, nr = 127, head = 50, tail = 49, events = events })
		lab.destroy(ctx)
		local res = assert(aiotk.restore(ring))
		assert.are.equal(1, res.replay.nudges)
		local r2, _, code = lab.complete(ring.addr, 1)
		assert.are.equal("budget", code, "a full ring must refuse requests")
		assert.are.same(ring:events(), lab.reap(ring.addr, 127))
		lab.destroy(ring.addr)
	end)

	it("rolls back every ring when one cannot be restored", function()
		local a = assert(states.make { n = 1, complete = 3 })
		local b = assert(states.make { n = 64, complete = 3 })
		local ra, rb = assert(aiotk.snapshot(a)), assert(aiotk.snapshot(b))
		lab.destroy(a)
		lab.destroy(b)
		local blocker = assert(lab.map(4096, rb.addr))
		assert(lab.poke(blocker, "0x5eed5eed"))
		local before = #aiotk.rings()
		local nr_before = aiotk.aio_nr()
		local ok, err, code = aiotk.restore_all { ra, rb }
		assert.is_nil(ok)
		assert.are.equal("occupied", code)
		assert.matches("ring 2 of 2", err)
		assert.are.equal(before, #aiotk.rings())
		assert.are.equal(nr_before, (aiotk.aio_nr()))
		assert.are.equal("0x000000005eed5eed", lab.peek(blocker))
		lab.unmap(blocker, 4096)
	end)

	it("joins touching ranges into one placeholder each, in address order", function()
		local runs = aiotk.joined_ranges({ { addr = 0x30000, len = 0x1000 }, { addr = 0x10000, len = 0x2000 },
			{ addr = 0x12000, len = 0x1000 }, { addr = 0x31000, len = 0x1000 }, { addr = 0x40000, len = 0x1000 } },
			{ [4] = true })
		assert.are.same({ { addr = 0x10000, len = 0x3000, members = { 2, 3 } },
			{ addr = 0x30000, len = 0x1000, members = { 1 } }, { addr = 0x40000, len = 0x1000, members = { 5 } } }, runs)
	end)

	it("takes the placeholders it is given before any ring, and says which it holds", function()
		local core = aiotk.core
		local a = assert(states.make { n = 64, complete = 30, reap = 10 })
		local ra = assert(aiotk.snapshot(a))
		lab.destroy(a)
		local blocker = assert(lab.map(4096, ra.addr))
		assert(lab.poke(blocker, "0x5eed5eed"))
		local free = assert(lab.map(4096))
		lab.unmap(free, 4096)
		local claims = { { addr = free, len = 4096 }, { addr = ra.addr, len = ra.ring_len } }
		local before = #aiotk.rings()
		local res, err, code = core.restore_all({ { ring = ra, placeholder = true, model = core.host() } }, claims)
		assert.is_nil(res)
		assert.are.equal("occupied", code)
		assert.matches("cannot claim 0x%x+%-0x%x+: 0x%x+%-0x%x+ r[w-]%-p", err)
		assert.is_true(claims[1].made)
		assert.is_nil(claims[2].made)
		assert.are.equal(before, #aiotk.rings())
		assert.are.equal("0x000000005eed5eed", lab.peek(blocker))
		local held = core.mapping_at(free, 4096)
		assert.is_true(held and held.placeholder)
		assert(core.unmap(free, 4096))
		lab.unmap(blocker, 4096)
		-- with the range free, the same call holds both and rebuilds the ring there
		local ok = assert(core.restore_all({ { ring = ra, placeholder = true, model = core.host() } },
			{ { addr = ra.addr, len = ra.ring_len } }))
		assert.are.equal(ra.addr, ok[1].ctx)
		assert.are.same(ra:events(), lab.reap(ra.addr, ra.nr))
		lab.destroy(ra.addr)
	end)

	it("names fs.aio-max-nr when the budget is short, and puts the limit back", function()
		if not helper.is_root() then
			pending("needs root to lower fs.aio-max-nr: skipped")
			return
		end
		local ctx = assert(states.make { n = 4096, complete = 10 })
		local saved = assert(aiotk.snapshot(ctx))
		lab.destroy(ctx)
		local nr, max = aiotk.aio_nr()
		assert(aiotk.set_aio_max_nr(nr + 100))
		local ok, res, err, code = pcall(aiotk.restore, saved)
		aiotk.set_aio_max_nr(max)
		assert.is_true(ok)
		assert.is_nil(res)
		assert.are.equal("budget", code)
		assert.matches("fs.aio%-max%-nr", err)
		assert.matches("4095 of fs.aio%-max%-nr needed", err)
		assert.are.equal(max, select(2, aiotk.aio_nr()))
	end)

	it("with_aio_headroom restores the limit even when its function fails", function()
		if not helper.is_root() then
			pending("needs root to change fs.aio-max-nr: skipped")
			return
		end
		local _, max = aiotk.aio_nr()
		-- what the function saw is checked outside it: an assertion failing
		-- inside would be caught by the pcall whose failure is expected
		local nr_inside, max_inside
		local ok, err = pcall(aiotk.with_aio_headroom, max + 10, function()
			nr_inside, max_inside = aiotk.aio_nr()
			error("boom", 0)
		end)
		assert.is_false(ok)
		assert.are.equal("boom", err)
		assert.are.equal(nr_inside + max + 10, max_inside)
		assert.are.equal(max, select(2, aiotk.aio_nr()))
	end)

	it("a raise of fs.aio-max-nr is put back by aiotk's guardian when aiotk is SIGKILLed inside it", function()
		local _, max = aiotk.aio_nr()
		local script = helper.tmpdir() .. "/killed.lua"
		finally(function() helper.rmdir(script:match("^(.*)/")) end)
		helper.write(script, string.format([[
			local core = aiotk.core
			aiotk.with_aio_headroom(%d, function()
				local was, to = core.aio_max_nr_raised()
				print(string.format("RAISED %%d %%d %%d", was, to, select(2, core.aio_nr())))
				io.stdout:flush()
				core.kill(core.getpid(), "KILL")
			end)
			print("NOT KILLED")
		]], max + 10))
		local nr = aiotk.aio_nr()
		local code, out, err = helper.run(script)
		assert.are_not.equal(0, code, out .. err)
		assert.is_nil(out:find("NOT KILLED", 1, true), out)
		local was, to, seen = out:match("RAISED (%d+) (%d+) (%d+)")
		assert.are.same({ max, nr + max + 10, nr + max + 10 }, { tonumber(was), tonumber(to), tonumber(seen) },
			out .. err)
		-- the guardian acts once aiotk's end of its socket closes
		assert.is_true(helper.wait_until(function() return select(2, aiotk.aio_nr()) == max end, 10000),
			"fs.aio-max-nr left at " .. select(2, aiotk.aio_nr()))
	end)
end)
