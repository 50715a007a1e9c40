-- Rings this host cannot make exactly (a one-page ring moving to a host
-- with 16 or more CPUs): grown in place where the space after the ring is
-- free (or not known, as from an image alone), else relocated to a free
-- address, every copy of the old id the process holds rewritten to the
-- new one; a ring whose saved range something else now holds is
-- relocated too. aiotk then writes into the program's memory and its
-- threads' registers (README, "Relocation"): a running process only.
--   aiotk restore -p PID -D DIR --policy scripts/examples/grow-or-relocate.lua
return {
	impossible = function(ring, why, host, ctx)
		if ctx.taken or ctx.room == false then return "relocate" end
		return "grow"
	end,
}
