-- aiotk hostinfo: this host's facts that decide how rings restore
local aiotk = require "aiotk"
local cmd = require "aiotk.cmdutil"
local argparse = require "argparse"

local parser = argparse("aiotk hostinfo", "Print this host's facts: possible CPUs, page size, kernel release and ring formula, fs.aio-max-nr and aio-nr.")
parser:flag("--json", "machine-readable output")
local args = parser:parse({ ... })

local h, err = aiotk.host()
if not h then return cmd.fail("hostinfo", err) end
local g = aiotk.geometry(1)
h.min_ring_len = g.ring_len
h.min_ring_nr = g.nr
if args.json then
	print(aiotk.json(h))
	return 0
end
print(string.format("kernel      %s (%s ring formula)", h.release, h.formula))
print(string.format("cpus        %d possible", h.cpus))
print(string.format("page size   %d", h.page_size))
print(string.format("aio-nr      %d of fs.aio-max-nr %d", h.aio_nr, h.aio_max_nr))
print(string.format("min ring    %d bytes (%d slots, io_setup(1))", h.min_ring_len, h.min_ring_nr))
return 0
