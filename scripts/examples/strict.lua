-- Refuse anything that is not an exact rebuild: rings fuller than this
-- host's kernel lets be outstanding fail instead of being nudged in.
return {
	overfull = function(ring, capacity, host) return "fail" end,
}
