-- io_uring instances through aiotk's commands, against the liburing
-- workload (spec/workload/uring_workload.c), which prints what it knows of
-- its own instances: show -p lists them as the workload sees them.
local core = require "aiotk.core"
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

local BIN = (helper.bin:match("^(.*)/[^/]*$") or ".") .. "/uring_workload"

-- The workload started, its facts read ("name value [value]" lines up to
-- READY): { pid =, facts = { [name] = { v, v2 } }, pipe = }.
local function start(args)
	local p = assert(io.popen(BIN .. (args and " " .. args or ""), "r"))
	local w = { pipe = p, facts = {} }
	for line in p:lines() do
		if line == "READY" then break end
		local name, v, v2 = line:match("^(%S+) (%d+) ?(%d*)$")
		if name then w.facts[name] = { tonumber(v), tonumber(v2), raw = v } end
	end
	w.pid = w.facts.pid and w.facts.pid[1]
	assert(w.pid, "the io_uring workload did not start")
	return w
end

local function stop(w)
	core.kill(w.pid, "KILL")
	w.pipe:close()
end

-- Signal sig to a workload started with --act and wait for it to say it
-- acted: the facts it prints then ({ [name] = number }).
local function act(w, sig)
	core.kill(w.pid, sig)
	local out = {}
	for line in w.pipe:lines() do
		if line == "DONE" then return out end
		local name, v = line:match("^(%S+) (%d+)$")
		if name then out[name] = tonumber(v) end
	end
	error("the io_uring workload ended before it acted on " .. sig)
end

-- The differences verify -p lists (its --json), and its exit code.
local function verify(pid, img)
	local code, out, err = run("verify -p " .. pid .. " -D " .. img .. " --json")
	assert(code == 0 or code == 1, err)
	local doc = json.decode(out)
	local diffs = {}
	for _, d in ipairs(doc.differences) do diffs[d.ring .. ": " .. d.what] = d end
	return code, diffs, doc
end

local function by_fd(list, fd)
	for _, u in ipairs(list) do if u.fd == fd then return u end end
	error("no instance with fd " .. fd)
end

-- The little-endian u64 at byte off (0-based) of s, as a number (exact
-- below 2^53: these are small).
local function u64le(s, off)
	local v = 0
	for i = 8, 1, -1 do v = v * 256 + s:byte(off + i) end
	return v
end

-- The saved bytes of the mapping of kind `kind` of image instance i.
local function memory(img, i, kind)
	for j, m in ipairs(img:urings()[i].maps) do
		if require("aiotk.uring").map_kind(m.offset) == kind then
			return assert(img:uring_memory(i, j), kind .. " not saved"), m.start
		end
	end
	error("no " .. kind .. " mapping")
end

-- Image instance i against workload instance `name`: counters, and the
-- ring memory holding what the workload knows it left there (unreaped
-- CQEs, SQEs prepared and not submitted).
local function check_saved(img, i, w, name)
	local function f(k) return w.facts[name .. "." .. k] end
	local u = img:urings()[i]
	for _, k in ipairs { "fd", "flags", "sq_entries", "cq_entries", "sq_head", "sq_tail", "cq_head", "cq_tail" } do
		assert.are.equal(f(k)[1], u[k], name .. "." .. k)
	end
	local ring, start = memory(img, i, "sq_ring")
	local cqes = f("cqes")[1] - start
	local n = 0
	while f("cqe" .. n) do
		local slot = (u.cq_head + n) % u.cq_entries
		assert.are.equal(f("cqe" .. n)[1], u64le(ring, cqes + slot * 16), name .. " cqe " .. n)
		n = n + 1
	end
	assert.are.equal(u.cq_tail - u.cq_head, n, name .. ": every unreaped CQE listed")
	local sqes = memory(img, i, "sqes")
	local k, tail = 0, f("sqe_tail")[1]
	while f("prepared" .. k) do
		local count = 0
		while f("prepared" .. count) do count = count + 1 end
		local index = (tail - count + k) % u.sq_entries
		assert.are.equal(f("prepared" .. k)[1], u64le(sqes, index * 64 + 32), name .. " prepared " .. k)
		k = k + 1
	end
	return n, k
