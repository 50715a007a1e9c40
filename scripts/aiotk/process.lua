-- The process workflows: dump and restore of a running process, where the
-- policy's decisions are carried out and where the guarantees live: the
-- process is stopped only while its rings are read or rebuilt, and a
-- restore either completes or leaves the process as it was (occupants
-- moved aside are moved back, placeholders removed, new rings destroyed),
-- also when interrupted by SIGINT, SIGTERM or SIGHUP.
--
-- Error convention: nil, message, code (code: "budget", "occupied",
-- "image", "stuck", "interrupted", ...).
local core = require "aiotk.core"
local kernel = require "aiotk.kernel"

local M = {}

-- Run fn(target) with process pid stopped; it is let go whatever fn does.
function M.with_process(pid, fn, opts)
	local t, err, code = core.attach(pid, opts)
	if not t then return nil, err, code end
	local results = { n = 0 }
	local function pack(...) results = { n = select("#", ...), ... } end
	pack(pcall(fn, t))
	local ok, derr, dcode = t:detach()
	if not results[1] then error(results[2], 0) end
	if not ok and results[2] then return nil, derr, dcode end
	return unpack(results, 2, results.n)
end


local function policy_of(opts)
	return opts.policy or require("aiotk.policy").load(nil, require("aiotk").search_dirs)
end

