/* x86_64 syscall injection: registers, gadgets, restart. */
#include "target/arch.h"

#if defined(__x86_64__)
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/user.h>

#define ERESTARTNOHAND 514 /* kernel-internal: restart unless a handler runs */

_Static_assert(sizeof(struct user_regs_struct) <= sizeof(aiotk_regs),
	       "aiotk_regs too small");

const char *const aiotk_arch_name = "x86_64";

static const uint8_t syscall_ret[] = { 0x0f, 0x05, 0xc3 };             /* syscall; ret */
static const uint8_t restore_rt_q[] = { 0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0, 0x0f, 0x05 }; /* glibc, musl */
static const uint8_t restore_rt_l[] = { 0xb8, 0x0f, 0, 0, 0, 0x0f, 0x05 }; /* mov $15,%eax; syscall */
const aiotk_gadget aiotk_arch_gadget_syscall[] = {
	{ syscall_ret, sizeof(syscall_ret), 0 }, { NULL, 0, 0 } };
/* glibc 2.34+ start_thread's end, `mov $60,%edx` before it:
 * L: xor %edi,%edi; mov %edx,%eax; syscall; jmp L (entered at the
 * syscall: the munmap, then the loop's exit). musl's __unmapself:
 * mov $11,%eax; syscall; xor %rdi,%rdi; mov $60,%eax; syscall (musl's
 * source; not met on this machine). */
static const uint8_t exit_loop_glibc[] = { 0x31, 0xff, 0x89, 0xd0, 0x0f, 0x05, 0xeb, 0xf8 };
static const uint8_t unmapself_musl[] = { 0xb8, 0x0b, 0, 0, 0, 0x0f, 0x05, 0x48, 0x31, 0xff,
					  0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05 };
const aiotk_gadget aiotk_arch_gadget_unmap_exit[] = {
	{ exit_loop_glibc, sizeof(exit_loop_glibc), 4 }, { unmapself_musl, sizeof(unmapself_musl), 5 },
	{ NULL, 0, 0 } };
const aiotk_gadget aiotk_arch_gadget_sigreturn[] = {
	{ restore_rt_q, sizeof(restore_rt_q), 0 }, { restore_rt_l, sizeof(restore_rt_l), 0 },
	{ NULL, 0, 0 } };

static struct user_regs_struct *R(aiotk_regs *r) { return (void *)r->raw; }
static const struct user_regs_struct *C(const aiotk_regs *r) { return (const void *)r->raw; }

int aiotk_arch_supported(void) { return 1; }

int aiotk_arch_get(pid_t tid, aiotk_regs *r)
{
	memset(r, 0, sizeof(*r));
	return ptrace(PTRACE_GETREGS, tid, 0, R(r)) ? -errno : 0;
}

int aiotk_arch_set(pid_t tid, const aiotk_regs *r)
{
	return ptrace(PTRACE_SETREGS, tid, 0, C(r)) ? -errno : 0;
}

void aiotk_arch_prepare(aiotk_regs *r, uint64_t code, uint64_t sp, long nr,
			const long a[6])
{
	struct user_regs_struct *g = R(r);
	g->rax = (uint64_t)nr;
	/* No syscall to restart: the kernel must not rewind our ip. */
	g->orig_rax = (uint64_t)-1;
	g->rdi = (uint64_t)a[0];
	g->rsi = (uint64_t)a[1];
	g->rdx = (uint64_t)a[2];
	g->r10 = (uint64_t)a[3];
	g->r8 = (uint64_t)a[4];
	g->r9 = (uint64_t)a[5];
	g->rip = code;
	g->rsp = sp;
}

long aiotk_arch_result(const aiotk_regs *r) { return (long)C(r)->rax; }

int aiotk_arch_restartable(aiotk_regs *r)
{
	struct user_regs_struct *g = R(r);
	if ((int64_t)g->orig_rax < 0 || (int64_t)g->rax != -EINTR)
		return 0;
	g->rax = (uint64_t)-ERESTARTNOHAND;
	return 1;
}

#define GPR(name) { #name, offsetof(struct user_regs_struct, name) }
static const struct { const char *name; size_t off; } gprs[] = {
	GPR(rax), GPR(rbx), GPR(rcx), GPR(rdx), GPR(rsi), GPR(rdi), GPR(rbp),
	GPR(r8), GPR(r9), GPR(r10), GPR(r11), GPR(r12), GPR(r13), GPR(r14), GPR(r15),
};
const unsigned aiotk_arch_ngpr = sizeof(gprs) / sizeof(gprs[0]);

const char *aiotk_arch_gpr_name(unsigned i) { return i < aiotk_arch_ngpr ? gprs[i].name : "?"; }

uint64_t *aiotk_arch_gpr(aiotk_regs *r, unsigned i)
{
	return (uint64_t *)((char *)r->raw + gprs[i].off);
}

uint64_t aiotk_arch_sp(const aiotk_regs *r) { return C(r)->rsp; }
#endif
