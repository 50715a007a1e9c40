-- aiotk criu-fixup: set CRIU's nr_req to the smallest n, to fit aio-max-nr
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"
local criu = require "aiotk.criu"
local hostmodel = require "aiotk.hostmodel"

local parser = argparse("aiotk criu-fixup",
	"Rewrite every aio_ring_entry.nr_req of a CRIU dump to the smallest io_setup n that " ..
	"rebuilds that ring on the target host (this one unless told), so that CRIU's own " ..
	"restore fits fs.aio-max-nr. Only those bytes change. With -o the result is a new " ..
	"directory; without, files are replaced atomically and mm-PID.img.orig is kept.")
parser:argument("dir", "CRIU dump directory")
parser:option("-o --output", "write the fixed dump here (must not exist)")
parser:flag("--no-backup", "in place: do not keep mm-PID.img.orig")
hostmodel.options(parser)
local args = parser:parse({ ... })

local host, herr = hostmodel.from_args(args)
if not host then return cmd.fail("criu-fixup", herr) end
local procs, err = criu.read(args.dir)
if not procs then return cmd.fail("criu-fixup", err) end
local changes, ferr = criu.fixup(args.dir, procs, host, args.output, args.no_backup)
if not changes then return cmd.fail("criu-fixup", ferr) end
for _, c in ipairs(changes) do
	print(string.format("pid %d ring 0x%x: nr_req %d -> %d", c.pid, c.addr, c.from, c.to))
end
print("written to " .. (args.output or args.dir))
return 0
