-- Relocation in a CRIU dump (issue 23, the CRIU path): a libaio process
-- with rings made one after the other (none can grow in place), its ids
-- kept in heap, stack, static data and TLS, a thread blocked in
-- io_getevents on one of them, dumped by real CRIU 4.2; criu-fixup for a
-- host of 16 and of 4096 possible CPUs moves each ring (VMA, aio entry,
-- pages) and rewrites every copy of its id (pages, registers), --undo puts
-- the dump back byte for byte, and, fitted to this host, real CRIU
-- restores it here (the bigger rings work here too) and the process
-- verifies itself: every copy of each id names its new ring, the next
-- completion lands at the saved tail (the blocked thread gets it), each
-- ring's io_destroy works.
local helper = require "helper"
local core = require "aiotk.core"
local json = require "dkjson"
local C = require "criu_helper"

local EXAMPLE = "scripts/examples/grow-or-relocate.lua"
local ARGS = "--dense --blocked 1 --keep heap,stack,static,tls --allow-grow " ..
	"--ring 1:4:0:0 --ring 1:5:5:0 --ring 1:6:2:0"

local detached_workload, files_of = C.detached_workload, C.files_of

-- AIOTK_POLICY for CRIU's runs: the example policy planned as 16 CPUs
-- (a path from /, since CRIU runs in the image directory).
local function policy16_env(dir)
	helper.write(dir .. "/p16.lua", string.format([[
		local p = dofile(%q)
		p.model = { cpus = 16 }
		return p]], os.getenv("PWD") .. "/" .. EXAMPLE))
	return "AIOTK_POLICY=" .. dir .. "/p16.lua"
end

local function lines_of(pid, out)
	core.kill(pid, "USR2")
	helper.wait_until(function() return helper.slurp(out):match("VERIFY [^\n]*\n") end, 10000)
	return helper.slurp(out)
end

