-- aiotk inside CRIU: what the plugin aiotk_criu.so (plugins/criu) does at
-- CRIU's hooks, with the same layered policy as the aiotk commands
-- (shipped, the user's policy.lua, then the file $AIOTK_POLICY names).
--   dump, CHECKPOINT_DEVICES(pid): the task is frozen by CRIU; record each
--     ring's n and kernel tail, wait for requests that finish on their own,
--     capture cancellable ones (policy in_flight), appended to
--     DIR/aiotk-rings.img (created at init, before the freeze);
--   restore, at init (before any mm image is read): each ring's nr_req
--     becomes the n recorded at dump, or the smallest n that makes the ring
--     here, so io_setup fits fs.aio-max-nr; a ring this host cannot make
--     fails the restore before anything is restored, naming it;
--   restore, RESUME_DEVICES_LATE(pid): captured requests are submitted
--     again inside the restored task, before it resumes.
-- Each function returns true, "none" (nothing of aiotk's to do: CRIU's
-- -ENOTSUP), or nil and the message CRIU logs as the failure.
local aiotk = require "aiotk"
local core = aiotk.core
local dump = require "aiotk.dump"
local process = require "aiotk.process"
local criu = require "aiotk.criu"

local M = {}

M.STAGES = { [0] = "dump", [1] = "pre-dump", [2] = "restore" }

-- rings[vpid][addr]: each ring as this dump recorded it in its images
-- (pack: the open DIR/aiotk-rings.img), its n among them; captured: the
-- requests captured in them all; spares: the temporaries made at a
-- dump's init for its journal and stamp (core.spare).
local state = { log = function() end, rings = {}, captured = 0, spares = {} }

-- The n this dump recorded, as criu.recorded gives it from the images.
local function recorded_here(pid, addr)
	local r = state.rings[pid] and state.rings[pid][addr]
	return r and r.n ~= 0 and r.n or nil
end

local function logf(level, fmt, ...) state.log(level, string.format(fmt, ...)) end

local function pack_path() return state.dir .. "/" .. criu.PACK end

-- The dump's image file closed; gone if no task had rings, or if the
-- dump failed (CRIU does not use its images: nothing half-written stays).
local function close_pack(failed)
	local written = state.pack:count()
	state.pack:close()
	if written == 0 or failed then os.remove(pack_path()) end
end

-- The temporaries made at init that the dump's end did not use, removed.
local function drop_spares()
	for _, spare in pairs(state.spares) do spare:drop() end
end

-- The dump's images, read once a restore.
local function images()
	if not state.images then
		local imgs, err = criu.plugin_images(state.dir)
		if not imgs then return nil, err end
		state.images = imgs
	end
	return state.images
end
local ring_of = criu.ring_of

-- What the plugin writes lives beside CRIU's images, which nobody syncs:
-- syncing aiotk's alone would only lengthen CRIU's freeze and restore.
local WRITE = { sync = false }

-- The dump's rings (procs) fitted to this host in place, each change
-- logged: nr_req the recorded n where it makes the same ring here.
local function fit_here(procs, recorded)
	local host = assert(aiotk.host())
	host.name = "this host"
	local changes, ferr, fcode = criu.fixup(state.dir, procs, host,
		{ recorded = recorded, policy = state.policy, sync = false, journal_spare = state.spares.journal })
	if not changes then return nil, ferr, fcode end
	local describe = require("aiotk.criu_relocate").describe
	for _, c in ipairs(changes) do
		logf("info", "pid %d ring 0x%x: nr_req %d -> %d%s%s", c.pid, c.addr, c.from, c.to,
			recorded(c.pid, c.addr) == c.to and " (recorded at dump)" or "",
			c.relocated_to and string.format(", relocated to 0x%x (%d bytes): %d reference(s) rewritten",
				c.relocated_to, c.grown_to, #c.references) or
			c.grown_to and string.format(", grown from %d to %d bytes", c.grown_from, c.grown_to) or "")
		for _, r in ipairs(c.references or {}) do logf("info", "    %s", describe(r)) end
	end
	return true
end

-- nr_req of every ring: the recorded n where it makes the same ring here.
local function fix_images()
	-- from the dump as CRIU wrote it, whatever host an earlier fixup was for
	local back, uerr = criu.undo(state.dir, WRITE)
	if not back then return nil, uerr end
	local procs, err, code = criu.read(state.dir)
	-- no mm images (not a dump with processes): nothing of ours
	if code == "empty" then return "none" end
	if not procs then return nil, err end
	local with = {}
	for _, p in ipairs(procs) do if #p.rings > 0 then with[#with + 1] = p end end
	if #with == 0 then return "none" end
	procs = with
	local recorded, rerr = criu.recorded(state.dir)
	if not recorded then return nil, rerr end
	return fit_here(procs, recorded)
end

-- A dump's image file and the temporaries for its journal and stamp.
local function make_files()
	local pack, err = core.image_pack(pack_path())
	if not pack then return nil, err end
	state.pack = pack
	for name, file in pairs { journal = criu.JOURNAL, stamp = core.CRIU_STAMP } do
		local spare, serr = core.spare(state.dir .. "/" .. file)
		if not spare then return nil, serr end
		state.spares[name] = spare
	end
	return true
end

-- stage: CRIU's CR_PLUGIN_STAGE__*; dir: its image directory; log(level,
-- msg): CRIU's log; shipped: the shipped scripts directory.
function M.init(stage, dir, log, shipped)
	state.stage, state.dir, state.log = M.STAGES[stage], dir, log or state.log
	if shipped then aiotk.search_dirs = require("aiotk.search").install(shipped) end
	local ok, p = pcall(require("aiotk.policy").current, os.getenv("AIOTK_POLICY"))
	if not ok then return nil, p end
	state.policy = p
	p.log = function(msg) state.log("info", msg) end
	if state.stage == "restore" then return fix_images() end
	-- CRIU runs init before it freezes the tasks: all the freeze's hooks
	-- need is made now, so that CHECKPOINT_DEVICES and the fit at fini
	-- only read and write: the kernel view's BPF program loaded and
	-- verified (about 0.1 s), the modules loaded only when first used
	-- (aiotk.render and dkjson: 0.5 ms, measured inside the freeze), and
	-- the file each task's image is appended to (a file created inside
	-- the freeze costs 0.2 ms; an append 0.004), and the temporaries the
	-- fit's journal and the stamp are written through (renamed into
	-- place at fini: 0.03 ms).
	if state.stage == "dump" then
		require("aiotk.kernel").open(p)
		require("aiotk.render")
		local ok, err = make_files()
		if not ok then
			-- CRIU calls no fini after a failed init: what it made goes now
			if state.pack then close_pack(true) end
			drop_spares()
			return nil, err
		end
	end
	return true
