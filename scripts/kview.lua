-- aiotk kview: the kernel view's BPF programs: open them as a command does (pinned for the next ones), or remove their pin
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"
local kernel = require "aiotk.kernel"
local core = aiotk.core

local parser = argparse("aiotk kview",
	"Every command that looks at a process opens the kernel view's BPF programs. Loading them " ..
	"takes about 0.25 s, so the first command (as root) pins them under a bpffs directory " ..
	"(policy kview_pin, default /sys/fs/bpf; bpffs mounted there if it is an empty directory " ..
	"without one, policy kview_pin_mount) as aiotk-VERSION-HASH, mode 0700, and later commands " ..
	"open that pin in about 1 ms. The hash is of this build's BPF object: another build or " ..
	"version never uses it. Without root (CAP_BPF, CAP_PERFMON and write access there) nothing " ..
	"is pinned or used. Pins last until reboot, `aiotk kview --unpin`, or the package's " ..
	"removal. Without options: open the programs as a command would (making the pin if there " ..
	"is none) and say how, with other builds' pins found there.")
parser:flag("--unpin", "remove this build's pin (commands running keep their programs until " ..
	"they end; the next command loads and pins again unless kview_pin is false)")
parser:flag("--all", "with --unpin: every aiotk-* pin there, of any build or version")
parser:option("--dir", "the bpffs directory pins are under (default: $AIOTK_KVIEW_PIN, else " ..
	"the policy's kview_pin, else /sys/fs/bpf)")
cmd.policy_option(parser)
cmd.json_flag(parser)
local args = parser:parse({ ... })

if args.all and not args.unpin then
	io.stderr:write("aiotk kview: --all goes with --unpin\n")
	return 2
end
local policy, perr = cmd.load_policy(args)
if not policy then return cmd.fail("kview", perr) end
local opts = kernel.pin_opts(policy)
if args.dir then opts = { pin = args.dir, mount = policy.kview_pin_mount } end
local dir = opts and opts.pin or require("aiotk.policy").kview_pin

if args.unpin then
	local n, err = core.kview_unpin(dir, args.all)
	if not n then return cmd.fail("kview", err) end
	if args.json then
		print(aiotk.json { dir = dir, removed = n })
	else
		print(string.format("removed %d pin(s) under %s", n, dir))
	end
	return 0
end

local t0 = core.now_ns()
local v, err = core.kviewer(opts)
local ns = core.now_ns() - t0
if not v then return cmd.fail("kview", err) end
local info = v:info()
v:close()
local others = aiotk.array()
local name = core.kview_pin_name()
for _, e in ipairs(core.listdir(dir) or {}) do
	if e:match("^aiotk%-") and e ~= name then others[#others + 1] = dir .. "/" .. e end
end
-- ENOTEMPTY/EEXIST at the rename: another command pinned them meanwhile
if info.pin_error and (info.pin_error:match("not empty") or info.pin_error:match("exists")) then
	info.pin_error = "another command pinned them at the same time; the next one opens that pin"
end
local how = info.from_pin and "opened from its pin" or
	info.pinned and "loaded, and pinned for the next commands" or "loaded"
local why_not = not info.from_pin and not info.pinned and (not opts and
	"kview_pin is false or $AIOTK_KVIEW_PIN=off" or info.no_bpffs and
	("no bpffs at " .. dir .. " (" .. (info.pin_error or "?") .. ")") or info.pin_error or "?")
if args.json then
	print(aiotk.json { how = info.from_pin and "pin" or "load", pinned = info.pinned,
		from_pin = info.from_pin, replaced = info.replaced, mounted = info.mounted,
		pin = info.pin or aiotk.null, pin_error = info.pin_error or aiotk.null,
		prog_ids = aiotk.array(info.prog_ids), open_ns = info.open_ns, ns = ns,
		other_pins = others })
	return 0
end
print(string.format("kernel view: %s in %.1f ms (programs %d and %d)", how, ns / 1e6,
	info.prog_ids[1], info.prog_ids[2]))
if why_not then print("not pinned: " .. why_not) end
if info.from_pin or info.pinned then
	print("pin: " .. info.pin .. (info.replaced and " (replaced an unusable one)" or ""))
end
if info.mounted then print("mounted bpffs at " .. dir) end
for _, o in ipairs(others) do print("another build's pin: " .. o .. " (aiotk kview --unpin --all removes it)") end
return 0
