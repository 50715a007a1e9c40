-- The host a check, a plan or a fixup is for: this host, a hostinfo JSON
-- file (--host FILE), or facts given one by one (--cpus, --page-size,
-- --kernel, --aio-max-nr). Shared by check, criu-fixup and import.
local aiotk = require "aiotk"

local M = {}

-- Add the host options to an argparse parser.
function M.options(parser)
	parser:option("--host", "host facts: a file written by `aiotk hostinfo --json`")
	parser:option("--cpus", "possible CPUs of the target host"):convert(tonumber)
	parser:option("--page-size", "page size of the target host"):convert(tonumber)
	parser:option("--kernel", "ring formula of the target kernel"):choices { "current", "legacy" }
	parser:option("--aio-max-nr", "fs.aio-max-nr of the target host"):convert(tonumber)
end

-- The host table {cpus, page_size, formula, aio_max_nr, aio_nr, name}.
function M.from_args(args)
	local h = assert(aiotk.host())
	h.name = "this host"
	if args.host then
		local f, err = io.open(args.host)
		if not f then return nil, "cannot read host file: " .. err end
		local doc, _, jerr = require("dkjson").decode(f:read("*a"))
		f:close()
		if type(doc) ~= "table" or not doc.cpus then
			return nil, string.format("%s: not a host file (%s); write one with `aiotk hostinfo --json`",
				args.host, jerr or "no cpus field")
		end
		h = doc
		h.aio_nr = h.aio_nr or 0
		h.name = args.host
	end
	local given = args.cpus or args.page_size or args.kernel or args.aio_max_nr
	if given and not args.host then h.aio_nr = 0 h.name = "the given host" end
	h.cpus = args.cpus or h.cpus
	h.page_size = args.page_size or h.page_size
	h.formula = args.kernel or h.formula or "current"
	h.aio_max_nr = args.aio_max_nr or h.aio_max_nr or 65536
	return h
end

-- The geometry model of host h (what io_setup(n) makes there); a policy's
-- `model` fields, when set, stand in for the host's.
function M.model(h, policy)
	local m = policy and policy.model or {}
	return { cpus = m.cpus or h.cpus, page_size = m.page_size or h.page_size,
		formula = m.formula or h.formula }
end

function M.describe(h)
	return string.format("%s: %d CPUs, %d-byte pages, %s formula, aio-max-nr %d (aio-nr %d)",
		h.name, h.cpus, h.page_size, h.formula, h.aio_max_nr, h.aio_nr or 0)
end

return M
