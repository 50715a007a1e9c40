-- aiotk restore: rebuild saved AIO rings inside a running process
local aiotk = require "aiotk"
local argparse = require "argparse"

local parser = argparse("aiotk restore",
	"Rebuild every ring of an image inside a running process, at its saved address, with " ..
	"its saved size, head, tail and events. The process makes the system calls itself " ..
	"(ptrace injection); any failure undoes everything and the process carries on.")
parser:option("-p --pid", "process to restore into"):convert(tonumber):count(1)
parser:option("-D --dir", "image directory"):count(1)
parser:flag("--replace", "an AIO ring already at a saved address is destroyed first")
local args = parser:parse({ ... })

local img, err = aiotk.read_image(args.dir)
if not img then
	io.stderr:write("aiotk restore: ", err, "\n")
	return 1
end
local res, rerr = aiotk.restore_process(args.pid, img:rings(), { replace = args.replace })
if not res then
	io.stderr:write("aiotk restore: process ", args.pid, ": ", rerr, "\n")
	return 1
end
print(string.format("restored %d ring(s) into process %d; stopped %.3f ms", #res, args.pid,
	res.stopped_ns / 1e6))
return 0