describe("relocation in a CRIU dump", function()
	local dir, pids
	before_each(function() dir, pids = helper.tmpdir(), {} end)
	after_each(function()
		for _, p in ipairs(pids) do
			if not helper.ended(p) then core.kill(p, "KILL") end
		end
		for _, p in ipairs(pids) do C.gone(p) end
		helper.rmdir(dir)
	end)

	for _, cpus in ipairs { 16, 4096 } do
		it("moves adjacent rings for " .. cpus .. " possible CPUs, every copy of each id rewritten; " ..
			"undone byte for byte; restored here by real CRIU, the process verifies itself", function()
			if not C.need(pending) then return end
			local img, out = dir .. "/img", dir .. "/w.out"
			assert(core.mkdir(img))
			-- --decoy (16 CPUs): a word that only equals an id, which no scan can tell from a copy
			local pid = detached_workload(ARGS .. (cpus == 16 and " --decoy" or ""), out)
			pids[#pids + 1] = pid
			local ok, o = C.criu("dump -t " .. pid .. " -D " .. img)
			assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
			assert(C.gone(pid))
			local pristine = files_of(img)
			-- stopped at any write and undone: the dump as CRIU wrote it
			if cpus == 16 then C.undoable_at_every_step(img, dir, { cpus = cpus, grow = EXAMPLE }, 8) end
			local fix = "criu-fixup " .. img .. " --cpus " .. cpus .. " --policy " .. EXAMPLE
			local code, jo, err = helper.run(fix .. " --json")
			assert.are.equal(0, code, err)
			local changes, regs, restarts = json.decode(jo).changes, 0, 0
			assert.are.equal(3, #changes)
			for _, c in ipairs(changes) do
				assert.is_string(c.relocated_to, jo)
				assert.are.equal(#c.references, c.reference_count)
				-- ctxs, the expect record, heap, stack, static data, TLS at least
				assert.is_true(c.reference_count >= 6, jo)
				for _, r in ipairs(c.references) do
					assert.are.equal(r.kind == "id" and c.addr or nil, r.kind == "id" and r.old or nil)
					if r.kind == "restart" then
						restarts = restarts + 1
						assert.matches("^core%-%d+%.img: thread %d+ register ip 0x%x+ %-> 0x%x+ %(its io_getevents", r.where)
					elseif r.register then
						regs = regs + 1
						assert.matches("^core%-%d+%.img: thread %d+ register %w+ %(id%)$", r.where)
					else
						assert.matches("^pages%-%d+%.img%+0x%x+: 0x%x+ in the dump's mapping 0x%x+%-0x%x+ %(", r.where)
					end
				end
			end
			-- the thread blocked in io_getevents holds the id in a register
			assert.is_true(regs >= 1, jo)
			-- and CRIU's stop ended its call with EINTR: restarted, on the new ring
			assert.are.equal(1, restarts, jo)
			local show = json.decode((select(2, helper.run("show --criu --json " .. img))))
			local expect_len = cpus == 16 and 8192 or 1052672
			for _, r in ipairs(show.processes[1].rings) do assert.are.equal(expect_len, r.ring_len) end
			-- undo: every file as CRIU wrote it
			code, o, err = helper.run("criu-fixup --undo " .. img)
			assert.are.equal(0, code, err)
			assert.matches("put back .*mm%-%d+%.img.*pagemap%-%d+%.img.*pages%-%d+%.img", o)
			local now = files_of(img)
			for name, bytes in pairs(pristine) do
				assert(now[name] == bytes, name .. " differs from CRIU's after --undo")
			end
			-- again, then fitted to this host (nr_req for the same rings here)
			code, _, err = helper.run(fix)
			assert.are.equal(0, code, err)
			code, o, err = helper.run("criu-fixup " .. img)
			assert.are.equal(0, code, err)
			ok, o = C.criu("restore -d -D " .. img)
			assert(ok, "criu restore: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
			local said = lines_of(pid, out)
			assert.matches("VERIFY OK 3 rings %(3 relocated%)", said)
			if cpus == 16 then assert.matches("DECOY 3 of 3 rewritten", said) end
		end)
	end

	it("refuses a ring whose id the dump holds nowhere, naming it, nothing changed; relocate_unreferenced moves it anyway", function()
		if not C.need(pending) then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		local pid = detached_workload("--allow-grow --ring 1:4:0:0", out)
		pids[#pids + 1] = pid
		-- a ring made by injection: the program never saw its id
		local aiotk = require "aiotk"
		local t = assert(aiotk.attach(pid))
		local ctx = assert(t:io_setup(1))
		t:detach()
		local ok, o = C.criu("dump -t " .. pid .. " -D " .. img)
		assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert(C.gone(pid))
		local pristine = files_of(img)
		helper.write(dir .. "/rel.lua", [[return { impossible = function() return "relocate" end }]])
		local code, _, err = helper.run("criu-fixup " .. img .. " --cpus 16 --policy " .. dir .. "/rel.lua")
		assert.are.equal(1, code)
		assert.matches(string.format("relocating ring 0x%x means rewriting its id, and no copy of it was found", ctx), err)
		assert.matches("relocate_unreferenced", err)
		assert.matches("nothing was changed", err)
		local now = files_of(img)
		for name, bytes in pairs(pristine) do assert(now[name] == bytes, name .. " changed") end
		for name in pairs(now) do assert(pristine[name], name .. " appeared") end
		helper.write(dir .. "/anyway.lua", [[return { relocate_unreferenced = true,
			impossible = function() return "relocate" end }]])
		code, o, err = helper.run("criu-fixup " .. img .. " --cpus 16 --policy " .. dir .. "/anyway.lua")
		assert.are.equal(0, code, err)
		assert.matches(string.format("ring 0x%x: relocated to 0x%%x+ %%(8192 bytes, nr_req %%d+ %%-> 1%%): 0 reference", ctx), o)
		code, _, err = helper.run("criu-fixup --undo " .. img)
		assert.are.equal(0, code, err)
		now = files_of(img)
		for name, bytes in pairs(pristine) do assert(now[name] == bytes, name .. " differs after --undo") end
	end)

	it("refuses a dump whose pages are partly in its parent (pre-dump, --prev-images-dir), naming it, " ..
		"nothing changed; real CRIU restores that dump here", function()
		if not C.need(pending) then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		-- no thread blocked in io_getevents: CRIU's own restore would end its call with EINTR
		local pid = detached_workload((ARGS:gsub("%-%-blocked 1 ", "")), out)
		pids[#pids + 1] = pid
		local ok, o = C.criu("dump -t " .. pid .. " -D " .. img)
		assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert(C.gone(pid))
		local rings = assert(require("aiotk.criu").read(img))[1].rings
		local full = dir .. "/full"
		assert(helper.sh("cp -a " .. img .. " " .. full))
		-- the rings' pages dirtied since the pre-dump, the rest (their ids' copies) in the parent
		local page = assert(core.host()).page_size
		assert.is_true(C.as_incremental(img, function(a, len)
			for _, c in ipairs(rings) do
				if a < c.ring.addr + c.ring.ring_len and c.ring.addr < a + len then return true end
			end
		end, page) > 0)
		local pristine, parent = files_of(img), files_of(dir .. "/pre")
		local code, _, err = helper.run("criu-fixup " .. img .. " --cpus 16 --policy " .. EXAMPLE)
		assert.are.equal(1, code)
		assert.matches("pagemap%-%d+%.img: pages of 0x%x+%-0x%x+ are in the parent image " ..
			img:gsub("%p", "%%%0") .. "/%.%./pre; relocation needs a dump without %-%-prev%-images%-dir " ..
			"%(a full dump%)", err)
		assert.matches("nothing was changed", err)
		for d, before in pairs { [img] = pristine, [dir .. "/pre"] = parent } do
			local now = files_of(d)
			for name, bytes in pairs(before) do assert(now[name] == bytes, name .. " changed") end
			for name in pairs(now) do assert(before[name], name .. " appeared") end
		end
		-- a ring's own pages in the parent: refused by name when read
		helper.rmdir(dir .. "/pre")
		assert(helper.sh("rm -rf " .. full .. "2 && cp -a " .. full .. " " .. full .. "2"))
		C.as_incremental(full .. "2", function() return false end, page)
		code, _, err = helper.run("show --criu " .. full .. "2")
		assert.are.equal(1, code)
		assert.matches("page 0x%x+ of ring 0x%x+ is in the parent image .*a dump without %-%-prev%-images%-dir", err)
		-- the first incremental dump is one CRIU restores (its parent back in place)
		helper.rmdir(dir .. "/pre")
		assert(helper.sh("cp -a " .. full .. " " .. dir .. "/pre"))
		ok, o = C.criu("restore -d -D " .. img)
		assert(ok, "criu restore: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert.matches("VERIFY OK 3 rings", lines_of(pid, out))
	end)

	-- every image file as CRIU wrote it (the .orig copies aside, which stay)
	local function as_dumped(img, pristine, after)
		local now = files_of(img)
		for name, bytes in pairs(pristine) do
			assert(now[name] == bytes, name .. " differs from CRIU's after " .. after)
		end
		for name in pairs(now) do
			assert(pristine[name] or name:match("%.img%.orig$"), name .. " appeared after " .. after)
		end
	end

	it("undoes fixups that patched a header in place and then relocated (pages re-emitted), and that " ..
		"relocated and then fitted nr_req, byte for byte", function()
		if not C.need(pending) then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		-- ring 0 (io_setup(100): 8192 bytes) exact for 16 CPUs; ring 1 (4096 bytes) grows in place
		local pid = detached_workload("--keep heap,stack,static,tls --allow-grow --ring 100:3:1:0 " ..
			"--gap --ring 1:2:1:0", out)
		pids[#pids + 1] = pid
		local ok, o = C.criu("dump -t " .. pid .. " -D " .. img)
		assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert(C.gone(pid))
		local pristine = files_of(img)
		local function fixup(args)
			local code, jo, err = helper.run("criu-fixup " .. img .. " --json " .. args)
			assert.are.equal(0, code, err)
			return json.decode(jo).changes
		end
		local changes = fixup("--cpus 16 --policy " .. EXAMPLE)
		local grown, exact = 0, 0
		for _, c in ipairs(changes) do
			assert.is_nil(c.relocated_to)
			if c.grown_to then grown = grown + 1 else exact = exact + 1 end
		end
		assert.are.same({ 1, 1 }, { grown, exact })
		-- the grown header patched in place, journalled against CRIU's pages file
		assert.is_truthy(helper.slurp(img .. "/aiotk-fixup-journal.json"):match('"header_off"'))
		for name in pairs(files_of(img)) do assert.is_nil(name:match("^pages.*%.orig$")) end
		changes = fixup("--cpus 4096 --policy " .. EXAMPLE)
		for _, c in ipairs(changes) do assert.is_string(c.relocated_to) end
		local code, _, err = helper.run("criu-fixup --undo " .. img)
		assert.are.equal(0, code, err)
		as_dumped(img, pristine, "grow in place, relocation, undo")
		-- relocated, then fitted to this host (nr_req of the moved rings), undone: the
		-- .orig copies the first undo left are CRIU's files too
		fixup("--cpus 4096 --policy " .. EXAMPLE)
		fixup("")
		code, _, err = helper.run("criu-fixup --undo " .. img)
		assert.are.equal(0, code, err)
		as_dumped(img, pristine, "relocation, fit, undo")
	end)

	it("refuses a relocation whose model makes a ring the host cannot restore, naming it, nothing changed", function()
		local img = dir .. "/nr1"
		assert(helper.sh("cp -a " .. os.getenv("AIOTK_CRIU_FIXTURES") .. "/nr1 " .. img))
		local pristine = files_of(img)
		helper.write(dir .. "/m16.lua", [[return { model = { cpus = 16 },
			impossible = function() return "relocate" end }]])
		local code, _, err = helper.run("criu-fixup " .. img .. " --cpus 4096 --policy " .. dir .. "/m16.lua")
		assert.are.equal(1, code)
		assert.matches("ring 0x%x+: relocated as 8192 bytes %(the length the policy's model makes%), which " ..
			"CRIU cannot restore on the given host: a 8192%-byte ring is smaller than the minimum ring", err)
		assert.matches("nothing was changed", err)
		local now = files_of(img)
		for name, bytes in pairs(pristine) do assert(now[name] == bytes, name .. " changed") end
		for name in pairs(now) do assert(pristine[name], name .. " appeared") end
	end)

	it("refuses moves that overlap or run past the end of the address space, naming them", function()
		local fx = os.getenv("AIOTK_CRIU_FIXTURES") .. "/nr1/"
		local pm, pages = helper.slurp(fx .. "pagemap-2289.img"), helper.slurp(fx .. "pages-1.img")
		local mm, regs = helper.slurp(fx .. "mm-2289.img"), helper.slurp(fx .. "core-2289.img")
		local ring = 0x7fa85395a000
		local bad = {
			{ { from = ring, len = 8192, to = 0x10000000, nr = 255 },
				{ from = ring + 4096, len = 4096, to = 0x20000000, nr = 127 },
				"moves 1 and 2: their old rings 0x7fa85395a000 and 0x7fa85395b000 overlap" },
			{ { from = ring, len = 8192, to = "0xffffffffffffe000", nr = 255 },
				"move 1: 0x7fa85395a000 or 0xffffffffffffe000 plus 8192 bytes is past the end of the address space" },
		}
		for _, b in ipairs(bad) do
			local why = table.remove(b)
			local out, err, code = core.criu_relocate_pages(pm, pages, "pagemap-2289.img", mm, b, 4096)
			assert.is_nil(out)
			assert.are.equal("invalid", code)
			assert.are.equal(why, err)
			out, err, code = core.criu_relocate_regs(regs, "core-2289.img", b)
			assert.is_nil(out)
			assert.are.equal("invalid", code)
			assert.are.equal(why, err)
		end
	end)

	it("is done by the plugin for a policy that relocates (planned as 16 CPUs); CRIU restores it here", function()
		if not C.need(pending) then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		local env = policy16_env(dir)
		local pid = detached_workload("--dense --blocked 0 --keep heap,stack,static,tls --allow-grow " ..
			"--ring 1:4:4:0 --ring 1:5:1:0", out)
		pids[#pids + 1] = pid
		local ok, o = C.criu("dump -t " .. pid .. " -D " .. img, true, env)
		assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert(C.gone(pid))
		-- the plugin fits the dump to this host at the dump's end
		local log = helper.slurp(img .. "/criu.log")
		ok, o = C.criu("restore -d -D " .. img, true, env)
		assert(ok, "criu restore: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		-- the sizes this host makes 8192 bytes from, each location logged
		local _, moved = log:gsub("nr_req %d+ %-> 63, relocated to 0x%x+ %(8192 bytes%): %d+ reference%(s%) rewritten", "")
		assert.are.equal(2, moved, log)
		assert.matches("aiotk: +core%-%d+%.img: thread %d+ register ip 0x%x+ %-> 0x%x+ %(its io_getevents", log)
		assert.matches("VERIFY OK 2 rings %(2 relocated%)", lines_of(pid, out))
	end)

	it("is done by the action script at pre-restore for a policy that relocates; CRIU restores it here", function()
		if not C.need(pending) then return end
		local img, out = dir .. "/img", dir .. "/w.out"
		assert(core.mkdir(img))
		local env = policy16_env(dir)
		local pid = detached_workload("--dense --keep heap,stack,static,tls --allow-grow " ..
			"--ring 1:4:1:0 --ring 1:5:1:0", out)
		pids[#pids + 1] = pid
		local ok, o = C.criu("dump -t " .. pid .. " -D " .. img .. " --action-script " .. C.HOOK, false, env)
		assert(ok, "criu dump: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert(C.gone(pid))
		ok, o = C.criu("restore -d -D " .. img .. " --action-script " .. C.HOOK, false, env)
		local log = helper.slurp(img .. "/criu.log")
		assert(ok, "criu restore: " .. o .. log:sub(-3000))
		local _, moved = log:gsub("relocated to 0x%x+ %(8192 bytes%): %d+ reference%(s%) rewritten", "")
		assert.are.equal(2, moved, log)
		assert.matches("VERIFY OK 2 rings %(2 relocated%)", lines_of(pid, out))
	end)
end)
