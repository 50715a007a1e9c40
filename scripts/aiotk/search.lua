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

-- package.path searches dirs first; returns dirs.
function M.install(shipped)
	local dirs = M.dirs(shipped)
	local paths = {}
	for _, d in ipairs(dirs) do paths[#paths + 1] = d .. "/?.lua;" .. d .. "/?/init.lua" end
	package.path = table.concat(paths, ";") .. ";" .. package.path
	return dirs
end

return M