end

-- CRIU names a task by its real PID here and by its number in its own
-- PID namespace in its images (mm-PID.img) and at restore: aiotk's image
-- is filed under the latter, so that a container's restore finds it.
-- At the dump's end (CRIU's fini: images written, tasks still frozen):
-- the dump fitted to this host (each nr_req the n recorded at dump, as a
-- restore here would set it) and stamped, so that a restore on a host
-- like this one, with room in fs.aio-max-nr, needs no Lua state at all
-- (plugins/criu/aiotk_criu.c). Any process with rings the plugin did not
-- record, or a ring the policy would not restore here, leaves no stamp:
-- the restore then decides as always. The rings are those recorded at
-- CHECKPOINT_DEVICES (the tasks frozen since): only the mm images are
-- read, for nr_req and its place (reading each ring's pages again cost
-- a 20-process freeze about 1 ms), unless a ring grows or moves (a
-- policy planning for another host), which needs them.
local function dump_procs(mm_only)
	local procs, err, code = criu.read(state.dir, mm_only)
	if not procs then return nil, err, code end
	local needs, rings = 0, 0
	for _, p in ipairs(procs) do
		for _, c in ipairs(p.rings) do
			local r = state.rings[p.pid] and state.rings[p.pid][c.ring.addr]
			local n = recorded_here(p.pid, c.ring.addr)
			if not n or r.ring_len ~= c.ring.ring_len then
				return nil, string.format("pid %d ring 0x%x: no n recorded", p.pid, c.ring.addr)
			end
			if mm_only then c.ring = r end
			needs, rings = needs + n, rings + 1
		end
	end
	return procs, needs, rings
