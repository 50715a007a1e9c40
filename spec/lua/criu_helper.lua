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
-- plugin or with none; env: assignments put before the command.
function M.criu(args, plugin, env)
	return sh(string.format("%s %s %s -L %s -v4 -o criu.log", env or "", M.CRIU, args,
		plugin and M.PLUGIN_DIR or M.EMPTY))
end

-- For busted: true when CRIU is there, else marks the test pending, why.
function M.need(pending)
	if not M.CRIU then pending("needs CRIU 4.x: " .. M.WHY) return false end
	return true
end

return M
