#include "internal.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

int aiotk_scratch_map(aiotk_target *t, size_t len, uint64_t *addr,
		      aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mmap, 0, (long)len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r < 0 && r > -4096)
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "cannot map %zu bytes of scratch memory: %s",
				  len, strerror((int)-r));
	*addr = (uint64_t)r;
	return 0;
}

void aiotk_scratch_unmap(aiotk_target *t, uint64_t addr, size_t len)
{
	if (addr)
		aiotk_sys(t, SYS_munmap, (long)addr, (long)len, 0, 0, 0, 0);
}
