-- aiotk's command line: the host hands over the scripts directory and argv.
-- A command is a script COMMAND.lua, looked up in the user's directories
-- ($AIOTK_PATH, ~/.config/aiotk/scripts) before the shipped ones, so a user
-- overrides a command or a policy without touching the install.
local shipped, argv = ...
local core = require "aiotk.core"
-- When this command's Lua began (restore --json reports its phases from here).
local started_ns = core.now_ns()

package.path = shipped .. "/?.lua;" .. package.path
local search = require("aiotk.search").install(shipped, AIOTK_BYTECODE_DIR)

-- Usage errors exit 2, for every command (argparse's own exit is 1).
rawset(getmetatable(require("argparse")("aiotk")), "error", function(self, msg)
	io.stderr:write(("%s\n\nError: %s\n"):format(self:get_usage(), msg))
	os.exit(2)
end)

local aiotk = require "aiotk"
_G.aiotk = aiotk
aiotk.scripts_dir = shipped
aiotk.started_ns = started_ns
aiotk.search_dirs = search

local function readable(path)
	local f = io.open(path, "r")
	if f then f:close() return true end
end

local function find_command(name)
	if not name:match("^[%w_%-]+$") then return nil end
	for _, d in ipairs(search) do
		local p = d .. "/" .. name .. ".lua"
		if readable(p) then return p end
	end
end

-- First comment line of a command script: "-- aiotk NAME: what it does".
local function summary(path)
	local f = io.open(path)
	if not f then return "" end
	local line = f:read("*l") or ""
	f:close()
	return line:match("^%-%- aiotk [%w_%-]+: (.*)") or ""
end

local function list_commands()
	local seen, names = {}, {}
	for _, d in ipairs(search) do
		for _, f in ipairs(core.listdir(d) or {}) do
			local name = f:match("^([%w_%-]+)%.lua$")
			if name and not seen[name] then
				seen[name] = find_command(name)
				names[#names + 1] = name
			end
		end
	end
	table.sort(names)
	return names, seen
end

local USAGE = [==[
usage: aiotk [OPTIONS] [COMMAND [ARGS...]]  run a command (scripts/COMMAND.lua)
       aiotk [OPTIONS] FILE.lua [ARGS...]   run a Lua script with `aiotk` loaded
       aiotk -e 'CODE'                      run a chunk
       aiotk [repl]                         interactive REPL (aiotk help repl)
       aiotk help COMMAND                   a command's options
       aiotk --version

options (before the command):
  -q, --quiet           only errors on stderr
  -v, --verbose         also debug lines
  --log-file FILE       also append every message, timestamped, to FILE

commands:
]==]

local function usage()
	local names, where = list_commands()
	io.write(USAGE)
	for _, n in ipairs(names) do
		local s = summary(where[n])
		if s ~= "" then io.write(string.format("  %-12s %s\n", n, s)) end
	end
	io.write("\nUser commands and policies: $AIOTK_PATH, ~/.config/aiotk/scripts\n")
	return 0
end

local function run_file(path, args)
	local chunk, err = require("aiotk.search").loadfile(path)
	if not chunk then
		io.stderr:write("aiotk: ", err, "\n")
		return 2
	end
	_G.arg = args
	local rc = chunk(unpack(args))
	io.stdout:flush()
	if rc == true or rc == nil then return 0 end
	if rc == false then return 1 end
	return tonumber(rc) or 0
end

local function rest(from)
	local t = { [0] = argv[from - 1] }
	for i = from, #argv do t[#t + 1] = argv[i] end
	return t
end

-- Levenshtein distance, for "did you mean".
local function distance(a, b)
	local prev = {}
	for j = 0, #b do prev[j] = j end
	for i = 1, #a do
		local cur = { [0] = i }
		for j = 1, #b do
			local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
			cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
		end
		prev = cur
	end
	return prev[#b]
end

-- The closest command within two edits, else one the name begins.
local function no_command(name)
	local best, bd = nil, 3
	for _, n in ipairs((list_commands())) do
		local d = distance(name, n)
		if d < bd then best, bd = n, d end
	end
	if not best and #name >= 2 then
		for _, n in ipairs((list_commands())) do
			if n:sub(1, #name) == name then best = n break end
		end
	end
	io.stderr:write("aiotk: no command '", name, "'", best and ("; did you mean '" .. best .. "'?") or "",
		" (aiotk --help lists them)\n")
	return 2
end

-- Options before the command: -q, -v, --log-file FILE. Returns the index
-- of the first other argument, or nil and a usage message.
local function global_options()
	local log = require "aiotk.log"
	local i = 1
	while argv[i] do
		local a = argv[i]
		if a == "-q" or a == "--quiet" then log.level = log.QUIET
		elseif a == "-v" or a == "--verbose" then log.level = log.VERBOSE
		elseif a == "--log-file" then
			if not argv[i + 1] then return nil, "--log-file needs a FILE" end
			log.file = argv[i + 1]
			i = i + 1
		elseif a:match("^%-%-log%-file=") then log.file = a:match("=(.*)")
		else break end
		i = i + 1
	end
	return i
end

local function main()
	local from, gerr = global_options()
	if not from then io.stderr:write("aiotk: ", gerr, "\n") return 2 end
	if from > 1 then
		local shifted = {}
		for i = from, #argv do shifted[#shifted + 1] = argv[i] end
		argv = shifted
	end
	local first = argv[1]
	if first == nil or first == "repl" then
		return require("aiotk.repl").run()
	elseif first == "-h" or first == "--help" then
		return usage()
	elseif first == "--list-commands" then
		-- for completion and the man page: one name per line
		for _, n in ipairs((list_commands())) do print(n) end
		return 0
	elseif first == "--version" then
		print("aiotk " .. aiotk.version)
		return 0
	elseif first == "-e" then
		if not argv[2] then io.stderr:write("aiotk: -e needs a chunk of Lua\n") return 2 end
		local chunk, err = loadstring(argv[2], "=(-e)")
		if not chunk then io.stderr:write("aiotk: ", err, "\n") return 2 end
		_G.arg = rest(3)
		chunk(unpack(_G.arg))
		return 0
	elseif first == "help" then
		if not argv[2] then return usage() end
		if argv[2] == "repl" then
			io.write(require("aiotk.repl").HELP)
			return 0
		end
		local path = find_command(argv[2])
		if not path then return no_command(argv[2]) end
		return run_file(path, { [0] = argv[2], "--help" })
	elseif first:match("%.lua$") then
		return run_file(first, rest(2))
	end
	local path = find_command(first)
	if not path then return no_command(first) end
	return run_file(path, rest(2))
end

return main()
