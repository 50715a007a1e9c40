/* Architectures without syscall injection: every call says so. */
#include "arch.h"

#if !defined(__x86_64__)
#include <errno.h>

const char *const aiotk_arch_name = "unsupported";
const uint8_t aiotk_arch_code[8];

int aiotk_arch_supported(void) { return 0; }
int aiotk_arch_get(pid_t tid, aiotk_regs *r) { (void)tid; (void)r; return -ENOSYS; }
int aiotk_arch_set(pid_t tid, const aiotk_regs *r) { (void)tid; (void)r; return -ENOSYS; }
uint64_t aiotk_arch_ip(const aiotk_regs *r) { (void)r; return 0; }
void aiotk_arch_prepare(aiotk_regs *r, uint64_t code, long nr, const long a[6])
{
	(void)r; (void)code; (void)nr; (void)a;
}
long aiotk_arch_result(const aiotk_regs *r) { (void)r; return -ENOSYS; }
int aiotk_arch_restartable(aiotk_regs *r) { (void)r; return 0; }
#endif
