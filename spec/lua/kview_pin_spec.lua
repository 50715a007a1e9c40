-- The kernel view's programs kept loaded between commands
-- (core/kview/viewer.c): the first command loads and pins them, a second
-- opens the pin (the same programs: nothing loaded), a pin of another
-- build is not used, an unusable pin at this build's name is replaced,
-- --unpin removes them, and a process without CAP_BPF does not get them
-- through the pin. Every pin lives on a bpffs that aiotk mounts on a
-- directory of this spec's own (as it would on an empty /sys/fs/bpf);
-- each test unmounts and removes it however it ends, so /sys/fs/bpf is
-- never touched and nothing is left behind. Nothing here is timed: the
-- kernel's program ids say whether a program was loaded again.
local aiotk = require "aiotk"
local helper = require "helper"
local json = require "dkjson"
local core = aiotk.core
local run = helper.run

local NAME = core.kview_pin_name()

-- A fresh directory for bpffs, unmounted and removed when the test ends
-- (after undo, if given: busted keeps only the last finally of a test).
local function bpffs_dir(undo)
	local dir = helper.tmpdir()
	finally(function()
		if undo then undo() end
		-- aiotk mounted it (if the test got that far): pins go with it
		helper.sh("umount " .. dir)
		assert(helper.sh("rmdir " .. dir))
	end)
	return dir
end

-- `aiotk kview --json` (or cmd) with the pin kept under dir.
local function kview(dir, cmd)
	local code, out, err = run(cmd or "kview --json", "AIOTK_KVIEW_PIN=" .. dir)
	assert.are.equal(0, code, err)
	return json.decode(out)
end

