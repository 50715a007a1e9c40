/* What the routines aiotk copies into a target and runs there share
 * (restorer.c, destroyer.c): a system call made inline, since they may
 * call nothing out of line (no libc, no vDSO: the code runs at another
 * address, in another process). */
#ifndef AIOTK_ROUTINE_H
#define AIOTK_ROUTINE_H

#include "base/base.h"

#if defined(__x86_64__)
/* Five arguments; the sixth (r9: mmap's offset) is always 0: the kernel
 * reads it for mmap, and an unset r9 gave EINVAL at random. */
AIOTK_INLINE long aiotk_routine_sys(long nr, long a, long b, long c, long d, long e)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = 0;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}
#endif

#endif
