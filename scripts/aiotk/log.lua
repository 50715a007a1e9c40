-- Where aiotk's messages go: stderr ("aiotk: ..."), quieter with -q,
-- with debug lines under -v, and with --log-file FILE also appended to
-- FILE with a timestamp. The policy's log hook writes through here by
-- default; the CRIU plugin replaces it with CRIU's log.
local M = { level = 1, file = nil }

M.QUIET, M.NORMAL, M.VERBOSE = 0, 1, 2

local function to_file(kind, msg)
	if not M.file then return end
	local f = io.open(M.file, "a")
	if f then
		f:write(os.date("!%Y-%m-%dT%H:%M:%SZ "), kind, " ", msg, "\n")
		f:close()
	end
end

function M.info(msg)
	to_file("info", msg)
	if M.level >= M.NORMAL then io.stderr:write("aiotk: ", msg, "\n") end
end

function M.debug(msg)
	to_file("debug", msg)
	if M.level >= M.VERBOSE then io.stderr:write("aiotk: ", msg, "\n") end
end

-- Errors are always shown, whatever the level.
function M.error(prefix, msg)
	to_file("error", prefix .. msg)
	io.stderr:write(prefix, msg, "\n")
end

return M
