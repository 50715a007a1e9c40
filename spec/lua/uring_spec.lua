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
local function start()
	local p = assert(io.popen(BIN, "r"))
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

local function by_fd(list, fd)
	for _, u in ipairs(list) do if u.fd == fd then return u end end
	error("no instance with fd " .. fd)
end

describe("io_uring", function()
	local w
	after_each(function() if w then stop(w) end w = nil end)

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
end)
