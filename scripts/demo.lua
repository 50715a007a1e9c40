-- aiotk demo: dump rings in known states, destroy them, restore, verify
local aiotk = require "aiotk"
local states = require "aiotk.states"
local argparse = require "argparse"
local lab = aiotk.lab

local parser = argparse("aiotk demo",
	"Set up AIO rings in known states with libaio, dump them to an image, destroy them, " ..
	"restore them from the image and verify head, tail, events and the next completion.")
parser:option("-D --dir", "keep the image in this directory")
local args = parser:parse({ ... })

local function ms(ns) return ns / 1e6 end

local function fail(msg)
	io.stderr:write("aiotk demo: ", msg, "\n")
	return 1
end

-- A ring only another host could have made: 126 events in a 127-slot ring
-- (this host strands 6 slots); it is given the address of a ring made here.
local function foreign_full()
	local ctx = assert(lab.setup(1))
	local events = {}
	for i = 1, 126 do
		events[i] = { data = states.cookie(9, 2, i), obj = "0x1000", res = i, res2 = 0 }
	end
	local ring = assert(aiotk.ring { addr = ctx, nr = 127, head = 3, tail = 2, events = events })
	lab.destroy(ctx)
	return ring
end

local function make_all()
	local made = {}
	for i, spec in ipairs(states.demo) do
		local s = setmetatable({ index = i }, { __index = spec })
		local ctx, err = states.make(s)
		if not ctx then
			for _, m in ipairs(made) do lab.destroy(m.ctx) end
			return nil, spec.name .. ": " .. err
		end
		made[#made + 1] = { name = spec.name, ctx = ctx }
	end
	return made
end

local function dump(made, dir)
	local img = assert(aiotk.image())
	for _, m in ipairs(made) do img:add(assert(aiotk.snapshot(m.ctx))) end
	img:add(foreign_full())
	local t0 = aiotk.now_ns()
	local ok, err = img:write(dir)
	if not ok then return nil, err end
	return img, aiotk.now_ns() - t0
end

local function same_events(a, b)
	if #a ~= #b then return false, string.format("%d events, saved %d", #a, #b) end
	for i = 1, #a do
		local x, y = a[i], b[i]
		if x.data ~= y.data or x.obj ~= y.obj or x.res ~= y.res or x.res2 ~= y.res2 then
			return false, string.format("event %d differs: data %s vs %s", i, x.data, y.data)
		end
	end
	return true
end

-- The restored ring as libaio sees it: same header, io_getevents returns
-- exactly the saved events, and the next completion lands at the saved tail.
local function verify(saved)
	local now, err = aiotk.snapshot(saved.addr)
	if not now then return false, err end
	if now.nr ~= saved.nr or now.head ~= saved.head or now.tail ~= saved.tail then
		return false, string.format("header %d/%d/%d, saved %d/%d/%d", now.nr, now.head,
			now.tail, saved.nr, saved.head, saved.tail)
	end
	local got = lab.reap(saved.addr, saved.nr)
	local ok, why = same_events(got, saved:events())
	if not ok then return false, "io_getevents: " .. why end
	local cookie = states.cookie(15, 3, 1)
	if lab.complete(saved.addr, 1, { data = cookie }) ~= 1 then
		return false, "the next request was refused"
	end
	local after = assert(aiotk.snapshot(saved.addr))
	local landed = after:event(1)
	if after.head ~= saved.tail or after.tail ~= (saved.tail + 1) % saved.nr or landed.data ~= cookie then
		return false, string.format("next completion landed at slot %d, saved tail %d", after.head, saved.tail)
	end
	return true
end

local dir = args.dir
if not dir then
	dir = os.tmpname()
	os.remove(dir)
end

local made, err = make_all()
if not made then return fail(err) end
local img, write_ns = dump(made, dir)
if not img then return fail(err) end
for _, m in ipairs(made) do lab.destroy(m.ctx) end

local t0 = aiotk.now_ns()
local loaded, lerr = aiotk.read_image(dir)
if not loaded then return fail(lerr) end
local read_ns = aiotk.now_ns() - t0
local rings = loaded:rings()
local results, rerr = aiotk.restore_all(rings)
if not results then return fail(rerr) end

print(string.format("aiotk demo: %d rings dumped to %s (write %.2f ms, read %.2f ms), destroyed, restored",
	#rings, dir, ms(write_ns), ms(read_ns)))
print(string.format("%-10s %-16s %7s %6s %6s %6s %4s %7s %8s %8s  %s", "ring", "addr", "nr",
	"head", "tail", "events", "n", "setups", "replay", "total", "verify"))
local names = {}
for i, m in ipairs(made) do names[i] = m.name end
names[#rings] = "foreign"
local all_ok = true
for i, r in ipairs(rings) do
	local res = results[i]
	local ok, why = verify(r)
	all_ok = all_ok and ok
	local total = res.ns_converge + res.ns_replay + res.ns_events + res.ns_remap
	print(string.format("%-10s 0x%-14x %7d %6d %6d %6d %4d %7d %6.2fms %6.2fms  %s", names[i], r.addr,
		r.nr, r.head, r.tail, #r, res.converge.n, res.converge.calls, ms(res.ns_replay), ms(total),
		ok and "ok" or ("FAILED: " .. why)))
end
for _, r in ipairs(rings) do lab.destroy(r.addr) end
if not args.dir then os.remove(dir .. "/rings.img") os.remove(dir) end
print(all_ok and "all rings verified" or "verification FAILED")
return all_ok and 0 or 1
