/* Architectures without syscall injection: every call says so. */
#include "target/arch.h"

#if !defined(__x86_64__)
#include <errno.h>

const char *const aiotk_arch_name = "unsupported";
const aiotk_gadget aiotk_arch_gadget_syscall[] = { { NULL, 0, 0 } };
const aiotk_gadget aiotk_arch_gadget_sigreturn[] = { { NULL, 0, 0 } };
const aiotk_gadget aiotk_arch_gadget_unmap_exit[] = { { NULL, 0, 0 } };

int aiotk_arch_supported(void) { return 0; }
int aiotk_arch_get(pid_t tid, aiotk_regs *r) { (void)tid; (void)r; return -ENOSYS; }
int aiotk_arch_set(pid_t tid, const aiotk_regs *r) { (void)tid; (void)r; return -ENOSYS; }
int aiotk_arch_fpu_get(pid_t tid, uint8_t *buf, size_t cap, size_t *len)
{
	(void)tid; (void)buf; (void)cap; (void)len;
	return -ENOSYS;
}
int aiotk_arch_fpu_set(pid_t tid, const uint8_t *buf, size_t len)
{
	(void)tid; (void)buf; (void)len;
	return -ENOSYS;
}

int aiotk_arch_frame(const aiotk_regs *saved, uint64_t mask, const uint8_t *fpu,
		     size_t fpu_len, uint64_t sigreturn, uint8_t *out, size_t cap,
		     uint64_t *at, size_t *len)
{
	(void)saved; (void)mask; (void)fpu; (void)fpu_len; (void)sigreturn;
	(void)out; (void)cap; (void)at; (void)len;
	return -ENOSYS;
}
void aiotk_arch_frame_prepare(void) {}
void aiotk_arch_prepare(aiotk_regs *r, uint64_t code, uint64_t sp, long nr,
			const long a[6])
{
	(void)r; (void)code; (void)sp; (void)nr; (void)a;
}
long aiotk_arch_result(const aiotk_regs *r) { (void)r; return -ENOSYS; }
int aiotk_arch_restartable(aiotk_regs *r) { (void)r; return 0; }
const unsigned aiotk_arch_ngpr = 0;
const char *aiotk_arch_gpr_name(unsigned i) { (void)i; return "?"; }
uint64_t *aiotk_arch_gpr(aiotk_regs *r, unsigned i) { (void)i; return r->raw; }
uint64_t aiotk_arch_sp(const aiotk_regs *r) { (void)r; return 0; }
#endif
