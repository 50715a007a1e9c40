-- CRIU dumps: the fixtures decode to the states their README lists; check,
-- import (then restore into a live workload) and criu-fixup.
local aiotk = require "aiotk"
local criu = require "aiotk.criu"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local FIX = os.getenv("AIOTK_CRIU_FIXTURES") or "../shared/fixtures/criu"

-- From ../shared/fixtures/criu/README.md.
local EXPECTED = {
	nr1 = { { 0x7fa85395a000, 4096, 62, 127, 10, 15, 5, "0xa00200000000000a", 11, "0xa00200000000000e", 15 } },
	wrap128 = { { 0x7f984ac22000, 12288, 190, 383, 333, 50, 100, "0xa00200000000014d", 334, "0xa0020000000001b0", 433 } },
	wrap64 = { { 0x7ff316700000, 8192, 126, 255, 128, 2, 129, "0xa002000000000080", 129, "0xa002000000000100", 257 } },
	multi = {
		{ 0x7f6695db3000, 266240, 4158, 8319, 5000, 6000, 1000, "0xa202000000001388", 420, "0xa20200000000176f", 401 },
		{ 0x7f6695fe1000, 12288, 190, 383, 333, 50, 100, "0xa10200000000014d", 334, "0xa1020000000001b0", 433 },
		{ 0x7f6695fe4000, 4096, 62, 127, 10, 15, 5, "0xa00200000000000a", 11, "0xa00200000000000e", 15 },
	},
}

local function slurp(path)
	local f = assert(io.open(path, "rb"))
	local s = f:read("*a")
	f:close()
	return s
end

local function copy_fixture(name, dir)
	assert(os.execute(string.format("cp -r '%s/%s' '%s/dump' && chmod -R u+w '%s/dump'", FIX, name, dir, dir)) == 0)
	return dir .. "/dump"
end

