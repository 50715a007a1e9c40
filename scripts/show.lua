-- aiotk show: print the rings saved in an image directory
local aiotk = require "aiotk"
local argparse = require "argparse"

local parser = argparse("aiotk show", "Print the rings saved in an aiotk image directory.")
parser:argument("dir", "image directory (holds rings.img)")
parser:flag("--json", "machine-readable output; 64-bit values are \"0x...\" strings")
parser:option("--events", "events to list per ring in the table (0: none)", "4"):convert(tonumber)
local args = parser:parse({ ... })

local img, err = aiotk.read_image(args.dir)
if not img then
	io.stderr:write("aiotk show: ", err, "\n")
	return 1
end

if args.json then
	print(aiotk.json(aiotk.image_table(img)))
	return 0
end

print(string.format("image %s: format %d, %d ring(s), dumped on %s (%d CPUs, %d-byte pages, %s formula, aio-max-nr %d)%s",
	args.dir, img.format, img.nrings, img.release, img.cpus, img.page_size,
	img.formula, img.aio_max_nr,
	img.pid ~= 0 and string.format(", pid %d stopped %.3f ms", img.pid, img.stopped_ns / 1e6) or ""))
print(string.format("%-18s %9s %7s %7s %7s %7s %s", "addr", "ring_len", "nr", "head", "tail", "events", "n"))
for _, r in ipairs(img:rings()) do
	print(string.format("0x%-16x %9d %7d %7d %7d %7d %s%s", r.addr, r.ring_len, r.nr,
		r.head, r.tail, #r, r.n ~= 0 and tostring(r.n) or "-", r.wrapped and "  wrapped" or ""))
	local shown = math.min(#r, args.events)
	for i = 1, shown do
		local e = r:event(i)
		print(string.format("    slot %-7d data %s obj %s res %d res2 %d",
			(r.head + i - 1) % r.nr, e.data, e.obj, e.res, e.res2))
	end
	if #r > shown and shown > 0 then print(string.format("    ... %d more", #r - shown)) end
end
return 0
