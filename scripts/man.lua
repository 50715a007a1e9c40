-- aiotk man: write the aiotk(1) manual page (roff) from every command's --help
local argparse = require "argparse"

local parser = argparse("aiotk man",
	"Write aiotk(1), the manual page, to stdout: the usage, the global options and, for each " ..
	"command, the text its --help prints, so the two cannot drift (the build installs its output).")
parser:parse({ ... })

local exe = (AIOTK_EXE_DIR or ".") .. "/aiotk"
local function run(args)
	local p = assert(io.popen(string.format("'%s' %s 2>&1", exe, args)))
	local out = p:read("*a")
	p:close()
	return out
end

-- roff: backslashes doubled, lines starting with . or ' protected.
local function roff(text)
	text = text:gsub("\\", "\\e")
	return (text:gsub("\n([.'])", "\n\\&%1"):gsub("^([.'])", "\\&%1"))
end

local out = {}
local function w(s) out[#out + 1] = s end
w('.TH AIOTK 1 "" "aiotk ' .. aiotk.version .. '" "User Commands"\n')
w(".SH NAME\naiotk \\- checkpoint, restore and inspect Linux kernel AIO rings\n")
local usage = run("--help")
w(".SH SYNOPSIS\n.nf\n" .. roff(usage:match("^(.-)\n\n") or "") .. "\n.fi\n")
w(".SH OPTIONS\n.nf\n" .. roff(usage:match("\n\n(options.-)\n\n") or "") .. "\n.fi\n")
w(".SH DESCRIPTION\naiotk saves the rings io_setup(2) maps into a process (address, size, head, tail, " ..
	"unreaped events, the io_setup n, requests in flight) and rebuilds them exactly; it works on " ..
	"live processes, on its own images and on CRIU dumps, and inside CRIU as a plugin " ..
	"(aiotk_criu.so). Commands and policies are Lua scripts; see the README and docs/SCRIPTING.md.\n")
w(".SH COMMANDS\n")
for name in run("--list-commands"):gmatch("[^\n]+") do
	w(".SS " .. name .. "\n.nf\n" .. roff(run("help " .. name)) .. "\n.fi\n")
end
w(".SH EXIT STATUS\n0 success; 1 a failed operation; 2 a usage error; check and migrate: 3 restorable " ..
	"under the policy, 4 a restore would fail; verify: 1 differences.\n")
w(".SH ENVIRONMENT\n.TP\nAIOTK_PATH\ndirectories searched first for commands and policy.lua\n" ..
	".TP\nAIOTK_POLICY\na policy file the CRIU plugin and criu-hook apply last\n" ..
	".TP\nAIOTK_SCRIPTS_DIR\nthe shipped scripts, when not in the installed place\n")
w(".SH FILES\n~/.config/aiotk/scripts, /etc/aiotk: user and machine commands and policy.lua; " ..
	"~/.aiotk_history: the REPL's history\n")
w(".SH SEE ALSO\ncriu(8), io_setup(2)\n")
io.write(table.concat(out))
return 0