end

local function fit_and_stamp(start)
	local procs, needs, rings = dump_procs(true)
	if rings == "empty" then return "none" end
	if not procs then return nil, needs end
	local fitted, ferr, fcode = fit_here(procs, recorded_here)
	if fcode == "needs_pages" then
		procs, needs, rings = dump_procs(false)
		if not procs then return nil, needs end
		fitted, ferr = fit_here(procs, recorded_here)
	end
	if not fitted then return nil, ferr end
	local host = assert(aiotk.host())
	local facts = { needs = needs, rings = rings, captured = state.captured, policy = os.getenv("AIOTK_POLICY"),
		spare = state.spares.stamp }
	local ok, serr = core.criu_stamp(state.dir, host, facts)
	if not ok then return nil, serr end
	logf("info", "%d AIO ring(s) fitted to this host (nr_req the n recorded at dump); stamped in %.2f ms",
		rings, (core.now_ns() - start) / 1e6)
	return true
end

-- The dump stays good either way: without the stamp a restore fits it.
-- dumped: false when CRIU's dump failed.
function M.finish(dumped)
	if state.stage ~= "dump" then return "none" end
	close_pack(not dumped)
	if not dumped then
		drop_spares()
		return "none"
	end
	local start = core.now_ns()
	local ok, why = fit_and_stamp(start)
	drop_spares()
	if not ok then logf("warn", "the dump is not fitted to this host at dump (%s); a restore fits it", why) end
	return ok or "none"
end

function M.checkpoint(pid)
	if state.stage ~= "dump" then return "none" end
	local start = core.now_ns()
	local vpid = process.ns_pid(pid) or pid
	local img, report, code = dump.dump_frozen(pid, nil, { policy = state.policy })
	if not img then
		if code == "norings" then return "none" end
		return nil, report
	end
	local ok, err = state.pack:add(vpid, img)
	if not ok then return nil, err end
	local captured, rings, nrings = 0, {}, img.nrings
	for _, r in ipairs(img:take_rings()) do
		captured = captured + r.ncaptured
		rings[r.addr] = r
	end
	state.rings[vpid], state.captured = rings, state.captured + captured
	logf("info", "process %d: %d AIO ring(s) recorded in %s as task %d, %d request(s) in flight captured, " ..
		"waited %.1f ms for the others%s; %.2f ms in all", pid, nrings, pack_path(), vpid, captured,
		report.waited_ms, img.nurings > 0 and string.format("; and %d io_uring instance(s)", img.nurings) or "",
		(core.now_ns() - start) / 1e6)
	return true
end

-- The image whose rings are the restored task's: by its number in its
-- PID namespace, else by address (a task restored under another pid keeps
-- its ring addresses).
local function image_of(pid)
	local live = core.live_rings(pid) or {}
	if #live == 0 then return nil end
	local imgs, err = images()
	if not imgs then return nil, err end
	local vpid = process.ns_pid(pid)
	if vpid and imgs[vpid] then return imgs[vpid] end
	for _, img in pairs(imgs) do
		if ring_of(img, live[1].addr) then return img end
	end
end