end

describe("io_uring", function()
	local w, dir
	helper.scratch_each(function(d) dir = d end)
	after_each(function()
		if w then stop(w) end
		w = nil
	end)

	it("an image holds each instance and its ring memory, read through the stopped process", function()
		w = start()
		local aiotk = require "aiotk"
		local v = assert(core.kviewer())
		local set
		assert(aiotk.with_process(w.pid, function(t) set = assert(v:uring_stopped(t)) return true end))
		local img = assert(core.image())
		img:add_urings(set)
		assert(img:write(dir))
		local back = assert(aiotk.read_image(dir))
		assert.are.same({ 0, 3 }, { back.nrings, back.nurings })
		local fds = {}
		for i, u in ipairs(back:urings()) do fds[u.fd] = i end
		assert.are.same({ 3, 2 }, { check_saved(back, fds[w.facts["a.fd"][1]], w, "a") })
		assert.are.same({ 3, 0 }, { check_saved(back, fds[w.facts["b.fd"][1]], w, "b") })
		local a = back:urings()[fds[w.facts["a.fd"][1]]]
		assert.are.same({ "/dev/null", 1 }, { a.files[2].path, #a.reqs })
		assert.are.equal(back:encode(), assert(aiotk.decode_image(back:encode())):encode())
	end)

	it("dump -p saves a process with io_uring instances and no AIO ring; --json lists them", function()
		w = start()
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are.equal(0, code, err)
		assert.truthy(out:find("and 3 io_uring instance(s)", 1, true), out)
		local img = assert(require("aiotk").read_image(dir .. "/img"))
		local fds = {}
		for i, u in ipairs(img:urings()) do fds[u.fd] = i end
		assert.are.same({ 3, 2 }, { check_saved(img, fds[w.facts["a.fd"][1]], w, "a") })
		assert.are.same({ 3, 0 }, { check_saved(img, fds[w.facts["b.fd"][1]], w, "b") })
		assert.are.equal("", img.warnings)
		local jcode, jout, jerr = run("dump -p " .. w.pid .. " -D " .. dir .. "/json --json")
		assert.are.equal(0, jcode, jerr)
		local doc = json.decode(jout)
		assert.are.equal(3, #doc.urings)
		local a = by_fd(doc.urings, w.facts["a.fd"][1])
		assert.are.same({ "POLL_ADD", true }, { a.reqs[1].op, a.reqs[1].rebuildable })
	end)

	it("dump fails by default on requests in flight that cannot be rebuilt, and records them when the policy says so", function()
		w = start()
		-- the POLL_ADD made to look like a request a restore cannot rebuild
		local uring = require "aiotk.uring"
		local saved = uring.rebuild
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		local ok, e = pcall(function()
			uring.rebuild = function() return nil, "test: not rebuildable" end
			local aiotk = require "aiotk"
			local img, err, code = aiotk.dump_process(w.pid, dir .. "/fail")
			assert.is_nil(img)
			assert.are.equal("in_flight", code)
			assert.truthy(err:find("test: not rebuildable", 1, true), err)
			local pol = require("aiotk.policy").load(policy, {})
			local img2 = assert(aiotk.dump_process(w.pid, dir .. "/record", { policy = pol }))
			assert.truthy(img2.warnings:find("not in this image", 1, true), img2.warnings)
		end)
		uring.rebuild = saved
		if not ok then error(e, 0) end
	end)

	it("reads an image made before io_uring records existed, and writes it again byte for byte", function()
		local fixture = "spec/fixtures/image-before-uring/rings.img"
		local bytes = helper.slurp(fixture)
		local img = assert(require("aiotk").read_image("spec/fixtures/image-before-uring"))
		assert.are.same({ 1, 0, 42 }, { img.nrings, img.nurings, img.pid })
		assert.are.equal(bytes, img:encode())
	end)

	it("show -p --json lists each instance as the workload sees it, without stopping it", function()
		w = start()
		local f = function(k) return w.facts[k] and w.facts[k][1] end
		local code, out, err = run("show -p " .. w.pid .. " --json")
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		assert.are.equal(3, #doc.urings)
		assert.are_not.equal("T", (helper.status(w.pid, "State") or ""):sub(1, 1))
		for _, name in ipairs { "a", "b", "c" } do
			local u = by_fd(doc.urings, f(name .. ".fd"))
			for _, k in ipairs { "flags", "sq_entries", "cq_entries", "sq_head", "sq_tail", "cq_head",
				"cq_tail", "sq_dropped", "cq_overflow" } do
				assert.are.equal(f(name .. "." .. k), u[k], name .. "." .. k)
			end
			assert.are.same({ u.sq_head, u.cq_tail }, { u.cached_sq_head, u.cached_cq_tail })
			local maps = {}
			for _, m in ipairs(u.maps) do maps[m.kind] = tonumber(m.start) end
			assert.are.equal(f(name .. ".sq_ring"), maps.sq_ring)
			assert.are.equal(f(name .. ".sqes"), maps.sqes)
		end
		local a = by_fd(doc.urings, f("a.fd"))
		assert.are.same({ 3, 2 }, { a.nr_files, #a.files })
		assert.are.same({ 0, f("a.file0") }, { a.files[1].slot, a.files[1].fd })
		assert.are.same({ 2, f("a.file2"), "/dev/null" }, { a.files[2].slot, a.files[2].fd, a.files[2].path })
		assert.are.equal(f("a.nbufs"), #a.bufs)
		for i, b in ipairs(a.bufs) do
			local want = w.facts["a.buf" .. (i - 1)]
			assert.are.same({ want[1], want[2] }, { tonumber(b.addr), b.len })
		end
		assert.is_table(a.eventfd)
		assert.are.equal(1, a.in_flight)
		local q = a.reqs[1]
		assert.are.same({ "POLL_ADD", f("a.poll_fd"), true }, { q.op, q.fd, q.rebuildable })
		-- 64 bits: through a uint64_t, not a double
		assert.are.equal("0x" .. bit.tohex(loadstring("return " .. w.facts["a.poll_data"].raw .. "ULL")()),
			q.user_data)
		local b = by_fd(doc.urings, f("b.fd"))
		assert.are.same({ "CQSIZE", "SINGLE_ISSUER", "DEFER_TASKRUN" }, b.flag_names)
		assert.are.equal(f("b.owner_tid"), b.submitter_tid)
		assert.are.same({ 0, f("b.file0") }, { b.files[1].slot, b.files[1].fd })
		local c = by_fd(doc.urings, f("c.fd"))
		assert.are.same({ f("c.sqpoll_tid"), f("c.sq_cpu") }, { c.sqpoll.tid, c.sqpoll.cpu })
		-- the table says the same
		local tcode, text = run("show -p " .. w.pid)
		assert.are.equal(0, tcode)
		assert.truthy(text:find("3 io_uring instance(s)", 1, true))
		assert.truthy(text:find("in flight POLL_ADD user_data 0xfeedbeef12345678", 1, true))
	end)

	it("verify -p: no difference after a dump; a reaped CQE and a submission named", function()
		w = start("--act")
		local a = "io_uring fd " .. w.facts["a.fd"][1]
		local img = dir .. "/img"
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. img)
		assert.are.equal(0, code, err)
		local vcode, diffs, doc = verify(w.pid, img)
		assert.are.same({ 0, {}, 3 }, { vcode, diffs, doc.urings })
		local tcode, text = run("verify -p " .. w.pid .. " -D " .. img)
		assert.are.equal(0, tcode)
		assert.truthy(text:find("3 io_uring instance(s)", 1, true), text)

		local reaped = act(w, "USR1")
		vcode, diffs = verify(w.pid, img)
		assert.are.equal(1, vcode)
		assert.are.same({ w.facts["a.cq_head"][1], reaped["a.cq_head"] },
			{ diffs[a .. ": cq_head"].image, diffs[a .. ": cq_head"].live })
		local names = {}
		for k in pairs(diffs) do names[#names + 1] = k end
		assert.are.same({ a .. ": cq_head" }, names)

		local sent = act(w, "USR2")
		vcode, diffs = verify(w.pid, img)
		assert.are.equal(1, vcode)
		for k, want in pairs { sq_tail = sent["a.sq_tail"], cq_tail = sent["a.cq_tail"],
			cached_sq_head = sent["a.sq_tail"], cached_cq_tail = sent["a.cq_tail"] } do
			local d = diffs[a .. ": " .. k]
			assert.are.same({ w.facts["a." .. k] and w.facts["a." .. k][1] or d.image, want }, { d.image, d.live }, k)
		end
		-- and nothing else (the reap still shows): the new CQEs are past the image's unreaped ones
		names = {}
		for k in pairs(diffs) do names[#names + 1] = k:sub(#a + 3) end
		table.sort(names)
		assert.are.same({ "cached_cq_tail", "cached_sq_head", "cq_head", "cq_tail", "sq_head", "sq_tail" }, names)
	end)

	it("verify names an io_uring instance on one side only, and a registered file changed", function()
		w = start()
		local img = dir .. "/img"
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. img)))
		local saved = assert(require("aiotk").read_image(img))
		local list, mem = saved:urings(), function(i, j) return saved:uring_memory(i, j) end
		local live, copy = {}, saved:urings()
		for i = 2, #copy do live[#live + 1] = copy[i] end
		local moved = live[1]
		moved.files = { { slot = 7, fd = 99, path = "/elsewhere" } }
		local out = require("aiotk.uring_verify").compare({}, list, mem, live,
			function(i, j) return mem(i + 1, j) end)
		local names = {}
		for _, d in ipairs(out) do names[#names + 1] = d.ring .. ": " .. d.what end
		table.sort(names)
		local want = { "io_uring fd " .. list[1].fd .. ": instance" }
		for _, f in ipairs(list[2].files) do want[#want + 1] = "io_uring fd " .. list[2].fd .. ": file slot " .. f.slot end
		if #list[2].files > 0 then want[#want + 1] = "io_uring fd " .. list[2].fd .. ": file slot 7" end
		table.sort(want)
		assert.are.same(want, names)
	end)

	it("dump of a process held stopped by another tool (CRIU's path) saves its io_uring instances", function()
		w = start()
		local aiotk = require "aiotk"
		core.kill(w.pid, "STOP")
		local ok, e = pcall(function()
			assert(helper.wait_until(function()
				return (helper.status(w.pid, "State") or ""):sub(1, 1) == "T"
			end, 5000), "the workload did not stop")
			local img = assert(aiotk.dump_frozen(w.pid, dir .. "/frozen"))
			assert.are.same({ 0, 3 }, { img.nrings, img.nurings })
			local back = assert(aiotk.read_image(dir .. "/frozen"))
			local fds = {}
			for i, u in ipairs(back:urings()) do fds[u.fd] = i end
			assert.are.same({ 3, 2 }, { check_saved(back, fds[w.facts["a.fd"][1]], w, "a") })
			assert.are.same({ 3, 0 }, { check_saved(back, fds[w.facts["b.fd"][1]], w, "b") })
			-- requests in flight a restore cannot submit again: refused by name, nothing written
			local uring = require "aiotk.uring"
			local saved = uring.rebuild
			uring.rebuild = function() return nil, "test: not rebuildable" end
			local none, err, code = aiotk.dump_frozen(w.pid, dir .. "/refused")
			uring.rebuild = saved
			assert.are.same({ "in_flight", false }, { code, core.listdir(dir .. "/refused") ~= nil })
			assert.is_nil(none)
			assert.truthy(err:find("io_uring fd " .. w.facts["a.fd"][1] .. ": user_data 0xfeedbeef12345678: " ..
				"test: not rebuildable", 1, true), err)
			-- still held stopped: aiotk neither resumed nor stopped it
			assert.are.equal("T", (helper.status(w.pid, "State") or ""):sub(1, 1))
		end)
		core.kill(w.pid, "CONT")
		if not ok then error(e, 0) end
	end)

	it("show -p and aiotk.view list timeouts with what remains, ring fds per thread, buffer rings, SQPOLL and owner", function()
		w = start("--extras")
		local f = function(k, i) return w.facts[k] and w.facts[k][i or 1] end
		local code, out, err = run("show -p " .. w.pid .. " --json")
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		assert.are.equal(4, #doc.urings)
		local d = by_fd(doc.urings, f("d.fd"))
		assert.are.same({ 3, 3 }, { d.timeouts_in_flight, #d.timeouts })
		local t = {}
		for _, x in ipairs(d.timeouts) do t[tonumber(x.user_data)] = x end
		local t1, t2, link = t[f("d.timeout1")], t[f("d.timeout2")], t[f("d.link")]
		assert.are.same({ "TIMEOUT", true, {}, 0 }, { t1.op, t1.rebuildable, t1.flag_names, t1.off })
		assert.are.same({ "TIMEOUT", true, { "BOOTTIME" }, f("d.timeout2_count"), f("d.timeout2_count") },
			{ t2.op, t2.rebuildable, t2.flag_names, t2.off, t2.count_left })
		assert.are.same({ "LINK_TIMEOUT", false }, { link.op, link.rebuildable })
		-- what remains: started at the timeout's length, never above it, not yet run out
		for _, x in ipairs { { t1, f("d.timeout1", 2) }, { t2, f("d.timeout2", 2) }, { link, f("d.link", 2) } } do
			assert.is_true(x[1].remaining_ns > 0 and x[1].remaining_ns <= x[2] * 1e9, x[1].user_data)
		end
		assert.are.same({ 1, 7 }, { t1.clockid, t2.clockid }) -- CLOCK_MONOTONIC, CLOCK_BOOTTIME
		-- the POLL linked to the LINK_TIMEOUT is a request in flight of its own
		assert.are.same({ 1, f("d.poll") }, { d.in_flight, tonumber(d.reqs[1].user_data) })
		assert.are.same({ { tid = f("d.ringfd"), index = f("d.ringfd", 2) } }, d.ring_fds)
		local b = by_fd(doc.urings, f("b.fd"))
		assert.are.same({ { tid = f("b.ringfd"), index = f("b.ringfd", 2) } }, b.ring_fds)
		assert.are.equal(f("b.owner_tid"), b.submitter_tid)
		assert.are.same({ 0, 0 }, { #by_fd(doc.urings, f("a.fd")).ring_fds, #by_fd(doc.urings, f("c.fd")).ring_fds })
		-- the ring in the program's memory found where it is (its page's index, checked)
		assert.are.same({ { bgid = f("d.bgid"), ring = true, entries = f("d.buf_entries"), nbufs = 0,
			head = f("d.buf_head"), tail = f("d.buf_tail"), incremental = false, user_memory = true,
			addr = string.format("0x%016x", f("d.buf_addr")) } }, d.buffer_groups)
		local c = by_fd(doc.urings, f("c.fd"))
		assert.are.same({ f("c.sqpoll_tid"), f("c.sq_cpu") }, { c.sqpoll.tid, c.sqpoll.cpu })
		-- aiotk.view gives the same rows
		local view = assert(require("aiotk").view(w.pid))
		local vd = by_fd(view.urings, f("d.fd"))
		assert.are.same({ d.ring_fds, d.buffer_groups, #d.timeouts }, { vd.ring_fds, vd.buffer_groups, #vd.timeouts })
		-- and the text
		local tcode, text = run("show -p " .. w.pid)
		assert.are.equal(0, tcode)
		for _, want in ipairs {
			string.format("registered ring fd: thread %d index %d", f("d.ringfd"), f("d.ringfd", 2)),
			string.format("registered ring fd: thread %d index %d", f("b.ringfd"), f("b.ringfd", 2)),
			"buffer ring group 7: 8 entries, head 3 tail 8 (5 available)",
			string.format("in flight TIMEOUT user_data 0x%016x: ", f("d.timeout1")),
			"BOOTTIME, or after 1000 more completion(s)",
			string.format("owner thread %d", f("b.owner_tid")),
			string.format("sqpoll thread %d cpu 1", f("c.sqpoll_tid")),
		} do
			assert.truthy(text:find(want, 1, true), want)
		end
	end)

	it("dump -p saves timeouts, ring fds and buffer groups; refuses a linked request by name; verify -p matches", function()
		w = start("--extras")
		local f = function(k, i) return w.facts[k] and w.facts[k][i or 1] end
		local d = "io_uring fd " .. f("d.fd")
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/refused")
		assert.are_not.equal(0, code)
		for _, want in ipairs {
			string.format("%s: user_data 0x%016x: POLL_ADD linked to other requests", d, f("d.poll")),
			string.format("%s: user_data 0x%016x: LINK_TIMEOUT: it belongs to the request it is linked to", d, f("d.link")),
			"nothing was written" } do
			assert.truthy(err:find(want, 1, true), want .. " in " .. err .. out)
		end
		assert.is_nil(core.listdir(dir .. "/refused"))
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		local img = dir .. "/img"
		code, out, err = run("dump -p " .. w.pid .. " -D " .. img .. " --policy " .. policy)
		assert.are.equal(0, code, err)
		local saved = assert(require("aiotk").read_image(img))
		local u
		for _, x in ipairs(saved:urings()) do if x.fd == f("d.fd") then u = x end end
		assert.are.same({ 3, 3 }, { u.timeouts_in_flight, #u.timeouts })
		local t = {}
		for _, x in ipairs(u.timeouts) do t[tonumber(x.user_data)] = x end
		assert.are.same({ 11, 1000, 7 }, { t[f("d.timeout2")].opcode, t[f("d.timeout2")].off, t[f("d.timeout2")].clockid })
		assert.is_true(t[f("d.timeout1")].remaining_ns > 0 and t[f("d.timeout1")].remaining_ns <= 3600e9)
		assert.are.same({ { tid = f("d.ringfd"), index = f("d.ringfd", 2) } }, u.ring_fds)
		assert.are.same({ { bgid = 7, ring = true, entries = 8, nbufs = 0, head = 3, tail = 8, incremental = false,
			user_memory = true, addr = string.format("0x%016x", f("d.buf_addr")) } }, u.buffer_groups)
		-- the process as it was: no difference, timeouts, ring fds and groups included
		local vcode, diffs = verify(w.pid, img)
		assert.are.same({ 0, {} }, { vcode, diffs })
	end)

	it("dump -p refuses, by name, an instance held only through its mappings (its fd closed)", function()
		w = start("--orphan")
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are_not.equal(0, code, out)
		assert.truthy(err:find("2 io_uring mapping(s) belong to no instance open at an fd", 1, true), err)
		assert.is_nil(core.listdir(dir .. "/img"))
		-- the view lists the three others
		local _, jout = run("show -p " .. w.pid .. " --json")
		assert.are.equal(3, #json.decode(jout).urings)
	end)

	it("a DEFER_TASKRUN completion waiting for its owner thread is shown, and dump -p refuses it by name", function()
		w = start("--waiting")
		local b = w.facts["b.fd"][1]
		local function shown()
			local _, out = run("show -p " .. w.pid .. " --json")
			return by_fd(json.decode(out).urings, b)
		end
		-- the 1 ms timeout has fired: its completion waits, the ring unchanged
		assert(helper.wait_until(function() return shown().completions_waiting == 1 end, 5000))
		local u = shown()
		assert.are.same({ w.facts["b.cq_tail"][1], w.facts["b.cq_tail"][1] }, { u.cq_tail, u.cached_cq_tail })
		local code, out, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img")
		assert.are_not.equal(0, code, out)
		assert.truthy(err:find("io_uring fd " .. b .. ": 1 completion(s) waiting for a thread to run its task work", 1, true), err)
		assert.is_nil(core.listdir(dir .. "/img"))
		local _, text = run("show -p " .. w.pid)
		assert.truthy(text:find("1 completion(s) waiting for a thread to run its task work", 1, true), text)
	end)

	it("verify names a timeout, a registered ring fd and a buffer group that differ", function()
		w = start("--extras")
		local policy = dir .. "/record.lua"
		helper.write(policy, "return { in_flight = function(ring, ctx) return ctx.io_uring and 'record' or 'capture' end }")
		local img = dir .. "/img"
		assert.are.equal(0, (run("dump -p " .. w.pid .. " -D " .. img .. " --policy " .. policy)))
		local saved = assert(require("aiotk").read_image(img))
		local list, live = saved:urings(), saved:urings()
		local mem = function(i, j) return saved:uring_memory(i, j) end
		local d
		for _, u in ipairs(live) do if u.fd == w.facts["d.fd"][1] then d = u end end
		d.buffer_groups[1].head = d.buffer_groups[1].head + 1
		d.ring_fds = {}
		for _, t in ipairs(d.timeouts) do
			if tonumber(t.user_data) == w.facts["d.timeout1"][1] then t.flags = 4 end
		end
		local out = require("aiotk.uring_verify").compare({}, list, mem, live, mem)
		local names = {}
		for _, x in ipairs(out) do names[#names + 1] = x.what end
		table.sort(names)
		assert.are.same({ "buffer group 7 head",
			string.format("registered ring fd thread %d index %d", w.facts["d.ringfd"][1], w.facts["d.ringfd"][2]),
			string.format("timeout 0x%016x flags", w.facts["d.timeout1"][1]) }, names)
	end)

	it("a completion waiting for a stopped thread's task work (flags 0) is counted, and a frozen dump refuses it", function()
		w = start("--stop-timeout")
		local a = w.facts["a.fd"][1]
		local function waiting()
			local _, out = run("show -p " .. w.pid .. " --json")
			return by_fd(json.decode(out).urings, a).completions_waiting
		end
		local ok, e = pcall(function()
			assert(helper.wait_until(function() return (helper.status(w.pid, "State") or ""):sub(1, 1) == "T" end, 5000))
			-- the timeout fires while the process is stopped: its completion waits
			assert(helper.wait_until(function() return waiting() == 1 end, 5000), "no completion waiting")
			local img, err, code = require("aiotk").dump_frozen(w.pid, dir .. "/img")
			assert.are.same({ "in_flight", false }, { code, img ~= nil })
			assert.truthy(err:find("io_uring fd " .. a .. ": 1 completion(s) waiting for a thread to run its " ..
				"task work", 1, true), err)
			assert.is_nil(core.listdir(dir .. "/img"))
		end)
		core.kill(w.pid, "CONT")
		if not ok then error(e, 0) end
		-- let go, the thread runs it: nothing waits any more
		assert(helper.wait_until(function() return waiting() == 0 end, 5000), "the completion still waits")
	end)
end)
