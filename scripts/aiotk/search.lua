-- Where aiotk finds commands, policies and modules: $AIOTK_PATH (colon-
-- separated), the user's ~/.config/aiotk/scripts, the machine's /etc/aiotk
-- (where a container host puts the policy CRIU's plugin follows, since
-- runc and Podman do not pass a user's environment to CRIU), then the
-- shipped scripts, in that order, so a user overrides a command or a
-- policy without touching the install. The command line and the CRIU
-- plugin both start here.
local M = {}

M.SYSTEM = "/etc/aiotk"

function M.dirs(shipped)
	local dirs = {}
	for d in (os.getenv("AIOTK_PATH") or ""):gmatch("[^:]+") do dirs[#dirs + 1] = d end
	local home = os.getenv("HOME")
	if home then dirs[#dirs + 1] = home .. "/.config/aiotk/scripts" end
	dirs[#dirs + 1] = M.SYSTEM
	dirs[#dirs + 1] = shipped
	return dirs
end

-- Lua files are loaded through core.load_lua: from the build's bytecode
-- of exactly their text when bytecode_dir holds it (a command then starts
-- without parsing its modules), else parsed as loadfile does.
M.bytecode_dir = nil

function M.loadfile(path)
	return require("aiotk.core").load_lua(path, M.bytecode_dir)
end

-- Lua's own file searcher, loading through M.loadfile.
local function searcher(name)
	local path, err = package.searchpath(name, package.path)
	if not path then return err end
	local chunk, lerr = M.loadfile(path)
	if not chunk then error(string.format("error loading module '%s' from file '%s':\n\t%s", name, path, lerr), 2) end
	return chunk
end

-- package.path searches dirs first, Lua files loaded through M.loadfile
-- (bytecode_dir: where the build's bytecode is, or nil); returns dirs.
-- Only the dirs that exist go in (a missing one cost four failed opens a
-- module: 0.2 ms of a command's start), and never the working directory:
-- LuaJIT's default path starts with ./?.lua, and aiotk runs as root from
-- wherever it is started, so a file there named like a module would run.
function M.install(shipped, bytecode_dir)
	local dirs = M.dirs(shipped)
	local paths = {}
	for _, d in ipairs(dirs) do
		if d == shipped or require("aiotk.core").listdir(d) then
			paths[#paths + 1] = d .. "/?.lua;" .. d .. "/?/init.lua"
		end
	end
	local rest = {}
	for entry in package.path:gmatch("[^;]+") do
		if not entry:match("^%./") then rest[#rest + 1] = entry end
	end
	package.path = table.concat(paths, ";") .. ";" .. table.concat(rest, ";")
	M.bytecode_dir = bytecode_dir
	package.loaders[2] = searcher
	return dirs
end

-- The bytecode of each Lua file in files (paths, or module names found
-- on package.path) written to dir, named as core.load_lua looks for it
-- (the build runs this: CMakeLists.txt).
function M.compile(dir, ...)
	local core = require "aiotk.core"
	for _, file in ipairs { ... } do
		local path = file:find("/") and file or assert(package.searchpath(file, package.path))
		local f = assert(io.open(path, "rb"))
		local text = f:read("*a")
		f:close()
		local chunk = assert(loadstring((text:gsub("^#[^\n]*", "")), "@" .. path))
		local out = assert(io.open(dir .. "/" .. core.bytecode_key(text) .. ".ljbc", "wb"))
		out:write(string.dump(chunk))
		out:close()
	end
end

return M