function M.resume(pid)
	if state.stage ~= "restore" then return "none" end
	local img, ierr = image_of(pid)
	if ierr then return nil, ierr end
	local todo = {}
	for _, r in ipairs(img and img:rings() or {}) do
		if r.ncaptured > 0 then todo[#todo + 1] = r end
	end
	if #todo == 0 then return "none" end
	local t, err = core.adopt(pid)
	if not t then return nil, err end
	local n = 0
	for _, r in ipairs(todo) do
		local ok, rerr = t:resubmit(r.addr, r)
		if not ok then
			t:detach()
			return nil, string.format("process %d ring 0x%x: captured requests not submitted again: %s",
				pid, r.addr, rerr)
		end
		n = n + r.ncaptured
	end
	local ok, derr = t:detach()
	if not ok then return nil, derr end
	logf("info", "process %d: %d captured request(s) in flight again", pid, n)
	return true
end

-- ---- the action-script path (criu --action-script aiotk-criu-hook) ----
-- For users who cannot install the plugin. At pre-restore it does the
-- plugin's restore-side rewrite. At post-dump CRIU has saved the memory
-- but the tasks are still frozen: it records each ring's n from the kernel
-- view (beside CRIU's images, for pre-restore) and finds requests the
-- image lacks: still in flight, or completed after CRIU read the ring
-- (live tail past the saved one). It cannot wait or capture any more, so
-- such a dump fails (CRIU then lets the tasks run on) unless the policy's
-- in_flight hook answers "record".

-- Requests CRIU's image of ring c lacks, from the kernel context k.
local function lost(c, k)
	local landed = (k.kernel_tail - c.ring.tail) % c.ring.nr
	return (k.in_flight or 0) + landed, landed
end

-- The post-dump check of ring c of process pid against its kernel
-- context k; the failure to report, if any.
local function check_ring(pid, c, k)
	local count, landed = lost(c, k)
	if count == 0 then return nil end
	local what = string.format("process %d ring 0x%x: %d request(s) not in CRIU's image " ..
		"(%d completed after CRIU read the ring, %d still in flight)", pid, c.ring.addr,
		count, landed, k.in_flight or 0)
	local fact = require("aiotk.kernel").in_flight_fact(c.ring, k)
	fact.count, fact.landed = count, landed
	local answer = state.policy.in_flight(c.ring, { pid = pid, hook = "post-dump", kernel_view = true,
		in_flight = { fact } })
	if answer == "record" then
		logf("warn", "%s; recorded (policy in_flight: record)", what)
		return nil
	end
	return what .. "; the action script cannot wait for or capture them once the memory is " ..
		"saved (aiotk's CRIU plugin can), so the dump fails"
end

local function post_dump()
	local procs, err = criu.read(state.dir)
	if not procs then return nil, err end
	local kernel = require "aiotk.kernel"
	-- p.pid numbers the task in its own PID namespace; the kernel view
	-- wants it as this process sees it ($CRTOOLS_INIT_PID: the root task's)
	local root = tonumber(os.getenv("CRTOOLS_INIT_PID") or "")
	local failures = {}
	for _, p in ipairs(procs) do
		local kv, why
		local pid = p.pid
		if root then pid = process.host_pid(p.pid, root) end
		if #p.rings > 0 and not pid then
			why = "no task numbered " .. p.pid .. " in the PID namespace of CRIU's root task " .. root
		elseif #p.rings > 0 then
			kv, why = kernel.read(pid)
		end
		if #p.rings > 0 and not kv then
			logf("warn", "process %d: no kernel view (%s): %s", p.pid, why, kernel.WITHOUT)
		elseif kv then
			local img = assert(core.image())
			img.pid = p.pid
			for _, c in ipairs(p.rings) do
				local k = kv[c.ring.addr]
				if k then
					c.ring:note_kernel { n = k.n }
					failures[#failures + 1] = check_ring(p.pid, c, k)
				end
				img:add(c.ring)
			end
			local ok, werr = state.pack:add(p.pid, img)
			if not ok then
				close_pack(true)
				drop_spares()
				return nil, werr
			end
			logf("info", "process %d: io_setup's n of %d ring(s) recorded in %s", p.pid, #p.rings,
				pack_path())
		end
	end
	close_pack(#failures > 0)
	drop_spares()
	if #failures > 0 then return nil, table.concat(failures, "; ") end
	return true
end

-- CRIU's action-script call: action is $CRTOOLS_SCRIPT_ACTION.
function M.action(action, dir, log, shipped)
	local stage = action == "post-dump" and 0 or action == "pre-restore" and 2 or nil
	if not stage then return "none" end
	local ok, err = M.init(stage, dir, log, shipped)
	if not ok or ok == "none" or stage == 2 then return ok, err end
	return post_dump()
end

return M
