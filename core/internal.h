/* Helpers shared by the core's files; not part of the public API. */
#ifndef AIOTK_INTERNAL_H
#define AIOTK_INTERNAL_H

#include "aiotk.h"

/* Memory the target itself owns, for syscall arguments it must read. */
int aiotk_scratch_map(aiotk_target *t, size_t len, uint64_t *addr,
		      aiotk_err *err);
void aiotk_scratch_unmap(aiotk_target *t, uint64_t addr, size_t len);

#endif
