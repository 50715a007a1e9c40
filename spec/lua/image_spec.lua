-- Images through the Lua API: round trip, atomic write, clean errors.
local aiotk = require "aiotk"
local helper = require "helper"

local function sample_ring(addr)
	local events = {}
	for i = 1, 5 do
		events[i] = { data = "0xa00200000000000" .. i, obj = "0xffffffffffff0000", res = -i, res2 = 7 }
	end
	return assert(aiotk.ring { addr = addr, nr = 127, head = 10, tail = 15, n = 1, events = events })
end

describe("image", function()
	local dir
	before_each(function() dir = helper.tmpdir() end)
	after_each(function() helper.rmdir(dir) end)

	it("round-trips rings with full 64-bit values", function()
		local img = assert(aiotk.image())
		img:add(sample_ring(0x7f0000001000))
		img.pid = 42
		assert(img:write(dir))
		local back = assert(aiotk.read_image(dir))
		assert.are.equal(1, back.nrings)
		assert.are.equal(42, back.pid)
		local r = back:rings()[1]
		assert.are.same({ 0x7f0000001000, 127, 10, 15, 1 }, { r.addr, r.nr, r.head, r.tail, r.n })
		assert.are.same(sample_ring(0x7f0000001000):events(), r:events())
		assert.are.equal("0xffffffffffff0000", r:event(1).obj)
	end)

	it("gives its rings away with take_rings: the same rings, none left in the image", function()
		local img = assert(aiotk.image())
		-- results of every varint length, negative and positive
		local events = {}
		for i, res in ipairs { 0, -1, 63, -64, 2 ^ 40, -(2 ^ 40), 2 ^ 52, -(2 ^ 52) } do
			events[i] = { data = "0xffffffffffffffff", obj = "0x1", res = res, res2 = -res }
		end
		img:add(assert(aiotk.ring { addr = 0x7f0000001000, nr = 127, head = 0, tail = #events, n = 1,
			events = events }))
		assert(img:write(dir))
		local copied = assert(aiotk.read_image(dir)):rings()
		local back = assert(aiotk.read_image(dir))
		local taken = back:take_rings()
		assert.are.equal(0, back.nrings)
		assert.are.same({}, back:rings())
		assert.are.equal(1, #taken)
		assert.are.same(copied[1]:events(), taken[1]:events())
		assert.are.same(assert(aiotk.ring { addr = 0x7f0000001000, nr = 127, head = 0, tail = #events,
			n = 1, events = events }):events(), taken[1]:events())
	end)

	it("rejects a truncated image naming the file and record", function()
		local img = assert(aiotk.image())
		img:add(sample_ring(0x7f0000001000))
		img:add(sample_ring(0x7f0000002000))
		local bytes = img:encode()
		for cut = 0, #bytes - 1, 5 do
			local ok, err, code = aiotk.decode_image(bytes:sub(1, cut), dir .. "/rings.img")
			assert.is_nil(ok, "cut at " .. cut)
			assert.are.equal("image", code)
			assert.matches("rings.img", err)
		end
		assert(aiotk.decode_image(bytes))
	end)

	it("refuses a ring whose head is out of range", function()
		local ring, err, code = aiotk.ring { addr = 0x7f0000001000, nr = 127, head = 127, tail = 0 }
		assert.is_nil(ring)
		assert.are.equal("invalid", code)
		assert.matches("out of range", err)
	end)

	it("does not leave a half image when the directory is not writable", function()
		if helper.is_root() then
			-- root writes anywhere: use a path below a regular file instead
			local f = io.open(dir .. "/file", "w") f:close()
			local ok, err = assert(aiotk.image()):write(dir .. "/file/sub")
			assert.is_nil(ok)
			assert.matches("cannot create image directory", err)
		end
		local p = io.popen("ls -A " .. dir)
		local listing = p:read("*a")
		p:close()
		assert.are.equal("file\n", listing)
	end)
end)
