-- Snapshots of rings a real libaio client put in known states.
local aiotk = require "aiotk"
local states = require "aiotk.states"
local lab = aiotk.lab

describe("snapshot", function()
	it("reads header and live events of a libaio ring", function()
		local ctx = assert(states.make { n = 1, complete = 15, reap = 10, index = 0 })
		local r = assert(aiotk.snapshot(ctx, true))
		assert.are.same({ 127, 10, 15, 5, 4096 }, { r.nr, r.head, r.tail, #r, r.ring_len })
		assert.are.equal(0xa10a10a1, r.magic)
		assert.are.equal(32, r.header_length)
		assert.are.equal(states.cookie(0, 1, 10), r:event(1).data)
		assert.are.equal(r:event(1).data, r:slot(10).data)
		assert.matches("^ring 0x%x+: nr 127, head 10, tail 15, 5 events", tostring(r))
		lab.destroy(ctx)
	end)

	it("refuses what is not a ring, without crashing", function()
		local placeholder = assert(lab.map(4096))
		local r, err, code = aiotk.snapshot(placeholder)
		assert.is_nil(r)
		assert.are.equal("notring", code)
		assert.matches("magic", err)
		lab.unmap(placeholder, 4096)
		r, err, code = aiotk.snapshot(4096)
		assert.is_nil(r)
		assert.are.equal("system", code)
		assert.matches("cannot read", err)
	end)
end)
