-- The aiotk program as users run it.
local helper = require "helper"
local json = require "dkjson"
local run = helper.run

describe("aiotk program", function()
	it("prints help, version and per-command help", function()
		local code, out = run("--help")
		assert.are.equal(0, code)
		assert.matches("demo", out)
		assert.matches("show", out)
		code, out = run("--version")
		assert.are.equal(0, code)
		assert.matches("^aiotk %d+%.%d+%.%d+", out)
		code, out = run("help show")
		assert.are.equal(0, code)
		assert.matches("%-%-json", out)
	end)

	it("loads Lua files from the bytecode of exactly their text, else parses them", function()
		local core = require "aiotk.core"
		local search = require "aiotk.search"
		local dir, bc = helper.tmpdir(), helper.tmpdir()
		local file = dir .. "/m.lua"
		helper.write(file, "return 1\n")
		search.compile(bc, file)
		assert.are.equal(1, assert(core.load_lua(file, bc))())
		-- bytecode under that text's name is what is run (made here from
		-- another chunk, so that running it shows it was used)
		local f = assert(io.open(bc .. "/" .. core.bytecode_key("return 1\n") .. ".ljbc", "wb"))
		f:write(string.dump(loadstring("return 3")))
		f:close()
		assert.are.equal(3, assert(core.load_lua(file, bc))())
		-- an edited file is parsed, never given another text's bytecode
		helper.write(file, "return 2\n")
		assert.are.equal(2, assert(core.load_lua(file, bc))())
		-- messages name the file loaded, not where the bytecode was made
		helper.write(file, "error('here')\n")
		helper.write(dir .. "/elsewhere.lua", "error('here')\n")
		search.compile(bc, dir .. "/elsewhere.lua")
		local ok, err = pcall(assert(core.load_lua(file, bc)))
		assert.is_false(ok)
		assert.are.equal(file .. ":1: here", err)
		local nothing, why = core.load_lua(dir .. "/none.lua", bc)
		assert.is_nil(nothing)
		assert.matches("cannot open .*none.lua", why)
		-- the build made bytecode for the shipped modules and argparse
		local shipped = assert(io.open(package.searchpath("argparse", package.path)))
		local text = shipped:read("*a")
		shipped:close()
		assert.is_truthy(io.open(helper.bin:match("^(.*)/") .. "/bytecode/" .. core.bytecode_key(text) .. ".ljbc"))
		helper.rmdir(dir)
		helper.rmdir(bc)
	end)

	it("fails clearly on an unknown command", function()
		local code, _, err = run("frobnicate")
		assert.are.equal(2, code)
		assert.matches("no command 'frobnicate'", err)
	end)

	it("runs -e chunks and user scripts with aiotk loaded", function()
		local code, out = run("-e 'print(aiotk.geometry(64).nr)'")
		assert.are.equal(0, code)
		assert.are.equal("255\n", out)
		local dir = helper.tmpdir()
		helper.write(dir .. "/mine.lua", "print('args', ...) print(aiotk.host().page_size) return 3\n")
		code, out = run(dir .. "/mine.lua a b")
		assert.are.equal(3, code)
		assert.matches("args\ta\tb", out)
		helper.rmdir(dir)
	end)

	it("lets a user directory override a shipped command", function()
		local dir = helper.tmpdir()
		helper.write(dir .. "/hostinfo.lua", "-- aiotk hostinfo: overridden\nprint('mine') return 0\n")
		local code, out = run("hostinfo", "AIOTK_PATH=" .. dir)
		assert.are.equal(0, code)
		assert.are.equal("mine\n", out)
		helper.rmdir(dir)
	end)

	it("the demo's JSON gives each ring's own phase times, the restorer's included", function()
		local code, out, err = run("demo --json")
		assert.are.equal(0, code, err)
		local doc = json.decode(out)
		assert.are.equal(6, #doc.rings)
		for _, r in ipairs(doc.rings) do
			-- every ring pays an io_setup and its check after the move; a
			-- ring with a tail to reach pays its replay (the restorer's
			-- rings used to report 0 for all)
			assert.is_true(r.setup_ns > 0 and r.move_ns > 0, r.name)
			if r.tail > 0 then assert.is_true(r.replay_ns > 0, r.name) end
			assert.are.equal(r.setup_ns + r.replay_ns + r.events_ns + r.move_ns, r.total_ns)
		end
	end)

	it("runs the demo, keeps its image, and shows it as JSON", function()
		local dir = helper.tmpdir() .. "/img"
		local code, out, err = run("demo -D " .. dir)
		assert.are.equal(0, code, err)
		assert.matches("all rings verified", out)
		assert.is_nil(out:find("FAILED"))
		code, out = run("show --json " .. dir)
		assert.are.equal(0, code)
		local doc = json.decode(out)
		assert.are.equal(6, #doc.rings)
		for _, r in ipairs(doc.rings) do
			assert.matches("^0x%x+$", r.addr)
			assert.is_number(r.ring_len)
			assert.is_number(r.nr)
			assert.is_number(r.head)
			assert.is_number(r.tail)
			assert.are.equal((r.tail - r.head) % r.nr, #r.events)
			for _, e in ipairs(r.events) do
				assert.matches("^0x%x+$", e.data)
				assert.matches("^0x%x+$", e.obj)
				assert.is_number(e.res)
				assert.is_number(e.res2)
			end
		end
		code, out = run("show " .. dir)
		assert.are.equal(0, code)
		assert.matches("wrapped", out)
		helper.rmdir(dir)
	end)

	it("show refuses a damaged image with a clear message", function()
		local dir = helper.tmpdir()
		helper.write(dir .. "/rings.img", "AOTK\1\0\0\0garbage")
		local code, _, err = run("show " .. dir)
		assert.are.equal(1, code)
		assert.matches("rings.img: record 0", err)
		helper.rmdir(dir)
	end)

	it("hostinfo reports this host as JSON", function()
		local code, out = run("hostinfo --json")
		assert.are.equal(0, code)
		local h = json.decode(out)
		assert.is_true(h.cpus >= 1)
		assert.are.equal("current", h.formula)
		assert.is_number(h.aio_max_nr)
	end)

	it("bench prints ratios against the bare loop and 1 io_setup per convergence", function()
		local _, max_before = require("aiotk.core").aio_nr()
		local code, out, err = run("bench --json --reps 1")
		assert.are.equal(0, code, err)
		local b = json.decode(out)
		assert.are.equal(6, #b.replay)
		assert.are.equal(131199, b.replay[#b.replay].nr)
		for _, r in ipairs(b.replay) do
			assert.is_true(r.ratio > 0)
			assert.are.equal(r.nr - 1, r.events)
		end
		for _, c in ipairs(b.converge) do
			assert.are.equal(1, c.calls)
			assert.is_true(c.exact)
		end
		assert.is_number(b.host.cpus)
		-- io_uring: the dump's stop of the 4-instance, 2-AIO-ring process
		-- and one view read, measured (figures in the README)
		assert.is_nil(b.uring.error)
		assert.are.equal("4 io_uring instances + 2 AIO rings", b.uring.case)
		assert.is_true(b.uring.stopped_ns > 0 and b.uring.uring_view_ns > 0 and b.uring.aio_view_ns > 0)
		-- The cases the figures in the README are about, each stopped
		-- time measured twice: by aiotk and by a thread of the process.
		-- The probe thread is stopped last and let go last; a loaded
		-- machine can hide a stop from it (timing), so only that the probe
		-- works at all is asserted: it saw one.
		local dumps, lives, seen = {}, {}, 0
		for _, d in ipairs(b.dump) do
			dumps[d.case] = d
			assert.is_true(d.stopped_ns > 0)
			assert.is_true(d.freeze_ns >= 0)
			seen = seen + (d.freeze_ns > 0 and 1 or 0)
		end
		assert.is_true(seen >= 1, seen .. " of " .. #b.dump .. " dumps seen by the process")
		assert.is_table(dumps["io_setup(65535), 1000 events"])
		assert.is_table(dumps["8 x io_setup(256)"])
		assert.is_table(dumps["8 x io_setup(256), one thread"])
		for _, l in ipairs(b.live_restore) do
			lives[l.case] = l
			assert.is_true(l.ratio > 0 and l.floor_ns > 0 and l.stopped_ns > 0)
			-- each pair's whole call holds its stop, so the medians keep
			-- that order whatever the machine's speed
			assert.is_true(l.live_ns >= l.stopped_ns and l.total_ratio >= l.ratio)
		end
		assert.is_table(lives["131199 slots, 40000 events"])
		assert.is_table(lives["8 x io_setup(256)"])
		assert.is_table(lives["3 small rings"])
		assert.are.equal(max_before, select(2, require("aiotk.core").aio_nr()))
	end)

	it("REPL completes the API and prints rings", function()
		local code, out = run([[-e 'local r = require "aiotk.repl"; print(table.concat(r.complete("aiotk.sn"), ","))']])
		assert.are.equal(0, code)
		assert.are.equal("aiotk.snapshot\n", out)
		-- names aiotk loads when first used complete too, before any use
		code, out = run([[-e 'local r = require "aiotk.repl"; print(table.concat(r.complete("aiotk.dump_"), ","), ]] ..
			[[table.concat(r.complete("aiotk.ring_t"), ","))']])
		assert.are.equal(0, code)
		assert.are.equal("aiotk.dump_frozen,aiotk.dump_process\taiotk.ring_table\n", out)
		local home = helper.tmpdir()
		code, out = run("repl", "printf 'aiotk.geometry(1).nr\\nx = aiotk.lab.setup(1)\\naiotk.snapshot(x)\\n' | HOME=" .. home)
		assert.are.equal(0, code)
		assert.matches("127", out)
		assert.matches("ring 0x%x+: nr 127", out)
		assert.matches("aiotk.snapshot%(x%)", helper.slurp(home .. "/.aiotk_history"))
		helper.rmdir(home)
	end)

	-- Line editing is a module only the REPL loads (lib/aiotk/readline.so
	-- beside an installed program): without it every other command still
	-- runs, and the REPL says what is missing.
	it("REPL without its line-editing module: a clear error, other commands unharmed", function()
		local dir = helper.tmpdir()
		assert(require("aiotk.core").mkdir(dir .. "/bin"))
		assert(helper.sh("cp " .. os.getenv("AIOTK_BIN") .. " " .. dir .. "/bin/aiotk"))
		local env = "AIOTK_SCRIPTS_DIR=" .. os.getenv("PWD") .. "/scripts "
		local ok, out = helper.sh(env .. dir .. "/bin/aiotk hostinfo 2>&1")
		assert(ok, out)
		ok, out = helper.sh("echo 1 | HOME=" .. dir .. " " .. env .. dir .. "/bin/aiotk repl 2>&1")
		assert.is_falsy(ok)
		assert.matches("the REPL's line editing cannot be loaded from " .. dir:gsub("%p", "%%%0") ..
			"/bin/[^ ]*aiotk/readline%.so: .*reinstall aiotk", out)
		helper.rmdir(dir)
	end)

	-- The REPL on a terminal (script(1) gives it a pty): input is typed
	-- with pauses, so that Ctrl-C arrives while a line is being edited.
	local function repl_session(home, steps)
		local parts = {}
		for _, st in ipairs(steps) do
			parts[#parts + 1] = string.format("printf '%s'; sleep 0.3", st)
		end
		local _, out = helper.sh(string.format("(%s) | HOME=%s script -qfec '%s' /dev/null", table.concat(parts, "; "),
			home, helper.bin))
		return out
	end

	it("REPL: errors with message and traceback, continuation lines, Ctrl-C cancels, help, hex, history as it goes", function()
		local home = helper.tmpdir()
		local out = repl_session(home, {
			"function twice(x)\\n", "return 2 * x\\n", "end\\n", "twice(21)\\n",
			"function bad() error([[deep]]) end\\n", "bad()\\n",
			"half typed", "\\003", "1 + 1\\n",
			"help(aiotk.snapshot)\\n", "help\\n", "{ addr = 0x7f0000001000 }\\n",
		})
		assert.matches("  %.%.%.> return 2 %* x", out)
		assert.matches("\n42\r?\n", out)
		assert.matches("error: repl:1: deep\r?\nstack traceback:", out)
		assert.is_nil(out:find("error: 1", 1, true))
		assert.matches("half typed%^C\r?\naiotk> 1 %+ 1\r?\n2\r?\n", out)
		assert.matches("aiotk%.snapshot%(addr%[, whole_area%]%)", out)
		assert.matches("Ctrl%-C +cancels the line", out)
		assert.matches('addr = "0x7f0000001000"', out)
		-- history holds every finished line, written as they were entered
		-- (libedit writes a space as \\040)
		local hist = helper.slurp(home .. "/.aiotk_history"):gsub("\\040", " ")
		assert.matches("twice%(21%)", hist)
		assert.matches("function twice%(x%) return 2 %* x end", hist)
		assert.is_nil(hist:find("half typed", 1, true))
		helper.rmdir(home)
	end)

	it("keeps the REPL's history when it is killed mid-session", function()
		local home = helper.tmpdir()
		-- the REPL kills itself with SIGKILL, as an outside kill would
		repl_session(home, { "answer = 42\\n", "aiotk.core.kill(aiotk.core.getpid(), [[KILL]])\\n" })
		assert.matches("answer = 42", (helper.slurp(home .. "/.aiotk_history"):gsub("\\040", " ")))
		helper.rmdir(home)
	end)

	it("usage errors exit 2 for every command, with did-you-mean for command names", function()
		for _, args in ipairs { "dump", "dump -p abc -D /tmp/x", "dump -p 1 -D /tmp/x --frob", "restore -p 1",
			"show", "verify -p 1", "check", "import --criu /tmp", "criu-fixup", "migrate", "bench --reps x",
			"hostinfo --nope", "docs --nope", "criu-hook --nope", "--log-file" } do
			local code, _, err = run(args)
			assert.are.equal(2, code, args .. ": " .. err)
		end
		local code, _, err = run("shwo")
		assert.are.equal(2, code)
		assert.matches("no command 'shwo'; did you mean 'show'%?", err)
		code, _, err = run("help dmup")
		assert.are.equal(2, code)
		assert.matches("did you mean 'dump'", err)
		local hout
		code, hout = run("help repl")
		assert.are.equal(0, code)
		assert.matches("Ctrl%-C", hout)
	end)

	it("-q silences messages, --log-file keeps them, -v adds nothing harmful", function()
		local dir = helper.tmpdir()
		local w = helper.workload("--ring 1:5:0:0 --pending")
		finally(function() helper.reap_workloads() helper.rmdir(dir) end)
		local code, _, err = run("dump -p " .. w.pid .. " -D " .. dir .. "/a --policy scripts/examples/record-in-flight.lua")
		assert.are.equal(0, code, err)
		assert.matches("aiotk: ring 0x%x+: 1 request", err)
		code, _, err = run("-q --log-file " .. dir .. "/log dump -p " .. w.pid .. " -D " .. dir ..
			"/b --policy scripts/examples/record-in-flight.lua")
		assert.are.equal(0, code)
		assert.are.equal("", err)
		assert.matches("^%d+%-%d+%-%d+T[%d:]+Z info ring 0x%x+: 1 request", helper.slurp(dir .. "/log"))
		code = run("-v hostinfo")
		assert.are.equal(0, code)
	end)

	it("JSON is stable (sorted keys, the same text twice) and unknown values are null", function()
		local dir = helper.tmpdir()
		local img = dir .. "/img"
		assert.are.equal(0, (run("import --criu " .. (os.getenv("AIOTK_CRIU_FIXTURES") or "../shared/fixtures/criu") ..
			"/nr1 -D " .. img)))
		local _, a = run("show --json " .. img)
		local _, b = run("show --json " .. img)
		assert.are.equal(a, b)
		assert.matches('"n":null', a, 1, true)
		local keys = {}
		for k in a:match('"host":(%b{})'):gmatch('"([%w_]+)":') do keys[#keys + 1] = k end
		assert.is_true(#keys >= 5)
		local sorted = { unpack(keys) }
		table.sort(sorted)
		assert.are.same(sorted, keys)
		for _, c in ipairs { "hostinfo --json", "check --json -D " .. img, "migrate --json -D " .. img } do
			local code, out = run(c)
			assert.is_true(code == 0 or code == 3, c)
			assert.is_table(json.decode(out), c)
		end
		helper.rmdir(dir)
	end)

	it("bash completion: commands, options from --help, ring PIDs after -p, directories", function()
		local w = helper.workload("--ring 1:1:0:0")
		finally(function() helper.reap_workloads() end)
		local function complete(words, cword)
			local _, out = helper.sh(string.format("PATH=%s:$PATH bash -c 'source completion/aiotk; " ..
				"COMP_WORDS=(%s); COMP_CWORD=%d; _aiotk; printf \"%%s\\n\" \"${COMPREPLY[@]}\"'",
				helper.bin:gsub("/aiotk$", ""), words, cword))
			return out
		end
		assert.are.equal("show\n", complete("aiotk sh", 1))
		assert.matches("criu%-fixup\ncriu%-hook\n", complete("aiotk cr", 1))
		local opts = complete("aiotk dump -", 2)
		for _, o in ipairs { "-p", "--pid", "-D", "--dir", "--json", "--policy" } do
			assert.matches("\n" .. o:gsub("%-", "%%-") .. "\n", "\n" .. opts)
		end
		assert.matches("\n" .. w.pid .. "\n", "\n" .. complete("aiotk show -p ''", 3))
		assert.matches("spec\n", complete("aiotk show -D sp", 3))
		assert.are.equal("repl\n", complete("aiotk help rep", 2))
	end)

	it("docs/SCRIPTING.md's reference is the one aiotk docs generates", function()
		local code, _, err = run("docs --check docs/SCRIPTING.md")
		assert.are.equal(0, code, err)
	end)

	it("docs/ARCHITECTURE.md names every file of core/, bindings/, plugins/criu/ and scripts/aiotk/", function()
		local map = helper.slurp("docs/ARCHITECTURE.md")
		local ok, files = helper.sh("git ls-files core bindings plugins/criu scripts/aiotk")
		assert(ok, files)
		local missing = {}
		for path in files:gmatch("[^\n]+") do
			local name = path:match("[^/]+$")
			if not map:find("`" .. name .. "`", 1, true) and not map:find(name .. "`", 1, true) then
				missing[#missing + 1] = path
			end
		end
		assert.are.same({}, missing)
	end)
end)
