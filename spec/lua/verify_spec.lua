-- aiotk verify against real processes: a match after dump and after
-- restore, and each kind of difference from the ring side and the kernel
-- side, produced by real changes to the process's AIO state.
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local function verify(w, dir, env)
	local code, out, err = run("verify --json -p " .. w.pid .. " -D " .. dir, env)
	return code, code ~= 2 and json.decode(out) or nil, err
end

-- The differences as "what" list, for one ring or all.
local function whats(doc)
	local out = {}
	for _, d in ipairs(doc.differences) do out[#out + 1] = d.what end
	return out
end

describe("aiotk verify", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("matches after a dump and after a restore, ring side and kernel side, the captured POLL included", function()
		local w = helper.workload("--ring 1:15:10:0 --ring 300:40:2:5 --pending")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		local code, doc, err = verify(w, dir .. "/img")
		assert.are.equal(0, code, err)
		assert.are.same({ true, true, 2, {} }, { doc.match, doc.kernel_view, doc.rings, doc.differences })
		w:destroy()
		code, doc = verify(w, dir .. "/img")
		assert.are.equal(1, code)
		assert.are.same({ "ring", "ring" }, whats(doc))
		assert.matches("no AIO ring", doc.differences[1].live)
		assert.are.equal(0, (run("restore -p " .. w.pid .. " -D " .. dir .. "/img")))
		code, doc = verify(w, dir .. "/img")
		assert.are.equal(0, code)
		assert.is_true(doc.match)
		assert.are.equal("VERIFY OK 2 rings", w:verify())
	end)

	it("lists head, tail, events, n and kernel tail of another process's ring at the same address", function()
		local a = helper.workload("--ring 1:3:1:0", true)
		assert.are.equal(0, (run("dump -p " .. a.pid .. " -D " .. dir .. "/img")))
		a:finish()
		local b = helper.workload("--ring 2:5:0:0", true)
		local code, doc = verify(b, dir .. "/img")
		assert.are.equal(1, code)
		assert.are.same({ "head", "tail", "events", "n", "kernel_tail" }, whats(doc))
		local by = {}
		for _, d in ipairs(doc.differences) do by[d.what] = d end
		assert.are.same({ 1, 0 }, { by.head.image, by.head.live })
		assert.are.same({ 3, 5 }, { by.tail.image, by.tail.live })
		assert.are.same({ 2, 5 }, { by.events.image, by.events.live })
		assert.are.same({ 1, 2 }, { by.n.image, by.n.live })
		-- the table names each difference on its own line, then the verdict
		local tcode, out = run("verify -p " .. b.pid .. " -D " .. dir .. "/img")
		assert.are.equal(1, tcode)
		assert.matches("ring 0x%x+: tail: image 3, live 5\n", out)
		assert.matches("differs from image .- 5 difference%(s%)", out)
	end)

	it("sees a captured request no longer in flight, and one in flight the image does not hold", function()
		local w = helper.workload("--ring 1:15:10:0 --pending")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		helper.write(dir .. "/p.lua", [[return { in_flight = function() return "record" end }]])
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/rec --policy " .. dir .. "/p.lua")))
		local code, doc = verify(w, dir .. "/rec")
		assert.are.equal(1, code)
		assert.are.same({ "request in flight " .. doc.differences[1].what:match("0x%x+") }, whats(doc))
		assert.are.same({ "not in the image", "in flight" }, { doc.differences[1].image, doc.differences[1].live })
		-- the test completes the POLL: its pipe's write end, through /proc
		local f = assert(io.open("/proc/" .. w.pid .. "/fd/" .. w.pending_fd, "w"))
		f:write("x")
		f:close()
		assert(helper.wait_until(function() return verify(w, dir .. "/img") == 1 end, 2000))
		code, doc = verify(w, dir .. "/img")
		local list = whats(doc)
		assert.are.same({ "tail", "events", "kernel_tail" }, { list[1], list[2], list[3] })
		assert.matches("^captured request 0x%x+$", list[4])
		assert.are.same({ "in flight", "not in flight" }, { doc.differences[4].image, doc.differences[4].live })
	end)

	it("without a kernel view compares the ring side and says in one line what it did not", function()
		local w = helper.workload("--ring 1:3:0:0")
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. dir .. "/img")))
		local code, out = run("verify -p " .. w.pid .. " -D " .. dir .. "/img",
			"setpriv --bounding-set=-bpf,-perfmon,-sys_admin")
		assert.are.equal(0, code, out)
		local _, lines = out:gsub("no kernel view", "")
		assert.are.equal(1, lines)
		assert.matches("CAP_BPF.*kernel side not compared", out)
	end)

	it("usage errors exit 2 and change nothing", function()
		local w = helper.workload("--ring 1:3:0:0")
		for _, args in ipairs { "-p " .. w.pid, "-D " .. dir, "-p abc -D " .. dir, "-p " .. w.pid .. " -D " .. dir .. "/none" } do
			local code, _, err = run("verify " .. args)
			assert.are.equal(2, code, args .. ": " .. err)
		end
		assert.are.equal("S", w:state())
	end)
end)
