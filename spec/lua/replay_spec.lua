-- Tail replay through the Lua API.
local aiotk = require "aiotk"

describe("replay", function()
	it("reports completions and falls back to PWRITE when asked", function()
		local ctx = assert(aiotk.io_setup(64))
		local st = assert(aiotk.replay(ctx, 255, 200, 40, { kind = "pwrite", batch = 16 }))
		assert.are.equal(255 + 40, st.completions)
		assert.are.equal("pwrite", st.kind)
		local r = assert(aiotk.snapshot(ctx))
		assert.are.same({ 200, 40 }, { r.head, r.tail })
		aiotk.io_destroy(ctx)
	end)
end)
