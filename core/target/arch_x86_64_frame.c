/* x86_64 return frame: what rt_sigreturn (arch/x86/kernel/signal_64.c)
 * reads, so that a thread left by a dead aiotk resumes its own context.
 *
 * The kernel reads the frame at sp - 8 after the `ret` popped its first
 * word: { pretcode, ucontext { flags, link, stack, sigcontext, sigmask } },
 * and the FPU state where sigcontext.fpstate points. Rules it applies,
 * measured here (spec/c/test_inject.c and spec/lua/survive_spec.lua kill the
 * tracer and let the target check its registers; docs/KERNEL-FACTS.md):
 *  - sigreturn sets orig_ax to -1 and points the thread's restart_block at
 *    "return EINTR", so a pending restart cannot survive it: the frame
 *    re-executes the interrupted call instead (ip back over the 2-byte
 *    syscall instruction, ax = its number, arguments untouched).
 *  - uc_stack is handed to sigaltstack and errors other than EFAULT are
 *    ignored: a mode that is not valid leaves the thread's altstack as is.
 *  - fpstate NULL resets the FPU; so the state from PTRACE_GETREGSET
 *    NT_X86_XSTATE goes in, 64-byte aligned for XRSTOR, FP_XSTATE_MAGIC2
 *    after it. The regset leaves the software-reserved bytes (which say
 *    what the frame holds) unfilled here, so all of them are written:
 *    without magic1 the kernel restores only the legacy area (x87/SSE),
 *    and components missing from xfeatures it resets to their initial
 *    state (measured: xfeatures 0 zeroed all xmm registers). */
#include "target/arch.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <elf.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>

#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516
#define FP_XSTATE_MAGIC1 0x46505853u
#define FP_XSTATE_MAGIC2 0x46505845u
#define UC_FP_XSTATE 0x1
#define RED_ZONE 128
#define XSAVE_HDR 512   /* legacy area; the xsave header follows */
#define XSAVE_MIN 576   /* legacy area + header */

struct k_sigcontext {
	uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
	uint64_t di, si, bp, bx, dx, ax, cx, sp, ip, flags;
	uint16_t cs, gs, fs, ss;
	uint64_t err, trapno, oldmask, cr2, fpstate, reserved[8];
};
struct k_stack { uint64_t sp; int32_t flags, pad; uint64_t size; };
struct k_ucontext {
	uint64_t flags, link;
	struct k_stack stack;
	struct k_sigcontext mc;
	uint64_t sigmask;
};
struct k_frame { uint64_t pretcode; struct k_ucontext uc; };
_Static_assert(sizeof(struct k_sigcontext) == 256, "sigcontext");
_Static_assert(sizeof(struct k_ucontext) == 304, "ucontext");

/* The fxsave area's software-reserved bytes (offset 464). */
struct sw_bytes { uint32_t magic1, extended_size; uint64_t xfeatures; uint32_t xstate_size; };

int aiotk_arch_fpu_get(pid_t tid, uint8_t *buf, size_t cap, size_t *len)
{
	struct iovec v = { buf, cap };
	if (ptrace(PTRACE_GETREGSET, tid, NT_X86_XSTATE, &v))
		return -errno;
	*len = v.iov_len;
	return v.iov_len < XSAVE_MIN ? -EIO : 0;
}

int aiotk_arch_fpu_set(pid_t tid, const uint8_t *buf, size_t len)
{
	struct iovec v = { (void *)buf, len };
	return ptrace(PTRACE_SETREGSET, tid, NT_X86_XSTATE, &v) ? -errno : 0;
}

/* Where each state component ends in the standard format (CPUID leaf 0xD:
 * offset + size; 0 for none). Read once: a CPUID in a virtual machine
 * exits to the hypervisor (about 9 us each measured here), and the frame
 * is built while the process is stopped. Only the components the CPU can
 * put in a thread's user state (leaf 0xD subleaf 0: EDX:EAX, what XCR0
 * may enable) are asked for: 62 subleaves took 0.5 ms of every attach
 * here, the few it has about 0.05. */
static uint32_t component_end[64];
static pthread_once_t components_once = PTHREAD_ONCE_INIT;

