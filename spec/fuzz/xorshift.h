/* The fuzz drivers' deterministic random numbers (xorshift64): the same
 * mutations on every run, so a failure reproduces. */
#ifndef AIOTK_XORSHIFT_H
#define AIOTK_XORSHIFT_H

#include <stdint.h>

static uint64_t xorshift_state = 0x9e3779b97f4a7c15ull;

static inline uint64_t next(void)
{
	xorshift_state ^= xorshift_state << 13;
	xorshift_state ^= xorshift_state >> 7;
	xorshift_state ^= xorshift_state << 17;
	return xorshift_state;
}

#endif
