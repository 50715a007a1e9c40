-- Real CRIU for the specs: the criu binary ($AIOTK_CRIU, else CRIU 4.2
-- built by ../shared/criu/build-criu, quick once built), running it with
-- aiotk's plugin or none, and the process bookkeeping CRIU needs.
local helper = require "helper"
local core = require "aiotk.core"

local M = {}
local sh = helper.sh

local function find_criu()
	local env = os.getenv("AIOTK_CRIU")
	if env and env ~= "" then return env end
	local script = (os.getenv("AIOTK_SHARED") or "../shared") .. "/criu/build-criu"
	if not core.listdir((script:gsub("/[^/]+$", ""))) then
		return nil, script .. " not found and AIOTK_CRIU not set"
	end
	local ok, out = sh("sh " .. script)
	local path = out:match("([^\n]+)\n?$")
	if not ok or not path then return nil, "build-criu failed: " .. out:sub(-400) end
	return path
end

M.CRIU, M.WHY = find_criu()

-- Processes started for CRIU and those it restores end up children of
-- this one (not of PID 1, which may never reap them), so their PIDs come
-- free for a restore.
core.subreaper()

-- Gone and reaped: CRIU can give its PID to a restored process.
function M.gone(pid, ms)
	return helper.wait_until(function() return core.reap(pid) and helper.status(pid, "Pid") == nil end, ms or 5000)
end

-- criu runs in the image directory: the plugin's directory must be absolute.
M.PLUGIN_DIR = (os.getenv("AIOTK_BIN") or "build/aiotk"):gsub("/aiotk$", "") .. "/criu"
if M.PLUGIN_DIR:sub(1, 1) ~= "/" then M.PLUGIN_DIR = os.getenv("PWD") .. "/" .. M.PLUGIN_DIR end
M.HOOK = M.PLUGIN_DIR:gsub("/criu$", "") .. "/aiotk-criu-hook"

-- An empty plugin directory, so that no installed plugin plays a part.
-- One per build tree, kept: a directory made per run would be left
-- behind by every spec (Lua has no exit hook).
M.EMPTY = M.PLUGIN_DIR:gsub("/criu$", "") .. "/criu-none"
core.mkdir(M.EMPTY)

-- criu ARGS (logging to criu.log in the image directory), with aiotk's
-- plugin or with none; env: assignments put before the command. CRIU
-- runs without the sanitizer runtime the ASan build's specs preload for
-- their LuaJIT: with it, a criu dump hung (spec_uring_restore's check
-- --criu case, spec_criu_relocate before).
function M.criu(args, plugin, env)
	return sh(string.format("env -u LD_PRELOAD %s %s %s -L %s -v4 -o criu.log", env or "", M.CRIU, args,
		plugin and M.PLUGIN_DIR or M.EMPTY))
end

-- For busted: true when CRIU is there, else marks the test pending, why.
function M.need(pending)
	if not M.CRIU then pending("needs CRIU 4.x: " .. M.WHY) return false end
	return true
end

-- A workload started apart from this process (its own session: CRIU
-- dumps and restores it alone), READY once it has made its rings.
function M.detached_workload(args, out)
	local bin = require("aiotk.workload").binary()
	local ok, o = sh(string.format("setsid %s --tolerate-stop-eintr %s >%s 2>&1 </dev/null & echo $!",
		bin, args, out))
	assert(ok, o)
	local pid = tonumber(o:match("(%d+)"))
	assert(helper.wait_until(function() return helper.slurp(out):match("^READY") end, 10000),
		"workload did not start: " .. helper.slurp(out))
	return pid
end

-- Every file of directory d, by name: its bytes.
function M.files_of(d)
	local out = {}
	for _, name in ipairs(core.listdir(d)) do out[name] = helper.slurp(d .. "/" .. name) end
	return out
end

