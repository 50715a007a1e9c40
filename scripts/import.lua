-- aiotk import: convert a CRIU dump's AIO rings to aiotk images
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"
local criu = require "aiotk.criu"

local parser = argparse("aiotk import",
	"Convert the AIO rings of a CRIU dump to aiotk images, so that `aiotk restore -p PID` " ..
	"can rebuild them in a live process. One process: the image is OUT; several: OUT/PID.")
parser:option("--criu", "CRIU dump directory"):count(1)
parser:option("-D --dir", "output image directory"):count(1)
cmd.json_flag(parser)
local args = parser:parse({ ... })

local procs, err = criu.read(args.criu)
if not procs then return cmd.fail("import", err) end
local written, werr = criu.import(procs, args.dir)
if not written then return cmd.fail("import", werr) end
if args.json then
	print(require("aiotk").json { source = args.criu, written = require("aiotk").array(written) })
	return 0
end
for _, w in ipairs(written) do
	print(string.format("process %d: %d ring(s) -> %s", w.pid, w.rings, w.dir))
end
return 0
