-- io_uring instances restored into a running process, all or nothing:
-- each saved instance made again at its fd and addresses with its ring
-- memory (core.uring_rebuild), its POLLs, TIMEOUTs, ACCEPTs and RECVs
-- armed again; what was made is
-- taken away in reverse on any failure or interrupting signal. Counters
-- exact or rebased, as the policy's uring_counters says. A rebase moves
-- liburing's copies of the sq counters, so it is made only when every
-- thread of the process is in a system call (one stopped in its own code
-- may hold them in registers, inside an inlined io_uring_get_sqe):
-- otherwise the process runs on a little and it is tried again, then
-- refused by name.
local core = require "aiotk.core"
local process = require "aiotk.process"
local uring = require "aiotk.uring"

local M = {}

M.TRIES = 50      -- stops tried for a rebase before it is refused
M.RETRY_MS = 10   -- how long the process runs between them

-- The threads of stopped process pid running their own code, not a
-- system call: /proc/PID/task/TID/syscall reads "-1 SP PC" for them.
function M.threads_in_user_code(pid)
	local out = {}
	for _, name in ipairs(core.listdir("/proc/" .. pid .. "/task") or {}) do
		local f = io.open("/proc/" .. pid .. "/task/" .. name .. "/syscall")
		local s = f and f:read("*l") or ""
		if f then f:close() end
		if s:match("^%-1 ") or s == "running" then out[#out + 1] = tonumber(name) end
	end
	table.sort(out)
	return out
end

-- Requests of instance u (img:urings()) in flight, as SQEs to submit
-- again: list (u.reqs or u.timeouts, total of them in flight), each
-- made an SQE by rebuild (uring.rebuild or uring.rebuild_timeout); or
-- nil and why one cannot be.
local function sqes_of(u, list, total, what, rebuild)
	local out = {}
	if total > #list then
		return nil, string.format("io_uring fd %d: %d %s in flight, %d of them saved", u.fd, total, what,
			#list), "unsupported"
	end
	for _, q in ipairs(list) do
		local sqe, why = rebuild(q, u)
		if not sqe then
			return nil, string.format("io_uring fd %d: %s user_data %s: %s", u.fd, uring.op_name(q.opcode),
				q.user_data, why), "unsupported"
		end
		out[#out + 1] = sqe
	end
	return out
end

-- The POLLs, the ACCEPTs and RECVs (socks), and the TIMEOUTs instance u
-- had in flight, as SQEs to submit again; or nil and why one cannot be.
local function polls_of(u)
	local sqes, e, c = sqes_of(u, u.reqs, u.in_flight, "request(s)", uring.rebuild)
	if not sqes then return nil, e, c end
	local polls, socks = {}, {}
	for _, s in ipairs(sqes) do
		local list = s.opcode == 6 and polls or socks
		list[#list + 1] = s
	end
	return polls, socks
end
local function timeouts_of(u)
	return sqes_of(u, u.timeouts, u.timeouts_in_flight, "timeout(s)", uring.rebuild_timeout)
end

-- The buffers its buffer rings' heads moved past: a rebuild moves each
-- head back with as many reads, each an SQE and a CQE.
local function head_reads(u)
	local n = 0
	for _, b in ipairs(u.buffer_groups or {}) do n = n + (b.ring and b.head or 0) end
	return n
end

-- What each way of setting the counters costs, for the policy: NOPs
-- (and the reads moving buffer ring heads back). Exact counters are
-- possible when NOPs can replay them: no more CQEs than SQEs, and as
-- many CQEs as those reads post. nreqs: the requests submitted again
-- (the last SQEs).
function M.counter_facts(u, nreqs)
	local reads = head_reads(u)
	local cq = u.cq_tail % u.cq_entries
	if cq < reads then cq = cq + math.ceil((reads - cq) / u.cq_entries) * u.cq_entries end
	return { exact_nops = math.max(u.sq_head, u.cq_tail),
		exact_possible = u.sq_head >= u.cq_tail + nreqs and u.cq_tail >= reads,
		rebase_nops = cq + u.sq_entries }
end

-- Each registered file is registered again from the fd the process had
-- for it at the dump: that fd must still name the same file.
local function files_still_there(pid, u)
	for _, f in ipairs(u.files) do
		local now = f.fd >= 0 and core.readlink("/proc/" .. pid .. "/fd/" .. f.fd)
		if now ~= f.path then
			return nil, string.format("io_uring fd %d: registered file slot %d was fd %d (%s), which now %s; " ..
				"nothing was changed", u.fd, f.slot, f.fd, f.path, now and ("names " .. now) or "is closed"),
				"unsupported"
		end
	end
	return true
end

-- Its setup flags a rebuild does not make, by name (SQPOLL has its own
-- message from core.uring_check).
local function flags_rebuilt(u)
	local other = bit.band(u.flags, bit.bnot(core.URING_REBUILT_FLAGS))
	if other == 0 or bit.band(other, 2) ~= 0 then return true end
	return nil, string.format("io_uring fd %d: setup flag(s) %s are not rebuilt", u.fd,
		table.concat(uring.flag_names(other), "|"))
end

-- The registered eventfd still at the fd it was at the dump: that fd's
-- fdinfo gives the same eventfd id.
local function eventfd_still_there(pid, u)
	local e = u.eventfd
	if not (e and e.fd) then return true end
	local f = io.open("/proc/" .. pid .. "/fdinfo/" .. e.fd)
	local id = f and tonumber((f:read("*a") or ""):match("eventfd%-id:%s*(%d+)"))
	if f then f:close() end
	if id ~= e.id then
		return nil, string.format("io_uring fd %d: its registered eventfd was fd %d, which now %s; " ..
			"nothing was changed", u.fd, e.fd, id and "is another eventfd" or "is no eventfd"), "unsupported"
	end
	return true
end

-- The fds instance u's registered files and eventfd are registered
-- again from: still those files (checked before the stop, and again
-- once the process is stopped).
function M.fds_still_there(pid, u)
	local ok, e, c = files_still_there(pid, u)
	if ok then ok, e, c = eventfd_still_there(pid, u) end
	return ok, e, c
end

-- Instance i of img (u, its table) as a restore would make it: a job
-- ({i, u, exact, polls, socks, timeouts}), or nil, why not and a code. pid: the process
-- (its registered files' fds are checked); nil: the image alone.
function M.job(img, i, u, policy, pid)
	local ok, ce = flags_rebuilt(u)
	if ok then ok, ce = core.uring_check(img, i) end
	if not ok then return nil, ce, "unsupported" end
	local polls, socks, c = polls_of(u)
	if not polls then return nil, socks, c end
	local tmos, te, tc = timeouts_of(u)
	if not tmos then return nil, te, tc end
	if pid then
		local fok, fe, fc = M.fds_still_there(pid, u)
		if not fok then return nil, fe, fc end
	end
	local facts = M.counter_facts(u, #polls + #tmos + #socks)
	local mode = policy.uring_counters(uring.row(u), facts)
	if mode == "fail" then
		return nil, string.format("io_uring fd %d: the policy refuses its counters (sq head %d, cq tail %d)",
			u.fd, u.sq_head, u.cq_tail), "policy"
	end
	if mode == "exact" and not facts.exact_possible then
		if u.cq_tail < head_reads(u) then
			return nil, string.format("io_uring fd %d: exact counters asked, but its cq tail %d is below " ..
				"the %d buffers its rings' heads moved past (each moved back by a read with a CQE); " ..
				"rebase it", u.fd, u.cq_tail, head_reads(u)), "unsupported"
		end
		return nil, string.format("io_uring fd %d: exact counters asked, but its cq tail %d is past its " ..
			"sq head %d less the requests to arm (CQEs without SQEs): NOPs cannot replay that; " ..
			"rebase it", u.fd, u.cq_tail, u.sq_head), "unsupported"
	end
	return { i = i, u = u, exact = mode == "exact", polls = polls, socks = socks, timeouts = tmos,
		facts = facts }
end

-- Why img's instances cannot be restored at all, or nil. A restore
-- journals each instance in a slot of its own and commits them together,
-- so that a killed aiotk leaves none of them or all: at most as many as
-- there are slots.
local function too_many(img)
	if img.nurings <= core.URING_JOURNAL_SLOTS then return nil end
	return string.format("%d io_uring instances, more than the %d one restore journals (each in a " ..
		"slot of its own at 0x%x, so that a restore is all or nothing)",
		img.nurings, core.URING_JOURNAL_SLOTS, core.URING_JOURNAL_AT)
end

-- Each instance's job, or why one cannot be done.
function M.jobs(img, policy, pid)
	local many = too_many(img)
	if many then return nil, many .. "; nothing was changed", "unsupported" end
	local jobs = {}
	for i, u in ipairs(img:urings()) do
		local j, e, c = M.job(img, i, u, policy, pid)
		if not j then return nil, e, c end
		jobs[#jobs + 1] = j
	end
	return jobs
end

-- What `aiotk check` says of each instance of img: { fd, entries,
-- action = "exact" | "rebase" | "refused", why, nops }.
function M.verdicts(img, policy)
	local out, many = {}, too_many(img)
	for i, u in ipairs(img:urings()) do
		local j, why = nil, many
		if not many then j, why = M.job(img, i, u, policy) end
		local row = { fd = u.fd, sq_entries = u.sq_entries, cq_entries = u.cq_entries }
		if not j then
			row.action, row.why = "refused", why
		else
			row.action = j.exact and "exact" or "rebase"
			row.nops = j.exact and j.facts.exact_nops or j.facts.rebase_nops
			row.polls, row.timeouts, row.socks = #j.polls, #j.timeouts, #j.socks
		end
		out[i] = row
	end
	return out
end

local interrupted = require("aiotk.restore").interrupted

-- What an aiotk killed during an io_uring restore left in t (each rebuild
-- journals its steps in the process before making them), taken away
-- first: the process is then as before that restore.
local function remove_leftovers(t, policy)
	local removed, err, code = core.uring_leftovers(t)
	if not removed then return nil, err, code end
	if removed > 0 then
		policy.log(string.format("removed what an interrupted aiotk left of an io_uring restore (%d journal(s))",
			removed))
	end
	return true
end

-- Every job rebuilt in t, in order, each journalled in its own slot and
-- the journals kept until all are made: then one commit (slot 0's
-- journal unmapped), so that an aiotk killed on the way leaves the next
-- one all of them to take away, or none. On failure those made are taken
-- away (one that cannot be is named in the error, code "rollback").
local function rebuild_all(t, img, jobs, out, policy)
	local made = {}
	local function undo(e, c)
		local failed = {}
		for k = #made, 1, -1 do
			local m = made[k]
			local ok, uerr = core.uring_unbuild(t, img, m.job.i, m.res)
			if not ok then
				failed[#failed + 1] = string.format("io_uring instance %d of the image, rebuilt, not taken away: %s",
					m.job.i, tostring(uerr))
			end
		end
		return nil, require("aiotk.restore").undo_failed(e, c, failed, t.pid)
	end
	for k, j in ipairs(jobs) do
		local ok, ie, ic = interrupted()
		if not ok then return undo(ie, ic) end
		local res, e, c = core.uring_rebuild(t, img, j.i, { exact = j.exact, polls = j.polls,
			timeouts = j.timeouts, socks = j.socks, slot = k - 1, keep_journal = true })
		if not res then return undo(e, c) end
		res.exact, res.polls, res.timeouts, res.socks = j.exact, #j.polls, #j.timeouts, #j.socks
		made[#made + 1] = { job = j, res = res }
		out[#out + 1] = res
	end
	local ok, ie, ic = interrupted()
	if not ok then return undo(ie, ic) end
	local results = {}
	for k, m in ipairs(made) do results[k] = m.res end
	local committed, left, why = core.uring_commit(t, results)
	if not committed then return undo(left, why) end
	if left > 0 then
		policy.log(string.format("restored; %d of aiotk's io_uring journals left in process %d (the next " ..
			"restore removes them): %s", left, t.pid, why))
	end
	return true
end

-- Restore img's io_uring instances into process pid (all or nothing):
-- a list of results (core.uring_rebuild's, with exact, polls, timeouts
-- and socks), or nil,
-- message, code ("busy": threads kept running their own code).
function M.restore_process(pid, img, opts)
	opts = opts or {}
	local policy = process.policy(opts)
	local jobs, e, c = M.jobs(img, policy, pid)
	if not jobs then return nil, e, c end
	local rebase = false
	for _, j in ipairs(jobs) do rebase = rebase or not j.exact end
	local busy
	for _ = 1, M.TRIES do
		local out = {}
		local ok, err, code = process.with_process(pid, function(t)
			local lok, le, lc = remove_leftovers(t, policy)
			if not lok then return nil, le, lc end
			-- looked at before the stop; the program may have closed or
			-- replaced those fds since: they are what gets registered
			for _, j in ipairs(jobs) do
				local fok, fe, fc = M.fds_still_there(pid, j.u)
				if not fok then return nil, fe, fc end
			end
			if rebase then
				busy = M.threads_in_user_code(pid)
				if #busy > 0 then return nil, "busy", "busy" end
			end
			local rok, re, rc = rebuild_all(t, img, jobs, out, policy)
			if not rok then return nil, re, rc end
			out.stopped_at_ns = t.stopped_at_ns
			out.target = t
			return true
		end, { cpu_latency = policy.cpu_latency })
		if ok then
			out.stopped_ns = out.target.stopped_ns
			return out
		end
		if code ~= "busy" then return nil, err, code end
		core.sleep_ms(M.RETRY_MS)
	end
	return nil, string.format("thread(s) %s ran their own code (not a system call) at each of %d stops; " ..
		"a rebase moves liburing's copies of the sq counters, which such a thread may hold in registers; " ..
		"nothing was changed (try again when it waits, or a policy answering uring_counters 'exact')",
		table.concat(busy, ", "), M.TRIES), "busy"
end

return M
