-- Grow rings this host cannot make exactly (a one-page ring moving to a
-- host with 16 or more CPUs) instead of failing: the smallest ring the host
-- makes, at the same address, with the same head, tail and events.
--   aiotk restore -p PID -D DIR --policy scripts/examples/grow.lua
return {
	impossible = function(ring, why, host) return "grow" end,
}
