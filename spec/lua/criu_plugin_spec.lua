-- aiotk inside real CRIU 4.2 (built from ../shared/criu, or a criu 4.x
-- named by $AIOTK_CRIU): `criu dump` and `criu restore -d` of live libaio
-- workloads, plain and with the plugin (criu -L build/criu).
local helper = require "helper"
local core = require "aiotk.core"
local json = require "dkjson"

local C = require "criu_helper"
local gone, criu, HOOK = C.gone, C.criu, C.HOOK
local sh = helper.sh

-- A workload as CRIU dumps it without --shell-job: in its own session,
-- stdout a file (restored by path), nothing else inherited.
local detached_workload, files_of = C.detached_workload, C.files_of

local function undoable_at_every_step(img, dir, to)
	C.undoable_at_every_step(img, dir, to, 5)
end

local function verdict(pid, out)
	core.kill(pid, "USR2")
	helper.wait_until(function() return helper.slurp(out):match("VERIFY [^\n]*\n") end, 10000)
	return helper.slurp(out):match("(VERIFY [^\n]*)")
end

describe("real CRIU with aiotk's plugin", function()
	local dir, pids
	before_each(function()
		dir, pids = helper.tmpdir(), {}
	end)
	after_each(function()
		for _, p in ipairs(pids) do
			if not helper.ended(p) then core.kill(p, "KILL") end
		end
		for _, p in ipairs(pids) do gone(p) end
		helper.rmdir(dir)
	end)

	local function need_criu() return C.need(pending) end

	it("restores an io_setup(65535) ring beside an io_setup(1) one under the default fs.aio-max-nr, which plain CRIU cannot", function()
		if not need_criu() then return end
		local nr, max = assert(core.aio_nr())
		assert(nr == 0 and max == 65536, "needs aio-nr 0 of the default 65536, have " .. nr .. " of " .. max)
		local spec = "--ring 65535:131189:130189:0 --ring 1:3:1:0"
		for _, plugin in ipairs { false, true } do
			local img = dir .. (plugin and "/with" or "/plain")
			assert(core.mkdir(img))
			local out = dir .. (plugin and "/with.out" or "/plain.out")
			local pid = detached_workload(spec, out)
			pids[#pids + 1] = pid
			local ok, o = criu("dump -t " .. pid .. " -D " .. img, plugin)
			assert(ok, "criu dump: " .. o .. "\n" .. helper.slurp(img .. "/criu.log"):sub(-3000))
			assert(gone(pid), "the dumped process is still there")
			assert(helper.wait_until(function() return core.aio_nr() == 0 end, 5000))
			local code, co = helper.run("check --json --criu " .. img)
			assert.are.equal(0, code, co)
			local doc = json.decode(co)
			local big = doc.rings[1].ring_len > 4096 and doc.rings[1] or doc.rings[2]
			if not plugin then
				-- check says so before anything is restored
				assert.matches("^fails: its io_setup calls: 65660 of fs.aio%-max%-nr needed", big.criu)
			else
				-- fitted to this host at the dump's end: CRIU's own nr_req
				-- is the recorded n, stamped for the restore
				assert.are.equal("ok", big.criu)
				assert.are.equal("ok: io_setup(65535) (recorded at dump)", big.criu_with_plugin)
				assert.is_true(core.criu_stamp_fits(img))
				-- fitted in nr_req's own bytes (inside CRIU's freeze): no image
				-- rewritten, CRIU's values journalled for an undo
				for _, name in ipairs(core.listdir(img)) do assert.is_nil(name:match("%.orig$"), name) end
				local j = json.decode(helper.slurp(img .. "/" .. require("aiotk.criu").JOURNAL))
				assert.are.same({ "mm-" .. pid .. ".img", "mm-" .. pid .. ".img" }, { j[1].mm, j[2].mm })
				assert.is_true(j[1].was >= 2 and j[2].was >= 2, "CRIU's nr_req kept")
			end
			ok, o = criu("restore -d -D " .. img, plugin)
			local log = helper.slurp(img .. "/criu.log")
			if not plugin then
				assert.is_false(ok, "plain CRIU restored it")
				assert.matches("Ring setup failed with %-11", log)
			else
				assert(ok, "criu restore with the plugin: " .. o .. log:sub(-3000))
				-- nothing left to decide: no Lua state, nothing changed
				assert.matches("aiotk: 2 AIO ring%(s%) fitted to this host at dump %(aiotk%-fitted.stamp%): nothing to do", log)
				-- and nothing more was loaded into CRIU for it: the plugin
				-- links only the C library (its Lua side, LuaJIT and libbpf
				-- cost CRIU's restore about 0.8 ms to load)
				local _, libs = helper.sh("ldd " .. C.PLUGIN_DIR .. "/aiotk_criu.so")
				for lib in libs:gmatch("(%S+%.so[%.%d]*) =>") do
					assert.is_truthy(lib:match("^libc%.so") or lib:match("^libdl%.so") or lib:match("^lib%a+san%.so"),
						"the plugin links " .. lib)
				end
				assert.are.equal("VERIFY OK 2 rings", verdict(pid, out))
			end
		end
	end)

	it("carries a POLL in flight across criu dump and restore; plain CRIU loses it", function()
		if not need_criu() then return end
		for _, plugin in ipairs { false, true } do
			local img = dir .. (plugin and "/with" or "/plain")
			assert(core.mkdir(img))
			local out = dir .. (plugin and "/with.out" or "/plain.out")
			local pid = detached_workload("--ring 1:15:10:0 --pending", out)
			pids[#pids + 1] = pid
			local ok, o = criu("dump -t " .. pid .. " -D " .. img, plugin)
			assert(ok, "criu dump: " .. o .. "\n" .. helper.slurp(img .. "/criu.log"):sub(-3000))
			assert(gone(pid), "the dumped process is still there")
			if plugin then
				-- the task's image is one record of one file, under the
				-- task's number (no directory a task)
				local pack = img .. "/" .. require("aiotk.criu").PACK
				local imgs = assert(core.read_pack(pack))
				assert.are.equal(1, imgs[pid]:rings()[1].ncaptured)
				for _, name in ipairs(core.listdir(img)) do assert.is_nil(name:match("^aiotk%-%d+$"), name) end
				-- aiotk show reads it: every task, or the one asked for
				local code, so = helper.run("show " .. pack)
				local literal = pack:gsub("%p", "%%%0")
				assert.are.equal(0, code, so)
				assert.matches("image " .. literal .. ", task " .. pid .. ": format 1, 1 ring%(s%)", so)
				local serr
				code, so, serr = helper.run("show --task " .. (pid + 1) .. " " .. pack)
				assert.are.equal(1, code, so)
				assert.matches(literal .. " holds no image of task " .. (pid + 1) .. " %(its tasks: " .. pid .. "%)", serr)
				-- damaged, it fails the restore before anything is
				-- restored, naming the file; put back, the restore goes on
				local bytes = helper.slurp(pack)
				helper.write(pack, bytes:sub(1, #bytes - 1))
				ok, o = criu("restore -d -D " .. img, plugin)
				assert.is_false(ok, "restored from a damaged image")
				assert.matches("aiotk%-rings%.img at offset %d+: record longer than the file; the dump's aiotk " ..
					"images are damaged", helper.slurp(img .. "/criu.log"))
				assert.is_true(gone(pid))
				helper.write(pack, bytes)
			end
			ok, o = criu("restore -d -D " .. img, plugin)
			assert(ok, "criu restore: " .. o .. helper.slurp(img .. "/criu.log"):sub(-3000))
			local v = verdict(pid, out)
			if plugin then
				assert.matches("aiotk: process %d+: 1 captured request%(s%) in flight again",
					helper.slurp(img .. "/criu.log"))
				assert.are.equal("VERIFY OK 1 rings", v)
			else
				assert.are.equal("VERIFY FAIL: the POLL in flight at dump never completed", v)
			end
		end
	end)

	it("writes no image file into the dump of a process without rings (only its stamp: nothing to do at restore)", function()
		if not need_criu() then return end
		local img = dir .. "/img"
		assert(core.mkdir(img))
		local ok, o = sh("setsid sleep 600 >/dev/null 2>&1 </dev/null & echo $!")
		assert(ok, o)
		local pid = tonumber(o:match("(%d+)"))
		pids[#pids + 1] = pid
		ok, o = criu("dump -t " .. pid .. " -D " .. img, true)
		assert(ok, "criu dump: " .. o .. "\n" .. helper.slurp(img .. "/criu.log"):sub(-3000))
		local ours = {}
		for _, name in ipairs(core.listdir(img)) do
			if name:match("^aiotk") then ours[#ours + 1] = name end
		end
		assert.are.same({ "aiotk-fitted.stamp" }, ours)
		assert.matches("0 AIO ring%(s%) fitted to this host", helper.slurp(img .. "/criu.log"))
	end)

	-- CRIU calls no fini after a plugin's failed init (criu/plugin.c), so
	-- the init takes away what it made. A tmpfs of 2 inodes (its root and
	-- one file) lets it make the image file and refuses the next one.
	it("leaves nothing in the dump directory when its init fails part way", function()
		local small = dir .. "/small"
		assert(core.mkdir(small))
		assert(sh("mount -t tmpfs -o nr_inodes=2,size=1m aiotk-spec " .. small))
		finally(function() sh("umount " .. small) end)
		local code, out, err = helper.run("-e \"local m = require 'aiotk.criu_plugin'; " ..
			"print(m.init(0, '" .. small .. "', function() end))\"")
		assert.are.equal(0, code, err)
		assert.matches("^nil\tcannot create a file beside " .. small:gsub("%p", "%%%0") .. "/aiotk", out)
		assert.are.same({}, core.listdir(small))
	end)

	it("fails the dump, naming ring, count and kind, when the policy says a request may not be lost", function()
		if not need_criu() then return end
		local img = dir .. "/img"
		assert(core.mkdir(img))
		helper.write(dir .. "/p.lua", [[return { in_flight = function() return "fail" end }]])
		local out = dir .. "/w.out"
		local pid = detached_workload("--ring 1:15:10:0 --pending", out)
		pids[#pids + 1] = pid
		local ok = criu("dump -t " .. pid .. " -D " .. img, true, "AIOTK_POLICY=" .. dir .. "/p.lua")
		assert.is_false(ok)
		local log = helper.slurp(img .. "/criu.log")
		assert.matches("aiotk: ring 0x%x+: 1 request%(s%) in flight %(0 that finish on their own.-1 " ..
			"cancellable.-%(policy in_flight: fail%)", log)
		assert.matches("Dumping FAILED", log)
		-- and no image of aiotk's stays in the failed dump
		for _, name in ipairs(core.listdir(img)) do assert.is_nil(name:match("^aiotk"), name) end
		-- CRIU let it go, unharmed: it still verifies itself, its POLL included
		assert.are.equal("VERIFY OK 1 rings", verdict(pid, out))
	end)

	it("restores a ring grown in the images for a host with 16 possible CPUs: longer ring, same head, tail, events", function()
		if not need_criu() then return end
		local img = dir .. "/img"
		assert(core.mkdir(img))
		helper.write(dir .. "/grow.lua", [[return { impossible = function() return "grow" end }]])
		local out = dir .. "/w.out"
		-- --gap: the page after the ring is free, so it has room to grow
		local pid = detached_workload("--allow-grow --gap --ring 1:3:1:0", out)
		pids[#pids + 1] = pid
		assert(criu("dump -t " .. pid .. " -D " .. img))
		assert(gone(pid))
		undoable_at_every_step(img, dir, { cpus = 16, grow = dir .. "/grow.lua" })
		local code, o, err = helper.run("criu-fixup " .. img .. " --cpus 16 --policy " .. dir .. "/grow.lua")
		assert.are.equal(0, code, err)
		assert.matches("nr_req 62 %-> 1, grown from 4096 to 8192 bytes", o)
		local doc = json.decode((select(2, helper.run("show --criu --json " .. img))))
		local r = doc.processes[1].rings[1]
		assert.are.same({ 8192, 255, 1, 3, 2 }, { r.ring_len, r.nr, r.head, r.tail, #r.events })
		-- then for this host (2 CPUs): the grown ring keeps its length, nr_req fits it here
		code, o, err = helper.run("criu-fixup " .. img)
		assert.are.equal(0, code, err)
		assert.matches("nr_req 1 %-> 63", o)
		local ok, ro = criu("restore -d -D " .. img)
		assert(ok, "criu restore: " .. ro .. helper.slurp(img .. "/criu.log"):sub(-3000))
		assert.are.equal("VERIFY OK 1 rings", verdict(pid, out))
	end)

	it("the action-script path: n recorded at post-dump, nr_req rewritten at pre-restore, lost requests fail the dump", function()
		if not need_criu() then return end
		local img = dir .. "/img"
		assert(core.mkdir(img))
		local out = dir .. "/w.out"
		local pid = detached_workload("--ring 64:3:1:0 --ring 100:5:0:0", out)
		pids[#pids + 1] = pid
		local before = assert(core.aio_nr())
		local ok, o = criu("dump -t " .. pid .. " -D " .. img .. " --action-script " .. HOOK)
		assert(ok, o .. helper.slurp(img .. "/criu.log"):sub(-2000))
		assert.matches("aiotk: process %d+: io_setup's n of 2 ring%(s%) recorded", helper.slurp(img .. "/criu.log"))
		assert(gone(pid))
		ok, o = criu("restore -d -D " .. img .. " --action-script " .. HOOK)
		local log = helper.slurp(img .. "/criu.log")
		assert(ok, o .. log:sub(-3000))
		assert.matches("nr_req 126 %-> 64 %(recorded at dump%)", log)
		assert.matches("nr_req 126 %-> 100 %(recorded at dump%)", log)
		assert.are.equal(before, (core.aio_nr()), "the same share of fs.aio-nr as before the dump")
		assert.are.equal("VERIFY OK 2 rings", verdict(pid, out))
		-- a POLL in flight is not in CRIU's image: the hook fails the dump and the process runs on
		local img2 = dir .. "/img2"
		assert(core.mkdir(img2))
		local out2 = dir .. "/w2.out"
		local pid2 = detached_workload("--ring 1:15:10:0 --pending", out2)
		pids[#pids + 1] = pid2
		ok = criu("dump -t " .. pid2 .. " -D " .. img2 .. " --action-script " .. HOOK)
		assert.is_false(ok)
		assert.matches("ring 0x%x+: 1 request%(s%) not in CRIU's image %(0 completed after CRIU read the ring, " ..
			"1 still in flight%).-the dump fails", helper.slurp(img2 .. "/criu.log"))
		assert.are.equal("VERIFY OK 1 rings", verdict(pid2, out2))
	end)
end)
