-- Dump of a running process (and of one CRIU holds frozen): the policy's
-- decisions about which rings and about requests in flight are carried
-- out here. The process is stopped only while its rings are read, and not
-- at all when it has none; a dump settled at the first reading (nothing
-- in flight) lets the process go before any policy hook runs.
local core = require "aiotk.core"
local kernel = require "aiotk.kernel"
local process = require "aiotk.process"

local M = {}

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

-- What lets a refused dump wait longer, and what that costs.
local function longer_wait(policy)
	return string.format("A larger in_flight_wait_ms in the policy (now %d) lets the dump wait longer " ..
		"for them, and the process stays stopped (frozen under CRIU) up to that long", policy.in_flight_wait_ms)
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
	return nil, what .. string.format("; still moving after %d ms; nothing was written. ",
		policy.in_flight_wait_ms) .. longer_wait(policy), "in_flight"
end

-- Per ring with requests in flight: count, those that finish on their own
-- (disk I/O) and the cancellable ones (POLL), from the kernel view kv.
local function in_flight_facts(kv, rings)
	local out = {}
	for _, r in ipairs(rings) do
		local c = kv[r.addr]
		if c and (c.in_flight or 0) > 0 then out[#out + 1] = kernel.in_flight_fact(r, c) end
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
			-- what lets it wait longer, and what that costs
			return nil, describe_in_flight(left) .. string.format("; still in flight after %d ms; the " ..
				"image would lose them, so nothing was written. ", waited) .. longer_wait(policy), "in_flight"
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
		if process.tails_agree(rings, kv) then return note_kernel(t, rings, kv, capture) end
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
-- contexts, all: what reading:take() gives.
local function kept_rings(contexts, all, policy, pid)
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

-- img written to dir (synced unless opts.sync == false); a failed write
-- leaves no directory it created.
local function write_new(img, dir, opts)
	if not dir then return true end
	local existed = is_dir(dir)
	local ok, err, code = img:write(dir, { sync = opts.sync })
	if not ok and not existed then core.remove_tree(dir) end
	return ok, err, code
end

local function no_rings(pid)
	return string.format("process %d has no AIO ring nor io_uring instance (no /[aio] nor " ..
		"anon_inode:[io_uring] mapping in /proc/%d/maps); it was not stopped and nothing was written",
		pid, pid)
end

-- Its only io_uring instance was torn down (fd and mappings) between the
-- look at its maps and the stop: a program ending its ring.
local function gone(pid)
	return string.format("process %d's io_uring instance(s) went away before it was stopped (mapped in " ..
		"/proc/%d/maps, then no longer); nothing was written", pid, pid)
end

-- What of instance u finishes on its own but is not in its CQ ring yet:
-- requests on no list (disk I/O), completions waiting as task work. A
-- stopped thread posts neither (docs/KERNEL-FACTS.md): they reach the CQ
-- ring once the process runs (a DEFER_TASKRUN instance's when its owner
-- thread enters the kernel for it).
local function finishing(u, lost)
	if u.unlisted > 0 then
		lost[#lost + 1] = { fd = u.fd, finishes = true, why = string.format("%d request(s) in flight on " ..
			"no list the kernel view reads (disk reads and writes in the block layer or io-wq, requests " ..
			"linked behind another): their completions are not in the CQ ring yet", u.unlisted) }
	end
	if u.completions_waiting > 0 then
		lost[#lost + 1] = { fd = u.fd, finishes = true, why = string.format("%d completion(s) waiting for " ..
			"a thread to run its task work, not in the CQ ring: a stopped thread never posts them%s",
			u.completions_waiting, math.floor(u.flags / 0x2000) % 2 == 1 and " (DEFER_TASKRUN: only its owner thread, " ..
			"when it enters the kernel for the instance)" or "") }
	end
end