static void read_components(void)
{
	unsigned a, b, c, d;
	uint64_t user = ~0ull;
	if (__get_cpuid_count(0xd, 0, &a, &b, &c, &d))
		user = (uint64_t)d << 32 | a;
	for (unsigned i = 2; i < 64; i++) {
		if (user >> i & 1 && __get_cpuid_count(0xd, i, &a, &b, &c, &d))
			component_end[i] = b + a;
	}
}

void aiotk_arch_frame_prepare(void) { pthread_once(&components_once, read_components); }

/* End of the last component the state uses: the kernel refuses a frame
 * claiming more than the thread's own xstate size. */
static uint32_t used_size(const uint8_t *fpu, size_t len)
{
	uint64_t bv;
	uint32_t end = XSAVE_MIN;
	aiotk_arch_frame_prepare();
	memcpy(&bv, fpu + XSAVE_HDR, sizeof(bv));
	for (unsigned i = 2; i < 64; i++)
		if (bv >> i & 1 && component_end[i] > end)
			end = component_end[i];
	return end > len ? (uint32_t)len : end;
}

static void frame_regs(struct k_sigcontext *m, const struct user_regs_struct *g)
{
	m->r8 = g->r8; m->r9 = g->r9; m->r10 = g->r10; m->r11 = g->r11;
	m->r12 = g->r12; m->r13 = g->r13; m->r14 = g->r14; m->r15 = g->r15;
	m->di = g->rdi; m->si = g->rsi; m->bp = g->rbp; m->bx = g->rbx;
	m->dx = g->rdx; m->ax = g->rax; m->cx = g->rcx; m->sp = g->rsp;
	m->ip = g->rip; m->flags = g->eflags;
	m->cs = (uint16_t)g->cs; m->ss = (uint16_t)g->ss;
	/* Stopped inside an interrupted system call: run it again. */
	int64_t ax = (int64_t)g->rax;
	if ((int64_t)g->orig_rax >= 0 &&
	    (ax == -ERESTARTSYS || ax == -ERESTARTNOINTR || ax == -ERESTARTNOHAND ||
	     ax == -ERESTART_RESTARTBLOCK)) {
		m->ax = g->orig_rax;
		m->ip = g->rip - 2;
	}
}

int aiotk_arch_frame(const aiotk_regs *saved, uint64_t mask,
		     const uint8_t *fpu, size_t fpu_len, uint64_t sigreturn,
		     uint8_t *out, size_t cap, uint64_t *at, size_t *len)
{
	const struct user_regs_struct *g = (const void *)saved->raw;
	uint32_t xs = used_size(fpu, fpu_len);
	size_t fp_off = (sizeof(struct k_frame) + 63) & ~(size_t)63;
	size_t total = fp_off + xs + sizeof(uint32_t) + 64;
	if (total > cap)
		return -E2BIG;
	uint64_t base = (g->rsp - RED_ZONE - total) & ~(uint64_t)63;
	memset(out, 0, total);
	struct k_frame f = { .pretcode = sigreturn };
	f.uc.flags = UC_FP_XSTATE;
	f.uc.stack.flags = 0x7fff; /* not a valid mode: altstack left alone */
	frame_regs(&f.uc.mc, g);
	f.uc.mc.fpstate = base + fp_off;
	f.uc.sigmask = mask;
	memcpy(out, &f, sizeof(f));
	uint8_t *fp = out + fp_off;
	memcpy(fp, fpu, xs);
	struct sw_bytes sw;
	uint64_t bv;
	memcpy(&sw, fp + 464, sizeof(sw));
	memcpy(&bv, fp + XSAVE_HDR, sizeof(bv));
	sw.magic1 = FP_XSTATE_MAGIC1;
	/* x87 and SSE always; others in use. Those left out the kernel puts
	 * in their initial state, which is what an unused one is in. */
	sw.xfeatures = bv | 3;
	sw.xstate_size = xs;
	sw.extended_size = xs + (uint32_t)sizeof(uint32_t);
	memcpy(fp + 464, &sw, sizeof(sw));
	uint32_t m2 = FP_XSTATE_MAGIC2;
	memcpy(fp + xs, &m2, sizeof(m2));
	*at = base;
	*len = fp_off + xs + sizeof(m2);
	return 0;
}
#endif
