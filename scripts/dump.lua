-- aiotk dump: save the AIO rings of a running process to an image
local aiotk = require "aiotk"
local argparse = require "argparse"

local parser = argparse("aiotk dump",
	"Stop every thread of a process (ptrace, no signal), read its AIO rings, let it go, " ..
	"write the image. The image records how long the process was stopped.")
parser:option("-p --pid", "process to dump"):convert(tonumber):count(1)
parser:option("-D --dir", "image directory to write"):count(1)
parser:flag("--area", "also save every slot of each ring, not only the live events")
local args = parser:parse({ ... })

local img, err = aiotk.dump_process(args.pid, args.dir, { area = args.area })
if not img then
	io.stderr:write("aiotk dump: ", err, "\n")
	return 1
end
print(string.format("dumped %d ring(s) of process %d to %s; stopped %.3f ms",
	img.nrings, args.pid, args.dir, img.stopped_ns / 1e6))
return 0