-- The io_uring instances read while the process was stopped (set), and
-- the policy's answer for the requests in flight a restore cannot submit
-- again (uring.rebuild): "fail", "record" (a warning in the image);
-- "capture" and "wait" cannot bring them back either, so they fail too,
-- saying so, unless all of them finish on their own (disk I/O, waiting
-- completions; the default then): code "retry" asks for the process to
-- run and be stopped again. Returns the warning, or nil, why, code.
-- report.urings gets each instance's fd and what it had in flight.
local function decide_urings(set, policy, pid, report)
	local uring = require "aiotk.uring"
	local lost = {}
	report.urings = {}
	for _, u in ipairs(set:list()) do
		report.urings[#report.urings + 1] = { fd = u.fd, in_flight = u.in_flight, unlisted = u.unlisted,
			completions_waiting = u.completions_waiting, timeouts = u.timeouts_in_flight,
			unreaped = (u.cq_tail - u.cq_head) % 2 ^ 32 }
		for _, q in ipairs(u.reqs) do
			local sqe, why = uring.rebuild(q, u)
			if not sqe then lost[#lost + 1] = { fd = u.fd, req = q, why = why } end
		end
		if u.in_flight > #u.reqs then
			lost[#lost + 1] = { fd = u.fd, why = string.format("%d request(s) not listed by the " ..
				"kernel view", u.in_flight - #u.reqs) }
		end
		for _, t in ipairs(u.timeouts) do
			local sqe, why = uring.rebuild_timeout(t, u)
			if not sqe then lost[#lost + 1] = { fd = u.fd, req = t, why = why } end
		end
		finishing(u, lost)
		if u.timeouts_in_flight > #u.timeouts then
			lost[#lost + 1] = { fd = u.fd, why = string.format("%d timeout(s) not listed by the " ..
				"kernel view", u.timeouts_in_flight - #u.timeouts) }
		end
	end
	if #lost == 0 then return "" end
	local words = {}
	for i, l in ipairs(lost) do
		words[i] = string.format("io_uring fd %d: %s%s", l.fd, l.req and ("user_data " .. l.req.user_data .. ": ") or "", l.why)
	end
	local what = table.concat(words, "; ")
	local all_finish = true
	for _, l in ipairs(lost) do all_finish = all_finish and l.finishes == true end
	local choice = policy.in_flight(nil, { pid = pid, kernel_view = true, io_uring = lost,
		io_uring_finishing = all_finish })
	if all_finish and (choice == "capture" or choice == "wait") then return nil, what, "retry" end
	if choice ~= "record" then
		return nil, what .. "; a restore could not submit them again (policy in_flight: " .. choice ..
			"); nothing was written", "in_flight"
	end
	policy.log(what .. "; not in this image (policy in_flight: record)")
	return what .. "; not in this image (policy in_flight: record)"
end

-- The image of rings and io_uring instances (a set, or nil), once the
-- policy has decided on the instances' requests in flight; nil, why, code
-- when it refuses them.
local function image_with_urings(rings, warnings, urings, policy, pid, report)
	if urings then
		local uwarn, uerr, ucode = decide_urings(urings, policy, pid, report)
		if not uwarn then return nil, uerr, ucode end
		warnings = table.concat({ warnings, uwarn }, warnings ~= "" and uwarn ~= "" and "; " or "")
	end
	local img = image_of(rings, warnings)
	if urings then img:add_urings(urings) end
	return img
end

-- One stop of process pid: its rings settled and its io_uring instances
-- read; returns { rings, warnings, report, stopped (the target), urings },
-- or nil, why, code.
local function stop_once(pid, policy, opts, has_urings)
	local rings, warnings, report, stopped, settled, urings
	local ok, err, code = process.with_process(pid, function(t)
		stopped = t
		if has_urings then
			local uerr, ucode
			urings, uerr, ucode = kernel.urings_stopped(t)
			if not urings then return nil, "its io_uring instances: " .. uerr, ucode end
		end
		local reading = kernel.read_stopped(t, opts.area)
		if reading and reading:settled() then
			settled = reading
			return true
		end
		rings, warnings, report = dump_rings(t, policy, opts, reading)
		return rings, warnings, report
	end, { cpu_latency = policy.cpu_latency })
	if not ok then return nil, err, code end
	if settled then
		local contexts, all = settled:take()
		rings, warnings, report = kept_rings(contexts, all, policy, pid)
	end
	return { rings = rings, warnings = warnings, report = report, stopped = stopped, urings = urings }
end

-- Why a dump gave up on io_uring requests that finish on their own.
local function still_finishing(what, waited, stops, policy)
	return string.format("%s; still so after %d ms and %d stops (the process ran between them, so that " ..
		"its threads could post them); nothing was written. A larger in_flight_wait_ms in the policy " ..
		"(now %d) lets the dump try longer", what, waited, stops, policy.in_flight_wait_ms)
end

-- Dump the rings of process pid the policy keeps, to dir. The process is
-- stopped only while its rings are read, and not at all when it has none;
-- a failed dump leaves no directory it created. io_uring requests that
-- finish on their own but are not in the CQ ring yet are let finish: the
-- process runs and is stopped again (1 ms apart, then up to 20), at most
-- in_flight_wait_ms. Returns the image and a report: { [ring addr] = {
-- unreaped =, in_flight = } when stopped, waited_ms = time waited for
-- requests in flight, uring_stops, uring_waited_ms, uring_first (the
-- first stop's report.urings) }.
function M.dump_process(pid, dir, opts)
	opts = opts or {}
	local policy = process.policy(opts)
	local fit, ferr, fcode = core.check_process(pid)
	if not fit then return nil, ferr, fcode end
	local has_urings, naio = (process.uring_map_count(pid) or 0) > 0, process.ring_count(pid)
	if naio == 0 and not has_urings then return nil, no_rings(pid), "norings" end
	kernel.prepare(pid, policy) -- opened (and its iterator made) before the process is stopped
	local start, stops, first, st, img = core.now_ns(), 0, nil, nil, nil
	repeat
		local err, code
		st, err, code = stop_once(pid, policy, opts, has_urings)
		if not st then return nil, err, code end
		stops = stops + 1
		if naio == 0 and #st.rings == 0 and #st.urings:list() == 0 then return nil, gone(pid), "norings" end
		img, err, code = image_with_urings(st.rings, st.warnings, st.urings, policy, pid, st.report)
		first = first or st.report.urings
		local waited = (core.now_ns() - start) / 1e6
		if not img and code ~= "retry" then return nil, err, code end
		if not img and waited > policy.in_flight_wait_ms then
			return nil, still_finishing(err, waited, stops, policy), "in_flight"
		end
		if not img then core.sleep_ms(math.min(stops, 20)) end
	until img
	local report, stopped = st.report, st.stopped
	report.uring_stops, report.uring_first = stops, first
	report.uring_waited_ms = stops > 1 and (core.now_ns() - start) / 1e6 or 0
	if stops > 1 then
		policy.log(string.format("process %d had io_uring requests finishing on their own at the first " ..
			"stop; stopped again %d time(s) over %.1f ms until none was left", pid, stops - 1,
			report.uring_waited_ms))
	end
	img.pid = pid
	img.stopped_ns = stopped.stopped_ns
	local w, werr, wcode = write_new(img, dir, opts)
	if not w then return nil, werr, wcode end
	report.stopped_at_ns = stopped.stopped_at_ns
	return img, report
end

-- The same for a process another tool holds stopped (CRIU, at its
-- CHECKPOINT_DEVICES hook): read only, never stopped or resumed by aiotk.
-- Every task of CRIU's tree comes here while all are frozen, so the least
-- work is done per task: one C call reads the kernel view and the rings
-- it names; a reading settled at once (nothing in flight) is the image as
-- it is; the maps are read only without a kernel view, and to see
-- io_uring mappings (the kernel view finds instances through their fds,
-- and an instance mapped but held by no fd is refused by name). Its
-- io_uring instances are read and decided on as dump_process does.
function M.dump_frozen(pid, dir, opts)
	opts = opts or {}
	local policy = process.policy(opts)
	local has_urings = (process.uring_map_count(pid) or 0) > 0
	local function none() return process.ring_count(pid) == 0 and not has_urings end
	local t, terr, tcode = core.frozen(pid)
	if not t then
		if none() then return nil, no_rings(pid), "norings" end
		return nil, terr, tcode
	end
	local urings, uerr, ucode
	if has_urings then
		urings, uerr, ucode = kernel.urings_stopped(t)
		if not urings then return nil, "its io_uring instances: " .. uerr, ucode end
	end
	local reading = kernel.read_stopped(t, opts.area)
	local rings, warnings, report
	if reading and reading:settled() then
		local contexts, all = reading:take()
		if #contexts == 0 and not has_urings then return nil, no_rings(pid), "norings" end
		rings, warnings, report = kept_rings(contexts, all, policy, pid)
	else
		if not reading and none() then return nil, no_rings(pid), "norings" end
		rings, warnings, report = dump_rings(t, policy, opts, reading)
		if not rings then return nil, warnings, report end
	end
	local img, ierr, icode = image_with_urings(rings, warnings, urings, policy, pid, report)
	if icode == "retry" then
		return nil, ierr .. "; CRIU holds the process frozen, and they reach the CQ ring only once its " ..
			"threads run; nothing was written", "in_flight"
	end
	if not img then return nil, ierr, icode end
	img.pid = pid
	local w, werr, wcode = write_new(img, dir, opts)
	if not w then return nil, werr, wcode end
	return img, report
end

return M
