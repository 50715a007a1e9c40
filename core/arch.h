/* What syscall injection needs from an architecture. One implementation
 * per architecture (arch_x86_64.c); arch_none.c refuses cleanly. */
#ifndef AIOTK_ARCH_H
#define AIOTK_ARCH_H

#include <stdint.h>
#include <sys/types.h>

typedef struct aiotk_regs {
	uint64_t raw[64]; /* large enough for any user_regs_struct */
} aiotk_regs;

extern const char *const aiotk_arch_name;
/* Instruction bytes: one system call, then a breakpoint (8 bytes). */
extern const uint8_t aiotk_arch_code[8];

int aiotk_arch_supported(void);
int aiotk_arch_get(pid_t tid, aiotk_regs *r);
int aiotk_arch_set(pid_t tid, const aiotk_regs *r);
uint64_t aiotk_arch_ip(const aiotk_regs *r);
/* Registers that run system call nr with args at code. */
void aiotk_arch_prepare(aiotk_regs *r, uint64_t code, long nr, const long a[6]);
long aiotk_arch_result(const aiotk_regs *r);
/* A thread stopped on return from a system call that our stop made fail
 * with EINTR: make the kernel restart it instead. Returns 1 if changed. */
int aiotk_arch_restartable(aiotk_regs *r);

#endif
