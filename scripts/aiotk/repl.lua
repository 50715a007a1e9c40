-- The interactive REPL: line editing and history from libedit, completion
-- over the aiotk API, rings/snapshots/images printed through __tostring.
local rl = require "aiotk.readline"
local inspect = require "inspect"

local M = {}

-- Addresses and cookies read better in hex.
local function show(v)
	if type(v) == "number" and v >= 2 ^ 32 and v == math.floor(v) then
		return string.format("0x%x (%.0f)", v, v)
	end
	if type(v) == "userdata" then return tostring(v) end
	if type(v) ~= "table" then return inspect(v) end
	local mt = getmetatable(v)
	if mt and mt.__tostring then return tostring(v) end
	return inspect(v, {
		process = function(item)
			if type(item) == "userdata" then return tostring(item) end
			return item
		end,
	})
end

-- Candidates for "prefix": globals, or fields of a table path
-- ("aiotk.sn" -> "aiotk.snapshot"), and methods after ':'.
function M.complete(text)
	local path, sep, last = text:match("^(.-)([%.:])([%w_]*)$")
	local scope = _G
	if path then
		for part in path:gmatch("[^%.:]+") do
			scope = type(scope) == "table" and rawget(scope, part) or nil
		end
		if type(scope) == "userdata" then
			local ok, mt = pcall(getmetatable, scope)
			scope = ok and type(mt) == "table" and mt.methods or nil
		end
	else
		path, sep, last = "", "", text
	end
	local out = {}
	if type(scope) == "table" then
		for k in pairs(scope) do
			if type(k) == "string" and k:sub(1, #last) == last then
				out[#out + 1] = path .. sep .. k
			end
		end
	end
	table.sort(out)
	return out
end

local function eval(line)
	local chunk = loadstring("return " .. line, "=repl")
	if not chunk then
		local err
		chunk, err = loadstring(line, "=repl")
		if not chunk then return false, err end
	end
	return (function(ok, ...)
		return ok, select("#", ...), { ... }
	end)(pcall(chunk))
end

function M.run()
	local history = (os.getenv("HOME") or ".") .. "/.aiotk_history"
	rl.read_history(history)
	rl.set_completer(M.complete)
	print("aiotk " .. aiotk.version .. " REPL: `aiotk` is loaded; Tab completes, Ctrl-D quits.")
	while true do
		local line = rl.readline("aiotk> ")
		if not line then break end
		if line:match("%S") then
			rl.add_history(line)
			local ok, n, results = eval(line)
			if not ok then
				print("error: " .. tostring(n))
			else
				for i = 1, n do print(show(results[i])) end
			end
		end
	end
	rl.write_history(history)
	print()
	return 0
end

return M
