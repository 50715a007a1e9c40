/* What every part of the core shares: the public header, and the rules
 * about raw system call results and memory pages that every subject
 * applies. Not part of the public API. */
#ifndef AIOTK_BASE_H
#define AIOTK_BASE_H

#include "aiotk.h"

/* Inlined even without optimisation: the restorer (aio/rebuild/restorer.c)
 * runs copied into another process and may call nothing out of line, and
 * it uses the helpers below. */
#define AIOTK_INLINE static inline __attribute__((always_inline))

/* A raw system call's result that is -errno: the kernel returns errors as
 * -1..-4095 and every other value (an address from mmap, say) as success. */
AIOTK_INLINE int aiotk_sys_failed(long r)
{
	return r < 0 && r > -4096;
}

/* The page size the injected mappings (journal page, scratch, the
 * restorer's room) are rounded to: x86_64's, the only architecture whose
 * injection is built (target/arch.h), and the least alignment any mapping
 * has (aiotk_remap checks it before mremap does). Ring lengths use the
 * host's page size from aio/geometry.c instead. */
#define AIOTK_PAGE 4096u
AIOTK_INLINE uint64_t aiotk_page_round(uint64_t len)
{
	return (len + AIOTK_PAGE - 1) / AIOTK_PAGE * AIOTK_PAGE;
}

/* The journal page io_setup writes new context ids into (aio/rebuild:
 * converge.c says why, workspace.c and the restorer map it): one page,
 * and a leftover one is recognised by that length (target/maps.c). */
#define AIOTK_JOURNAL_LEN AIOTK_PAGE
/* Where a workspace's journal page is asked for (MAP_FIXED_NOREPLACE;
 * taken, wherever the kernel puts scratch memory): a page of its shape
 * there is a leftover even before its magic is written, which a kill
 * between the mmap and that write leaves (aiotk_remove_journals).
 * Beside AIOTK_UNDO_AT and AIOTK_RELOC_AT, far from where the kernel or
 * programs put mappings. */
#define AIOTK_WS_JOURNAL_AT 0x3a1050000000ull

#endif