-- Tails that moved since `rings` were read: requests completing while the
-- process is stopped.
local function moved(t, rings)
	local out = {}
	for _, r in ipairs(rings) do
		local now = t:header(r.addr)
		if not now or now.tail ~= r.tail then out[#out + 1] = { ring = r, now = now } end
	end
	return out
end

-- The rings to read, in address order: from the kernel view when there is
-- one (the dump reads it anyway; one BPF read costs less than reading the
-- maps of a process with many mappings), else from /proc/PID/maps.
local function ring_list(t, kv)
	if not kv then return t:rings() end
	local list = {}
	for addr, c in pairs(kv) do list[#list + 1] = { addr = addr, ring_len = core.ring_len(c.nr), nr = c.nr } end
	table.sort(list, function(a, b) return a.addr < b.addr end)
	return list
end

-- The rings read (read[i] from listed[i]: {addr, nr}) the policy keeps,
-- each checked against the nr the kernel gives it.
local function kept(listed, read, policy, pid)
	local rings = {}
	for i, m in ipairs(listed) do
		local ring = read[i]
		if m.nr and ring.nr ~= m.nr then
			return nil, string.format("ring 0x%x: its header says nr %d, the kernel %d; not a ring " ..
				"aiotk can read", m.addr, ring.nr, m.nr), "notring"
		end
		if policy.filter(ring, { phase = "dump", pid = pid }) then rings[#rings + 1] = ring end
	end
	return rings
end

local function read_rings(t, policy, opts, kv)
	local maps, e, c = ring_list(t, kv)
	if not maps then return nil, e, c end
	local read, e2, c2 = t:snapshot_many(maps, opts.area)
	if not read then return nil, e2, c2 end
	return kept(maps, read, policy, t.pid)
end

-- Without the kernel view, requests in flight show only as tails moving
-- while the process is stopped; the policy waits for them, fails, or
-- records a warning.
local function settle_by_tails(t, rings, policy, opts)
	core.sleep_ms(policy.settle_ms)
	local m = moved(t, rings)
	if #m == 0 then return rings, "" end
	local what = string.format("ring 0x%x: tail moved from %d to %d while the process was stopped",
		m[1].ring.addr, m[1].ring.tail, m[1].now and m[1].now.tail or -1)
	local choice = policy.in_flight(m[1].ring, { pid = t.pid, moved = m, kernel_view = false })
	if choice == "fail" then
		return nil, what .. "; requests were in flight (policy: fail)", "in_flight"
	elseif choice == "record" then
		policy.log(what .. "; recorded in the image")
		return rings, what .. "; requests were in flight, this image holds the first reading"
	end
	local deadline = core.now_ns() + policy.in_flight_wait_ms * 1e6
	repeat
		rings = assert(read_rings(t, policy, opts))
		core.sleep_ms(math.max(policy.settle_ms, 1))
		if #moved(t, rings) == 0 then
			policy.log(what .. "; waited for it to settle")
			return rings, ""
		end
	until core.now_ns() > deadline
	return nil, what .. string.format("; still moving after %d ms", policy.in_flight_wait_ms), "in_flight"
end

-- Per ring with requests in flight: count, those that finish on their own
-- (disk I/O) and the cancellable ones (POLL), from the kernel view kv.
local function in_flight_facts(kv, rings)
	local out = {}
	for _, r in ipairs(rings) do
		local c = kv[r.addr]
		if c and (c.in_flight or 0) > 0 then
			local finishing, cancellable = kernel.split(c)
			out[#out + 1] = { ring = r, addr = r.addr, count = c.in_flight, finishing = finishing,
				cancellable = cancellable, pending = c.pending }
		end
	end
	return out
end

local function describe_in_flight(f)
	return string.format("ring 0x%x: %d request(s) in flight (%d that finish on their own, such as " ..
		"disk reads and writes; %d cancellable, such as POLL)", f.addr, f.count, f.finishing, f.cancellable)
end

-- Waits until no request the choice waits for is in flight (capture: those
-- that finish on their own; wait: all), at most in_flight_wait_ms. kv is
-- the reading to start from. Returns the ms waited (0: nothing to wait for).
local function wait_in_flight(t, rings, choice, policy, kv)
	local start = core.now_ns()
	local deadline = start + policy.in_flight_wait_ms * 1e6
	local read_again = false
	while true do
		local left
		for _, f in ipairs(in_flight_facts(kv, rings)) do
			if (choice == "wait" and f.count or f.finishing) > 0 then left = f break end
		end
		local waited = read_again and (core.now_ns() - start) / 1e6 or 0
		if not left then return waited end
		if core.now_ns() > deadline then
			return nil, describe_in_flight(left) .. string.format("; still in flight after %d ms " ..
				"(policy in_flight_wait_ms); the image would lose them, so nothing was written", waited),
				"in_flight"
		end
		core.sleep_ms(1)
		local err, code
		read_again = true
		kv, err, code = kernel.read(t.pid)
		if not kv then return nil, err, code end
	end
end

-- The kernel's n and tail noted on each ring, and (with capture) the
-- cancellable requests in flight saved with it.
local function note_kernel(t, rings, kv, capture)
	for _, r in ipairs(rings) do
		local k = kv[r.addr]
		if k then r:note_kernel { n = k.n, kernel_tail = k.kernel_tail } end
		if k and capture and k.cancellable > 0 then
			if #k.pending < k.cancellable then
				return nil, string.format("ring 0x%x: %d cancellable requests in flight, more than " ..
					"the kernel view lists (%d); nothing was written", r.addr, k.cancellable, #k.pending),
					"in_flight"
			end
			for _, q in ipairs(k.pending) do
				if not q.iocb_ok then
					return nil, string.format("ring 0x%x: the iocb of the request in flight at %s no " ..
						"longer holds its data %s (the process reused its memory), so it cannot be " ..
						"captured; nothing was written", r.addr, q.obj, q.data), "in_flight"
				end
				local ok, cerr, ccode = t:capture(r, q.obj)
				if not ok then return nil, cerr, ccode end
			end
		end
	end
	return rings
end

local function tails_agree(rings, kv)
	for _, r in ipairs(rings) do
		local k = kv[r.addr]
		if k and k.kernel_tail ~= r.tail then return false end
	end
	return true
end

-- The reading the image gets: `rings` and `kv` when given and consistent,
-- else read again. A completion landing between the ring reads and the
-- kernel read shows as a kernel tail that differs from a ring's.
local function final_reading(t, policy, opts, capture, rings, kv)
	for _ = 1, 8 do
		if not rings then
			local e, c
			kv, e, c = kernel.read(t.pid)
			if not kv then return nil, e, c end
			rings, e, c = read_rings(t, policy, opts, kv)
			if not rings then return nil, e, c end
		end
		if tails_agree(rings, kv) then return note_kernel(t, rings, kv, capture) end
		rings = nil
	end
	return nil, "ring tails kept moving while the process was stopped; nothing was written", "in_flight"
end

-- What ring r held at the stop: its unreaped events and (with the kernel
-- view k) the requests in flight, from one instant: the kernel's tail and
-- counters are read together, the ring a little after, and a completion
-- landing between the two would count once unreaped and once in flight
-- (head cannot move while the process is stopped).
local function at_stop(r, k)
	if not k then return { unreaped = #r } end
	return { unreaped = (k.kernel_tail - r.head) % r.nr, in_flight = k.in_flight }
end

-- With the kernel view: the exact requests in flight, and the policy's
-- answer: capture (wait for those that finish on their own, save the
-- cancellable ones with the ring), wait (for all), fail, or record.
-- report gets, per ring address, what the process had when it was
-- stopped: unreaped events and (with the kernel view) requests in flight.
local function settle(t, rings, policy, opts, report, kv, why)
	for _, r in ipairs(rings) do report[r.addr] = at_stop(r, kv and kv[r.addr]) end
	if not kv then
		policy.log("no kernel view (" .. why .. "): " .. kernel.WITHOUT)
		return settle_by_tails(t, rings, policy, opts)
	end
	local facts = in_flight_facts(kv, rings)
	if #facts == 0 then
		local out, e, c = final_reading(t, policy, opts, false, rings, kv)
		return out, out and "" or e, c
	end
	local choice = policy.in_flight(facts[1].ring, { pid = t.pid, in_flight = facts, kernel_view = true })
	local what = describe_in_flight(facts[1])
	if choice == "fail" then
		return nil, what .. "; the image would lose them (policy in_flight: fail)", "in_flight"
	elseif choice == "record" then
		local list = {}
		for i, f in ipairs(facts) do list[i] = describe_in_flight(f) end
		local warning = table.concat(list, "; ") .. "; not in this image (policy in_flight: record)"
		policy.log(warning)
		local out, e, c = final_reading(t, policy, opts, false, rings, kv)
		return out, out and warning or e, c
	end
	local waited, werr, wcode = wait_in_flight(t, rings, choice, policy, kv)
	if not waited then return nil, werr, wcode end
	-- Nothing waited for: the first reading stands (its tails are checked).
	local first = waited == 0
	if not first then policy.log(string.format("%s; waited %.1f ms for them to settle", what, waited)) end
	report.waited_ms = waited
	local out, e, c = final_reading(t, policy, opts, choice == "capture", first and rings, first and kv)
	return out, out and "" or e, c
end

-- A refused injected call in a process under a seccomp filter: say so.
local function seccomp_hint(pid, err)
	local f = io.open("/proc/" .. pid .. "/status")
	local status = f and f:read("*a") or ""
	if f then f:close() end
	if status:match("Seccomp:%s*2") and (err:match("not permitted") or err:match("not implemented")) then
		return err .. string.format("; process %d runs under a seccomp filter (Seccomp: 2 in " ..
			"/proc/%d/status) that refuses a system call aiotk injects; nothing was changed", pid, pid)
	end
	return err
end

local function apply_budget(plan, policy)
	local b = plan.budget
	if b.action == "fail" then
		return nil, require("aiotk.plan").budget_message(b), "budget"
	elseif b.action == "raise" then
		local ok, err, code = core.set_aio_max_nr(b.aio_max_nr + b.raise_by)
		if not ok then return nil, err, code end
		policy.log(string.format("raised fs.aio-max-nr from %d to %d (by the %d missing)",
			b.aio_max_nr, b.aio_max_nr + b.raise_by, b.raise_by))
	end
	return true
end

-- The AIO rings in /proc/PID/maps, read without stopping the process.
local function ring_count(pid)
	local f = io.open("/proc/" .. pid .. "/maps")
	if not f then return nil end
	local n = 0
	for l in f:lines() do if l:find(" /%[aio%]") then n = n + 1 end end
	f:close()
	return n
end

local function is_dir(path) return core.listdir(path) ~= nil end

-- The rings of target t the policy keeps, settled (requests in flight
-- waited for or captured), their warnings, and the report (dump_process).
-- reading: the first reading (kernel.read_stopped), when there is one.
local function dump_rings(t, policy, opts, reading)
	local kv, why, rings, e, c
	if reading then
		local contexts, all = reading:take()
		kv = kernel.by_addr(contexts)
		rings, e, c = kept(contexts, all, policy, t.pid)
	else
		kv, why = kernel.read(t.pid)
		rings, e, c = read_rings(t, policy, opts, kv)
	end
	if not rings then return nil, e, c end
	local report = { waited_ms = 0 }
	local warnings
	rings, warnings, c = settle(t, rings, policy, opts, report, kv, why)
	if not rings then return nil, warnings, c end
	return rings, warnings, report
end

-- What dump_rings gives, from a settled reading (kernel.read_stopped),
-- made once the process runs again: nothing was in flight, so nothing
-- the policy decides needed the process stopped.
local function kept_rings(reading, policy, pid)
	local contexts, all = reading:take()
	local rings, report = assert(kept(contexts, all, policy, pid)), { waited_ms = 0 }
	local kv = kernel.by_addr(contexts)
	for _, r in ipairs(rings) do report[r.addr] = at_stop(r, kv[r.addr]) end
	return rings, "", report
end

-- An image of rings, made once the process runs again.
local function image_of(rings, warnings)
	local img = assert(core.image())
	for _, r in ipairs(rings) do img:add(r) end
	img.warnings = warnings
	return img
end

-- img written to dir; a failed write leaves no directory it created.
local function write_new(img, dir)
	if not dir then return true end
	local existed = is_dir(dir)
	local ok, err, code = img:write(dir)
	if not ok and not existed then core.remove_tree(dir) end
	return ok, err, code
end

local function no_rings(pid)
	return string.format("process %d has no AIO ring (no /[aio] mapping in /proc/%d/maps); " ..
		"it was not stopped and nothing was written", pid, pid)
end

-- Dump the rings of process pid the policy keeps, to dir. The process is
-- stopped only while its rings are read, and not at all when it has none;
-- a failed dump leaves no directory it created. Returns the image and a
-- report: { [ring addr] = { unreaped =, in_flight = } when stopped,
-- waited_ms = time waited for requests in flight }.
function M.dump_process(pid, dir, opts)
	opts = opts or {}
	local policy = policy_of(opts)
	local fit, ferr, fcode = core.check_process(pid)
	if not fit then return nil, ferr, fcode end
	if ring_count(pid) == 0 then return nil, no_rings(pid), "norings" end
	local rings, warnings, report, stopped, settled
	kernel.prepare(pid) -- loaded (and its iterator made) before the process is stopped
	local ok, err, code = M.with_process(pid, function(t)
		stopped = t
		local reading = kernel.read_stopped(t, opts.area)
		if reading and reading:settled() then
			settled = reading
			return true
		end
		rings, warnings, report = dump_rings(t, policy, opts, reading)
		return rings, warnings, report
	end, { cpu_latency = policy.cpu_latency })
	if not ok then return nil, err, code end
	if settled then rings, warnings, report = kept_rings(settled, policy, pid) end
	local img = image_of(rings, warnings)
	img.pid = pid
	img.stopped_ns = stopped.stopped_ns
	local w, werr, wcode = write_new(img, dir)
	if not w then return nil, werr, wcode end
	report.stopped_at_ns = stopped.stopped_at_ns
	return img, report
end

-- The same for a process another tool holds stopped (CRIU, at its
-- CHECKPOINT_DEVICES hook): read only, never stopped or resumed by aiotk.
function M.dump_frozen(pid, dir, opts)
	opts = opts or {}
	local policy = policy_of(opts)
	if ring_count(pid) == 0 then return nil, no_rings(pid), "norings" end
	kernel.prepare(pid)
	local t, terr, tcode = core.frozen(pid)
	if not t then return nil, terr, tcode end
	local rings, warnings, report = dump_rings(t, policy, opts)
	if not rings then return nil, warnings, report end
	local img = image_of(rings, warnings)
	img.pid = pid
	local w, werr, wcode = write_new(img, dir)
	if not w then return nil, werr, wcode end
	return img, report
end

-- Compare process pid's rings with image img (aiotk.verify): read with the
-- process stopped, ring side and kernel side from one consistent reading.
-- Returns the differences and { kernel_view, kernel_view_error,
-- stopped_ns }, or nil, message, code.
function M.verify_process(pid, img)
	local fit, ferr, fcode = core.check_process(pid)
	if not fit then return nil, ferr, fcode end
	kernel.prepare(pid)
	local live, kv, why, stopped
	local ok, err, code = M.with_process(pid, function(t)
		stopped = t
		for _ = 1, 8 do
			local maps, e, c = t:rings()
			if not maps then return nil, e, c end
			live = {}
			for _, m in ipairs(maps) do
				local ring, e2, c2 = t:snapshot(m.addr, false, m.ring_len)
				if not ring then return nil, e2, c2 end
				live[m.addr] = ring
			end
			kv, why = kernel.read(pid)
			local list = {}
			for _, r in pairs(live) do list[#list + 1] = r end
			if not kv or tails_agree(list, kv) then return true end
		end
		return nil, "ring tails kept moving while the process was stopped", "in_flight"
	end)
	if not ok then return nil, err, code end
	local diffs = require("aiotk.verify").compare(img:rings(), live, kv)
	return diffs, { kernel_view = kv ~= nil, kernel_view_error = not kv and why or nil,
		stopped_ns = stopped.stopped_ns }
end

-- The first of maps (t:mappings()) overlapping [addr, addr+len).
local function mapping_in(maps, addr, len)
	for _, m in ipairs(maps) do
		if m.start < addr + len and addr < m.finish then return m end
	end
end

-- What each destination holds, checked before anything changes: nothing,
-- or (with replace) exactly one AIO ring, which is then moved aside.
-- Returns the occupant per step index.
local function occupants(maps, steps, replace)
	local out = {}
	for i, s in ipairs(steps) do
		local m = mapping_in(maps, s.ring.addr, s.len)
		if m then
			if not (replace and m.ring) then
				return nil, string.format(
					"ring %d of %d (0x%x, %d bytes): %s is mapped there%s",
					i, #steps, s.ring.addr, s.len, m.desc,
					m.ring and "; --replace moves an AIO ring there aside and destroys it once all are restored" or
					"; nothing was changed"), "occupied"
			end
			if m.start < s.ring.addr or m.finish > s.ring.addr + s.len then
				return nil, string.format("ring %d of %d (0x%x, %d bytes): the AIO ring %s there does not fit " ..
					"the saved range; nothing was changed", i, #steps, s.ring.addr, s.len, m.desc), "occupied"
			end
			out[i] = { addr = m.start, len = m.finish - m.start }
		end
	end
	return out
end

-- ranges ({ {addr=, len=}, ... }) in address order, those that touch
-- joined, those whose index is in skip left out: { {addr, len, members =
-- indexes into ranges}, ... }. A restore holds one placeholder per run.
function M.joined_ranges(ranges, skip)
	local idx = {}
	for i in ipairs(ranges) do if not (skip and skip[i]) then idx[#idx + 1] = i end end
	table.sort(idx, function(a, b) return ranges[a].addr < ranges[b].addr end)
	local runs, cur = {}, nil
	for _, i in ipairs(idx) do
		local r = ranges[i]
		if cur and cur.addr + cur.len == r.addr then
			cur.len = cur.len + r.len
			cur.members[#cur.members + 1] = i
		else
			cur = { addr = r.addr, len = r.len, members = { i } }
			runs[#runs + 1] = cur
		end
	end
	return runs
end

-- The saved range of each step.
local function ranges_of(steps)
	local ranges = {}
	for i, s in ipairs(steps) do ranges[i] = { addr = s.ring.addr, len = s.len } end
	return ranges
end

-- What an interrupted aiotk left: contexts it was building or had parked
-- (marked), placeholders on saved ranges, journal pages. Removed first.
-- Returns the mappings as they are then (one read of the maps when
-- nothing was left, which is the usual case).
local function remove_leftovers(t, steps, policy)
	local ranges = ranges_of(steps)
	local maps, me, mc = t:mappings(ranges)
	if not maps then return nil, me, mc end
	local removed = false
	-- A placeholder covers one saved range or a run of touching ones.
	for _, run in ipairs(M.joined_ranges(ranges)) do
		for _, m in ipairs(maps) do
			if m.placeholder and m.start >= run.addr and m.finish <= run.addr + run.len then
				local ok, err, code = t:unmap(m.start, m.finish - m.start)
				if not ok then return nil, err, code end
				removed = true
				policy.log(string.format("removed the placeholder at 0x%x left by an interrupted aiotk", m.start))
			end
		end
	end
	local journals = false
	for _, m in ipairs(maps) do journals = journals or m.journal end
	if journals then
		local j, je, jc = t:remove_journals()
		if not j then return nil, je, jc end
		if j > 0 then
			removed = true
			policy.log(string.format("destroyed %d ring(s) an interrupted aiotk had just made", j))
		end
	end
	for _, m in ipairs(maps) do
		local h = m.ring and t:header(m.start)
		if h and h.building then
			local ok, err, code = t:io_destroy(m.start)
			if not ok then return nil, err, code end
			removed = true
			policy.log(string.format("destroyed ring 0x%x, left built halfway or parked by an interrupted aiotk", m.start))
		end
	end
	if removed then return t:mappings(ranges) end
	return maps
end

local EXITED = "the process exited during restore: "

-- Everything a restore changed, undone in reverse: what it made, where.
local Undo = {}
Undo.__index = Undo

function Undo:rollback(t)
	for i = #self, 1, -1 do
		local u = self[i]
		if u.kind == "ring" then t:io_destroy(u.addr)
		-- A placeholder partly used: its rings are destroyed (above, in
		-- reverse order) before what is left of it goes.
		elseif u.kind == "claim" and u.left > 0 then t:unmap(u.addr, u.len)
		elseif u.kind == "parked" then t:unpark(u.at, u.len, u.addr) end
	end
end

local function interrupted()
	local sig = core.interrupted()
	if sig then return nil, "interrupted by " .. sig .. "; everything done was undone", "interrupted" end
	return true
end

-- The kernel's side of the rebuilt rings, where it can be seen (one
-- reading for all): each private tail must be the saved tail (the next
-- completion lands at the saved slot) and, when the dump recorded it, its
-- n the saved n.
local function kernel_check(t, steps, policy)
	local kv = kernel.read(t.pid)
	for i, s in ipairs(steps) do
		local ring = s.ring
		local k = kv and kv[ring.addr]
		if k and k.kernel_tail ~= ring.tail then
			return nil, string.format("ring %d of %d (0x%x): the kernel's tail is %d after the rebuild, " ..
				"the saved tail %d", i, #steps, ring.addr, k.kernel_tail, ring.tail), "stuck"
		end
		if k and ring.n > 0 and k.n ~= ring.n then
			policy.log(string.format("ring 0x%x: rebuilt with io_setup(%d), not the recorded %d " ..
				"(this host makes that length from another n)", ring.addr, k.n, ring.n))
		end
	end
	return true
end

-- The changes, in order: occupants parked, every destination claimed with
-- a placeholder (so no new ring, parking spot or scratch mapping can land
-- on one), each ring rebuilt onto its placeholder. Each step is recorded
-- in undo before the next one starts.
local function rebuild(t, maps, steps, opts, policy, undo, out)
	local occ, e, c = occupants(maps, steps, opts.replace)
	if not occ then return nil, e, c end
	local claims = {}
	-- One placeholder over destinations members (step indexes) that lie
	-- side by side from addr on; it is used up once all are rebuilt.
	local function held(members, addr, len)
		local c = { kind = "claim", addr = addr, len = len, left = #members }
		for _, i in ipairs(members) do claims[i] = c end
		undo[#undo + 1] = c
	end
	local function claim(members, addr, len)
		local ok, re, rc = t:reserve(addr, len)
		if not ok then return nil, string.format("ring %d of %d: %s", members[1], #steps, re), rc end
		held(members, addr, len)
		return true
	end
	-- Free destinations are claimed first, so that no parking spot lands
	-- on one (those that touch, as rings a program made one after another
	-- do, under one placeholder); then each occupant is parked and its
	-- range claimed at once. With nothing to park, the claims go with the
	-- rebuild: the restorer takes them first thing in its run.
	local runs, parking = M.joined_ranges(ranges_of(steps), occ), next(occ) ~= nil
	for _, run in ipairs(parking and runs or {}) do
		local ok, ce, cc = claim(run.members, run.addr, run.len)
		if not ok then return nil, ce, cc end
	end
	for i, s in ipairs(steps) do
		local o = occ[i]
		if o then
			local at, pe, pc = t:park(o.addr, o.len)
			if not at then return nil, pe, pc end
			undo[#undo + 1] = { kind = "parked", addr = o.addr, len = o.len, at = at }
			local ok, ce, cc = claim({ i }, s.ring.addr, s.len)
			if not ok then return nil, ce, cc end
		end
	end
	local ok, ie, ic = interrupted()
	if not ok then return nil, ie, ic end
	-- All rings in one call: those the restorer can rebuild by itself go
	-- into the process in one run (core/aio/rebuild/restorer.c).
	local jobs = {}
	for i, s in ipairs(steps) do
		local replay = { nudge = s.nudge }
		for k, v in pairs(opts.replay or {}) do replay[k] = v end
		jobs[i] = { ring = s.ring, n = s.n, grow_to = s.grow_to, replay = replay, placeholder = true,
			model = opts.model }
	end
	local pending = parking and {} or runs
	local results, re, rc, made = t:restore_all(jobs, pending)
	for _, run in ipairs(pending) do
		if run.made then held(run.members, run.addr, run.len)
		elseif not results then
			return nil, string.format("ring %d of %d: %s", run.members[1], #steps, re), rc
		end
	end
	for i, res in ipairs(results or made) do
		claims[i].left = claims[i].left - 1
		undo[#undo + 1] = { kind = "ring", addr = res.ctx }
	end
	if not results then
		local i = #made + 1
		return nil, string.format("ring %d of %d (0x%x): %s", i, #steps, steps[i].ring.addr, seccomp_hint(t.pid, re)), rc
	end
	ok, ie, ic = interrupted()
	if not ok then return nil, ie, ic end
	-- Checked before any captured request goes back in: one that completes
	-- at once would move the tail being checked.
	local kok, ke, kc = kernel_check(t, steps, policy)
	if not kok then return nil, ke, kc end
	for i, s in ipairs(steps) do
		local res = results[i]
		if s.ring.ncaptured > 0 then
			local rok, rse, rsc = t:resubmit(res.ctx, s.ring)
			if not rok then return nil, string.format("ring %d of %d: %s", i, #steps, rse), rsc end
			res.resubmitted = s.ring.ncaptured
		end
		res.grown = s.grow_to ~= nil
		out[#out + 1] = res
		if s.grow_to then
			policy.log(string.format("ring 0x%x grew in place from %d to %d bytes", s.ring.addr, s.ring.ring_len, s.grow_to))
		end
		if opts.on_ring then opts.on_ring(i, s.ring, res, t) end
	end
	return interrupted()
end

-- Restore rings into process pid, as the plan (made here from the policy
-- unless given) says: all or nothing. opts.replace moves AIO rings that
-- occupy saved addresses aside, and destroys them once every ring is
-- rebuilt; opts.on_ring(i, ring, result, t) is called after each ring.
function M.restore_process(pid, rings, opts)
	opts = opts or {}
	local policy = policy_of(opts)
	local plans = require "aiotk.plan"
	local plan = opts.plan or plans.make(rings, assert(core.host()), policy)
	local steps, serr, scode = plans.follow(plan, rings)
	if not steps then return nil, serr, scode end
	local ok, berr, bcode = apply_budget(plan, policy)
	if not ok then return nil, berr, bcode end
	kernel.prepare(pid) -- loaded (and its iterator made) before the process is stopped
	local out = {}
	-- This host's model for every ring, read before the process stops.
	local ropts = setmetatable({ model = assert(core.host()) }, { __index = opts })
	local target
	local rok, err, code = M.with_process(pid, function(t)
		target = t
		local maps, de, dc = remove_leftovers(t, steps, policy)
		if not maps then return nil, de, dc end
		local undo = setmetatable({}, Undo)
		-- A hook or callback that raises is a failure like any other: the
		-- undo runs, then the error goes on.
		local called, done, e, c = pcall(rebuild, t, maps, steps, ropts, policy, undo, out)
		if not called then
			undo:rollback(t)
			error(done, 0)
		end
		if not done then
			undo:rollback(t)
			out = {}
			if t.dead then return nil, EXITED .. e, c end
			return nil, e, c
		end
		for _, u in ipairs(undo) do
			if u.kind == "parked" then t:io_destroy(u.at) end
		end
		out.target = t
		return true
	end, { cpu_latency = policy.cpu_latency })
	if not rok then
		-- Killed after its last system call, it shows only at detach.
		if target and target.dead and not err:find(EXITED, 1, true) then err = EXITED .. err end
		return nil, err, code
	end
	out.stopped_ns = out.target.stopped_ns
	out.stopped_at_ns = out.target.stopped_at_ns
	out.plan = plan
	return out
end

return M
