-- The shipped policy: every decision aiotk makes when a ring cannot simply
-- be rebuilt as saved. A user policy file returns a table holding only the
-- hooks it changes; everything else stays as here. Layers, later wins:
-- this file, the first policy.lua in $AIOTK_PATH, ~/.config/aiotk/scripts
-- or /etc/aiotk, then --policy FILE (the CRIU plugin: $AIOTK_POLICY).
local M = {}

-- Which rings to dump or restore. ring: aiotk.ring; ctx.phase is "dump" or
-- "restore".
function M.filter(ring, ctx) return true end

-- A ring whose exact size this host cannot make (why: the reason).
-- ctx.room: whether the address space after the ring is free (nil: not
-- known, as from an image alone; ctx.layout says whether the process's
-- mappings were looked at). "fail" (default), "grow" (the smallest ring
-- this host makes, at the same address, same head, tail and events; needs
-- the address space after the ring free, and an unwrapped ring),
-- "relocate" (that ring at a free address, and every copy of the old id
-- in the process's writable private memory and its threads' registers
-- rewritten to the new one: aiotk writes into the program's memory, so
-- only when asked; refused when no copy is found; an unwrapped ring; a
-- running process only, aiotk restore -p), or "skip".
-- Also asked about a ring this host makes exactly whose saved range
-- something else holds in the process (ctx.taken: what): "relocate" (at
-- its own size) or "skip"; any other answer leaves the restore to refuse
-- the taken range, as without the hook.
function M.impossible(ring, why, host, ctx) return "fail" end

-- A ring the impossible hook relocates whose old id is found nowhere in
-- the process (memory or registers): false (default) refuses the restore
-- (the program keeps its id where aiotk cannot see, and would go on using
-- the old one); true relocates it anyway.
M.relocate_unreferenced = false

-- Not enough fs.aio-max-nr for the restore: b.needed, b.free, b.aio_nr,
-- b.aio_max_nr. "fail" (default) or "raise" (by exactly what is missing;
-- needs root; recorded in the log and the plan).
function M.budget(b, host) return "fail" end