-- The aiotk pins under root (a bpffs root also lists the kernel's
-- maps.debug and progs.debug).
local function pins(root)
	local out = {}
	for _, e in ipairs(core.listdir(root)) do
		if e:match("^aiotk%-") then out[#out + 1] = e end
	end
	return out
end

-- A pin as another build would leave it: this build's programs, pinned
-- by a first command, moved to another hash's name. Returns that first
-- command's report and the pin's path.
local function other_builds_pin(root)
	local first = kview(root)
	local other = root .. "/aiotk-0_0_0-0000000000000000"
	assert(os.rename(first.pin, other))
	return first, other
end

local function mode(path)
	local ok, out = helper.sh("stat -c %a " .. path)
	assert(ok, out)
	return out:match("%d+")
end

describe("kernel view pin", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("is made by the first command and opened by the next ones: the same programs, nothing loaded again", function()
		local root = bpffs_dir()
		local first = kview(root)
		assert.are.same({ "load", true, true }, { first.how, first.pinned, first.mounted })
		local pin = root .. "/" .. NAME
		assert.are.equal(pin, first.pin)
		assert.are.equal("700", mode(pin))
		assert.are.same({ "aio", "firsts", "uring" }, core.listdir(pin))
		-- show -p and dump -p of a 2-ring process from the pin
		local w = helper.workload("--ring 1:15:10:0 --ring 64:200:100:0")
		local shown = kview(root, "show -p " .. w.pid .. " --json")
		assert.is_true(shown.kernel_view)
		local ns = {}
		for i, r in ipairs(shown.rings) do ns[i] = r.n end
		table.sort(ns)
		assert.are.same({ 1, 64 }, ns)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/img", "AIOTK_KVIEW_PIN=" .. root)
		assert.are.equal(0, code, err)
		local again = kview(root)
		assert.are.same({ "pin", true, false }, { again.how, again.from_pin, again.pinned })
		assert.are.same(first.prog_ids, again.prog_ids)
		-- the kernel shows one load of each: the pin's
		local ok, out = helper.sh("bpftool prog show id " .. first.prog_ids[1])
		assert(ok, out)
		assert.matches("name kview", out)
	end)

	it("is not taken from another build, and is replaced at this build's name when unusable", function()
		local root = bpffs_dir()
		local first, other = other_builds_pin(root)
		local fresh = kview(root)
		assert.are.same({ "load", true }, { fresh.how, fresh.pinned })
		assert.are_not.same(first.prog_ids, fresh.prog_ids)
		assert.are.same({ other }, fresh.other_pins)
		-- a mode wider than root's only: not used, replaced
		assert(helper.sh("chmod 0755 " .. fresh.pin))
		local wide = kview(root)
		assert.are.same({ "load", true, true }, { wide.how, wide.pinned, wide.replaced })
		assert.are.equal("700", mode(wide.pin))
		-- programs that are not the ones their names say: replaced
		assert(os.rename(wide.pin .. "/aio", wide.pin .. "/x"))
		assert(os.rename(wide.pin .. "/uring", wide.pin .. "/aio"))
		assert(os.rename(wide.pin .. "/x", wide.pin .. "/uring"))
		local swapped = kview(root)
		assert.are.same({ "load", true, true }, { swapped.how, swapped.pinned, swapped.replaced })
		assert.are.equal("pin", kview(root).how)
	end)

	it("is removed by kview --unpin (this build's) and --unpin --all (every aiotk pin); the next command loads again", function()
		local root = bpffs_dir()
		local _, other = other_builds_pin(root)
		kview(root)
		assert.are.same({ other:match("[^/]+$"), NAME }, pins(root))
		assert.are.same({ dir = root, removed = 1 }, kview(root, "kview --unpin --json"))
		assert.are.same({ other:match("[^/]+$") }, pins(root))
		assert.are.equal("load", kview(root).how)
		assert.are.same({ dir = root, removed = 2 }, kview(root, "kview --unpin --all --json"))
		assert.are.same({}, pins(root))
		local code, out = run("kview --unpin", "AIOTK_KVIEW_PIN=" .. root)
		assert.are.equal(0, code)
		assert.matches("removed 0 pin", out)
	end)

	it("is not used by a process without CAP_BPF: the command says it has no kernel view", function()
		local root = bpffs_dir()
		kview(root)
		local w = helper.workload("--ring 1:3:0:0")
		local code, out = run("show -p " .. w.pid .. " --json",
			"AIOTK_KVIEW_PIN=" .. root .. " setpriv --bounding-set=-bpf,-perfmon,-sys_admin")
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.is_false(doc.kernel_view)
		assert.matches("CAP_BPF", doc.kernel_view_error)
	end)

	it("reads more contexts than one run covers, whatever start slot a killed reader left for this thread", function()
		local ctxs = {}
		local root = bpffs_dir(function() for _, c in ipairs(ctxs) do core.lab.destroy(c) end end)
		for i = 1, 70 do ctxs[i] = assert(core.lab.setup(1)) end
		local v = assert(core.kviewer { pin = root, mount = true })
		assert.is_true(v:info().pinned)
		-- this thread's entry as a reader killed after its second run
		-- would leave it (key: the global tid, little-endian)
		local tid = core.getpid()
		local key = string.format("%d %d %d %d", tid % 256, math.floor(tid / 256) % 256,
			math.floor(tid / 65536) % 256, math.floor(tid / 16777216))
		local firsts = root .. "/" .. NAME .. "/firsts"
		assert(helper.sh("bpftool map update pinned " .. firsts .. " key " .. key .. " value 32 0 0 0"))
		local seen = {}
		for _, c in ipairs(assert(v:read(tid))) do seen[c.addr] = true end
		for _, c in ipairs(ctxs) do assert.is_true(seen[c], string.format("context 0x%x read", c)) end
		v:close()
		local ok, out = helper.sh("bpftool map dump pinned " .. firsts)
		assert(ok, out)
		-- closed: its entry removed
		assert.is_truthy(out:match("^%s*%[%s*%]") or out:match("Found 0 elements"), out)
	end)
end)
