-- Tables for JSON and display: images, rings and events as plain tables
-- with 64-bit values as "0x..." strings, and JSON encoding.
local M = {}

function M.event_table(ev)
	return { data = ev.data, obj = ev.obj, res = ev.res, res2 = ev.res2 }
end

-- A plain table for JSON: 64-bit values as "0x..." strings.
function M.ring_table(r)
	local t = {
		addr = string.format("0x%x", r.addr), ring_len = r.ring_len,
		nr = r.nr, head = r.head, tail = r.tail, n = r.n ~= 0 and r.n or M.null,
		wrapped = r.wrapped, events = M.array(r:events()),
		kernel_tail = r.kernel_tail,
	}
	if r.ncaptured > 0 then t.captured = M.array(r:captured()) end
	return t
end

function M.image_table(img)
	local t = {
		format = img.format,
		host = {
			cpus = img.cpus, page_size = img.page_size, release = img.release,
			formula = img.formula, aio_max_nr = img.aio_max_nr,
		},
		time_ns = img.time_ns,
		pid = img.pid ~= 0 and img.pid or nil,
		warnings = img.warnings ~= "" and img.warnings or nil,
		stopped_ns = img.stopped_ns ~= 0 and img.stopped_ns or nil,
		rings = M.array(),
	}
	for i, r in ipairs(img:rings()) do t.rings[i] = M.ring_table(r) end
	if img.nurings > 0 then
		local uring = require "aiotk.uring"
		t.urings = M.array()
		for i, u in ipairs(img:urings()) do t.urings[i] = uring.row(u) end
	end
	return t
end

local ARRAY = { __jsontype = "array" }

-- Mark a list so that it encodes as [] even when empty.
function M.array(t) return setmetatable(t or {}, ARRAY) end

-- JSON's null, for values that are unknown (not zero, not absent).
M.null = require("dkjson").null

-- Every string key used anywhere in value, as a set.
local function keys_of(value, seen, keys)
	if type(value) ~= "table" or seen[value] then return keys end
	seen[value] = true
	for k, v in pairs(value) do
		if type(k) == "string" then keys[k] = true end
		keys_of(v, seen, keys)
	end
	return keys
end

-- dkjson writes keys in the order given, so with every key sorted the
-- same data always encodes to the same text.
function M.json(value)
	local order = {}
	for k in pairs(keys_of(value, {}, {})) do order[#order + 1] = k end
	table.sort(order)
	return require("dkjson").encode(value, { indent = false, keyorder = order })
end

return M