-- Requests were in flight while the process was stopped for a dump.
-- ctx.pid; ctx.kernel_view: true with ctx.in_flight, per ring with
-- requests in flight {ring, addr, count, finishing (disk I/O, finishes on
-- its own), cancellable (POLL, may never finish), pending (the
-- cancellable ones: obj, data, opcode, fd, events, kind)}; false when only
-- a moving tail showed it (ctx.moved: {ring, now} per ring). ctx.hook is
-- "post-dump" when CRIU's action script asks, after CRIU saved the
-- memory: each ring's count then includes `landed` (completions after
-- CRIU read the ring), and only "record" lets the dump stand.
-- "capture" (default: wait at most in_flight_wait_ms for the finishing
-- ones, save the cancellable ones with the ring, resubmitted at restore),
-- "wait" (for all of them), "fail", or "record" (dump without them and
-- write a warning into the image). Without the kernel view capture means
-- wait. io_uring: ring is nil and ctx.io_uring lists the requests in
-- flight a restore cannot submit again ({fd, req, why, finishes} each; a
-- POLL_ADD on its own can be, and is saved with its instance): "fail" or
-- "record"; when all of them finish on their own (ctx.io_uring_finishing:
-- disk I/O, completions waiting as task work, which a stopped thread
-- never posts), "capture" or "wait" (the default then) let the process
-- run and stop it again until none is left, at most in_flight_wait_ms
-- (CRIU's frozen dump cannot: it fails); otherwise any answer but
-- "record" fails (the default), as nothing could bring them back.
function M.in_flight(ring, ctx)
	if ctx.io_uring then return ctx.io_uring_finishing and "capture" or "fail" end
	return "capture"
end
M.settle_ms = 0           -- extra ms to watch tails after reading (0: re-read once)
M.in_flight_wait_ms = 500 -- the longest a dump keeps a process stopped waiting for requests

-- A ring holding more events than this host's kernel lets be outstanding
-- (slots stranded per CPU: it came from a host with another CPU count).
-- "nudge" (default: show the kernel the last few requests as consumed for
-- one submit, then put head back) or "fail".
function M.overfull(ring, capacity, host) return "nudge" end

-- The order rings are restored in (default: by address).
function M.order(rings)
	table.sort(rings, function(a, b) return a.addr < b.addr end)
	return rings
end

-- How a restore sets an io_uring instance's counters, which the kernel
-- keeps and no call sets. u: the instance (as `aiotk show` lists it);
-- cost: exact_nops (NOPs to replay them: up to 2^32, 3-4 minutes),
-- exact_possible (false when it has more CQEs than SQEs, as multishot
-- requests make), rebase_nops (at most both ring sizes). "exact" (the
-- saved counters replayed), "rebase" (counters congruent modulo the ring
-- sizes, liburing's copies moved by the same offset; needs every thread
-- in a system call) or "fail". Default: exact when it takes at most
-- 65536 NOPs (a few ms on a large ring), else rebase.
function M.uring_counters(u, cost)
	if cost.exact_possible and cost.exact_nops <= 65536 then return "exact" end
	return "rebase"
end

-- Hold every CPU out of deep idle states while a process is stopped (a
-- /dev/cpu_dma_latency request of 0, root only, dropped by the kernel when
-- aiotk lets go or dies): waking an idle CPU is a large part of a stop on
-- virtual machines. false: leave the CPUs alone.
M.cpu_latency = true

-- Where the kernel view's BPF programs are kept loaded between commands
-- (root only): a bpffs directory, under which each aiotk build pins its
-- own directory (aiotk-VERSION-HASH, mode 0700); a command then opens
-- them in about 1 ms instead of loading them in about 0.25 s. false: load
-- them for each command, keep nothing. `aiotk kview --unpin` removes the
-- pin; $AIOTK_KVIEW_PIN (a directory, or "off") overrides this.
M.kview_pin = "/sys/fs/bpf"
-- kview_pin an empty directory without bpffs mounted (hosts without
-- systemd): mount one there (mode 0700), as systemd does at boot and
-- bpftool does to pin. false: load for each command instead.
M.kview_pin_mount = true

-- Where messages go.
function M.log(msg) require("aiotk.log").info(msg) end

-- A host model for planning ({cpus=, page_size=, formula=}); false: the
-- host being planned for.
M.model = false

-- The answers each deciding hook may give. An answer outside its list is
-- an error naming the hook, never a silent default.
local ANSWERS = {
	impossible = { "fail", "grow", "relocate", "skip" },
	budget = { "fail", "raise" },
	in_flight = { "capture", "wait", "fail", "record" },
	overfull = { "nudge", "fail" },
	uring_counters = { "exact", "rebase", "fail" },
}
M.ANSWERS = ANSWERS

local function checked(name, fn, allowed, path)
	local set = {}
	for _, a in ipairs(allowed) do set[a] = true end
	return function(...)
		local answer = fn(...)
		if not set[answer] then
			error(string.format("policy %s: hook %s answered %s; it must answer one of: %s", path, name,
				type(answer) == "string" and ("'" .. answer .. "'") or tostring(answer),
				table.concat(allowed, ", ")), 0)
		end
		return answer
	end
end

-- What a layer may set key k to: the shipped value's type (model: a
-- table, or false; kview_pin: a string, or false).
local MAY_BE_FALSE = { model = true, kview_pin = true }
local function check_type(path, k, v)
	local want = k == "model" and "table" or type(M[k])
	if type(v) ~= want and not (MAY_BE_FALSE[k] and v == false) then
		error(string.format("policy %s: %s must be a %s, not a %s", path, k, want, type(v)), 0)
	end
end

-- The policy in force: the layers in aiotk's search directories (shipped,
-- then the user's policy.lua), then file. Commands, workflows and the
-- CRIU plugin all load it here.
function M.current(file)
	return M.load(file, require("aiotk").search_dirs)
end

-- Load the layers. Returns the policy table (a fresh copy); the deciding
-- hooks a layer overrides are wrapped so that their answers are checked.
function M.load(file, search_dirs)
	local p = {}
	for k, v in pairs(M) do if k ~= "load" and k ~= "current" and k ~= "ANSWERS" then p[k] = v end end
	local function apply(path)
		local chunk, err = loadfile(path)
		if not chunk then error("policy " .. path .. ": " .. err, 0) end
		local over = chunk(p)
		if type(over) ~= "table" then error("policy " .. path .. " must return a table of hooks", 0) end
		for k, v in pairs(over) do
			if p[k] == nil then error(string.format("policy %s: unknown hook '%s'", path, k), 0) end
			check_type(path, k, v)
			p[k] = (ANSWERS[k] and type(v) == "function") and checked(k, v, ANSWERS[k], path) or v
		end
	end
	for _, d in ipairs(search_dirs or {}) do
		local path = d .. "/policy.lua"
		local f = io.open(path)
		if f then f:close() apply(path) break end
	end
	if file then apply(file) end
	return p
end

return M
