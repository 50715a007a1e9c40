#include "target/target.h"

#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* Scratch memory is asked for low in the address space (a hint, not
 * MAP_FIXED): without one the kernel places it top-down, in the hole a
 * destroyed ring just left, which is where a restore is about to put a
 * ring back. Taken, the hint gives way to the kernel's choice, and a
 * remap onto the workspace moves it (aiotk_ws_vacate). */
#define SCRATCH_HINT 0x10000000ull

static int map_prot(aiotk_target *t, size_t len, int prot, int flags, uint64_t *addr,
		    aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mmap, (long)SCRATCH_HINT, (long)len, prot,
			   flags | MAP_ANONYMOUS, -1, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "cannot map %zu bytes of scratch memory: %s",
				  len, strerror((int)-r));
	*addr = (uint64_t)r;
	return 0;
}

static int map(aiotk_target *t, size_t len, int flags, uint64_t *addr,
	       aiotk_err *err)
{
	return map_prot(t, len, PROT_READ | PROT_WRITE, flags, addr, err);
}

int aiotk_scratch_map(aiotk_target *t, size_t len, uint64_t *addr,
		      aiotk_err *err)
{
	return map(t, len, MAP_PRIVATE, addr, err);
}

int aiotk_scratch_map_exec(aiotk_target *t, size_t len, uint64_t *addr)
{
	return map_prot(t, len, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE, addr, NULL);
}

int aiotk_scratch_map_shared(aiotk_target *t, size_t len, uint64_t *addr,
			     aiotk_err *err)
{
	return map(t, len, MAP_SHARED, addr, err);
}

int aiotk_scratch_map_shared_exec(aiotk_target *t, size_t len, uint64_t *addr)
{
	return map_prot(t, len, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, addr, NULL);
}

void aiotk_scratch_unmap(aiotk_target *t, uint64_t addr, size_t len)
{
	if (addr)
		aiotk_sys(t, SYS_munmap, (long)addr, (long)len, 0, 0, 0, 0);
}