-- The workload's expectation file (struct expect + io_events), so a fresh
-- workload can verify rings it never had.
local function u64(v)
	local hex = type(v) == "string" and v:gsub("^0x", "") or string.format("%016x", v)
	hex = string.rep("0", 16 - #hex) .. hex
	local out = {}
	for i = 15, 1, -2 do out[#out + 1] = string.char(tonumber(hex:sub(i, i + 1), 16)) end
	return table.concat(out)
end

local function u32(v)
	return string.char(v % 256, math.floor(v / 256) % 256, math.floor(v / 65536) % 256,
		math.floor(v / 16777216) % 256)
end

local function write_expect(path, rings)
	local parts = { u32(#rings) }
	for _, r in ipairs(rings) do
		parts[#parts + 1] = u64(r.addr) .. u32(r.nr) .. u32(r.head) .. u32(r.tail) .. u32(#r) .. u64(0)
		for _, e in ipairs(r:events()) do
			parts[#parts + 1] = u64(e.data) .. u64(e.obj) .. u64(e.res) .. u64(e.res2)
		end
	end
	helper.write(path, table.concat(parts))
end

describe("CRIU dumps", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	for name, rings in pairs(EXPECTED) do
		it("decodes fixture " .. name .. " as its README says", function()
			local procs = assert(criu.read(FIX .. "/" .. name))
			assert.are.equal(1, #procs)
			local got = procs[1].rings
			table.sort(got, function(a, b) return a.ring.addr > b.ring.addr end)
			table.sort(rings, function(a, b) return a[1] > b[1] end)
			assert.are.equal(#rings, #got)
			for i, want in ipairs(rings) do
				local c, r = got[i], got[i].ring
				assert.are.same(want, { r.addr, r.ring_len, c.nr_req, r.nr, r.head, r.tail, #r,
					r:event(1).data, r:event(1).res, r:event(#r).data, r:event(#r).res })
			end
		end)
	end

	it("shows CRIU rings as JSON: the source, each process with its rings (aiotk's keys plus nr_req)", function()
		local code, out = run("show --criu --json " .. FIX .. "/multi")
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.are.equal(FIX .. "/multi", doc.source)
		assert.are.equal(1, #doc.processes)
		local p = doc.processes[1]
		assert.are.same({ 2340, FIX .. "/multi/mm-2340.img", 3 }, { p.pid, p.mm, #p.rings })
		for _, r in ipairs(p.rings) do
			assert.matches("^0x%x+$", r.addr)
			assert.is_number(r.nr_req)
			assert.are.equal((r.tail - r.head) % r.nr, #r.events)
		end
		-- stable: the same dump gives the same text; CRIU dumps are recognised without --criu
		assert.are.equal(out, select(2, run("show --criu --json " .. FIX .. "/multi")))
		assert.are.equal(out, select(2, run("show --json -D " .. FIX .. "/multi")))
		local one = json.decode((select(2, run("show --json " .. FIX .. "/multi/mm-2340.img"))))
		assert.are.same(doc.processes, one.processes)
	end)

	it("checks CRIU's and aiotk's restore for a host", function()
		local code, out = run("check --criu " .. FIX .. "/multi")
		assert.are.equal(0, code, out)
		code, out = run("check --criu " .. FIX .. "/nr1 --cpus 16")
		assert.are.equal(4, code)
		assert.matches("wrong aio", out)
		-- CRIU asks 4410 in all, aiotk 4223: only aiotk fits 4300.
		code, out = run("check --criu " .. FIX .. "/multi --aio-max-nr 4300 --json")
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.matches("4410 of fs.aio%-max%-nr", doc.rings[1].criu)
		assert.are.equal("ok: io_setup(4095)", doc.rings[1].criu_with_plugin)
		assert.is_true(doc.rings[1].exact)
		-- neither fits 4000: restore would fail (4), unless the policy raises it (3)
		code, out = run("check --criu " .. FIX .. "/multi --aio-max-nr 4000")
		assert.are.equal(4, code)
		assert.matches("4223 of fs.aio%-max%-nr needed, 4000 free", out)
		assert.matches("CRIU with aiotk's plugin: fails: its io_setup calls: 4223 of fs.aio%-max%-nr needed, 4000 free", out)
		code = run("check --criu " .. FIX .. "/multi --aio-max-nr 4000 --policy scripts/examples/raise-budget.lua")
		assert.are.equal(3, code)
		-- more CPUs: the plugin grows a ring only where the dump leaves room
		helper.write(dir .. "/grow.lua", [[return { impossible = function() return "grow" end }]])
		code, out = run("check --criu " .. FIX .. "/multi --cpus 16 --json --policy " .. dir .. "/grow.lua")
		doc = json.decode(out)
		assert.are.same({ "ok: io_setup(4095)", "ok: io_setup(127)" },
			{ doc.rings[1].criu_with_plugin, doc.rings[2].criu_with_plugin })
		assert.matches("^fails: ring 0x7f6695fe4000 cannot grow to 8192 bytes: the mapping 0x7f6695fe5000%-0x7f6695fe7000 follows it",
			doc.rings[3].criu_with_plugin)
	end)

	it("imports a fixture and restores it into a live workload that verifies it", function()
		local code, _, err = run("import --criu " .. FIX .. "/wrap128 -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		local rings = assert(aiotk.read_image(dir .. "/img")):rings()
		write_expect(dir .. "/expect", rings)
		local w = helper.workload("--threads --verify-from " .. dir .. "/expect")
		code, _, err = run("restore -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)

	it("criu-fixup changes only nr_req, to the smallest n", function()
		local src = FIX .. "/multi"
		local code, out, err = run("criu-fixup " .. src .. " -o " .. dir .. "/fixed")
		assert.are.equal(0, code, err)
		assert.matches("4158 %-> 4095", out)
		local before = assert(criu.read(src))[1]
		local after = assert(criu.read(dir .. "/fixed"))[1]
		local spans = {}
		for i, c in ipairs(after.rings) do
			local b = before.rings[i]
			assert.are.equal(assert(aiotk.min_n(c.ring.ring_len)), c.nr_req)
			assert.are.same({ b.ring.addr, b.ring.ring_len, b.ring.head, b.ring.tail },
				{ c.ring.addr, c.ring.ring_len, c.ring.head, c.ring.tail })
			assert.are.same(b.ring:events(), c.ring:events())
			assert.are.equal(b.nr_req_off, c.nr_req_off)
			for k = c.nr_req_off, c.nr_req_off + c.nr_req_len - 1 do spans[k] = true end
		end
		local p = io.popen("ls " .. src)
		for name in p:lines() do
			local a, b = slurp(src .. "/" .. name), slurp(dir .. "/fixed/" .. name)
			assert.are.equal(#a, #b, name)
			for k = 1, #a do
				if a:byte(k) ~= b:byte(k) then
					assert.is_true(name == "mm-2340.img" and spans[k - 1] == true,
						name .. " differs at byte " .. (k - 1))
				end
			end
		end
		p:close()
		code, _, err = run("criu-fixup " .. src .. " -o " .. dir .. "/fixed")
		assert.are.equal(1, code)
		assert.matches("exists", err)
	end)

	it("criu-fixup in place patches nr_req in its own bytes, journalled, and --undo puts CRIU's back", function()
		local d = copy_fixture("wrap64", dir)
		local orig = slurp(d .. "/mm-2368.img")
		local at = assert(criu.read(d))[1].rings[1]
		local code, _, err = run("criu-fixup " .. d)
		assert.are.equal(0, code, err)
		-- only nr_req changed: no file rewritten, no .orig; what it was is in the journal
		local now = slurp(d .. "/mm-2368.img")
		assert.are.equal(#orig, #now)
		assert.are.equal(orig:sub(1, at.nr_req_off), now:sub(1, at.nr_req_off))
		assert.are.equal(orig:sub(at.nr_req_off + at.nr_req_len + 1), now:sub(at.nr_req_off + at.nr_req_len + 1))
		assert.is_nil(io.open(d .. "/mm-2368.img.orig"))
		assert.are.equal(63, assert(criu.read(d))[1].rings[1].nr_req)
		local j = json.decode(slurp(d .. "/" .. criu.JOURNAL))
		assert.are.same({ { mm = "mm-2368.img", nr_req_off = at.nr_req_off, nr_req_len = at.nr_req_len,
			addr = string.format("0x%x", at.ring.addr), was = at.nr_req } }, j)
		-- a second fixup (another host) keeps CRIU's value in the journal; --undo puts it back
		assert.are.equal(0, (run("criu-fixup " .. d .. " --cpus 4")))
		assert.are.same(j, json.decode(slurp(d .. "/" .. criu.JOURNAL)))
		assert.are.equal(0, (run("criu-fixup --undo " .. d)))
		assert.are.equal(orig, slurp(d .. "/mm-2368.img"))
		assert.is_nil(io.open(d .. "/" .. criu.JOURNAL))
		-- a journal that is not one refuses the undo, naming it
		helper.write(d .. "/" .. criu.JOURNAL, "garbage")
		code, _, err = run("criu-fixup --undo " .. d)
		assert.are.equal(1, code)
		assert.matches("not a fixup journal aiotk wrote", err)
	end)

	it("criu-fixup for a host with more CPUs grows a ring only under the grow policy and into free space", function()
		helper.write(dir .. "/grow.lua", [[return { impossible = function() return "grow" end }]])
		local d = copy_fixture("nr1", dir)
		local orig = slurp(d .. "/mm-2289.img")
		local code, _, err = run("criu-fixup " .. d .. " --cpus 16")
		assert.are.equal(1, code)
		assert.matches("ring 0x7fa85395a000 cannot be restored by CRIU on the given host: a 4096%-byte ring " ..
			"is smaller than the minimum ring on that host %(8192 bytes", err)
		-- the fixture's ring is followed by a mapping: growing is refused, naming it
		code, _, err = run("criu-fixup " .. d .. " --cpus 16 --policy " .. dir .. "/grow.lua")
		assert.are.equal(1, code)
		assert.matches("ring 0x7fa85395a000 cannot grow to 8192 bytes: the mapping 0x7fa85395b000%-0x7fa85395d000 follows it", err)
		assert.are.equal(orig, slurp(d .. "/mm-2289.img"))
		assert.is_nil(io.open(d .. "/mm-2289.img.orig"))
	end)

	it("refuses bad dumps with the file and what is wrong", function()
		local code, _, err = run("show --criu " .. dir)
		assert.are.equal(1, code)
		assert.matches("no mm%-PID%.img", err)
		local d = copy_fixture("nr1", dir)
		local mm = slurp(d .. "/mm-2289.img")
		helper.write(d .. "/mm-2289.img", "XXXX" .. mm:sub(5))
		code, _, err = run("show --criu " .. d)
		assert.are.equal(1, code)
		assert.matches("mm%-2289%.img: not a CRIU mm image", err)
		helper.write(d .. "/mm-2289.img", mm:sub(1, 100))
		code, _, err = run("show --criu " .. d)
		assert.matches("truncated", err)
		helper.write(d .. "/mm-2289.img", mm)
		local pages = slurp(d .. "/pages-1.img")
		helper.write(d .. "/pages-1.img", pages:sub(1, 4096))
		code, _, err = run("check --criu " .. d)
		assert.are.equal(1, code)
		assert.matches("pages%-1%.img: pages file ends before page", err)
		-- A ring page whose header is no AIO ring: zero the whole pages file.
		helper.write(d .. "/pages-1.img", string.rep("\0", #pages))
		code, _, err = run("import --criu " .. d .. " -D " .. dir .. "/out")
		assert.are.equal(1, code)
		assert.matches("magic", err)
		os.remove(d .. "/pagemap-2289.img")
		code, _, err = run("show --criu " .. d)
		assert.matches("pagemap%-2289%.img", err)
	end)
end)
