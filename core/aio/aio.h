/* The AIO ring itself, shared inside the core; not part of the public
 * API (the ring's layout is public: aiotk.h). */
#ifndef AIOTK_AIO_H
#define AIOTK_AIO_H

#include "base/base.h"

/* The header fields of r, from a header as the kernel lays it out. */
void aiotk_ring_set_header(aiotk_ring *r, const aiotk_ring_header *h);

#endif
