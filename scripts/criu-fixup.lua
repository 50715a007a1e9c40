-- aiotk criu-fixup: fit a CRIU dump's AIO rings to a host (nr_req, or grow)
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"
local criu = require "aiotk.criu"
local hostmodel = require "aiotk.hostmodel"
local relocation = require "aiotk.criu_relocate"
local aiotk = require "aiotk"

local parser = argparse("aiotk criu-fixup",
	"Make every AIO ring of a CRIU dump restorable by CRIU on the target host (this one unless " ..
	"told): aio_ring_entry.nr_req becomes the smallest io_setup n that rebuilds that ring there, " ..
	"so CRIU's restore fits fs.aio-max-nr (only those bytes change); a ring smaller than that " ..
	"host can make (more possible CPUs) grows when the policy's impossible hook says grow: its " ..
	"VMA end, ring_len and nr_req in the mm image and the header's nr in the saved pages, only " ..
	"into address space the dump leaves free; when it says relocate, the ring moves to a free " ..
	"address of the dump's layout (its VMA and aio entry, its pages in pagemap and pages) and " ..
	"every copy of its old id in the dump's private pages and threads' registers is rewritten, " ..
	"each listed. With -o the result is a new directory; without, " ..
	"files are replaced atomically and the first NAME.img.orig of each is kept, so --undo can put the " ..
	"dump back as CRIU wrote it (and a fixup for another host starts from there).")
parser:argument("dir", "CRIU dump directory"):args "?"
parser:option("-D --dir", "the same as the DIR argument"):target "dir_opt"
parser:option("-o --output", "write the fixed dump here (must not exist)")
parser:flag("--no-backup", "in place: do not keep the .orig copies")
parser:flag("--undo", "put back the dump as CRIU wrote it (from the .orig copies), then stop")
cmd.policy_option(parser)
cmd.json_flag(parser)
hostmodel.options(parser)
local args = parser:parse({ ... })

if (args.dir == nil) == (args.dir_opt == nil) then
	io.stderr:write("aiotk criu-fixup: give the CRIU dump directory once (DIR or -D DIR)\n")
	return 2
end
args.dir = args.dir or args.dir_opt
local policy, perr = cmd.load_policy(args)
if not policy then return cmd.fail("criu-fixup", perr, 2) end
if args.undo then
	local back, uerr = criu.undo(args.dir)
	if not back then return cmd.fail("criu-fixup", uerr) end
	print(#back == 0 and "nothing to undo in " .. args.dir or
		string.format("put back %s from .orig", table.concat(back, ", ")))
	return 0
end
local host, herr = hostmodel.from_args(args)
if not host then return cmd.fail("criu-fixup", herr) end
local procs, err = criu.read(args.dir)
if not procs then return cmd.fail("criu-fixup", err) end
local changes, ferr = criu.fixup(args.dir, procs, host,
	{ out = args.output, no_backup = args.no_backup, policy = policy })
if not changes then return cmd.fail("criu-fixup", ferr) end
local function refs_of(c)
	local list = aiotk.array()
	for i, r in ipairs(c.references or {}) do
		list[i] = { file = r.file, offset = r.file_off, addr = r.addr and aiotk.hex(r.addr),
			mapping = r.map_start and string.format("0x%x-0x%x", r.map_start, r.map_finish),
			tid = r.tid, register = r.reg, kind = r.kind, old = aiotk.hex(r.old), new = aiotk.hex(r.value),
			where = relocation.describe(r) }
	end
	return list
end
if args.json then
	local list = aiotk.array()
	for i, c in ipairs(changes) do
		list[i] = { pid = c.pid, addr = aiotk.hex(c.addr), nr_req_from = c.from, nr_req_to = c.to,
			grown_from = c.grown_from, grown_to = c.grown_to,
			relocated_to = c.relocated_to and aiotk.hex(c.relocated_to),
			references = c.relocated_to and refs_of(c) or nil,
			reference_count = c.relocated_to and #c.references or nil }
	end
	print(aiotk.json { dir = args.dir, output = args.output or args.dir, changes = list })
	return 0
end
for _, c in ipairs(changes) do
	if c.relocated_to then
		print(string.format("pid %d ring 0x%x: relocated to 0x%x (%d bytes, nr_req %d -> %d): %d " ..
			"reference(s) rewritten", c.pid, c.addr, c.relocated_to, c.grown_to, c.from, c.to, #c.references))
		for _, r in ipairs(c.references) do print("    " .. relocation.describe(r)) end
	else
		print(string.format("pid %d ring 0x%x: nr_req %d -> %d%s", c.pid, c.addr, c.from, c.to,
			c.grown_to and string.format(", grown from %d to %d bytes", c.grown_from, c.grown_to) or ""))
	end
end
print("written to " .. (args.output or args.dir))
return 0
