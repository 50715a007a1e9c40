-- Bad input gets a clear error and a non-zero exit, and changes nothing:
-- PIDs that are not plain decimals, image files that are not regular
-- files, processes aiotk cannot or need not stop.
local helper = require "helper"
local core = require "aiotk.core"
local run = helper.run

describe("bad input", function()
	local dir
	helper.scratch_each(function(d) dir = d end)

	it("takes only plain positive decimal PIDs within pid_max (usage error, exit 2)", function()
		for _, p in ipairs { "30723.5", "0x7803", "1e0", "+30723", "4294998019", "abc", "0" } do
			for _, cmd in ipairs { "dump -p %s -D " .. dir .. "/x", "restore -p %s -D " .. dir } do
				local code, _, err = run(string.format(cmd, "'" .. p .. "'"))
				assert.are.equal(2, code, cmd .. " " .. p .. ": " .. err)
				assert.matches("is not a process ID", err)
			end
		end
		assert.is_nil(core.listdir(dir .. "/x"))
	end)

	it("refuses a rings.img that is a FIFO at once, without blocking", function()
		assert(os.execute("mkfifo " .. dir .. "/rings.img") == 0)
		local t0 = core.now_ns()
		for _, cmd in ipairs { "show ", "check -D " } do
			local code, _, err = run(cmd .. dir)
			assert.are.equal(1, code, err)
			assert.matches("not a regular file", err)
		end
		assert.is_true(core.now_ns() - t0 < 5e9)
	end)

	it("never stops a process without rings, and writes nothing", function()
		local w = helper.workload("")
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/x")
		assert.are.equal(1, code)
		assert.matches("has no AIO ring", err)
		assert.matches("was not stopped", err)
		assert.is_nil(core.listdir(dir .. "/x"))
		assert.are.equal("VERIFY OK 0 rings", w:verify())
	end)

	it("says a zombie is a zombie", function()
		-- a workload whose parent (then sleep) never reaps it
		local bin = require("aiotk.workload").binary()
		local p = io.popen("sh -c 'echo $$; " .. bin .. " --ring 1:3:1:0 >/dev/null & echo $!; exec sleep 2'")
		local parent, pid = tonumber(p:read("*l")), tonumber(p:read("*l"))
		-- once the shell is sleep, nothing reaps the child before we look
		assert(helper.wait_until(function() return helper.slurp("/proc/" .. parent .. "/comm") == "sleep\n" end, 2000))
		core.kill(pid, "KILL")
		assert(helper.wait_until(function() return (helper.status(pid, "State") or ""):match("^Z") end, 2000))
		local code, _, err = run("dump -p " .. pid .. " -D " .. dir .. "/x")
		assert.are.equal(1, code)
		assert.matches("is a zombie", err)
		core.kill(parent, "KILL")
		p:close()
	end)

	it("a dump that fails on a full disk leaves no directory behind", function()
		local w = helper.workload("--ring 1:3:1:0")
		-- a full 8 KiB tmpfs in a private mount namespace: gone with it
		local mnt = dir .. "/mnt"
		assert(core.mkdir(mnt))
		local p = io.popen(string.format("unshare -m sh -c 'mount -t tmpfs -o size=8k tmpfs %s && " ..
			"head -c 8192 /dev/zero >%s/fill 2>/dev/null; %s dump -p %d -D %s/new 2>&1; " ..
			"echo exit=$?; ls -A %s'", mnt, mnt, helper.bin, w.pid, mnt, mnt))
		local out = p:read("*a")
		p:close()
		assert.matches("No space left on device", out)
		assert.matches("exit=1\n", out)
		assert.matches("exit=1\nfill\n$", out) -- only the filler: no new/
		assert.are.equal("VERIFY OK 1 rings", w:verify())
	end)
end)
