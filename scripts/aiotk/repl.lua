-- The interactive REPL: line editing and history from libedit, completion
-- over the aiotk API, rings/snapshots/images printed through __tostring.
local rl = require "aiotk.readline"
local inspect = require "inspect"

local M = {}

-- Addresses and cookies read better in hex, in tables too.
local function hexed(n) return string.format("0x%x", n) end
local function big(v) return type(v) == "number" and v >= 2 ^ 32 and v == math.floor(v) end

local function show(v)
	if big(v) then return string.format("0x%x (%.0f)", v, v) end
	if type(v) == "userdata" then return tostring(v) end
	if type(v) ~= "table" then return inspect(v) end
	local mt = getmetatable(v)
	if mt and mt.__tostring then return tostring(v) end
	return inspect(v, {
		process = function(item)
			if type(item) == "userdata" then return tostring(item) end
			if big(item) then return hexed(item) end
			return item
		end,
	})
end

M.show = show

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
	local function offer(k)
		if type(k) == "string" and k:sub(1, #last) == last then out[#out + 1] = path .. sep .. k end
	end
	if type(scope) == "table" then
		for k in pairs(scope) do offer(k) end
		-- names a table loads when first used (aiotk's workflows), not yet there
		local mt = getmetatable(scope)
		local lazy = type(mt) == "table" and type(mt.__lazy) == "function" and mt.__lazy() or {}
		for k in pairs(lazy) do
			if rawget(scope, k) == nil then offer(k) end
		end
	end
	table.sort(out)
	return out
end

-- A chunk from the text so far: as an expression (its value is shown),
-- else as statements. "more" when the text is an unfinished statement
-- (the error points at the end of input), so the REPL reads on.
local function compile(text)
	local chunk = loadstring("return " .. text, "=repl")
	if chunk then return chunk end
	local err
	chunk, err = loadstring(text, "=repl")
	if chunk then return chunk end
	if err:match("<eof>['\"]?$") then return nil, "more" end
	return nil, err
end

-- Run chunk; ok, count, results or false, message with a traceback that
-- stops at the REPL's own frames.
local function run(chunk)
	local function handler(e)
		local tb = debug.traceback(tostring(e), 2)
		tb = tb:gsub("\n%s*%[C%]: in function 'xpcall'.*$", ""):gsub("\n%s*%[builtin#%d+%][^\n]*", "")
		return (tb:gsub("\nstack traceback:$", ""))
	end
	return (function(ok, ...)
		if not ok then return false, (...) end
		return true, select("#", ...), { ... }
	end)(xpcall(chunk, handler))
end

M.HELP = [[
aiotk REPL: Lua with `aiotk` loaded (aiotk.core, aiotk.lab, ...).
  help               this text and the API list;  help(fn) or help "name": one call
  Tab                completes globals, fields (aiotk.sn<Tab>) and methods (t:<Tab>)
  Ctrl-C             cancels the line being typed;  Ctrl-D quits
  an unfinished statement (function ... end, if ... end) continues on the next line
  history: ~/.aiotk_history, saved after every line
Try:  t = aiotk.attach(PID)   t:rings()   aiotk.view(t)   r = t:snapshot(t:rings()[1].addr)
      r:events()   t:detach()
]]

-- help: a table that prints as the overview and answers help(fn).
local function make_help()
	local docs = require "aiotk.docs"
	return setmetatable({}, {
		__tostring = function()
			local names = {}
			for _, e in ipairs(docs.entries) do names[#names + 1] = e[1] end
			return M.HELP .. "\nAPI: " .. table.concat(names, ", ") .. "\n" .. docs.CONVENTION
		end,
		__call = function(_, what)
			local e = docs.find(what)
			if not e then return "no help for " .. tostring(what) .. " (help lists what there is)" end
			return setmetatable({}, { __tostring = function() return docs.text(e) end })
		end,
	})
end

function M.run()
	local history = (os.getenv("HOME") or ".") .. "/.aiotk_history"
	rl.read_history(history)
	rl.set_completer(M.complete)
	_G.help = make_help()
	print("aiotk " .. aiotk.version .. " REPL: `aiotk` is loaded; help, Tab completes, Ctrl-D quits.")
	local pending = nil
	while true do
		local line, why = rl.readline(pending and "  ...> " or "aiotk> ")
		if not line and why == "interrupt" then
			print("^C")
			pending = nil
		elseif not line then
			break
		elseif pending or line:match("%S") then
			local text = pending and (pending .. "\n" .. line) or line
			local chunk, err = compile(text)
			if err == "more" then
				pending = text
			else
				pending = nil
				rl.add_history((text:gsub("\n", " ")))
				rl.write_history(history) -- as we go: a crash or kill keeps it
				if not chunk then
					print("error: " .. err)
				else
					local ok, n, results = run(chunk)
					if not ok then
						print("error: " .. tostring(n))
					else
						for i = 1, n do print(show(results[i])) end
					end
				end
			end
		end
	end
	rl.write_history(history)
	print()
	return 0
end

return M
