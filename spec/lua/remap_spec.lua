-- Moving a ring: the id follows, occupied destinations are refused.
local aiotk = require "aiotk"
local states = require "aiotk.states"
local lab = aiotk.lab

describe("remap", function()
	it("moves a ring to a free address; the old id stops answering", function()
		local ctx = assert(states.make { n = 1, complete = 4, reap = 1 })
		local dest = assert(lab.map(4096))   -- find a free page, then free it
		lab.unmap(dest, 4096)
		assert.are.equal(dest, assert(aiotk.remap(ctx, 4096, dest)))
		local r = assert(aiotk.snapshot(dest))
		assert.are.same({ 127, 1, 4 }, { r.nr, r.head, r.tail })
		assert.is_false(aiotk.mapping_at(ctx, 4096))
		assert.are.equal(3, #lab.reap(dest, 10))
		-- the old id is no context any more (libaio would crash reading it)
		local gone, _, code = aiotk.io_destroy(ctx)
		assert.is_nil(gone)
		assert.are.equal("system", code)
		lab.destroy(dest)
	end)

	it("refuses an occupied destination and names the occupant", function()
		local ctx = assert(lab.setup(1))
		local other = assert(lab.map(8192))
		local ok, err, code = aiotk.remap(ctx, 4096, other + 4096)
		assert.is_nil(ok)
		assert.are.equal("occupied", code)
		-- the kernel may have merged our mapping with a neighbour: the named
		-- range must cover the destination
		local s, e = err:match(": 0x(%x+)%-0x(%x+) rw%-p %(anonymous%) is mapped there")
		assert.is_not_nil(s, err)
		assert.is_true(tonumber(s, 16) <= other + 4096 and other + 8192 <= tonumber(e, 16), err)
		assert(aiotk.snapshot(ctx))
		lab.unmap(other, 8192)
		lab.destroy(ctx)
	end)
end)