-- criu-fixup in place of dump img for the host `to` (cpus, grow: a policy
-- file), made to fail at each of its writes in turn (the .orig copies, the
-- journal, the saved ring header, an nr_req patched in place, the mm
-- image), then undone: each
-- time the dump is CRIU's again, byte for byte (the .orig copies stay, as
-- after any undo). The last run fails at no write and is undone too.
-- criu.fixup of img for to (cpus, the policy file at to.grow) made to
-- fail at each of its writes in turn, on a copy under dir, then undone:
-- each time every file is as CRIU wrote it. At least least - 1 writes.
function M.undoable_at_every_step(img, dir, to, least)
	local criu_mod, policy = require "aiotk.criu", require("aiotk.policy").load(to.grow)
	local host = require("aiotk.hostmodel").from_args { cpus = to.cpus }
	local pristine = M.files_of(img)
	local writes = { "link", "write_atomic", "criu_set_header_nr", "criu_patch_file" }
	local real = {}
	for _, w in ipairs(writes) do real[w] = core[w] end
	local k, failed = 0, true
	while failed do
		k = k + 1
		local work = dir .. "/step" .. k
		assert(helper.sh("cp -a " .. img .. " " .. work))
		local calls = 0
		for _, w in ipairs(writes) do
			core[w] = function(...)
				calls = calls + 1
				if calls == k then return nil, "injected failure", "system", 5 end
				return real[w](...)
			end
		end
		local ok, changes, ferr = pcall(function()
			return criu_mod.fixup(work, assert(criu_mod.read(work)), host, { policy = policy })
		end)
		for _, w in ipairs(writes) do core[w] = real[w] end
		assert(ok, changes)
		failed = changes == nil
		assert(failed or calls < k, "write " .. k .. " of " .. calls .. " failed unnoticed")
		if failed then assert(ferr == "injected failure", "failed with " .. tostring(ferr)) end
		assert(criu_mod.undo(work))
		local now = M.files_of(work)
		for name, bytes in pairs(now) do
			if not name:match("%.orig$") then
				assert(pristine[name] == bytes, ("after a fixup stopped at write %d and undone, %s " ..
					"differs from CRIU's"):format(k, name))
			end
		end
		for name in pairs(pristine) do assert(now[name], name .. " is gone after undo") end
		helper.rmdir(work)
	end
	-- .orig of the mm image, the journal, the header, the mm image: four
	-- writes at least, each one a step that was undone above
	assert(k >= least, "only " .. (k - 1) .. " writes")
end

-- A protobuf varint of s at i: its value and the index after it.
local function varint(s, i)
	local v, mul = 0, 1
	repeat
		local b = s:byte(i)
		v, mul, i = v + (b % 128) * mul, mul * 128, i + 1
	until b < 128
	return v, i
end

local function u32(s, i) return s:byte(i) + s:byte(i + 1) * 256 + s:byte(i + 2) * 65536 + s:byte(i + 3) * 16777216 end

-- A pagemap entry's fields (all varints): { [field] = value }, and where
-- the flags value is (one byte: PE_PARENT 1, PE_LAZY 2, PE_PRESENT 4).
local function pm_fields(e)
	local f, i, flags_at = {}, 1, nil
	while i <= #e do
		local key, v
		key, i = varint(e, i)
		assert(key % 8 == 0, "pagemap entry field not a varint")
		if key / 8 == 4 then flags_at = i end
		v, i = varint(e, i)
		f[key / 8] = v
	end
	return f, flags_at
end

-- Dump img made incremental as `criu pre-dump` then `criu dump
-- --prev-images-dir ../pre --track-mem` makes one, which this kernel
-- cannot (no CONFIG_MEM_SOFT_DIRTY: pre-dump aborts at CRIU's
-- mem.c BUG_ON, dump refuses --track-mem; docs/KERNEL-FACTS.md): the full
-- dump copied as the parent img/../pre, and in img each PRESENT pagemap
-- entry keep(vaddr, bytes) refuses flagged PE_PARENT instead (pages not
-- dirtied since the pre-dump), its pages dropped from the pages file,
-- and the `parent` link CRIU makes. Returns how many entries went.
function M.as_incremental(img, keep, page)
	local parent = img:gsub("/[^/]+$", "") .. "/pre"
	assert(helper.sh(string.format("cp -a %s %s && ln -s ../pre %s/parent", img, parent, img)))
	local moved = 0
	for _, name in ipairs(core.listdir(img)) do
		if name:match("^pagemap%-%d+%.img$") then
			local pm = helper.slurp(img .. "/" .. name)
			local hlen = u32(pm, 9)
			local pages_id = varint(pm, 14)
			local pages_name = img .. "/pages-" .. pages_id .. ".img"
			local pages = helper.slurp(pages_name)
			local out, kept, at, i = { pm:sub(1, 12 + hlen) }, {}, 0, 13 + hlen
			while i <= #pm do
				local n = u32(pm, i)
				local e = pm:sub(i + 4, i + 3 + n)
				local f, flags_at = pm_fields(e)
				local npages = f[5] or f[2]
				if f[4] % 8 >= 4 then
					local bytes = pages:sub(at * page + 1, (at + npages) * page)
					if keep(f[1], npages * page) then
						kept[#kept + 1] = bytes
					else
						-- PRESENT becomes PARENT, LAZY kept
						e = e:sub(1, flags_at - 1) .. string.char(f[4] - 3) .. e:sub(flags_at + 1)
						moved = moved + 1
					end
					at = at + npages
				end
				out[#out + 1] = pm:sub(i, i + 3) .. e
				i = i + 4 + n
			end
			helper.write(img .. "/" .. name, table.concat(out))
			helper.write(pages_name, table.concat(kept))
		end
	end
	return moved
end

-- Ask a (restored) workload to verify itself; its verdict line.
return M
