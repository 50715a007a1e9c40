-- Dump without waiting when requests are in flight (the tail moves while
-- the process is stopped): keep the first reading and record a warning in
-- the image. Watch for 20 ms instead of the default instant re-read.
return {
	in_flight = function(ring, ctx) return "record" end,
	settle_ms = 20,
}
