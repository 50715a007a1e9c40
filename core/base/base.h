/* What every part of the core shares: the public header, and the rules
 * about raw system call results and memory pages that every subject
 * applies. Not part of the public API. */
#ifndef AIOTK_BASE_H
#define AIOTK_BASE_H

#include "aiotk.h"

/* A raw system call's result that is -errno: the kernel returns errors as
 * -1..-4095 and every other value (an address from mmap, say) as success. */
static inline int aiotk_sys_failed(long r)
{
	return r < 0 && r > -4096;
}

/* The page size the injected mappings (journal page, scratch, the
 * restorer's room) are rounded to: x86_64's, the only architecture whose
 * injection is built (target/arch.h). Ring lengths use the host's page
 * size from aio/geometry.c instead. */
#define AIOTK_PAGE 4096u
static inline uint64_t aiotk_page_round(uint64_t len)
{
	return (len + AIOTK_PAGE - 1) / AIOTK_PAGE * AIOTK_PAGE;
}

#endif
