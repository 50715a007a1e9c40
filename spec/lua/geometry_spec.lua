-- The geometry model through Lua: this host's kernel, and other hosts as a
-- model (simulated: other CPU counts, page sizes, the legacy formula).
local core = require "aiotk.core"

describe("geometry", function()
	it("matches io_setup on this kernel for a sweep of n", function()
		for _, n in ipairs { 1, 2, 8, 9, 33, 63, 64, 65, 127, 128, 300, 1000, 4096 } do
			local ctx = assert(core.io_setup(n))
			local ring = assert(core.snapshot(ctx))
			assert.are.equal(core.geometry(n).nr, ring.nr, "n=" .. n)
			assert.are.equal(core.geometry(n).ring_len, ring.ring_len)
			core.io_destroy(ctx)
		end
	end)

	it("inverts to the smallest n", function()
		assert.are.equal(65535, core.min_n(4198400))
		assert.are.equal(63, core.min_n(8192))
		assert.are.equal(1, core.min_n(4096))
	end)

	it("simulated host with 16 CPUs cannot make a one-page ring", function()
		local n, err, code = core.min_n(4096, { cpus = 16 })
		assert.is_nil(n)
		assert.are.equal("impossible", code)
		assert.matches("minimum ring", err)
	end)

	it("simulated hosts: 1 to 4096 CPUs, 64 KiB pages, legacy formula", function()
		assert.are.equal(127, core.geometry(1, { cpus = 1 }).nr)
		assert.are.equal(255, core.geometry(1, { cpus = 16 }).nr)
		assert.are.equal(32895, core.geometry(1, { cpus = 4096 }).nr)
		assert.are.equal(2047, core.geometry(1, { page_size = 65536 }).nr)
		assert.are.equal(127, core.geometry(125, { formula = "legacy" }).nr)
		assert.are.equal(255, core.geometry(126, { formula = "legacy" }).nr)
		assert.are.equal(126, core.min_n(8192, { formula = "legacy", cpus = 64 }))
	end)

	it("rejects what the kernel rejects", function()
		local g, err, code = core.geometry(0)
		assert.is_nil(g)
		assert.are.equal("invalid", code)
		assert.matches("io_setup%(0%)", err)
		assert.is_nil((core.geometry(4194305)))
		assert.has_error(function() core.geometry(1, { formula = "bogus" }) end)
		assert.are.equal("invalid", select(3, core.min_n(4097)))
	end)
end)
