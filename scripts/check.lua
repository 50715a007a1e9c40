-- aiotk check: will these rings restore on that host? (touches nothing)
local aiotk = require "aiotk"
local hostmodel = require "aiotk.hostmodel"
local argparse = require "argparse"

local parser = argparse("aiotk check",
	"For every ring of an aiotk image (-D) or a CRIU dump (--criu), say whether and how it " ..
	"restores on a host (this one unless told): exactly with which io_setup n, or why not. " ..
	"For CRIU dumps also whether CRIU's own restore would. Exit 0: every ring restores " ..
	"exactly; 3: not within the host's aio-max-nr budget as it stands; 4: impossible.")
parser:mutex(parser:option("-D --dir", "aiotk image directory"),
	parser:option("--criu", "CRIU dump directory"))
hostmodel.options(parser)
parser:flag("--json", "machine-readable output")
local args = parser:parse({ ... })
if not args.dir and not args.criu then parser:error("give -D DIR or --criu DIR") end

local host, herr = hostmodel.from_args(args)
if not host then
	io.stderr:write("aiotk check: ", herr, "\n")
	return 1
end

-- An aiotk image is a CRIU-like list of processes with no nr_req.
local function procs_of_image(dir)
	local img, err = aiotk.read_image(dir)
	if not img then return nil, err end
	local rings = {}
	for _, r in ipairs(img:rings()) do rings[#rings + 1] = { ring = r, nr_req = r.n ~= 0 and r.n or nil } end
	return { { pid = img.pid, rings = rings } }
end

local criu = require "aiotk.criu"
local procs, err
if args.criu then procs, err = criu.read(args.criu) else procs, err = procs_of_image(args.dir) end
if not procs then
	io.stderr:write("aiotk check: ", err, "\n")
	return 1
end
for _, p in ipairs(procs) do
	for _, c in ipairs(p.rings) do c.nr_req = c.nr_req or assert(aiotk.min_n(c.ring.ring_len)) end
end
local rows = criu.check(procs, host)

local worst = 0
for _, row in ipairs(rows) do
	local code = row.aiotk:match("^exact") and 0 or row.aiotk:match("^impossible") and 4 or 3
	worst = math.max(worst, code)
	row.exact = code == 0
end

if args.json then
	local out = aiotk.array()
	for i, row in ipairs(rows) do
		out[i] = { pid = row.pid, addr = string.format("0x%x", row.addr), ring_len = row.ring_len,
			n = row.n, aiotk = row.aiotk, exact = row.exact, criu = args.criu and row.criu or nil,
			nr_req = args.criu and row.nr_req or nil }
	end
	print(aiotk.json { host = host, rings = out })
	return worst
end

print("for " .. hostmodel.describe(host))
for _, row in ipairs(rows) do
	print(string.format("ring 0x%x (%d bytes%s): aiotk %s", row.addr, row.ring_len,
		row.pid and row.pid ~= 0 and (", pid " .. row.pid) or "", row.aiotk))
	if args.criu then print(string.format("    CRIU (nr_req %d): %s", row.nr_req, row.criu)) end
end
return worst
