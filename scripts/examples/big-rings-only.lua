-- Restore (and dump) only rings of at least 64 KiB, logging what is left.
return {
	filter = function(ring, ctx)
		if ring.ring_len >= 65536 then return true end
		io.stderr:write(string.format("policy: leaving ring 0x%x (%d bytes) out of the %s\n",
			ring.addr, ring.ring_len, ctx.phase))
		return false
	end,
}
